"""tessera.firmware_sim: the simulated board behind the protocol (numpy, msgpack, pyserial only).

The package ships the board's factory model, ``default-4bit.tsr``: the committed default model
(``models/default``) exported at 4-bit weights with its calibrated "none of these" rule.
"""

from __future__ import annotations

import os

__all__ = ["factory_model"]


def factory_model() -> str:
    """Path of the factory model file inside the installed package."""
    from importlib.resources import files

    from ..runtime.errors import InputError

    path = os.fspath(files(__name__) / "default-4bit.tsr")
    if not os.path.exists(path):
        raise InputError("the package's factory model default-4bit.tsr is missing (a broken "
                         "install?)", source=path)
    return path
