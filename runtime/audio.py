"""Audio input for the front-end: WAV reading with clear errors, resampling to 16 kHz, int16.

numpy only. A WAV file is parsed chunk by chunk (RIFF): PCM 8/16/24/32-bit integer and 32/64-bit
IEEE float, including WAVE_FORMAT_EXTENSIBLE. Anything else is an :class:`InputError` naming the
file and the problem.

    >>> import numpy as np
    >>> y = resample(np.ones(8000, np.float32), 8000, 16000)
    >>> y.shape
    (16000,)
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from math import gcd

import numpy as np

from .constants import SAMPLE_RATE
from .errors import InputError

__all__ = ["read_wav", "write_wav", "resample", "to_int16", "load_audio", "TARGET_RATE"]

TARGET_RATE = SAMPLE_RATE
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: str | os.PathLike, *, mixdown: bool = False) -> tuple[np.ndarray, int]:
    """Read a WAV file -> (float32 samples in [-1, 1], sample rate).

    Multi-channel files are an error unless ``mixdown`` (then channels are averaged).
    """
    src = os.fspath(path)
    try:
        with open(src, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputError("no such file", source=src) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", source=src) from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError("not a WAV file (no RIFF/WAVE header)", source=src)
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos: pos + 4], struct.unpack("<I", data[pos + 4: pos + 8])[0]
        body = data[pos + 8: pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise InputError("truncated fmt chunk", source=src)
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, align, bits)
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise InputError("no fmt chunk", source=src)
    if payload is None:
        raise InputError("no data chunk", source=src)
    tag, channels, rate, align, bits = fmt
    if channels < 1 or rate < 1:
        raise InputError(f"invalid header: {channels} channels at {rate} Hz", source=src)
    if channels != 1 and not mixdown:
        raise InputError(f"{channels} channels, expected mono: convert it first (for example "
                         f"sox IN.wav -c 1 OUT.wav), or in Python read_wav(path, mixdown=True)",
                         source=src)
    width = bits // 8
    if tag == _PCM and bits in (8, 16, 24, 32):
        n = len(payload) // (width * channels) * channels
        raw = np.frombuffer(payload[: n * width], np.uint8)
        if bits == 8:
            x = (raw.astype(np.float32) - 128.0) / 128.0
        elif bits == 24:
            b = raw.reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float32) / float(1 << 23)
        else:
            dt = np.dtype("<i2") if bits == 16 else np.dtype("<i4")
            x = np.frombuffer(raw.tobytes(), dt).astype(np.float32) / float(1 << (bits - 1))
    elif tag == _FLOAT and bits in (32, 64):
        dt = np.dtype("<f4") if bits == 32 else np.dtype("<f8")
        n = len(payload) // (width * channels) * channels
        x = np.frombuffer(payload[: n * width], dt).astype(np.float32)
    else:
        raise InputError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)", source=src)
    if x.size == 0:
        raise InputError("contains 0 samples", source=src)
    if not np.all(np.isfinite(x)):
        raise InputError("contains NaN or infinite samples", source=src)
    x = x.reshape(-1, channels)
    return (x.mean(axis=1) if channels > 1 else x[:, 0]), rate


def write_wav(path: str | os.PathLike, pcm: np.ndarray, rate: int) -> None:
    """Write mono int16 PCM (float input in [-1, 1] is converted)."""
    pcm = to_int16(pcm)
    body = pcm.astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, _PCM, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(body))
    with open(path, "wb") as fh:
        fh.write(header + body)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] (clipped) or integer PCM -> int16."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x
    if x.dtype.kind in "iu":
        return np.clip(x, -32768, 32767).astype(np.int16)
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int, zero_crossings: int = 16) -> np.ndarray:
    """Kaiser-windowed sinc low-pass split into ``up`` phases: (up, taps), taps even.

    The filter spans ``zero_crossings`` zero crossings of the lower of the two rates each side.
    """
    rate_ratio = max(up, down)
    taps = 2 * int(np.ceil(zero_crossings * rate_ratio / up))          # per phase, even
    half = taps // 2 * up
    cutoff = 0.5 / rate_ratio * 0.95                                    # of the upsampled rate
    t = np.arange(-half, taps * up - half, dtype=np.float64)           # the upsampled grid
    window = np.i0(8.0 * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, None))) / np.i0(8.0)
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * window * up
    return h.reshape(taps, up).T.copy()                                 # phase p: taps n = p mod up


def resample(x: np.ndarray, rate_in: int, rate_out: int = TARGET_RATE) -> np.ndarray:
    """Rational polyphase resampling (windowed sinc, about -80 dB stop band) of a 1-D signal."""
    x = np.asarray(x, np.float64)
    if rate_in <= 0 or rate_out <= 0:
        raise InputError(f"invalid sample rates {rate_in} -> {rate_out}")
    if rate_in == rate_out:
        return x.astype(np.float32)
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if up > 4096:
        raise InputError(f"resampling {rate_in} -> {rate_out} Hz needs {up} phases (max 4096)")
    h = _polyphase(up, down)                               # (up, taps)
    taps = h.shape[1]
    half = taps // 2
    n_out = int(np.ceil(x.size * up / down))
    k = np.arange(n_out) * down                            # position on the upsampled grid
    phase = k % up
    base = k // up                                         # input index at or before the output
    xp = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out)
    for a in range(0, n_out, 4096):                        # bounded memory for long files
        b = min(a + 4096, n_out)
        idx = base[a:b, None] + np.arange(taps)[None, :] + 1
        out[a:b] = np.einsum("ij,ij->i", xp[idx], h[phase[a:b]][:, ::-1])
    return out.astype(np.float32)


def load_audio(path: str | os.PathLike, *, mixdown: bool = False) -> np.ndarray:
    """WAV file -> int16 PCM at 16 kHz."""
    x, rate = read_wav(path, mixdown=mixdown)
    return to_int16(resample(x, rate, TARGET_RATE))
