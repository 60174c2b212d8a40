"""Many utterances through one chip at once (numpy only): :meth:`tessera.runtime.chip.Chip.run_batch`.

The streams step together through :func:`~tessera.runtime.core.batch_steps` (one numpy call per
operation for all of them) and give the integers one stream at a time gives: the same bins, the
same steps, the same segment sums (:mod:`tessera.runtime.segments`) and features.
"""

from __future__ import annotations

import numpy as np

from .core import batch_current, batch_steps, core_state, core_steps, frames_bin_dtype, input_current
from .readout import normalize_features
from .segments import acc_rows, fold, last_input_bin

__all__ = ["BATCH_STEPS", "run_batch"]

#: steps whose input product a batch takes at once: one matrix product for several steps, and
#: (BATCH_STEPS, batch, neurons) float64 of temporaries instead of (batch, steps, neurons)
BATCH_STEPS = 10


def window_bins(chip, frames: np.ndarray) -> np.ndarray:
    """(B, ms, channels) 1 ms frames -> (B, steps, inputs) bins of the window from rest: frames
    past the window dropped, the last partial bin kept, counts clipped at 255."""
    tab, B = chip.tab, chip.tab.bin_ms
    x = chip.frames(frames, batch=True)
    b, ms = x.shape[:2]
    take = min(ms, tab.steps * B)                         # frames past the window are dropped
    full = take // B
    # 0/1 spike frames summed in uint8 bins (no clip)
    kind = frames_bin_dtype(x, B)
    bins = np.zeros((b, tab.steps, tab.inputs), kind)
    bins[:, :full] = x[:, :full * B].reshape(b, full, B, -1).sum(axis=2, dtype=kind)
    if take > full * B:                                   # the last, partial bin
        bins[:, full] = x[:, full * B:take].sum(axis=1, dtype=kind)
    if kind != np.uint8:
        np.minimum(bins, 255, out=bins)
    return bins


def run_batch(chip, frames: np.ndarray, rasters: bool = False):
    """:meth:`~tessera.runtime.chip.Chip.run_batch`: the features phi (B, D) of utterances
    (B, ms, channels) from rest (and their spike rasters (B, steps, n) with ``rasters``)."""
    tab = chip.tab
    bins = window_bins(chip, frames)
    b, n, hi = bins.shape[0], tab.neurons, chip.acc_hi
    state = core_state(chip.core, batch=b)
    fast = chip.core.batch_float                          # float64 holds every value exactly
    acc = np.zeros((acc_rows(tab), b, n), np.float64 if fast else np.int64)
    out = np.zeros((b, tab.steps, n), np.uint8) if rasters else None
    segs = chip.seg_of.tolist()
    rows = list(acc)
    for t0 in range(0, tab.steps, BATCH_STEPS):          # the input product a few steps at once
        x_t, seg_t = bins[:, t0:t0 + BATCH_STEPS], segs[t0:t0 + BATCH_STEPS]
        if fast:
            spiked, state = batch_steps(batch_current(x_t, chip.core), state, chip.core,
                                        rows, seg_t, hi, keep=rasters)
        else:
            spiked, state = core_steps(input_current(x_t, chip.core), state, chip.core,
                                       rows, seg_t, hi)
        if rasters:
            out[:, t0:t0 + spiked.shape[0]] = spiked.transpose(1, 0, 2)
    sums, lens = fold(acc, tab, last_input_bin(bins), hi)
    f = (sums // lens[:, :, None]).transpose(1, 0, 2).reshape(b, -1)
    phi = normalize_features(f, tab)
    return (phi, out) if rasters else phi
