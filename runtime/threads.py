"""Pin the BLAS thread count of the running process (numpy's OpenBLAS), without extra packages.

The front-end's exact integer matmuls are small; extra BLAS threads only fight with the worker
processes of the corpus builder, and benchmarks that claim "one core" must use one. Results never
depend on the thread count (every product is exact, see :mod:`tessera.runtime.frontend`).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["set_blas_threads"]

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def set_blas_threads(n: int) -> bool:
    """Set the thread count of every loaded OpenBLAS; True if one was found."""
    import numpy  # noqa: F401  (make sure numpy's BLAS is loaded)

    found = False
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        libs = set()
    for path in libs:
        if not os.path.exists(path):
            continue
        lib = ctypes.CDLL(path)
        for name in _SYMBOLS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                found = True
                break
    return found
