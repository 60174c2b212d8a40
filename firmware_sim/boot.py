"""One boot path for every simulated board (the socket and pty simulator, ``sim://`` ports, the
benches): a :class:`~tessera.firmware_sim.device.Firmware` from its flash image, else with a model
file installed; and :func:`pty_sim`, ``tessera sim --pty`` in a child process."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from ..protocol.messages import ProtocolError
from ..runtime.errors import InputError
from .device import Firmware

__all__ = ["boot_firmware", "pty_sim"]


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


@contextlib.contextmanager
def pty_sim(flash: str = "", process: bool = False):
    """``tessera sim --pty`` in a child process, flash image ``flash`` ("" for none); yields the
    pseudo-terminal's path (and, with ``process``, the child's Popen) and kills the simulator
    afterwards."""
    p = subprocess.Popen([sys.executable, "-m", "tessera.cli", "sim", "--pty", "--flash", flash],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = p.stdout.readline().strip()
        yield (port, p) if process else port
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
