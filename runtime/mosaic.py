"""The Mosaic tile layout: hop counts between neuron tiles, layout cost, routing masks.

numpy only; the trainer and the chip emulator use the same functions.

The recurrent network is one n x n weight matrix over ``rows * cols`` neuron tiles of ``tile``
neurons; neuron i lives in tile ``i // tile``, tiles are numbered row-major on the grid. Spikes
between tiles travel through routing tiles north/south/east/west with at most one turn. The hop
count H between two tiles (as in the public Mosaic code, see REFERENCE.md) is::

    0            same tile
    1            N/S/E/W neighbour
    2d + 1       same row or column, Manhattan distance d >= 2
    2d - 1       otherwise (one turn)

so the largest value on an 8 x 8 grid is 27. A connection costs S = min(exp(beta * H) - 1, e^15):
zero inside a tile, about 2980 for one hop at beta = 8, capped beyond.

    >>> hop_matrix(1, 3).tolist()
    [[0, 1, 5], [1, 0, 1], [5, 1, 0]]
    >>> int(hop_matrix(8, 8).max())
    27
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["Layout", "hop_matrix", "layout_cost"]


def hop_matrix(rows: int, cols: int) -> np.ndarray:
    """Tile-to-tile hop counts, (rows*cols, rows*cols) int64."""
    if rows < 1 or cols < 1:
        raise InputError(f"grid must be at least 1 x 1, got {rows} x {cols}")
    r, c = np.divmod(np.arange(rows * cols), cols)
    dr = np.abs(r[:, None] - r[None, :])
    dc = np.abs(c[:, None] - c[None, :])
    d = dr + dc
    straight = (dr == 0) | (dc == 0)
    h = np.where(straight, 2 * d + 1, 2 * d - 1)
    h[d == 1] = 1
    h[d == 0] = 0
    return h.astype(np.int64)


def layout_cost(hops: np.ndarray, beta: float = 8.0, cap: float = 15.0) -> np.ndarray:
    """S = min(exp(beta * H) - 1, e^cap) elementwise."""
    return np.minimum(np.expm1(beta * np.asarray(hops, np.float64)), np.exp(cap))


@dataclass(frozen=True)
class Layout:
    """A grid of neuron tiles: ``rows x cols`` tiles of ``tile`` neurons each.

    >>> lay = Layout(4, 4, 16)
    >>> lay.neurons, lay.neuron_hops().shape
    (256, (256, 256))
    """

    rows: int = 4
    cols: int = 4
    tile: int = 16

    def __post_init__(self) -> None:
        if min(self.rows, self.cols, self.tile) < 1:
            raise InputError(f"layout needs positive rows, cols and tile size: {self}")

    @property
    def tiles(self) -> int:
        return self.rows * self.cols

    @property
    def neurons(self) -> int:
        return self.tiles * self.tile

    def tile_of(self, neuron: np.ndarray | int) -> np.ndarray:
        return np.asarray(neuron) // self.tile

    def tile_hops(self) -> np.ndarray:
        return hop_matrix(self.rows, self.cols)

    def neuron_hops(self) -> np.ndarray:
        """Hop count of every neuron pair, (n, n): tile hops expanded to tile-size blocks."""
        return np.kron(self.tile_hops(), np.ones((self.tile, self.tile), np.int64))

    def cost(self, beta: float = 8.0, cap: float = 15.0) -> np.ndarray:
        """Layout cost S per connection (n, n), float64."""
        return layout_cost(self.neuron_hops(), beta, cap)

    def hop_mask(self, max_hops: int) -> np.ndarray:
        """Connections allowed by a hop budget: True where H <= max_hops, (n, n) bool."""
        return self.neuron_hops() <= max_hops

    def input_mask(self, inputs: int, border_rows: int = 1) -> np.ndarray:
        """Input -> neuron connections when inputs enter only the first ``border_rows`` tile rows
        (as on the Mosaic): (inputs, n) bool, each input channel feeding the neurons of one tile,
        channels spread evenly over those tiles."""
        n_tiles = min(border_rows, self.rows) * self.cols
        tile_of_input = (np.arange(inputs) * n_tiles) // max(inputs, 1)
        mask = np.zeros((inputs, self.neurons), bool)
        for i, t in enumerate(tile_of_input):
            mask[i, t * self.tile:(t + 1) * self.tile] = True
        return mask

    def connections_per_hop(self, weights: np.ndarray, tol: float = 0.0) -> dict[int, int]:
        """Number of non-zero recurrent connections at each hop distance."""
        h = self.neuron_hops()
        nz = np.abs(weights) > tol
        return {int(k): int(nz[h == k].sum()) for k in np.unique(h)}
