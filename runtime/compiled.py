"""An optional compiled backend of the core's steps (numba, when installed): the same integer
arithmetic as :func:`tessera.runtime.core.core_step` and the segment sums, bit for bit, one
stream at a time. :func:`steps` is None when numba is not there (or ``TESSERA_BACKEND=numpy``);
the numpy path stays the reference, and the parity tests run both."""

from __future__ import annotations

import os

__all__ = ["steps", "backend"]


def _build():
    if os.environ.get("TESSERA_BACKEND", "").lower() == "numpy":
        return None
    try:
        import numba
        import numpy as np
    except Exception:                                # noqa: BLE001 - any reason: numpy path
        return None

    def run(current, vr, z, w_reset, decay, threshold, v_lo, v_hi, spike, r_hi, clip_r,
            segs, acc, acc_hi, clip_acc):               # pragma: no cover - compiled
        k, n = current.shape
        raster = np.zeros((k, n), np.uint8)
        for i in range(k):
            for j in range(2 * n):                   # v * leak_mult >> 16, r * trace_mult >> 16
                vr[j] = (vr[j] * decay[j]) >> 16
            for j in range(n):
                vr[j] += current[i, j]
            for src in range(n):                     # the rows of the neurons that spiked
                if z[src]:
                    for j in range(n):
                        vr[j] += w_reset[src, j]
            s = segs[i]
            for j in range(n):
                v = min(max(vr[j], v_lo), v_hi)
                vr[j] = v
                fired = v >= threshold
                z[j] = fired
                r = vr[n + j] + spike if fired else vr[n + j]
                if clip_r:
                    r = min(r, r_hi)
                vr[n + j] = r
                raster[i, j] = 1 if fired else 0
                a = acc[s, j] + r
                if clip_acc:
                    a = min(max(a, -acc_hi - 1), acc_hi)
                acc[s, j] = a
        return raster

    try:                                             # cached on disk where it can be
        return numba.njit(cache=True, nogil=True)(run)
    except Exception:                                # noqa: BLE001 - no cache directory
        return numba.njit(nogil=True)(run)


_RUN = None
_BUILT = False


def steps():
    """The compiled step loop, or None (numba missing, or ``TESSERA_BACKEND=numpy``)."""
    global _RUN, _BUILT
    if not _BUILT:
        _RUN, _BUILT = _build(), True
    return _RUN


def backend() -> str:
    return "numba" if steps() is not None else "numpy"
