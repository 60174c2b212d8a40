"""Small signal and file helpers shared by the tests."""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np


def tone(freq: float, seconds: float = 0.5, amp: float = 0.3, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def log_sweep(f0: float, f1: float, seconds: float, amp: float = 0.3, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return np.round(amp * 32767 * np.sin(phase)).astype(np.int16)


def wav_bytes(data: bytes, *, tag: int = 1, channels: int = 1, rate: int = 16000,
              bits: int = 16) -> bytes:
    """A RIFF/WAVE file around raw sample bytes, any header values."""
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8,
                      channels * bits // 8, bits)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "model.tsb"


def tessera(*args, timeout=300, env=None):
    """Run the `tessera` command in a subprocess; returns the CompletedProcess (text).
    ``env``: variables added to this process's environment."""
    import os

    return subprocess.run([sys.executable, "-m", "tessera", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def fsdd_subset(fsdd: Path, dest: Path, digits: int = 5, speakers=("george", "jackson"),
                takes: int = 3) -> Path:
    """A small FSDD-named folder: ``takes`` recordings of digits 0..digits-1 by ``speakers``."""
    import shutil

    dest.mkdir()
    for d in range(digits):
        for spk in speakers:
            for i in range(takes):
                shutil.copy(fsdd / f"{d}_{spk}_{i}.wav", dest)
    return dest


def ask(fw, msg: dict) -> dict:
    """One request ``msg`` (packed as is: any field, any type) through the firmware ``fw``; its
    last answer frame decoded."""
    import msgpack

    from tessera.protocol.framing import FrameDecoder, encode_frame
    from tessera.protocol.messages import decode

    out = FrameDecoder().feed(fw.receive(encode_frame(msgpack.packb(msg, use_bin_type=True))))
    return decode(out[-1])


def body_of(frame: bytes) -> bytes:
    """The body of one whole frame."""
    from tessera.protocol.framing import FrameDecoder

    (body,) = FrameDecoder().feed(frame)
    return body


def assert_clean_error(r, *needles):
    """A `tessera` run that failed cleanly: exit 2, one line `tessera: error: ...` holding every
    needle, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


class PowerCutPort:
    """An in-process link to ``fw`` that cuts the device's power once, at the first enroll
    frame: before the device reads it (``applied`` False) or after it executed it, losing its
    answer (``applied`` True)."""

    def __init__(self, fw, applied: bool):
        self.fw, self.applied, self.cut, self.buf = fw, applied, False, bytearray()

    def write(self, data: bytes) -> int:
        if not self.cut and b"enroll" in data:
            self.cut = True
            if self.applied:
                self.fw.receive(data)                   # executed; the answer never arrives
            self.fw.boot()                              # power cut: RAM gone, flash kept
            return len(data)
        self.buf += self.fw.receive(data)
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def read(self, n: int = 1) -> bytes:
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def close(self) -> None:
        pass
