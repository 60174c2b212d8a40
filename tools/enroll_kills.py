"""Enrollments across power cuts (issue 35): a board killed with SIGKILL at random points of a
run of ``enroll`` requests, some of its flash writes failing, must neither lose nor double a word.

The board is ``tessera.firmware_sim.device.Firmware`` in a child process that reads frames on
its stdin and writes its answers on its stdout (no transport of its own), with a flash image
whose writes fail at random (``os.replace`` raising ENOSPC with probability ``fail``). This
process is the host, by the reference client's rules: it streams one shot and sends ``enroll``
with a fresh id; on no answer (the board died) it starts the board again from its flash and
re-sends the same frame; on ``NO_UTTERANCE`` (the reboot lost the shot) it streams the shot again
and re-sends the same id; on ``STORAGE`` (the write failed: refused as a whole) it re-sends the
same frame. After every answered enrollment the flash image must hold exactly the shots the host
was answered for, word by word: one more is a doubled enrollment, one fewer a lost one.

    tessera bench protocol --parts enroll-kills --kills 1000
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time

import numpy as np

__all__ = ["enroll_kills"]

_BOARD = r"""
import errno, os, random, sys
from tessera.firmware_sim import flash
from tessera.firmware_sim.device import Firmware
fail = float(sys.argv[3])
rnd = random.Random(int(sys.argv[4]))
real_replace = flash.os.replace
def replace(src, dst):
    if rnd.random() < fail:
        raise OSError(errno.ENOSPC, "No space left on device")
    real_replace(src, dst)
flash.os.replace = replace
fw = Firmware(flash_path=sys.argv[1])
if fw.chip is None:
    fw.install(open(sys.argv[2], "rb").read())
    while True:                  # the first image (its write may fail too)
        try:
            fw.do("save", {})
            break
        except Exception:
            pass
out = sys.stdout.buffer
out.write(b"\x00ready\x00")
out.flush()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    out.write(fw.receive(data))
    out.flush()
"""

LABELS = ("w0", "w1", "w2", "w3", "w4")


class _Board:
    """The child board: frames in, answer bodies out; dies on ``kill``."""

    def __init__(self, flash_path: str, model: str, fail: float, seed: int):
        from ..protocol.framing import FrameDecoder

        from ..firmware_sim.boot import child_python

        cmd, cwd = child_python("-c", _BOARD, flash_path, model, str(fail), str(seed))
        self.p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.dec = FrameDecoder()
        buf = b""
        while b"\x00ready\x00" not in buf:
            chunk = os.read(self.p.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the board did not start")
            buf += chunk

    def ask(self, frame: bytes, timeout: float = 10.0) -> dict | None:
        """Send ``frame``; its answer, or None when the board is dead (or never answers)."""
        from ..protocol.messages import decode

        try:
            self.p.stdin.write(frame)
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.p.stdout], [], [], 0.05)
            if not ready:
                if self.p.poll() is not None:
                    return None
                continue
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                return None
            bodies = self.dec.feed(chunk)
            if bodies:
                return decode(bodies[-1])
        return None

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()


def _frame(msg: dict) -> bytes:
    from ..protocol.framing import encode_frame
    from ..protocol.messages import encode

    return encode_frame(encode(msg))


def enroll_kills(model: str, kills: int = 1000, fail: float = 0.2, seed: int = 0) -> dict:
    """``kills`` SIGKILLs of a board at random points of an enrollment run (flash writes failing
    with probability ``fail``); returns the counts (``doubled`` and ``lost`` must be 0)."""
    from ..firmware_sim import flash

    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp(prefix="tessera-kills-")
    path = os.path.join(tmp, "flash.img")
    pcm = (3000 * np.sin(np.linspace(0, 900, 9600)) * np.hanning(9600)).astype("<i2").tobytes()
    expected = dict.fromkeys(LABELS, 0)
    counts = dict(kills=0, enrollments=0, storage_refusals=0, no_utterance=0, retries=0,
                  doubled=0, lost=0)
    rid = int(rng.integers(1, 1 << 20))
    t0 = time.perf_counter()
    board = _Board(path, model, fail, int(rng.integers(1 << 30)))

    def shot(b: _Board) -> bool:
        nonlocal rid
        for msg in [{"t": "reset_state"}] + [{"t": "stream_audio", "rate": 16000,
                                              "pcm": pcm[k:k + 8000]}
                                             for k in range(0, len(pcm), 8000)]:
            rid += 1
            if b.ask(_frame(dict(msg, id=rid))) is None:
                return False
        return True

    while counts["kills"] < kills:
        label = LABELS[int(rng.integers(len(LABELS)))]
        kill_at = rng.random() < 0.5               # (the loop runs while kills remain)
        delay = float(rng.uniform(0.0, 0.03))
        if not shot(board):
            board = _Board(path, model, fail, int(rng.integers(1 << 30)))
            continue
        rid += 1
        frame = _frame({"t": "enroll", "label": label, "id": rid})
        if kill_at:                          # the power cut somewhere in the enrollment
            board.p.stdin.write(frame)
            board.p.stdin.flush()
            time.sleep(delay)
            board.kill()
            counts["kills"] += 1
            board = _Board(path, model, fail, int(rng.integers(1 << 30)))
        answer = None if kill_at else board.ask(frame)
        while answer is None or answer.get("t") == "error":
            if answer is not None and answer.get("name") == "STORAGE":
                counts["storage_refusals"] += 1
            elif answer is not None and answer.get("name") == "NO_UTTERANCE":
                counts["no_utterance"] += 1
                shot(board)
            elif answer is not None:
                raise AssertionError(f"enroll refused: {answer}")
            elif board.p.poll() is not None:
                board = _Board(path, model, fail, int(rng.integers(1 << 30)))
            counts["retries"] += 1
            answer = board.ask(frame)
        if answer.get("saved") is not True:
            raise AssertionError(f"enroll answered without a save: {answer}")
        expected[label] += 1
        counts["enrollments"] += 1
        image = flash.load(path)
        stored = {c: s for c, s in zip(image["classes"], image["shots"]) if c is not None}
        for w in LABELS:
            have = stored.get(w, 0)
            counts["doubled"] += int(have > expected[w])
            counts["lost"] += int(have < expected[w])
            expected[w] = have                   # a difference is counted once
    board.kill()
    counts.update(fail_rate=fail, seconds=round(time.perf_counter() - t0, 1),
                  shots_stored=sum(expected.values()))
    return dict(bench="enroll_kills", **counts)
