"""The readout's time segments (numpy only): where each step's traces are summed, and the
per-segment sums and lengths the features are read from at the end of a window.

Two rules, the model file's ``core.segment_mode`` (MODEL_FORMAT.md):

``"window"`` (the default)
    ``segments`` equal parts of the window: step t adds its traces to ``acc[t * segments //
    steps]``; the accumulators are (segments, n) and the lengths are the window's.

``"own"``
    ``segments`` equal parts of the utterance's own length L: the bins up to and including the
    last bin with an input event (at least 1; at most ``steps``). L is known only when the window
    ends, so the chip keeps every step's traces (``acc`` is (steps, n): step t adds to row t, the
    same arithmetic as a window of ``steps`` one-bin segments) and folds them at the end::

        seg(t) = t * segments // L   for t < L;   S[s] = sat_AB(sum_{seg(t) = s} acc[t])
        len(s) = #{t < L : seg(t) = s}            (0 when L < segments: then f[s] = 0)

    Traces are never negative, so clipping the sum once equals clipping after every addition
    (the window rule's ``sat_AB`` at each step). Trailing silence never changes the features.

The trainer's float and integer modes read the same rule
(:func:`tessera.trainer.learning.model.input_lengths`, ``own_segments``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["acc_rows", "segment_of", "last_input_bin", "fold"]


def acc_rows(tab) -> int:
    """Rows of the accumulators: one per segment, or one per step (``own``)."""
    return tab.steps if tab.segment_mode == "own" else tab.segments


def segment_of(tab) -> np.ndarray:
    """(steps,) the accumulator row each step's traces go to."""
    t = np.arange(tab.steps)
    return t if tab.segment_mode == "own" else t * tab.segments // tab.steps


def last_input_bin(bins: np.ndarray, start: int = 0):
    """1 + the index of the last of ``bins`` (k, inputs) (the first at step ``start``) that
    holds an input event; 0 when none does (the caller keeps its earlier value). A batch
    (B, k, inputs) gives one per utterance, (B,)."""
    heard = np.asarray(bins).any(axis=-1)
    last = (heard * np.arange(1, heard.shape[-1] + 1)).max(axis=-1, initial=0)
    last = np.where(last > 0, last + start, 0)
    return int(last) if last.ndim == 0 else last


def fold(acc: np.ndarray, tab, length: np.ndarray | int, hi: int | None
         ) -> tuple[np.ndarray, np.ndarray]:
    """The per-segment trace sums and lengths at the end of a window.

    ``acc``: (rows, n) for a stream or (rows, B, n) for a batch (rows: :func:`acc_rows`);
    ``length``: the utterance's own length L (an int, or (B,) for a batch; ignored for
    ``window``); ``hi``: the accumulator's saturation (None: it cannot saturate). Returns the
    sums (segments, n) or (segments, B, n) int64, and the lengths (segments,) or (segments, B)
    int64, at least 1 (an empty segment's sum is 0)."""
    acc = np.asarray(acc, np.int64)                # a batch's exact float64 sums: one copy
    if tab.segment_mode != "own":
        lens = np.bincount(segment_of(tab), minlength=tab.segments)
        if acc.ndim == 3:
            lens = np.repeat(lens[:, None], acc.shape[1], axis=1)
        return acc, lens
    S, steps = tab.segments, tab.steps
    L = np.clip(np.atleast_1d(np.asarray(length, np.int64)), 1, steps)       # (B,)
    # segment s holds the steps t < L with s L <= t S < (s+1) L: from ceil(s L / S) on
    bounds = (np.arange(S + 1)[:, None] * L[None, :] + S - 1) // S          # (S+1, B)
    a = acc if acc.ndim == 3 else acc[:, None, :]                           # (steps, B, n)
    prefix = np.zeros((steps + 1,) + a.shape[1:], np.int64)                 # sums of every
    np.cumsum(a, axis=0, dtype=np.int64, out=prefix[1:])                    # step before t
    cols = np.arange(a.shape[1])[None, :]
    sums = prefix[bounds[1:], cols] - prefix[bounds[:-1], cols]             # (S, B, n)
    lens = np.maximum(bounds[1:] - bounds[:-1], 1)                          # (S, B)
    if hi is not None:
        np.minimum(sums, hi, out=sums)
    if acc.ndim == 2:
        return sums[:, 0], lens[:, 0]
    return sums, lens
