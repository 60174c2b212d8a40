"""Host client: the same code drives the simulator and a serial-attached board.

``Device.open(url)`` takes any pyserial URL (``/dev/ttyUSB0`` with ``baudrate``, ``loop://``,
``socket://127.0.0.1:7700``, the pty path ``tessera sim --pty`` prints, or ``sim://?model=m.tsr``
for the simulator in-process once :mod:`tessera.firmware_sim` is imported, see
:mod:`tessera.firmware_sim.protocol_sim`). Each request gets a
fresh id; when no answer with that id arrives within ``timeout`` the same frame is sent again (the
device executes an id at most once), up to ``retries`` times. Device-initiated events that
arrive meanwhile are queued in ``events``.

    >>> dev = Device.open("socket://127.0.0.1:7700")          # doctest: +SKIP
    >>> dev.load("model.tsr"); dev.enroll("lights", "lights.wav")   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
import time
import zlib

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError, TesseraError
from .framing import FrameDecoder, encode_frame
from .messages import ANSWERS, REQUESTS, VERSION, decode, encode
from .spikes import encode_spikes

__all__ = ["Device", "DeviceError", "LinkError"]


class DeviceError(TesseraError):
    """The device answered with an ``error`` message."""

    def __init__(self, msg: dict):
        super().__init__(f"device error {msg.get('code')} {msg.get('name')}: {msg.get('message')}")
        self.code, self.name, self.reply = msg.get("code"), msg.get("name"), msg


class LinkError(TesseraError):
    """No answer from the device after all retries."""


class Device:
    def __init__(self, port, timeout: float = 2.0, retries: int = 5):
        self.port = port
        self.timeout, self.retries = timeout, retries
        self.decoder = FrameDecoder()
        self.ids = itertools.count(int.from_bytes(os.urandom(2), "little") * 65536 + 1)
        self.events: list[dict] = []
        self.info_cache: dict | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.retried = 0
        self._answers: dict[int, dict] = {}

    @classmethod
    def open(cls, url: str, baudrate: int = 921600, timeout: float = 2.0, retries: int = 5
             ) -> Device:
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
        dev = cls(port, timeout, retries)
        dev.info()
        return dev

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
        frame = encode_frame(encode({**msg, "id": rid}))
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            try:
                self.port.write(frame)
            except Exception as exc:                         # noqa: BLE001 (serial, OS)
                raise LinkError(f"the device link failed while sending {msg['t']}: "
                                f"{exc or type(exc).__name__}") from None
            self.bytes_sent += len(frame)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                reply = self._answers.pop(rid, None)
                if reply is None:
                    self._pump()
                    reply = self._answers.pop(rid, None)
                if reply is not None:
                    if reply.get("t") == "error":
                        raise DeviceError(reply)
                    return reply
        raise LinkError(f"no answer to {msg['t']} after {self.retries + 1} tries")

    def _pump(self) -> None:
        """Read what the link has: events to ``events``, answers kept by id."""
        try:
            data = self.port.read(max(1, self.port.in_waiting or 1))
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
                self._answers[msg["id"]] = msg
                while len(self._answers) > 64:              # answers nobody waits for any more
                    self._answers.pop(next(iter(self._answers)))

    def info(self) -> dict:
        self.info_cache = self.request({"t": "hello", "versions": [VERSION]})
        return self.info_cache

    def ping(self, payload: bytes = b"") -> float:
        t0 = time.perf_counter()
        self.request({"t": "ping", "payload": payload})
        return time.perf_counter() - t0

    def load(self, model: str | bytes) -> dict:
        if isinstance(model, bytes):
            blob = model
        else:
            try:
                with open(model, "rb") as fh:
                    blob = fh.read()
            except OSError as exc:
                raise InputError(f"cannot read the model file: {exc.strerror}",
                                 source=str(model)) from None
        r = self.request({"t": "load_begin", "size": len(blob), "crc": zlib.crc32(blob)})
        chunk = int(r.get("chunk", 2048))
        for off in range(0, len(blob), chunk):
            part = blob[off:off + chunk]
            self.request({"t": "load_chunk", "offset": off, "data": part,
                          "crc": zlib.crc32(part)})
        out = self.request({"t": "load_commit"})
        self.info()
        return out

    def stream_spikes(self, frames: np.ndarray, chunk_ms: int = 100, realtime: bool = False,
                      on_event=None) -> None:
        t0 = time.monotonic()
        for i in range(0, frames.shape[0], chunk_ms):
            if realtime:
                time.sleep(max(0.0, t0 + i / 1000.0 - time.monotonic()))
            part = frames[i:i + chunk_ms]
            enc, data = encode_spikes(part)
            self.request({"t": "stream_spikes", "encoding": enc, "steps": int(part.shape[0]),
                          "data": data})
            self.drain(on_event)

    def stream_pcm(self, pcm: np.ndarray, chunk: int = 1600, realtime: bool = False,
                   on_event=None) -> None:
        """16 kHz int16 audio in ``chunk``-sample messages (100 ms); ``realtime`` paces them
        as a microphone would. ``on_event(event)`` is called for each device event as soon as
        it arrives (else events collect in ``events``)."""
        pcm = np.asarray(pcm, "<i2")
        t0 = time.monotonic()
        for i in range(0, pcm.size, chunk):
            if realtime:
                time.sleep(max(0.0, t0 + i / float(SAMPLE_RATE) - time.monotonic()))
            self.request({"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": pcm[i:i + chunk].tobytes()})
            self.drain(on_event)

    def drain(self, on_event=None) -> None:
        """Hand the queued events to ``on_event`` (if given)."""
        if on_event is not None:
            while self.events:
                on_event(self.events.pop(0))

    def stream_wav(self, path: str) -> None:
        from ..runtime.audio import load_audio

        self.stream_pcm(load_audio(path))

    def end_utterance(self) -> dict:
        return self.request({"t": "end_of_utterance"})

    def infer(self, wav: str | None = None) -> dict:
        """The device's answer for a WAV file (or for what was streamed already)."""
        if wav is None:
            return self.end_utterance()
        from ..runtime.audio import load_audio

        return self.infer_pcm(load_audio(wav))

    def infer_pcm(self, pcm: np.ndarray) -> dict:
        """One utterance of 16 kHz int16 audio -> the device's answer."""
        self.request({"t": "reset_state"})
        self.stream_pcm(pcm)
        return self.end_utterance()

    def enroll(self, label: str, *wavs: str) -> dict:
        """Teach ``label`` from one or more recordings (one readout step over all of them)."""
        from ..runtime.audio import load_audio

        return self.enroll_pcm(label, *(load_audio(w) for w in wavs))

    def enroll_pcm(self, label: str, *pcms: np.ndarray) -> dict:
        """Teach ``label`` from 16 kHz int16 utterances (none: what was streamed already).

        Exactly once, even across a reboot of the device: the request keeps its id through
        retries; if the device rebooted before it enrolled (it answers NO_UTTERANCE, its boot
        count moved), the shots are streamed again and the same id is sent again (a device that
        had enrolled and saved it answers from flash instead)."""
        rid = self.new_id()
        for attempt in range(2):
            boots = self.request({"t": "hello", "versions": [VERSION]}).get("boots")
            if pcms:
                self.request({"t": "reset_state"})
                for pcm in pcms:
                    self.stream_pcm(pcm)
                    self.request({"t": "end_of_utterance", "shot": True})   # keep as a shot
            try:
                return self.request({"t": "enroll", "label": label,
                                     "shots": max(1, len(pcms))}, rid=rid)
            except DeviceError as exc:
                again = self.request({"t": "hello", "versions": [VERSION]}).get("boots")
                if exc.name != "NO_UTTERANCE" or not pcms or attempt or again == boots:
                    raise
        raise AssertionError("unreachable")

    def classes(self) -> list[str]:
        return self.request({"t": "list_classes"})["classes"]

    def forget(self, label: str) -> dict:
        return self.request({"t": "forget", "label": label})

    def stats(self) -> dict:
        return self.request({"t": "get_stats"})

    def set_param(self, name: str, value) -> dict:
        return self.request({"t": "set_param", "name": name, "value": value})

    def params(self) -> dict:
        return self.request({"t": "get_param"})["params"]

    def save(self) -> dict:
        return self.request({"t": "save"})

    def reboot(self) -> dict:
        r = self.request({"t": "reboot"})
        time.sleep(0.05)
        return r
