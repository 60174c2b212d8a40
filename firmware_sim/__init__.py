"""tessera.firmware_sim: the simulated board behind the protocol (numpy, msgpack, pyserial only).

The package ships the board's factory model, ``default-4bit.tsr``: the committed default model
(``models/default``) exported at 4-bit weights with its calibrated "none of these" rule.
"""

from __future__ import annotations

import os

__all__ = ["factory_model", "register_sim_urls"]


def register_sim_urls() -> None:
    """Teach pyserial the ``sim://`` URLs (:mod:`.protocol_sim`: this simulator in-process).

    Called when this package is imported, so ``import tessera.firmware_sim`` is all a host
    program needs before ``Device.open("sim://...")``; the protocol package itself knows nothing
    of the simulator."""
    import serial

    if __name__ not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(__name__)


def factory_model() -> str:
    """Path of the factory model file inside the installed package."""
    from importlib.resources import files

    from ..runtime.errors import InputError

    path = os.fspath(files(__name__) / "default-4bit.tsr")
    if not os.path.exists(path):
        raise InputError("the package's factory model default-4bit.tsr is missing (a broken "
                         "install?)", source=path)
    return path


register_sim_urls()
