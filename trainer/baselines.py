"""Baselines scored on the same episodes as the spiking model.

- DTW template matching (the classic one-shot word enrollment): each utterance is its sequence
  of front-end frames (log(1 + spike count) per channel and time bin); a query takes the label of
  the support utterance with the smallest dynamic-time-warping distance (Euclidean frame cost,
  steps (1,0), (0,1), (1,1), normalised by the two lengths). Time bins are pooled in pairs
  (20 ms frames at the default 10 ms bins).
"""

from __future__ import annotations

import numpy as np

from .dense import DenseSet
from .episodes import FewShotTasks
from .fewshot import ci95

__all__ = ["dtw_distances", "evaluate_dtw"]


def dtw_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DTW distance of every pair (a[i], b[j]): a (n, T, C), b (m, U, C) -> (n, m).

    Vectorised over pairs and anti-diagonals (T + U - 1 numpy steps).
    """
    n, T, _ = a.shape
    m, U, _ = b.shape
    # frame costs for all pairs: (n, m, T, U)
    aa = (a ** 2).sum(-1)
    bb = (b ** 2).sum(-1)
    cross = np.einsum("itc,juc->ijtu", a, b)
    cost = np.sqrt(np.maximum(aa[:, None, :, None] + bb[None, :, None, :] - 2 * cross, 0.0))
    cost = cost.reshape(n * m, T, U)
    inf = np.inf
    D = np.full((n * m, T + 1, U + 1), inf)
    D[:, 0, 0] = 0.0
    for d in range(2, T + U + 1):                         # i + j = d on the padded grid
        i = np.arange(max(1, d - U), min(T, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(D[:, i - 1, j], D[:, i, j - 1]), D[:, i - 1, j - 1])
        D[:, i, j] = cost[:, i - 1, j - 1] + best
    return (D[:, T, U] / (T + U)).reshape(n, m)


def _frames(data: DenseSet, idx: np.ndarray, subset: int = 0, pool: int = 2) -> np.ndarray:
    x = data.x[idx, subset].astype(np.float64)
    n, t, c = x.shape
    x = x[:, : t - t % pool].reshape(n, t // pool, pool, c).sum(2)    # pool time bins
    return np.log1p(x)


def evaluate_dtw(data: DenseSet, tasks: FewShotTasks, phase: str = "unseen", ways: int = 5,
                 shots: int = 1, queries: int = 5, episodes: int = 600, seed: int = 1234,
                 same_speaker: bool = False, cross_speaker: bool = False) -> dict:
    sampler = tasks.sampler(phase, ways, shots, queries, same_speaker=same_speaker, seed=seed,
                            cross_speaker=cross_speaker)
    accs = []
    for e in range(episodes):
        ep = sampler.episode(e)
        dist = dtw_distances(_frames(data, ep.query), _frames(data, ep.support))
        pred = ep.support_y[np.argmin(dist, axis=1)]
        accs.append(float((pred == ep.query_y).mean()))
    acc = np.array(accs)
    return dict(method="dtw", accuracy=round(float(acc.mean()), 4), ci95=round(ci95(acc), 4),
                ways=ways, shots=shots, queries=queries, split=phase, episodes=episodes,
                same_speaker=same_speaker, cross_speaker=cross_speaker)
