"""One boot path for every simulated board (the socket and pty simulator, ``sim://`` ports, the
benches): a :class:`~tessera.firmware_sim.device.Firmware` from its flash image, else with a model
file installed; and :func:`pty_sim`, ``tessera sim --pty`` in a child process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile

from ..protocol.messages import ProtocolError
from ..runtime.errors import InputError
from .device import Firmware

__all__ = ["boot_firmware", "pty_sim", "child_python"]


def boot_firmware(model: str | None = None, flash: str | None = None,
                  ram: int = 512 * 1024, seed: int = 0) -> tuple[Firmware, str | None]:
    """A board booted from ``flash`` (None or "": no flash image); when that holds no model,
    ``model`` is installed (a flash image with a model wins: it holds the person's words).
    Returns the board and where its model came from (``flash:F``, the model's path, or None)."""
    fw = Firmware(flash_path=flash or None, ram_budget=ram, seed=seed)
    if fw.chip is not None:
        return fw, f"flash:{flash}"
    if not model:
        return fw, None
    try:
        with open(model, "rb") as fh:
            blob = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read the model: {exc.strerror}", source=model) from None
    try:
        fw.install(blob)
    except ProtocolError as exc:
        raise InputError(f"model rejected: {exc}", source=model) from None
    return fw, model


def child_python(*args: str) -> tuple[list[str], str]:
    """The command line and working folder that run this installation's Python on ``args`` in a
    child process: the folder is the one the ``tessera`` package lives in, so that a folder named
    ``tessera`` in the caller's working folder never shadows the installed package."""
    import tessera

    return [sys.executable, *args], os.path.dirname(os.path.dirname(os.path.abspath(
        tessera.__file__)))


@contextlib.contextmanager
def pty_sim(flash: str = "", process: bool = False):
    """``tessera sim --pty`` in a child process, flash image ``flash`` ("" for none); yields the
    pseudo-terminal's path (and, with ``process``, the child's Popen) and kills the simulator
    afterwards. A simulator that does not start raises an error holding what it said."""
    cmd, cwd = child_python("-m", "tessera.cli", "sim", "--pty", "--flash",
                            os.path.abspath(flash) if flash else "")
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            port = p.stdout.readline().strip()
            if not port:
                p.wait(timeout=10)
                err.seek(0)
                said = " ".join(err.read().strip().splitlines()[-3:])[-400:]
                raise InputError("the firmware simulator did not start on a pseudo-terminal"
                                 + (f": {said}" if said else f" (exit status {p.returncode})"))
            yield (port, p) if process else port
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
