"""Compact encodings of 1 ms spike frames for STREAM_SPIKES (PROTOCOL.md).

``events``: per 1 ms step, a varint count n followed by n varint channel deltas (first channel,
then differences to the previous one): about 1-2 bytes per spike plus 1 byte per step; a count
above 1 repeats the channel (delta 0). ``bitmap``: per step ceil(C/8) bytes, bit c of the step's
bitmap set when channel c spiked (counts above 1 are clipped to 1). :func:`encode_spikes` picks
the smaller.

    >>> import numpy as np
    >>> f = np.zeros((3, 10), np.uint8); f[0, 2] = 1; f[2, [1, 9]] = 1
    >>> enc, data = encode_spikes(f)
    >>> enc, len(data), bool((decode_spikes(enc, data, 3, 10) == f).all())
    ('events', 6, True)
"""

from __future__ import annotations

import numpy as np

from ..runtime.errors import TesseraError

__all__ = ["encode_spikes", "decode_spikes", "encode_events", "encode_bitmap", "SpikeDecodeError"]


class SpikeDecodeError(TesseraError, ValueError):
    """Spike frames whose encoding cannot be decoded (the message names the problem)."""


def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def encode_events(frames: np.ndarray) -> bytes:
    f = np.minimum(np.asarray(frames), 255)
    vals = []
    for row in f:
        ch = np.repeat(np.flatnonzero(row), row[row > 0].astype(np.int64))
        vals.append(ch.size)
        if ch.size:
            vals.extend(np.diff(ch, prepend=0).tolist())
    return _varints(np.array(vals, np.int64))


def encode_bitmap(frames: np.ndarray) -> bytes:
    return np.packbits(np.asarray(frames) > 0, axis=1, bitorder="little").tobytes()


def encode_spikes(frames: np.ndarray) -> tuple[str, bytes]:
    """The smaller of the two encodings of ``frames`` (steps, channels)."""
    ev = encode_events(frames)
    bm_size = frames.shape[0] * ((frames.shape[1] + 7) // 8)
    if len(ev) <= bm_size:
        return "events", ev
    return "bitmap", encode_bitmap(frames)


def decode_spikes(encoding: str, data: bytes, steps: int, channels: int) -> np.ndarray:
    """Inverse of the encoders: (steps, channels) uint8; :class:`SpikeDecodeError` if ``data``
    does not decode to exactly ``steps`` steps of ``channels`` channels."""
    if not 0 <= steps <= 10000:
        raise SpikeDecodeError(f"steps must be 0..10000, got {steps}")
    if encoding == "bitmap":
        width = (channels + 7) // 8
        if len(data) != steps * width:
            raise SpikeDecodeError(f"bitmap of {len(data)} bytes for {steps} steps of {channels} "
                                   f"channels (needs {steps * width})")
        bits = np.unpackbits(np.frombuffer(data, np.uint8).reshape(steps, width), axis=1,
                             bitorder="little")
        if bits[:, channels:].any():
            raise SpikeDecodeError("bitmap sets bits beyond the last channel")
        return bits[:, :channels].astype(np.uint8)
    if encoding != "events":
        raise SpikeDecodeError(f"unknown spike encoding {encoding!r} (events or bitmap)")
    # uint16 holds every count: a step's events cannot outnumber the bytes of a frame
    counts = np.zeros((steps, channels), np.uint16 if len(data) < 65535 else np.int64)
    vals, v, shift = [], 0, 0
    for b in data:
        v |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
            if shift > 28:
                raise SpikeDecodeError("varint too long")
        else:
            vals.append(v)
            v, shift = 0, 0
    if shift:
        raise SpikeDecodeError("truncated varint")
    i = 0
    for t in range(steps):
        if i >= len(vals):
            raise SpikeDecodeError(f"events end after {t} of {steps} steps")
        n = vals[i]
        i += 1
        if n > 255 * channels or i + n > len(vals):
            raise SpikeDecodeError(f"step {t}: {n} events do not fit the data")
        ch = np.cumsum(vals[i:i + n]) if n else np.zeros(0, np.int64)
        i += n
        if n and ch[-1] >= channels:
            raise SpikeDecodeError(f"step {t}: channel {int(ch[-1])} >= {channels}")
        if n:
            np.add.at(counts[t], ch, 1)
    if i != len(vals):
        raise SpikeDecodeError(f"{len(vals) - i} values left after {steps} steps")
    np.minimum(counts, 255, out=counts)
    return counts.astype(np.uint8, copy=False) if counts.dtype == np.uint8 \
        else counts.astype(np.uint8)
