"""Host client: the same code drives the simulator and a serial-attached board.

``Device.open(url)`` takes any pyserial URL (``/dev/ttyUSB0`` with ``baudrate``, ``loop://``,
``socket://127.0.0.1:7700``, the pty path ``tessera sim --pty`` prints, or ``sim://?model=m.tsr``
for the simulator in-process once :mod:`tessera.firmware_sim` is imported, see
:mod:`tessera.firmware_sim.protocol_sim`). The requests' ids, resends and queued events are the
link's (:mod:`tessera.protocol.link`); :class:`Device` is the board's API on top of it.

    >>> dev = Device.open("socket://127.0.0.1:7700")          # doctest: +SKIP
    >>> dev.load("model.tsr"); dev.enroll("lights", "lights.wav")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from .link import Link
from .messages import SUPPORTED, DeviceError, LinkError, check_label
from .spikes import encode_spikes
from .window import send_in_order

__all__ = ["Device", "DeviceError", "LinkError"]


def _pcm(shot) -> np.ndarray:
    """An utterance: a WAV path read as 16 kHz int16, or the samples themselves."""
    if isinstance(shot, (str, os.PathLike)):
        from ..runtime.audio import load_audio

        return load_audio(shot)
    return np.asarray(shot)


class Device(Link):
    """A board's API over its :class:`~tessera.protocol.link.Link`: hello, models, streams,
    words, parameters."""

    @classmethod
    def open(cls, url: str, baudrate: int = 921600, timeout: float = 2.0, retries: int = 5
             ) -> "Device":
        """The link to ``url`` (:meth:`Link.open`), then the board's hello."""
        dev = super().open(url, baudrate, timeout, retries)
        dev.info()
        return dev

    def info(self) -> dict:
        self.info_cache = self.request({"t": "hello", "versions": list(SUPPORTED)[::-1]})
        self.version = int(self.info_cache.get("version", 2))
        return self.info_cache

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
        link), pipelined and in order with a version-3 or -4 device."""
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
            send_in_order(self, cut, frames.shape[0], per_ms, chunk_ms, 1000.0, realtime,
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
            send_in_order(self, cut, pcm.size, 2.0, chunk, float(SAMPLE_RATE), realtime,
                          on_event)
            return
        t0 = time.monotonic()
        for i in range(0, pcm.size, chunk):
            if realtime:
                time.sleep(max(0.0, t0 + i / float(SAMPLE_RATE) - time.monotonic()))
            self.request({"t": "stream_audio", "rate": SAMPLE_RATE,
                          "pcm": pcm[i:i + chunk].tobytes()})
            self.drain(on_event)

    # ------------------------------------------------------------------ words
    def end_utterance(self) -> dict:
        return self.request({"t": "end_of_utterance"})

    def infer(self, utterance=None) -> dict:
        """The device's answer for one utterance (a WAV path or 16 kHz int16 samples), or for
        what was streamed already (None)."""
        if utterance is None:
            return self.end_utterance()
        pcm = _pcm(utterance)
        self.reset()
        self.stream_pcm(pcm)
        return self.end_utterance()

    def enroll(self, label: str, *shots) -> dict:
        """Teach ``label`` from one or more utterances (WAV paths or 16 kHz int16 samples; none:
        what was streamed already), in one readout step over all of them.

        Exactly once, even across a reboot of the device: the request keeps its id through
        retries; if the device rebooted before it enrolled (it answers NO_UTTERANCE, its boot
        count moved), the shots are streamed again and the same id is sent again (a device that
        had enrolled and saved it answers from flash instead)."""
        check_label(label)                      # before any shot is streamed
        pcms = [_pcm(x) for x in shots]
        rid = self.new_id()
        for attempt in range(2):
            # the boot count of the last hello (the session's own, or the one that found the
            # last reboot): a hello only when the board says it has no shots
            boots = (self.info_cache or self.info()).get("boots")
            nearest = _stream_shots(self, pcms) if pcms else []
            try:
                out = self.request({"t": "enroll", "label": label,
                                    "shots": max(1, len(pcms))}, rid=rid)
                # what the board knew each shot as before (a word taught twice is said)
                return {**out, "nearest": nearest} if any(nearest) else out
            except DeviceError as exc:
                if exc.name != "NO_UTTERANCE" or not pcms or attempt or \
                        self.info().get("boots") == boots:
                    raise
        raise AssertionError("unreachable")

    def untaught(self, *shots) -> dict:
        """Tell the device these utterances (WAV paths or samples) are words the person did not
        teach (its threshold "person" then sits above what they score); requests of at most 16
        recordings."""
        pcms = [_pcm(x) for x in shots]
        out: dict = {}
        for i in range(0, len(pcms), 16):
            part = pcms[i:i + 16]
            _stream_shots(self, part)
            out = self.request({"t": "untaught", "shots": len(part)})
        return out

    def classes(self) -> list[str]:
        return self.request({"t": "list_classes"})["classes"]

    def forget(self, label: str) -> dict:
        return self.request({"t": "forget", "label": label})

    def rename(self, label: str, to: str) -> dict:
        check_label(to)
        return self.request({"t": "rename", "label": label, "to": to})

    # ------------------------------------------------------------------ device
    def stats(self) -> dict:
        return self.request({"t": "get_stats"})

    def set_param(self, name: str, value) -> dict:
        return self.request({"t": "set_param", "name": name, "value": value})

    def params(self) -> dict:
        return self.request({"t": "get_param"})["params"]

    def save(self) -> dict:
        return self.request({"t": "save"})

    def reset(self, voice: bool = False) -> dict:
        """A new utterance (or stream) from rest; ``voice``: a new person too (the front-end's
        running level starts again)."""
        return self.request({"t": "reset_state", **({"voice": True} if voice else {})})


def _stream_shots(dev: Device, pcms) -> list:
    """A clean slate, then each utterance streamed and kept on the device as a shot (for the
    ``enroll`` or ``untaught`` that follows); each shot's nearest taught word and its cosine
    as the board answered it ([best, cosine], or None with no word taught)."""
    dev.reset()
    out = []
    for pcm in pcms:
        dev.stream_pcm(pcm)
        a = dev.request({"t": "end_of_utterance", "shot": True})
        out.append([a["best"], a["cosine"]] if "best" in a and "cosine" in a else None)
    return out
