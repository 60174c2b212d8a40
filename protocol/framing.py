"""Frames over a byte stream: COBS with a zero delimiter, CRC-32, a maximum size, resync.

A frame on the wire is ``COBS(body + CRC32(body) as 4 little-endian bytes) + b"\\x00"``. COBS
removes every zero byte from the encoded data, so a zero always ends a frame and a receiver that
starts mid-stream, or meets garbage, resynchronises at the next zero. ``body`` is at most
``MAX_BODY`` bytes; a receiver drops anything longer as soon as it has seen too many bytes without
a delimiter (it never buffers more than one maximal frame).

    >>> enc = encode_frame(b"hello")
    >>> enc.endswith(b"\\x00") and b"\\x00" not in enc[:-1]
    True
    >>> d = FrameDecoder()
    >>> d.feed(b"garbage\\x00" + enc + enc[:3])
    [b'hello']
    >>> d.errors["crc"], d.errors["cobs"] + d.errors["short"]      # the garbage was one bad frame
    (0, 1)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..runtime.errors import TesseraError

__all__ = ["MAX_BODY", "MAX_WIRE", "cobs_encode", "cobs_decode", "encode_frame", "FrameDecoder",
           "FrameError"]

MAX_BODY = 16384                                  # bytes of one message (msgpack) at most
MAX_WIRE = MAX_BODY + 4 + MAX_BODY // 254 + 2     # its largest encoding, delimiter included


class FrameError(TesseraError, ValueError):
    """A frame that cannot be decoded; ``kind`` is one of crc, cobs, short, oversize."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def cobs_encode(data: bytes) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no zero byte. Vectorized: with no run
    of 254 or more non-zero bytes (audio and spike messages), every zero becomes the length code
    of the run after it, and one code goes in front."""
    d = np.frombuffer(bytes(data), np.uint8)
    zeros = np.flatnonzero(d == 0)
    ends = np.append(zeros, d.size)                  # where each run stops
    runs = np.diff(ends, prepend=-1) - 1             # run lengths between zeros
    if runs.size and runs.max() >= 254:
        return _cobs_encode_runs(data)
    out = np.empty(d.size + 1, np.uint8)
    out[1:] = d
    out[0] = runs[0] + 1
    out[zeros + 1] = runs[1:] + 1
    return out.tobytes()


def _cobs_encode_runs(data: bytes) -> bytes:
    """COBS, block by block (any run lengths)."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        while len(part) >= 254:
            out.append(255)
            out += part[:254]
            part = part[254:]
            if not part and not last:
                break
        else:
            out.append(len(part) + 1)
            out += part
            continue
        out.append(1)                     # the zero that followed a run of exactly 254k bytes
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`FrameError` on a malformed block. The
    chain of codes is walked in Python (one step per code), the bytes are moved by numpy."""
    n = len(data)
    if 255 in data:                                  # long runs: block by block
        return _cobs_decode_blocks(data)
    codes = []
    i = 0
    while i < n:                                     # the code positions
        code = data[i]
        if code == 0:
            raise FrameError("cobs", "zero byte inside a COBS frame")
        codes.append(i)
        i += code
    if i > n:
        raise FrameError("cobs", "COBS block runs past the end of the frame")
    out = np.frombuffer(data, np.uint8)[1:].copy()
    out[np.array(codes[1:], np.int64) - 1] = 0      # every later code stood for a zero
    return out.tobytes()


def _cobs_decode_blocks(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("cobs", "zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("cobs", "COBS block runs past the end of the frame")
        out += data[i + 1:end]
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise FrameError("oversize", f"message of {len(body)} bytes exceeds {MAX_BODY}")
    return cobs_encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, get complete, CRC-checked bodies.

    Bad frames are dropped and counted in ``errors`` (and, when ``on_error`` is given, reported
    to it with a :class:`FrameError`); the decoder carries on after the next delimiter.
    """

    def __init__(self, on_error=None):
        self.buf = bytearray()
        self.skipping = False                    # inside an oversize frame: drop to the next 0
        self.on_error = on_error
        self.errors = {"crc": 0, "cobs": 0, "short": 0, "oversize": 0}
        self.frames = 0

    def drop_partial(self) -> None:
        """Forget a frame half received (its host went away): the next host's first frame
        starts clean. The counters stay."""
        self.buf = bytearray()
        self.skipping = False

    def _error(self, err: FrameError) -> None:
        self.errors[err.kind] += 1
        if self.on_error is not None:
            self.on_error(err)

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        start = 0
        while start <= len(data):
            z = data.find(0, start)
            part = data[start:] if z < 0 else data[start:z]
            if not self.skipping:
                self.buf += part
                if len(self.buf) > MAX_WIRE:
                    self.buf.clear()
                    self.skipping = True
                    self._error(FrameError("oversize", f"frame longer than {MAX_WIRE} bytes"))
            if z < 0:
                break
            if self.skipping:
                self.skipping = False
            elif self.buf:
                body = self._decode(bytes(self.buf))
                if body is not None:
                    out.append(body)
            self.buf.clear()
            start = z + 1
        return out

    def _decode(self, raw: bytes) -> bytes | None:
        try:
            data = cobs_decode(raw)
        except FrameError as err:
            self._error(err)
            return None
        if len(data) < 5:
            self._error(FrameError("short", f"frame of {len(data)} bytes is too short"))
            return None
        body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
        if zlib.crc32(body) != crc:
            self._error(FrameError("crc", "frame CRC mismatch"))
            return None
        self.frames += 1
        return body
