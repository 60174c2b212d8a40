"""pyserial URL handler ``sim://``: the firmware simulator in-process, as a serial port.

``serial.serial_for_url("sim://?model=m.tsr&flash=f.img&drop=0.01&corrupt=0.01&seed=1&baud=
921600")`` (every parameter optional) gives a port whose other end is a
:class:`~tessera.firmware_sim.device.Firmware`: what the host writes is fed to it, its answers
are what the host reads. No socket, no thread, no process: the tests' default transport. Without
``flash`` the simulated device lives as long as the port object: a new ``sim://`` port (each
``tessera device`` command opens one) starts from an empty readout; with ``flash=F`` it boots from
(and ``save`` writes) the image F. A device whose flash holds no model boots ``model`` (default:
the package's factory model).
Importing :mod:`tessera.firmware_sim` registers this handler with pyserial
(:func:`~tessera.firmware_sim.register_sim_urls`); then ``Device.open("sim://")`` works.
"""

from __future__ import annotations

import time
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from ..runtime.errors import InputError
from . import factory_model
from .boot import boot_firmware
from .sim import LinkFaults

__all__ = ["Serial"]


class Serial(SerialBase):
    def open(self):
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        if self.is_open:
            raise SerialException("port already open")
        opts = self._parse(self.portstr)
        try:
            num = {k: (float if k in ("drop", "corrupt") else int)(opts.get(k, d))
                   for k, d in (("ram", 524288), ("seed", 0), ("drop", 0), ("corrupt", 0),
                                ("baud", 0))}
        except ValueError as exc:
            raise SerialException(f"sim://: {exc}") from None
        try:                                          # the factory model unless one is named
            self.fw, _ = boot_firmware(opts.get("model") or factory_model(), opts.get("flash"),
                                       num["ram"], num["seed"])
        except InputError as exc:
            raise SerialException(f"sim://: {exc}") from None
        try:
            self.faults = LinkFaults(drop=num["drop"], corrupt=num["corrupt"], baud=num["baud"],
                                     seed=num["seed"])
        except ValueError as exc:
            raise SerialException(f"sim://: {exc}") from None
        self.rx = bytearray()
        self.is_open = True

    @staticmethod
    def _parse(url: str) -> dict:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sim":
            raise SerialException(f"expected a sim:// URL, got {url!r}")
        known = {"model", "flash", "drop", "corrupt", "seed", "baud", "ram"}
        opts = {}
        for key, values in urllib.parse.parse_qs(parts.query).items():
            if key not in known:
                raise SerialException(f"sim://: unknown parameter {key!r} (known: "
                                      f"{', '.join(sorted(known))})")
            opts[key] = values[0]
        return opts

    def close(self):
        self.is_open = False

    def _reconfigure_port(self):
        pass

    @property
    def in_waiting(self):
        if not self.is_open:
            raise PortNotOpenError()
        return len(self.rx)

    def write(self, data):
        if not self.is_open:
            raise PortNotOpenError()
        data = bytes(data)
        self.rx += self.faults.exchange(self.fw, data)
        return len(data)

    def read(self, size=1):
        if not self.is_open:
            raise PortNotOpenError()
        if not self.rx and self._timeout:
            time.sleep(min(self._timeout, 0.01))     # nothing will arrive: the device answered
        out = bytes(self.rx[:size])
        del self.rx[:size]
        return out

    def reset_input_buffer(self):
        self.rx.clear()

    def reset_output_buffer(self):
        pass
