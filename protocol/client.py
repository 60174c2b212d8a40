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

import bisect
import collections
import itertools
import os
import time
import zlib

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError, TesseraError
from .framing import FrameDecoder, encode_frame
from .messages import ANSWERS, REQUESTS, SUPPORTED, VERSION, decode, encode
from .spikes import encode_spikes

__all__ = ["Device", "DeviceError", "LinkError"]


class DeviceError(TesseraError):
    """The device answered with an ``error`` message."""

    def __init__(self, msg: dict):
        super().__init__(f"device error {msg.get('code')} {msg.get('name')}: {msg.get('message')}")
        self.code, self.name, self.reply = msg.get("code"), msg.get("name"), msg


class LinkError(TesseraError):
    """No answer from the device after all retries."""


WINDOW = 256            # version-3/4 stream chunks in flight
DEVICE_AHEAD = 384      # chunks sent from the oldest unanswered one on (a version-3 device
                        # keeps up to 512 chunks waiting for an earlier one ...
AHEAD_BYTES = 196608    # ... and 256 KiB of their payload: the bytes from the oldest on)
CHUNK_OVERHEAD = 74     # bytes a stream chunk's frame adds to its payload (keys, id, CRC, COBS)
ANSWER_BYTES = 49       # bytes of the answer that must come back for a chunk to count
COMPACT_OVERHEAD = 34   # the same for version 4's compact chunks (``s``, ``p``) ...
COMPACT_ANSWER = 27     # ... and their answer ``a``


