"""The recurrent core as Norse-style pure steps on frozen tables (numpy only).

The equations are the "Core" part of :mod:`tessera.runtime.chip`'s docstring (the one place
that owns them); this module is their only implementation on the chip side. Streaming
(:class:`~tessera.runtime.chip.Chip`) and batched (:meth:`~tessera.runtime.chip.Chip.run_batch`)
inference both call :func:`core_step`, once per bin::

    tables = core_tables(tab, W_in, W_rec)           # the weights as the RRAM arrays read them
    state = core_state(tables)                       # or core_state(tables, batch=B)
    current = input_current(x, tables)               # all bins at once: x W_in + bias
    for t in range(steps):
        z, state = core_step(current[..., t, :], state, tables)

:func:`core_step` never changes its arguments: it returns a new state. A state of shape (n,)
is one stream and takes the event-driven path (only the weight rows of the neurons that spiked
are read); a batch (B, n) goes to :func:`batch_steps`: the state held as float64 (exact: every
value is an integer below 2^53), the spikes' rows added with float products of the recurrent
table's non-zero bands (float32 where every partial sum provably stays below 2^24, else
float64), which hold the integer sums exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CoreTables", "CoreState", "core_tables", "core_state", "input_current", "core_step",
           "core_steps", "batch_current", "batch_steps", "bin_dtype", "frames_bin_dtype", "bins_of"]

_CLIP = getattr(getattr(np, "_core", np).umath, "clip", None) or np.clip   # the bare ufunc
_SUM = np.add.reduce


class CoreTables(NamedTuple):
    """What a core step reads; built once per weight read (:func:`core_tables`), read-only."""

    w_in: np.ndarray             # (inputs, n) input weights >> in_shift, as floats (exact)
    in_shift: int                # the power of two every input weight shares
    w_rec_reset: np.ndarray      # (n, n) int64: W_rec - threshold * I (the reset folded in)
    w_rec_reset_f: np.ndarray    # the same as floats, for batches (exact)
    w_rec_bands: tuple           # its non-zero band per group of columns (see rec_bands)
    w_rec_n: np.ndarray          # (n, n) W_rec >> rec_shift (no reset) in the narrowest int
    rec_shift: int               # the power of two every recurrent weight shares
    bias: np.ndarray             # (n,) int64
    decay: np.ndarray            # (2n,) int64: leak_mult then trace_mult, units of 2^-16
    threshold: int
    v_lo: int                    # the membrane's saturation range
    v_hi: int
    spike: int                   # what a spike adds to its trace: 1 << trace_frac
    r_hi: int                    # the trace's saturation
    trace_can_overflow: bool     # False when the trace provably never reaches r_hi
    batch_float: bool            # every batch value provably an integer below 2^53 (batch_steps)


class CoreState(NamedTuple):
    """One stream's (n,) or a batch's (B, n) state after a step."""

    vr: np.ndarray               # (..., 2n) int64: membranes then readout traces
    z: np.ndarray                # (..., n) bool: the spikes of the step


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def trace_bound(tab) -> int:
    """An upper bound of the readout trace r: r <= (r * m >> 16) + s gives r < s / (1 - m/2^16)."""
    return ((1 << tab.trace_frac) * 65536) \
        // max(65536 - int(tab.trace_mult.max(initial=0)), 1) + 1


def _exact_float(w: np.ndarray, largest_input: int) -> np.ndarray:
    """``w`` as float32 when every sum of products with inputs up to ``largest_input`` stays
    below 2^24 (float32 then holds every partial sum exactly, in any order, and its products are
    twice as fast), else as float64 (exact below 2^53; the chip's sums are far below)."""
    bound = int(np.abs(w).sum(axis=0).max(initial=0)) * largest_input
    return w.astype(np.float32 if bound < (1 << 24) else np.float64)


def _common_shift(w: np.ndarray) -> int:
    """The largest power of two that divides every value of ``w`` (0 when all are zero)."""
    common = int(np.bitwise_or.reduce(np.abs(w), axis=None)) if w.size else 0
    return (common & -common).bit_length() - 1 if common else 0


def _narrow_int(w: np.ndarray) -> np.ndarray:
    """``w`` in the narrowest of int8/int16/int32/int64 that holds every value (the compiled
    steps read a table an eighth of the cache an int64 one takes)."""
    lo, hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
    for kind in (np.int8, np.int16, np.int32):
        if np.iinfo(kind).min <= lo and hi <= np.iinfo(kind).max:
            return w.astype(kind)
    return w


def rec_bands(w: np.ndarray, group: int = 64) -> tuple:
    """The recurrent table as bands: for each group of ``group`` columns (target neurons), the
    rows from the first to the last that hold a non-zero weight there, as (col_lo, col_hi,
    row_lo, row_hi, block). The tiles' routes reach neighbouring tiles only, so on a grid the
    bands cover about 60 % of the table; the products of the spikes with the bands are the
    dense product's values exactly (the rows left out hold zeros). One band (the whole table)
    when that saves little."""
    n = w.shape[1]
    bands = []
    for c0 in range(0, n, group):
        rows = np.flatnonzero(np.any(w[:, c0:c0 + group] != 0, axis=1))
        if rows.size:
            bands.append((c0, min(c0 + group, n), int(rows[0]), int(rows[-1]) + 1))
    work = sum((c1 - c0) * (r1 - r0) for c0, c1, r0, r1 in bands)
    if work > 0.75 * w.size or len(bands) < 2:
        bands = [(0, n, 0, w.shape[0])]
    return tuple((c0, c1, r0, r1, _readonly(np.ascontiguousarray(w[r0:r1, c0:c1])))
                 for c0, c1, r0, r1 in bands)


def core_tables(tab, w_in: np.ndarray, w_rec: np.ndarray) -> CoreTables:
    """The step tables of :class:`~tessera.runtime.chip.ChipTables` ``tab`` with the integer
    weights ``w_in`` (inputs, n) and ``w_rec`` (n, n) as the arrays read them."""
    n = tab.neurons
    w_in = np.asarray(w_in, np.int64)
    in_shift = _common_shift(w_in)
    w_rec = np.asarray(w_rec, np.int64)
    rec_shift = _common_shift(w_rec)
    reset = w_rec - tab.threshold * np.eye(n, dtype=np.int64)
    r_hi = (1 << (tab.trace_bits - 1)) - 1
    reset_f = _readonly(_exact_float(reset, 1))
    # float64 holds a batch's arithmetic exactly when every value stays below 2^53: the decay
    # products (a register times a 16-bit multiplier), the membrane before its clip (itself,
    # the input current and the spikes' rows), the accumulators (saturating at acc_bits)
    cur = 255 * int(np.abs(w_in).sum(axis=0).max(initial=0)) \
        + int(np.abs(np.asarray(tab.bias)).max(initial=0))
    rec = int(np.abs(reset).sum(axis=0).max(initial=0))
    wide = max(tab.membrane_bits, tab.trace_bits) - 1 + 16
    batch_float = wide < 53 and (1 << (tab.membrane_bits - 1)) + cur + rec < 1 << 52 \
        and tab.acc_bits <= 52
    return CoreTables(
        w_in=_readonly(_exact_float(w_in >> in_shift, 255)), in_shift=in_shift,
        w_rec_reset=_readonly(reset), w_rec_reset_f=reset_f, w_rec_bands=rec_bands(reset_f),
        w_rec_n=_readonly(_narrow_int(w_rec >> rec_shift)), rec_shift=rec_shift,
        bias=_readonly(np.asarray(tab.bias, np.int64).copy()),
        decay=_readonly(np.concatenate([tab.leak_mult, tab.trace_mult]).astype(np.int64)),
        threshold=int(tab.threshold),
        v_lo=-(1 << (tab.membrane_bits - 1)), v_hi=(1 << (tab.membrane_bits - 1)) - 1,
        spike=1 << tab.trace_frac, r_hi=r_hi, trace_can_overflow=trace_bound(tab) > r_hi,
        batch_float=batch_float)


def core_state(tables: CoreTables, batch: int | None = None) -> CoreState:
    """The state at rest: one stream, or ``batch`` streams."""
    n = tables.bias.shape[0]
    lead = () if batch is None else (batch,)
    return CoreState(np.zeros(lead + (2 * n,), np.int64), np.zeros(lead + (n,), bool))


def input_current(x: np.ndarray, tables: CoreTables) -> np.ndarray:
    """I = x W_in + bias for binned input counts x (..., inputs) in [0, 255], all bins at once
    (int64; the float product is exact, see :func:`core_tables`)."""
    x = np.asarray(x)
    flat = x.reshape(-1, x.shape[-1]).astype(tables.w_in.dtype) @ tables.w_in
    out = flat.astype(np.int64).reshape(x.shape[:-1] + (-1,))
    if tables.in_shift:
        out <<= tables.in_shift
    out += tables.bias                           # in place: no second (..., n) array
    return out


def core_steps(current: np.ndarray, state: CoreState, tables: CoreTables,
               rows: list | None = None, segs: list | None = None, hi: int | None = None
               ) -> tuple[np.ndarray, CoreState]:
    """Steps ``current[..., i, :]`` for every i (one stream (k, n), a batch (B, k, n)) from
    ``state``. When ``rows`` is given, step i's traces go into ``rows[segs[i]]`` (in place):
    acc[seg(t)] = sat_AB(acc[seg(t)] + r[t]), ``hi`` the accumulator's largest value when a sum
    can reach it (saturating at every step, in step order), None when none can. Returns (the
    spikes of each step, bool (k, n) or (k, B, n), the new state); the arguments are left
    alone (the state is new). One stream runs at numpy's per-call floor: every name the loop
    reads is bound once, and each step's spikes are computed straight into the raster. A batch
    goes to :func:`batch_steps` when float64 holds it exactly (``tables.batch_float``), else
    steps here in int64."""
    t = tables
    n = t.bias.shape[0]
    k = current.shape[-2]
    stream = state.z.ndim == 1
    if not stream and t.batch_float:             # a batch: float64 state (see batch_steps)
        cur = np.empty((k,) + state.z.shape)
        cur[...] = current.transpose(1, 0, 2)
        return batch_steps(cur, state, t, rows, segs, hi)
    vr, z = state.vr.copy(), state.z             # the caller's state stays as it was
    v, r = vr[..., :n], vr[..., n:]
    raster = np.empty((k,) + z.shape, bool)
    mul, add, rsh, ge, clip = np.multiply, np.add, np.right_shift, np.greater_equal, _CLIP
    take, decay, th, spike = t.w_rec_reset.take, t.decay, t.threshold, t.spike
    r_hi = t.r_hi if t.trace_can_overflow else None
    add_at = np.add.at
    idx = z.nonzero()[0] if stream else None     # the neurons that spiked at the last step
    for i in range(k):
        mul(vr, decay, out=vr)                   # v * leak_mult and r * trace_mult ...
        rsh(vr, 16, out=vr)                      # ... >> 16, both at once
        add(v, current[..., i, :], out=v)
        if stream:                               # event-driven: the rows of the spikes
            if idx.size:
                add(v, _SUM(take(idx, axis=0), axis=0), out=v)
        elif z.any():                            # a batch in int64: one exact float product
            add(v, z @ t.w_rec_reset_f, out=v, casting="unsafe")     # (the cast loses nothing)
        clip(v, t.v_lo, t.v_hi, out=v)
        z = raster[i]
        ge(v, th, out=z)
        if stream:                               # their traces, and their rows next step
            idx = z.nonzero()[0]
            if idx.size:
                add_at(r, idx, spike)
        else:
            add(r, spike, out=r, where=z)
        if r_hi is not None:
            np.minimum(r, r_hi, out=r)
        if rows is not None:                     # the step's segment sums
            row = rows[segs[i]]
            row += r
            if hi is not None:
                np.clip(row, -hi - 1, hi, out=row)
    return raster, CoreState(vr, z.copy() if k else z)


def batch_current(x: np.ndarray, tables: CoreTables) -> np.ndarray:
    """The input current of a batch's bins x (B, k, inputs) as float64 (k, B, n), step-major
    for :func:`batch_steps` (x W_in exact in float32 or float64, see :func:`core_tables`; the
    shift and the bias exact in float64: every value is an integer far below 2^53)."""
    b, k, m = x.shape
    xt = np.empty((k, b, m), tables.w_in.dtype)
    xt[...] = x.transpose(1, 0, 2)
    out = np.empty((k, b, tables.w_in.shape[1]))
    np.multiply((xt.reshape(k * b, m) @ tables.w_in).reshape(out.shape), 2.0 ** tables.in_shift,
                out=out)
    out += tables.bias
    return out


def batch_steps(current: np.ndarray, state: CoreState, tables: CoreTables,
                rows: list | None = None, segs: list | None = None, hi: int | None = None,
                keep: bool = True) -> tuple[np.ndarray | None, CoreState]:
    """:func:`core_steps` for a batch, the input current float64 (k, B, n) (:func:`batch_current`):
    the membranes and traces are held as float64 (2, B, n) while the chunk runs (every value is
    an integer below 2^53, so v * leak_mult * 2^-16 is exact and its floor is the integer
    shift), the spikes' rows added with exact float products of the recurrent table's bands
    (:func:`rec_bands`). The segment sums go into ``rows`` (float64 for speed; int64 works
    too). Returns (the spikes bool (k, B, n), or None without ``keep``; the new int64 state):
    the same integers as the int64 steps. Only for tables with ``batch_float``."""
    t = tables
    n = t.bias.shape[0]
    k, b = current.shape[:2]
    vr = np.empty((2, b, n))                     # membranes and traces, both contiguous
    vr[0], vr[1] = state.vr[:, :n], state.vr[:, n:]
    v, r = vr
    decay = (t.decay * 2.0 ** -16).reshape(2, 1, n)                  # exact
    bands = t.w_rec_bands
    zf = state.z.astype(t.w_rec_reset_f.dtype)   # the last step's spikes, as 0/1 floats
    spiked = bool(state.z.any())
    raster = np.empty((k, b, n), bool) if keep else None
    sp = np.empty_like(zf)
    rec = np.zeros_like(zf)                      # columns no band reaches stay 0
    mul, add, floor, ge, clip, matmul = (np.multiply, np.add, np.floor, np.greater_equal,
                                         _CLIP, np.matmul)
    lo, hi_v, th, spike = t.v_lo, t.v_hi, t.threshold, t.spike
    r_hi = t.r_hi if t.trace_can_overflow else None
    for i in range(k):
        mul(vr, decay, out=vr)
        floor(vr, out=vr)
        add(v, current[i], out=v)
        if spiked:                               # the spikes' rows: exact float products
            for c0, c1, r0, r1, block in bands:
                matmul(zf[:, r0:r1], block, out=rec[:, c0:c1])
            add(v, rec, out=v)
        clip(v, lo, hi_v, out=v)
        ge(v, th, out=zf)
        spiked = bool(zf.any())
        if keep:
            raster[i] = zf
        if spiked:
            mul(zf, spike, out=sp)
            add(r, sp, out=r)
            if r_hi is not None:
                np.minimum(r, r_hi, out=r)
        if rows is not None:
            row = rows[segs[i]]
            add(row, r, out=row, casting="unsafe")     # exact: integers below 2^53
            if hi is not None:
                np.clip(row, -hi - 1, hi, out=row)
    out = np.empty((b, 2 * n), np.int64)
    out[:, :n], out[:, n:] = v, r
    return raster, CoreState(out, zf.astype(bool) if k else state.z)


def core_step(current: np.ndarray, state: CoreState, tables: CoreTables
              ) -> tuple[np.ndarray, CoreState]:
    """One bin: input current I[t] (..., n) and the previous state -> (spikes z, new state)."""
    raster, state = core_steps(current[..., None, :], state, tables)
    return raster[0], state


def bin_dtype(frames_dtype, bin_ms: int, largest: int | None = None):
    """The integer type bins of ``bin_ms`` frames are summed in: uint8 frames whose ``largest``
    count (when known) times ``bin_ms`` is at most 255 fit uint8 (such a bin never reaches the
    clip at 255), uint8 frames over at most 257 ms uint16 (the narrow sums are several times
    faster), anything else int64."""
    if frames_dtype == np.uint8 and largest is not None and largest * bin_ms <= 255:
        return np.uint8
    return np.uint16 if frames_dtype == np.uint8 and bin_ms <= 257 else np.int64


def frames_bin_dtype(f: np.ndarray, bin_ms: int):
    """:func:`bin_dtype` of the frames ``f`` themselves: uint8 frames are looked at for their
    largest count (a 0/1 spike raster's bins then fit uint8)."""
    return bin_dtype(f.dtype, bin_ms, int(f.max()) if f.dtype == np.uint8 and f.size else None)


def bins_of(f: np.ndarray, pending: np.ndarray, pending_ms: int, bin_ms: int
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """Complete bins (k, inputs) from a partial bin (``pending``, ``pending_ms``) and the
    frames ``f`` (ms, inputs); returns them with the new partial bin. The bins come in the
    integer type of :func:`bin_dtype`: uint8 ones (0/1 spike frames) are already clipped at
    255, the others are clipped by the caller."""
    total = pending_ms + f.shape[0]
    nb = total // bin_ms
    if nb == 0:
        return (np.zeros((0, f.shape[1]), np.int64), pending + f.sum(axis=0, dtype=np.int64),
                total)
    kind = frames_bin_dtype(f, bin_ms)
    first = bin_ms - pending_ms
    bins = np.empty((nb, f.shape[1]), kind)
    # the partial bin's frames came earlier, in any type: clipped before it is narrowed
    bins[0] = np.minimum(pending + f[:first].sum(axis=0, dtype=np.int64), 255)
    if nb > 1:
        bins[1:] = f[first:first + (nb - 1) * bin_ms].reshape(nb - 1, bin_ms, -1).sum(
            axis=1, dtype=kind)
    used = first + (nb - 1) * bin_ms
    return bins, f[used:].sum(axis=0, dtype=np.int64), f.shape[0] - used
