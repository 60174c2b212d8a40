"""Small-world measures of a learned recurrent graph (numpy).

The weight matrix is read as an undirected, unweighted graph: an edge wherever |W_ij| or |W_ji|
exceeds ``tol``. Measures (Watts & Strogatz 1998; Muldoon, Bridgeford & Bassett 2016):

- clustering coefficient C: mean over nodes of closed triangles / possible triangles;
- characteristic path length L: mean shortest-path length over connected pairs;
- small-world propensity SWP = 1 - sqrt((dC^2 + dL^2) / 2), with
  dC = (C_lattice - C) / (C_lattice - C_random) and dL = (L - L_random) / (L_lattice - L_random),
  each clipped to [0, 1], against a ring lattice and random graphs of the same density;
- small-world index sigma = (C / C_random) / (L / L_random).

    >>> ring = ring_lattice(20, 4)
    >>> round(clustering(ring), 3), round(path_length(ring), 3)
    (0.5, 2.895)
"""

from __future__ import annotations

import numpy as np

__all__ = ["adjacency", "clustering", "path_length", "ring_lattice", "random_graph",
           "small_world"]


def adjacency(weights: np.ndarray, tol: float = 0.0) -> np.ndarray:
    a = np.abs(np.asarray(weights)) > tol
    a = a | a.T
    np.fill_diagonal(a, False)
    return a


def clustering(a: np.ndarray) -> float:
    a = a.astype(np.float64)
    k = a.sum(axis=1)
    tri = np.einsum("ij,jk,ki->i", a, a, a) / 2.0
    possible = k * (k - 1) / 2.0
    c = np.divide(tri, possible, out=np.zeros_like(tri), where=possible > 0)
    return float(c.mean())


def path_length(a: np.ndarray) -> float:
    """Mean shortest path over connected, distinct pairs (BFS by boolean matrix products)."""
    n = a.shape[0]
    a = a.astype(bool)
    dist = np.full((n, n), -1, np.int64)
    np.fill_diagonal(dist, 0)
    frontier = np.eye(n, dtype=bool)
    reached = frontier.copy()
    step = 0
    while frontier.any():
        step += 1
        nxt = (frontier.astype(np.uint8) @ a.astype(np.uint8)) > 0
        nxt &= ~reached
        dist[nxt] = step
        reached |= nxt
        frontier = nxt
    off = dist[~np.eye(n, dtype=bool)]
    off = off[off > 0]
    return float(off.mean()) if off.size else float("inf")


def ring_lattice(n: int, degree: int) -> np.ndarray:
    a = np.zeros((n, n), bool)
    for k in range(1, max(degree // 2, 1) + 1):
        idx = np.arange(n)
        a[idx, (idx + k) % n] = True
        a[(idx + k) % n, idx] = True
    return a


def random_graph(n: int, edges: int, rng: np.random.Generator) -> np.ndarray:
    iu = np.triu_indices(n, 1)
    pick = rng.choice(iu[0].size, size=min(edges, iu[0].size), replace=False)
    a = np.zeros((n, n), bool)
    a[iu[0][pick], iu[1][pick]] = True
    return a | a.T


def small_world(weights: np.ndarray, tol: float = 0.0, seeds: int = 5) -> dict:
    a = adjacency(weights, tol)
    n = a.shape[0]
    edges = int(a.sum() // 2)
    density = edges / (n * (n - 1) / 2)
    c, l = clustering(a), path_length(a)
    rng = np.random.default_rng(0)
    rand = [random_graph(n, edges, rng) for _ in range(seeds)]
    c_r = float(np.mean([clustering(r) for r in rand]))
    l_r = float(np.mean([path_length(r) for r in rand]))
    latt = ring_lattice(n, max(2, int(round(2 * edges / n))))
    c_l, l_l = clustering(latt), path_length(latt)
    dc = np.clip((c_l - c) / (c_l - c_r), 0, 1) if c_l != c_r else 0.0
    dl = np.clip((l - l_r) / (l_l - l_r), 0, 1) if l_l != l_r else 0.0
    return dict(nodes=n, edges=edges, density=round(density, 4), clustering=round(c, 4),
                path_length=round(l, 4), clustering_random=round(c_r, 4),
                path_length_random=round(l_r, 4), clustering_lattice=round(c_l, 4),
                path_length_lattice=round(l_l, 4),
                small_world_propensity=round(float(1 - np.sqrt((dc ** 2 + dl ** 2) / 2)), 4),
                small_world_sigma=round(float((c / c_r) / (l / l_r)), 4) if c_r > 0 and l > 0 else None)
