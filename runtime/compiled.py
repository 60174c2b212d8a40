"""An optional compiled backend of the streaming chip (numba, when installed): the same integer
arithmetic as :func:`tessera.runtime.core.bins_of`, :func:`~tessera.runtime.core.core_step`, the
segment sums, the activity counters and :func:`tessera.runtime.readout.normalize_features`, bit
for bit, one stream at a time. A chunk of frames is three calls: :func:`bins` (binning and the
input counters), one float matrix product for x W_in (numpy's BLAS: exact, see
:func:`~tessera.runtime.core.core_tables`), :func:`core` (the steps, the segment sums and the spike
counters); :func:`features` ends a window. The front-end (:mod:`tessera.runtime.frontend`) has two
more: :func:`fe_levels` (the filter bank's modes and the levels, between the BLAS input products)
and :func:`fe_spikes` (adaptation and integrate-and-fire).

:func:`steps` is None when numba is not there (or ``TESSERA_BACKEND=numpy``); the numpy path
stays the reference, and the parity tests run both."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

__all__ = ["steps", "backend", "Kernels", "available", "use", "NORMALIZE"]

#: the readout's normalizations as :func:`features` numbers them
NORMALIZE = {"none": 0, "l1": 1, "l2": 2}


class Kernels(NamedTuple):
    bins: object                 # frames -> bins x, the input counters
    core: object                 # the core's steps from the input products x W_in
    features: object             # a window's accumulators -> phi
    fe_levels: object            # the front-end's modes and levels from its input products
    fe_spikes: object            # the front-end's adaptation and integrate-and-fire


def bins(frames, pending, pending_ms, bin_ms, fanin, xb, x):  # pragma: no cover - compiled
    """Frames (ms, inputs) after a partial bin (``pending`` counts of ``pending_ms`` frames,
    updated in place) into the bins ``x`` (k, inputs), x = min(255, count), as many as ``x``
    holds (the complete bins past them are dropped); ``xb`` (inputs,) is scratch in the
    integer type the bins are summed in (:func:`~tessera.runtime.core.bin_dtype`). Returns
    (the new pending_ms, input events, input synaptic operations)."""
    ms, ch = frames.shape
    k = x.shape[0]
    nb = (pending_ms + ms) // bin_ms
    events = 0
    synops = 0
    pos = 0
    first = np.empty(ch, np.int64)               # the first bin holds the partial one
    for b in range(min(nb, k)):
        take = bin_ms - pending_ms if b == 0 else bin_ms
        if b == 0:
            for c in range(ch):
                first[c] = pending[c]
            for f in range(take):
                for c in range(ch):
                    first[c] += frames[f, c]
            for c in range(ch):
                xc = min(first[c], 255)
                x[0, c] = xc
                events += xc
                synops += xc * fanin[c]
        else:
            for c in range(ch):
                xb[c] = 0
            for f in range(pos, pos + take):
                for c in range(ch):
                    xb[c] += frames[f, c]
            for c in range(ch):
                xc = min(xb[c], 255)
                x[b, c] = xc
                events += xc
                synops += xc * fanin[c]
        pos += take
    used = 0 if nb == 0 else nb * bin_ms - pending_ms
    if nb > 0:                                   # the new partial bin
        for c in range(ch):
            pending[c] = 0
    for f in range(used, ms):
        for c in range(ch):
            pending[c] += frames[f, c]
    return pending_ms + ms - nb * bin_ms, events, synops


def core(cur, in_shift, bias, vr, z, w_rec, rec_shift, decay, threshold, v_lo, v_hi,
         spike, r_hi, clip_r, segs, acc, acc_hi, clip_acc, spikes, fanout, fanout_hops,
         routing):  # pragma: no cover - compiled
    """The core's steps for the input products ``cur`` (k, n) (x W_in >> in_shift, exact
    floats): the state ``vr``, ``z``, ``acc`` and the counters ``spikes`` (n,) and
    ``routing`` (hops,) updated in place. Returns (the spikes (k, n) uint8, their number,
    the recurrent synaptic operations)."""
    k, n = cur.shape
    raster = np.zeros((k, n), np.uint8)
    rec = np.empty(n, np.int64)
    fired = np.empty(n, np.int64)                # the neurons that spiked at the last step
    nf = 0
    for j in range(n):
        if z[j]:
            fired[nf] = j
            nf += 1
    total = 0
    synops = 0
    for i in range(k):
        for j in range(2 * n):                   # v * leak_mult >> 16, r * trace_mult >> 16
            vr[j] = (vr[j] * decay[j]) >> 16
        for j in range(n):
            vr[j] += (np.int64(cur[i, j]) << in_shift) + bias[j]
        if nf:                                   # the rows of the neurons that spiked
            for j in range(n):
                rec[j] = 0
            for q in range(nf):
                src = fired[q]
                for j in range(n):
                    rec[j] += w_rec[src, j]
                vr[src] -= threshold             # the reset
            for j in range(n):
                vr[j] += rec[j] << rec_shift
        s = segs[i]
        for j in range(n):                       # no branch: the loop vectorizes
            v = min(max(vr[j], v_lo), v_hi)
            vr[j] = v
            zj = np.int64(v >= threshold)
            r = vr[n + j] + zj * spike
            if clip_r:
                r = min(r, r_hi)
            vr[n + j] = r
            raster[i, j] = zj
            a = acc[s, j] + r
            if clip_acc:
                a = min(max(a, -acc_hi - 1), acc_hi)
            acc[s, j] = a
        nf = 0
        for j in range(n):
            if raster[i, j]:
                fired[nf] = j
                nf += 1
        for q in range(nf):                      # the counters of the step's spikes
            j = fired[q]
            spikes[j] += 1
            synops += fanout[j]
            for h in range(routing.shape[0]):
                routing[h] += fanout_hops[j, h]
        total += nf
    if k:
        for j in range(n):
            z[j] = raster[k - 1, j]
    return raster, total, synops


def features(acc, lengths, feature_bits, mode):  # pragma: no cover - compiled
    """phi of a window: f = acc // len(segment), normalized (``mode`` 0 none, 1 l1, 2 l2) as
    :func:`~tessera.runtime.readout.normalize_features`; None where the l2 sum of squares
    wraps (numpy's path then raises its error)."""
    segments, n = acc.shape
    f = np.empty(segments * n, np.int64)
    for s in range(segments):
        for j in range(n):
            f[s * n + j] = acc[s, j] // lengths[s]
    if mode == 0:
        return f
    norm = 0
    for i in range(f.size):
        norm += f[i] * f[i] if mode == 2 else f[i]
    if mode == 2:
        if norm < 0:
            return None
        r = np.int64(np.sqrt(np.float64(norm)))  # then corrected to the exact isqrt
        while r * r > norm:
            r -= 1
        while r < 3037000499 and (r + 1) * (r + 1) <= norm:
            r += 1
        norm = r
    norm = max(norm, 1)
    for i in range(f.size):
        f[i] = (f[i] << feature_bits) // norm
    return f


def fe_levels(proj, modes, lam, trans, mids, tb_scale, out_scale, level_bits, level,
              e2):  # pragma: no cover - compiled
    """The front-end's filter bank from its input products, as
    :func:`tessera.runtime.frontend._filter_superblocks` and
    :func:`~tessera.runtime.frontend.channel_levels`, in a planar layout (re and im apart,
    modes k-major: index k*C + c). ``proj`` (n, 2, K*C) = x Bq and ``mids`` (G-1, n, 2, C) =
    x Wq_j (not yet floored); ``modes`` (n+1, 2, K*C) holds the start state in row 0 and gets
    the state after each superblock; ``lam`` (2, K*C) = Lq_G 2^-TB; ``trans`` (G-1, 2, K*C) =
    Lq_j; ``level`` (n*G, C) int32 gets MLOG2(|y|^2) step-major; ``e2`` (C,) float64 scratch.
    Every value is an integer below 2^53 (the tables' design checks it), so the sums are exact
    in any order: the same levels as numpy's, bit for bit."""
    n = proj.shape[0]
    G1, C = mids.shape[0], mids.shape[3]
    KC = proj.shape[2]
    K = KC // C
    G = G1 + 1
    ar = np.empty(C)
    ai = np.empty(C)
    bits = e2.view(np.int64)
    sh = 52 - level_bits
    base = 1023 << level_bits
    for m in range(n):
        for q in range(KC):                      # the state update, then the steps inside
            sr = modes[m, 0, q]
            si = modes[m, 1, q]
            modes[m + 1, 0, q] = np.floor(lam[0, q] * sr - lam[1, q] * si) \
                + np.floor(proj[m, 0, q])
            modes[m + 1, 1, q] = np.floor(lam[0, q] * si + lam[1, q] * sr) \
                + np.floor(proj[m, 1, q])
        for j in range(G):
            for c in range(C):
                ar[c] = 0.0
                ai[c] = 0.0
            if j < G1:                           # sum_k Lq_jk sigma_k(0)
                for k in range(K):
                    for c in range(C):
                        q = k * C + c
                        sr = modes[m, 0, q]
                        si = modes[m, 1, q]
                        ar[c] += sr * trans[j, 0, q] - si * trans[j, 1, q]
                        ai[c] += sr * trans[j, 1, q] + si * trans[j, 0, q]
                for c in range(C):
                    yr = np.floor((np.floor(ar[c] * tb_scale) + np.floor(mids[j, m, 0, c]))
                                  * out_scale)
                    yi = np.floor((np.floor(ai[c] * tb_scale) + np.floor(mids[j, m, 1, c]))
                                  * out_scale)
                    e2[c] = yr * yr + yi * yi
            else:                                # y_G = sum_k sigma_k(N)
                for k in range(K):
                    for c in range(C):
                        ar[c] += modes[m + 1, 0, k * C + c]
                        ai[c] += modes[m + 1, 1, k * C + c]
                for c in range(C):
                    yr = np.floor(ar[c] * out_scale)
                    yi = np.floor(ai[c] * out_scale)
                    e2[c] = yr * yr + yi * yi
            t = m * G + j
            for c in range(C):                   # Mitchell's log2 from the float's bits
                level[t, c] = (bits[c] >> sh) - base


def fe_spikes(level, floor, history, voltage, adapt_num, adapt_shift, theta_bits,
              spikes):  # pragma: no cover - compiled
    """Adaptation and integrate-and-fire over ``level`` (steps, C), one step at a time, as
    :func:`tessera.runtime.frontend.spikes_from_levels` computes it with its scans: the same
    integers. ``history`` (W, C) int64, oldest first, and ``voltage`` (C,) int64 are updated
    in place; ``spikes`` (steps, C) uint8 gets the spikes."""
    steps, C = level.shape
    W = history.shape[0]
    ring = history.copy()
    total = np.zeros(C, np.int64)
    for i in range(W):
        for c in range(C):
            total[c] += ring[i, c]
    mask = (np.int64(1) << theta_bits) - 1
    for c in range(C):                           # the part below the threshold (floor mod)
        voltage[c] &= mask
    for t in range(steps):
        p = t % W
        for c in range(C):
            a = max(np.int64(level[t, c]) - floor, 0)
            d = min(max(a - ((total[c] * adapt_num) >> adapt_shift), 0), mask)
            v = voltage[c] + d
            f = v >> theta_bits
            spikes[t, c] = f
            voltage[c] = v - (f << theta_bits)
            total[c] += a - ring[p, c]
            ring[p, c] = a
    for i in range(W):
        for c in range(C):
            history[i, c] = ring[(steps + i) % W, c]


def _build():
    if os.environ.get("TESSERA_BACKEND", "").lower() == "numpy":
        return None
    if _COMPILED:                                    # built once per process
        return _COMPILED[0]
    try:
        import numba
    except Exception:                                # noqa: BLE001 - any reason: numpy path
        return None

    def jit(f):
        try:                                         # cached on disk where it can be
            return numba.njit(cache=True, nogil=True)(f)
        except Exception:                            # noqa: BLE001 - no cache directory
            return numba.njit(nogil=True)(f)

    _COMPILED.append(Kernels(jit(bins), jit(core), jit(features), jit(fe_levels),
                           jit(fe_spikes)))
    return _COMPILED[0]


_COMPILED: list = []
_RUN = None
_BUILT = False


def steps() -> Kernels | None:
    """The compiled kernels, or None (numba missing, or ``TESSERA_BACKEND=numpy``)."""
    global _RUN, _BUILT
    if not _BUILT:
        _RUN, _BUILT = _build(), True
    return _RUN


def backend() -> str:
    return "numba" if steps() is not None else "numpy"


def available() -> list[str]:
    """The backends this machine can run: numpy, and numba where it imports."""
    with use("numba"):                               # use() puts the choice back
        ok = steps() is not None
    return ["numpy", "numba"] if ok else ["numpy"]


@contextmanager
def use(name: str):
    """Run the streaming chip on backend ``name`` ("numpy" or "numba") inside the block (for
    benchmarks and tests that compare them); numba falls back to numpy when it does not import."""
    global _RUN, _BUILT
    saved, env = (_RUN, _BUILT), os.environ.pop("TESSERA_BACKEND", None)
    try:
        _RUN, _BUILT = (None, True) if name == "numpy" else (None, False)
        steps()
        yield
    finally:
        (_RUN, _BUILT) = saved
        if env is not None:
            os.environ["TESSERA_BACKEND"] = env
