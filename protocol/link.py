"""The host's link to a board: frames out and in, request ids, resends on silence, device
events queued (:class:`Link`); :class:`tessera.protocol.client.Device` is the board's API on top
of it.

Each request gets a fresh id; when no answer with that id arrives within ``timeout`` the same
frame is sent again (the device executes an id at most once), up to ``retries`` times.
Device-initiated events that arrive meanwhile are queued in ``events``.
"""

from __future__ import annotations

import itertools
import os
import time

from ..runtime.errors import InputError
from .framing import FrameDecoder, encode_frame
from .messages import ANSWERS, REQUESTS, VERSION, DeviceError, LinkError, decode, encode
from .window import LinkQuality

__all__ = ["Link"]


class Link:
    def __init__(self, port, timeout: float = 2.0, retries: int = 5):
        self.port = port
        self.timeout, self.retries = timeout, retries
        self.decoder = FrameDecoder()
        # ids start anywhere in 32 bits: two hosts (or two runs) seldom share one, and a device
        # tells a shared id from a retry by the request's body anyway (PROTOCOL.md)
        self.ids = itertools.count(int.from_bytes(os.urandom(4), "little"))
        self.events: list[dict] = []
        self.info_cache: dict | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.retried = 0
        self.answers: dict[int, dict] = {}      # answers that came, by id, not yet taken
        self.version = VERSION                  # the negotiated protocol version (hello)
        self.seq = 0                            # version 3+: the stream's offset (units)
        self.link = LinkQuality()               # what the recent attempts tell of the link

    @classmethod
    def open(cls, url: str, baudrate: int = 921600, timeout: float = 2.0, retries: int = 5
             ) -> "Link":
        import serial

        try:                   # exclusive: a second host on the same port is refused
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, exclusive=True)
        except (serial.SerialException, ValueError, OSError) as exc:
            hint = ""
            if url.startswith("sim://") and "not known" in str(exc):
                hint = (" (sim:// URLs are served by the simulator: import tessera.firmware_sim "
                        "first, which registers them with pyserial)")
            if "exclusively lock" in str(exc):
                raise InputError("the port is in use by another program (one host per device): "
                                 "close it there first", source=url) from None
            raise InputError(f"cannot open the device link: {exc}{hint}", source=url) from None
        return cls(port, timeout, retries)

    def close(self) -> None:
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ requests
    def new_id(self) -> int:
        return next(self.ids) % (2**32 - 1) + 1

    def request(self, msg: dict, rid: int | None = None) -> dict:
        """Send ``msg`` and wait for its answer, resending it (same id) on silence; ``rid``:
        reuse an id, so that the device answers from its cache if it executed it already."""
        rid = rid or self.new_id()
        frame = encode_frame(encode({**msg, "id": rid}, self.version))
        if msg["t"] == "reset_state" or (msg["t"] == "set_param" and msg.get("name") == "detect"):
            self.seq = 0                        # the device counts the stream from 0 again
        nbytes = len(frame) + self.link.answer_bytes(self.version)
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.write(frame, msg["t"])
            sent = time.monotonic()
            deadline = sent + self.timeout
            while time.monotonic() < deadline:
                reply = self.answers.pop(rid, None)
                if reply is None:
                    self.pump()
                    reply = self.answers.pop(rid, None)
                if reply is not None:
                    self.link.attempt(nbytes, True, time.monotonic() - sent if not attempt
                                      else None)
                    if reply.get("t") == "error":
                        raise DeviceError(reply)
                    if msg["t"] == "end_of_utterance" and "windows" in reply:
                        self.seq = 0                # a detection stream ended: the next starts at 0
                    return reply
            self.link.attempt(nbytes, False)
        raise LinkError(f"no answer to {msg['t']} after {self.retries + 1} tries")

    def pump(self) -> None:
        """Read what the link has: events to ``events``, answers kept by id."""
        try:
            data = self.port.read(max(1, self.port.in_waiting or 1))
            wait = getattr(self.port, "timeout", None)
            if data and wait:                # then whatever else is there, without waiting
                self.port.timeout = 0       # (a socket's in_waiting says 1, not how many)
                try:
                    data += self.port.read(65536)
                finally:
                    self.port.timeout = wait
        except Exception as exc:                             # noqa: BLE001 (serial, OS)
            raise LinkError(f"the device link failed (did the device go away?): "
                            f"{exc or type(exc).__name__}") from None
        self.bytes_received += len(data)
        for body in self.decoder.feed(data):
            try:
                msg = decode(body)
            except Exception:                                # noqa: BLE001 - skip a bad answer
                continue
            if msg.get("t") == "event":
                self.events.append(msg)
            elif msg.get("t") == "error" and msg.get("name") == "LINK_BUSY":
                raise DeviceError(msg)                # another host holds the device
            elif msg.get("t") in REQUESTS and (msg["t"] not in ANSWERS or "versions" in msg):
                # our own bytes came back
                raise InputError("the link echoes what the host sends (a loop:// port or a "
                                 "looped-back cable?): no device answers there")
            elif msg.get("id"):
                self.answers[msg["id"]] = msg
                while len(self.answers) > 64:              # answers nobody waits for any more
                    self.answers.pop(next(iter(self.answers)))

    def write(self, frame: bytes, what: str) -> None:
        try:
            self.port.write(frame)
        except Exception as exc:                             # noqa: BLE001 (serial, OS)
            raise LinkError(f"the device link failed while sending {what}: "
                            f"{exc or type(exc).__name__}") from None
        self.bytes_sent += len(frame)

    def drain(self, on_event=None) -> None:
        """Hand the queued events to ``on_event`` (if given)."""
        if on_event is not None:
            while self.events:
                on_event(self.events.pop(0))