class Device:
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
        self._answers: dict[int, dict] = {}
        self.version = VERSION                  # the negotiated protocol version (hello)
        self.seq = 0                            # version 3+: the stream's offset (units)
        self.attempts: collections.deque = collections.deque(maxlen=400)   # (bytes, answered)
        self.srtt: float | None = None          # smoothed round trip of answered requests

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
        frame = encode_frame(encode({**msg, "id": rid}, self.version))
        if msg["t"] == "reset_state" or (msg["t"] == "set_param" and msg.get("name") == "detect"):
            self.seq = 0                        # the device counts the stream from 0 again
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self._write(frame, msg["t"])
            sent = time.monotonic()
            deadline = sent + self.timeout
            while time.monotonic() < deadline:
                reply = self._answers.pop(rid, None)
                if reply is None:
                    self._pump()
                    reply = self._answers.pop(rid, None)
                if reply is not None:
                    self._attempt(len(frame), True, time.monotonic() - sent if not attempt
                                  else None)
                    if reply.get("t") == "error":
                        raise DeviceError(reply)
                    if msg["t"] == "end_of_utterance" and "windows" in reply:
                        self.seq = 0                # a detection stream ended: the next starts at 0
                    return reply
            self._attempt(len(frame), False)
        raise LinkError(f"no answer to {msg['t']} after {self.retries + 1} tries")

    # ------------------------------------------------------------------ link quality
    @property
    def _answer_bytes(self) -> int:
        """Bytes of a stream chunk's answer in the negotiated version."""
        return COMPACT_ANSWER if self.version >= 4 else ANSWER_BYTES

    def _attempt(self, nbytes: int, answered: bool, rtt: float | None = None) -> None:
        self.attempts.append((nbytes + self._answer_bytes, answered))
        if rtt is not None:
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt

    def byte_error_rate(self) -> float:
        """Estimated fraction of bytes lost or damaged on the link: the maximum-likelihood rate
        e for the recent requests and stream chunks, each answered with probability
        (1 - e)^bytes (0 while none failed)."""
        if all(a for _, a in self.attempts):
            return 0.0
        n = np.array([b for b, _ in self.attempts], np.float64)
        ok = np.array([a for _, a in self.attempts], bool)
        grid = np.geomspace(1e-5, 0.3, 80)[:, None]
        log_keep = n[None] * np.log1p(-grid)                  # log (1-e)^n
        ll = np.where(ok[None], log_keep, np.log(-np.expm1(log_keep))).sum(axis=1)
        return float(grid[int(np.argmax(ll)), 0])

    def chunk_bytes(self, largest: int) -> int:
        """Payload bytes per stream chunk for this link: the size that carries the most data per
        byte sent, counting the retransmissions that the estimated byte error rate costs
        (everything on a clean link; at 1 % of bytes damaged 64 bytes with version 3, where
        a chunk whose answer is lost goes again, and 48 with version 4, whose answers
        acknowledge every chunk up to the stream's position)."""
        e = self.byte_error_rate()
        if e <= 0.0:
            return largest
        sizes = [n for n in (16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096)
                 if n < largest] + [largest]
        over = COMPACT_OVERHEAD if self.version >= 4 else CHUNK_OVERHEAD + ANSWER_BYTES
        return max(sizes, key=lambda n: n * (1.0 - e) ** (n + over) / (n + over))

    def _pump(self) -> None:
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
                self._answers[msg["id"]] = msg
                while len(self._answers) > 64:              # answers nobody waits for any more
                    self._answers.pop(next(iter(self._answers)))

    def info(self) -> dict:
        self.info_cache = self.request({"t": "hello", "versions": list(SUPPORTED)[::-1]})
        self.version = int(self.info_cache.get("version", 2))
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
        """Spike frames (ms, channels) in messages of at most ``chunk_ms`` ms (fewer on a lossy
        link: :meth:`chunk_bytes`), pipelined and in order with a version-3 or -4 device."""
        if self.version >= 3:
            per_ms = max(1.0, len(encode_spikes(frames)[1]) / max(frames.shape[0], 1))

            def cut(pos: int, end: int) -> dict:
                part = frames[pos:end]
                enc, data = encode_spikes(part)
                if self.version >= 4:
                    return {"t": "s", "n": int(part.shape[0]), "d": data,
                            **({"e": 1} if enc == "bitmap" else {})}
                return {"t": "stream_spikes", "encoding": enc, "steps": int(part.shape[0]),
                        "data": data}
            self._send_in_order(cut, frames.shape[0], per_ms, chunk_ms, 1000.0, realtime,
                                on_event)
            return
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
        if self.version >= 3:                   # pipelined, in order, sized to the link

            def cut(pos: int, end: int) -> dict:
                if self.version >= 4:
                    return {"t": "p", "d": pcm[pos:end].tobytes()}
                return {"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": pcm[pos:end].tobytes()}
            self._send_in_order(cut, pcm.size, 2.0, chunk, float(SAMPLE_RATE), realtime,
                                on_event)
            return
        t0 = time.monotonic()
        for i in range(0, pcm.size, chunk):
            if realtime:
                time.sleep(max(0.0, t0 + i / float(SAMPLE_RATE) - time.monotonic()))
            self.request({"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": pcm[i:i + chunk].tobytes()})
            self.drain(on_event)

    def _send_in_order(self, cut, total: int, unit_bytes: float, max_units: int,
                       units_per_s: float, realtime: bool, on_event) -> None:
        """Version 3: the stream as chunks that carry their ``offset`` (the device runs them in
        stream order), up to WINDOW in flight, and only what was lost sent again. The device
        answers frames in the order they arrive, so an answer to a frame sent later shows that
        an earlier unanswered one was lost (it or its answer): that one goes again at once;
        when no answer at all comes for ``timeout``, every unanswered one goes again. A lost
        chunk larger than the link now carries well (:meth:`chunk_bytes`) is cut smaller when
        it is sent again. ``cut(pos, end)`` builds the message of units [pos, end)."""
        inflight: dict[int, list] = {}   # rid -> [pos, end, frame, order sent, tries, sent at]
        ahead: list[int] = []                   # sorted starts of the chunks sent
        sent: dict[int, tuple[int, int]] = {}   # every id sent -> its units (an answer to an
                                                # earlier try counts too)
        baud = float(getattr(self.port, "baudrate", 0) or 921600)
        order = itertools.count()
        pos, t0 = 0, time.monotonic()
        last_answer = time.monotonic()
        base = self.seq                         # the stream's offset at the first unit
        reached = 0                             # units the device has run (its ``next``)
        probe = min(self.timeout, max(0.03, 3.0 * (self.srtt or self.timeout)))

        def units_now() -> int:
            return max(1, min(max_units, int(self.chunk_bytes(int(max_units * unit_bytes))
                                             / unit_bytes)))

        def send(start: int, end: int, tries: int = 1) -> None:
            rid = self.new_id()
            key = "o" if self.version >= 4 else "offset"
            frame = encode_frame(encode({**cut(start, end), key: base + start, "id": rid},
                                        self.version))
            self._write(frame, "a stream chunk")
            inflight[rid] = [start, end, frame, next(order), tries, time.monotonic()]
            sent[rid] = (start, end)
            bisect.insort(ahead, start)

        while pos < total or inflight:
            oldest = min((st[0] for st in inflight.values()), default=pos)
            del ahead[:bisect.bisect_left(ahead, oldest)]   # a device keeps 64 waiting
            size = units_now() if pos < total else 0    # once a round: the estimate is costly
            while pos < total and len(inflight) < WINDOW and len(ahead) < DEVICE_AHEAD \
                    and (pos - oldest) * unit_bytes < AHEAD_BYTES:
                if realtime:
                    wait = t0 + pos / units_per_s - time.monotonic()
                    if wait > 0:
                        if inflight:
                            break               # answers first, then the next chunk
                        time.sleep(wait)
                end = min(total, pos + size)
                send(pos, end)
                pos = end
                last_answer = max(last_answer, time.monotonic() - self.timeout / 2)
            self._pump()
            answered = []
            for rid in [r for r in self._answers if r in sent]:
                reply = self._answers.pop(rid)
                if reply.get("t") == "error":
                    raise DeviceError(reply)
                reached = max(reached, int(reply.get("n", reply.get("next", 0))) - base)
                st = inflight.pop(rid, None)
                if st is not None:
                    answered.append(st[3])
                    self._attempt(len(st[2]), True, time.monotonic() - st[5])
                else:                           # an earlier try of a range that was cut
                    a, b = sent[rid]            # smaller since: its pieces are delivered too
                    for piece in [r for r, p in inflight.items() if a <= p[0] and p[1] <= b]:
                        answered.append(inflight.pop(piece)[3])
            for rid in [r for r, st in inflight.items() if st[1] <= reached]:
                st = inflight.pop(rid)          # the device has run it: its answer was lost
                self._attempt(len(st[2]), False)
            now = time.monotonic()
            # the link needs this long to carry what is in flight there and back (10 bits a
            # byte at the port's baud rate)
            drain = 2.0 * sum(len(st[2]) + self._answer_bytes
                              for st in inflight.values()) * 10 / baud
            if answered:
                last_answer = now
                if self.srtt is not None:
                    probe = min(self.timeout, max(0.03, 3.0 * self.srtt))
                lost = [rid for rid, st in inflight.items() if st[3] < max(answered)]
            elif inflight and now - last_answer > max(self.timeout, drain):
                lost = list(inflight)           # silence: every unanswered chunk again
                last_answer = now
            elif inflight and now - last_answer > max(probe, drain):
                # a short silence: the last chunks or their answers may be lost; send the
                # oldest again, so that its answer tells which of the others were
                lost = [min(inflight, key=lambda r: inflight[r][3])]
                last_answer = now
            else:
                lost = []
            for rid in lost:
                start, end, frame, _, tries, _ = inflight.pop(rid)
                self._attempt(len(frame), False)
                if tries > self.retries:
                    raise LinkError(f"no answer to the stream chunk at {base + start} after "
                                    f"{tries} tries")
                self.retried += 1
                step = units_now()
                for a in range(start, end, step):      # cut smaller if the link needs it
                    send(a, min(end, a + step), tries + 1)
            self.drain(on_event)
        self.seq = base + total

    def _write(self, frame: bytes, what: str) -> None:
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
        from .messages import check_label

        check_label(label)                      # before any shot is streamed
        rid = self.new_id()
        for attempt in range(2):
            boots = self.info().get("boots")
            if pcms:
                self._stream_shots(pcms)
            try:
                return self.request({"t": "enroll", "label": label,
                                     "shots": max(1, len(pcms))}, rid=rid)
            except DeviceError as exc:
                again = self.info().get("boots")
                if exc.name != "NO_UTTERANCE" or not pcms or attempt or again == boots:
                    raise
        raise AssertionError("unreachable")

    def untaught(self, *wavs: str) -> dict:
        """Tell the device these recordings are words the person did not teach (its threshold
        "person" then sits above what they score)."""
        from ..runtime.audio import load_audio

        return self.untaught_pcm(*(load_audio(w) for w in wavs))

    def untaught_pcm(self, *pcms: np.ndarray) -> dict:
        """:meth:`untaught` for 16 kHz int16 audio, in requests of at most 16 recordings."""
        out: dict = {}
        for i in range(0, len(pcms), 16):
            part = pcms[i:i + 16]
            self._stream_shots(part)
            out = self.request({"t": "untaught", "shots": len(part)})
        return out

    def _stream_shots(self, pcms) -> None:
        """A clean slate, then each utterance streamed and kept on the device as a shot (for
        the ``enroll`` or ``untaught`` that follows)."""
        self.request({"t": "reset_state"})
        for pcm in pcms:
            self.stream_pcm(pcm)
            self.request({"t": "end_of_utterance", "shot": True})

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
