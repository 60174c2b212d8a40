"""Streams over a lossy link, the host's side: what is in flight (:class:`InFlight`), what the
link is worth (:class:`LinkQuality`), and :func:`send_in_order`, which sends a stream as chunks
that carry their offset (version 3+), up to ``WINDOW`` in flight, and only what was lost again.
Nothing here needs a port: the tests drive the two classes alone."""

from __future__ import annotations

import bisect
import collections
import itertools
import time
from dataclasses import dataclass

import numpy as np

from .framing import encode_frame
from .messages import DeviceError, LinkError, encode

__all__ = ["Chunk", "InFlight", "LinkQuality", "send_in_order", "WINDOW", "DEVICE_AHEAD",
           "AHEAD_BYTES"]

WINDOW = 256            # version-3/4 stream chunks in flight
DEVICE_AHEAD = 384      # chunks sent from the oldest unanswered one on (a version-3 device
                        # keeps up to 512 chunks waiting for an earlier one ...
AHEAD_BYTES = 196608    # ... and 256 KiB of their payload: the bytes from the oldest on)
CHUNK_OVERHEAD = 74     # bytes a stream chunk's frame adds to its payload (keys, id, CRC, COBS)
ANSWER_BYTES = 49       # bytes of the answer that must come back for a chunk to count
COMPACT_OVERHEAD = 34   # the same for version 4's compact chunks (``s``, ``p``) ...
COMPACT_ANSWER = 27     # ... and their answer ``a``


@dataclass
class Chunk:
    """One stream chunk sent and not yet answered: units [start, end) of the stream."""

    start: int
    end: int
    frame: bytes
    order: int          # the order it was sent in
    tries: int
    sent_at: float


class InFlight:
    """The chunks in flight by request id, the starts of every chunk sent (the device keeps
    those ahead of the stream), and every id sent with its units (an answer to an earlier try
    of a range counts too)."""

    def __init__(self):
        self.chunks: dict[int, Chunk] = {}
        self.ahead: list[int] = []
        self.sent: dict[int, tuple[int, int]] = {}
        self.orders = itertools.count()

    def __len__(self) -> int:
        return len(self.chunks)

    def add(self, rid: int, start: int, end: int, frame: bytes, tries: int, now: float) -> None:
        self.chunks[rid] = Chunk(start, end, frame, next(self.orders), tries, now)
        self.sent[rid] = (start, end)
        bisect.insort(self.ahead, start)

    def oldest_start(self, default: int) -> int:
        """The start of the oldest unanswered chunk (``default`` when none); the starts before
        it are forgotten (the device has run them)."""
        oldest = min((c.start for c in self.chunks.values()), default=default)
        del self.ahead[:bisect.bisect_left(self.ahead, oldest)]
        return oldest

    def answered(self, rid: int) -> list[Chunk]:
        """The chunks an answer to ``rid`` delivers: its own, or (an earlier try of a range cut
        smaller since) every piece inside that range."""
        c = self.chunks.pop(rid, None)
        if c is not None:
            return [c]
        a, b = self.sent[rid]
        pieces = [r for r, p in self.chunks.items() if a <= p.start and p.end <= b]
        return [self.chunks.pop(r) for r in pieces]

    def run_by_device(self, reached: int) -> list[Chunk]:
        """Chunks the device has run (it reached ``reached``) whose answers were lost."""
        done = [r for r, c in self.chunks.items() if c.end <= reached]
        return [self.chunks.pop(r) for r in done]

    def sent_before(self, order: int) -> list[int]:
        """Ids of the unanswered chunks sent before the chunk sent ``order``-th: an answer to a
        later frame shows that they (or their answers) were lost."""
        return [r for r, c in self.chunks.items() if c.order < order]

    def oldest(self) -> list[int]:
        return [min(self.chunks, key=lambda r: self.chunks[r].order)] if self.chunks else []

    def wire_bytes(self, answer_bytes: int) -> int:
        """Bytes on the link, both ways, of what is in flight."""
        return sum(len(c.frame) + answer_bytes for c in self.chunks.values())


class LinkQuality:
    """What the recent requests and stream chunks tell of the link: the (bytes, answered) of
    each attempt and the smoothed round trip of the answered ones."""

    def __init__(self):
        self.attempts: collections.deque = collections.deque(maxlen=400)
        self.srtt: float | None = None

    @staticmethod
    def answer_bytes(version: int) -> int:
        """Bytes of a stream chunk's answer in ``version``."""
        return COMPACT_ANSWER if version >= 4 else ANSWER_BYTES

    def attempt(self, nbytes: int, answered: bool, rtt: float | None = None) -> None:
        self.attempts.append((nbytes, answered))
        if rtt is not None:
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt

    def byte_error_rate(self) -> float:
        """Estimated fraction of bytes lost or damaged on the link: the maximum-likelihood rate
        e for the recent attempts, each answered with probability (1 - e)^bytes (0 while none
        failed)."""
        if all(a for _, a in self.attempts):
            return 0.0
        n = np.array([b for b, _ in self.attempts], np.float64)
        ok = np.array([a for _, a in self.attempts], bool)
        grid = np.geomspace(1e-5, 0.3, 80)[:, None]
        log_keep = n[None] * np.log1p(-grid)                  # log (1-e)^n
        ll = np.where(ok[None], log_keep, np.log(-np.expm1(log_keep))).sum(axis=1)
        return float(grid[int(np.argmax(ll)), 0])

    def chunk_bytes(self, largest: int, version: int) -> int:
        """Payload bytes per stream chunk for this link: the size that carries the most data per
        byte sent, counting the retransmissions that the estimated byte error rate costs
        (everything on a clean link; at 1 % of bytes damaged 64 bytes with version 3, where a
        chunk whose answer is lost goes again, and 48 with version 4, whose answers acknowledge
        every chunk up to the stream's position)."""
        e = self.byte_error_rate()
        if e <= 0.0:
            return largest
        sizes = [n for n in (16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096)
                 if n < largest] + [largest]
        over = COMPACT_OVERHEAD if version >= 4 else CHUNK_OVERHEAD + ANSWER_BYTES
        return max(sizes, key=lambda n: n * (1.0 - e) ** (n + over) / (n + over))


def _lost(fl: InFlight, answered: list[int], now: float, last_answer: float, quiet: float,
          probe: float) -> tuple[list[int], float]:
    """Which chunks to send again, and the time of the last answer: those sent before an
    answered one; after ``quiet`` of silence all of them; after a short one (``probe``) the
    oldest, so that its answer tells which of the others were lost."""
    if answered:
        return fl.sent_before(max(answered)), now
    if len(fl) and now - last_answer > quiet:
        return list(fl.chunks), now
    if len(fl) and now - last_answer > probe:
        return fl.oldest(), now
    return [], last_answer


def send_in_order(dev, cut, total: int, unit_bytes: float, max_units: int, units_per_s: float,
                  realtime: bool, on_event) -> None:
    """The stream of ``total`` units on ``dev`` (a :class:`~tessera.protocol.client.Device`)
    as chunks that carry their offset; the device runs them in stream order. It answers frames
    in the order they arrive, so an answer to a frame sent later shows that an earlier
    unanswered one was lost (it or its answer): that one goes again at once; when no answer
    comes for ``timeout``, every unanswered one goes again. A lost chunk larger than the link
    now carries well is cut smaller when it is sent again. ``cut(pos, end)`` builds the message
    of units [pos, end)."""
    fl, link = InFlight(), dev.link
    baud = float(getattr(dev.port, "baudrate", 0) or 921600)
    pos, t0, last_answer = 0, time.monotonic(), time.monotonic()
    base, reached = dev.seq, 0          # the stream's offset at unit 0; units the device ran
    probe = min(dev.timeout, max(0.03, 3.0 * (link.srtt or dev.timeout)))
    ans_bytes = link.answer_bytes(dev.version)

    def units_now() -> int:
        return max(1, min(max_units, int(link.chunk_bytes(int(max_units * unit_bytes),
                                                          dev.version) / unit_bytes)))

    def send(start: int, end: int, tries: int = 1) -> None:
        rid = dev.new_id()
        key = "o" if dev.version >= 4 else "offset"
        frame = encode_frame(encode({**cut(start, end), key: base + start, "id": rid},
                                    dev.version))
        dev.write(frame, "a stream chunk")
        fl.add(rid, start, end, frame, tries, time.monotonic())

    while pos < total or len(fl):
        oldest = fl.oldest_start(pos)
        size = units_now() if pos < total else 0    # once a round: the estimate is costly
        while pos < total and len(fl) < WINDOW and len(fl.ahead) < DEVICE_AHEAD \
                and (pos - oldest) * unit_bytes < AHEAD_BYTES:
            wait = t0 + pos / units_per_s - time.monotonic() if realtime else 0.0
            if wait > 0 and len(fl):
                break                               # answers first, then the next chunk
            time.sleep(max(0.0, wait))
            end = min(total, pos + size)
            send(pos, end)
            pos = end
            last_answer = max(last_answer, time.monotonic() - dev.timeout / 2)
        dev.pump()
        answered = []
        for rid in [r for r in dev.answers if r in fl.sent]:
            reply = dev.answers.pop(rid)
            if reply.get("t") == "error":
                raise DeviceError(reply)
            reached = max(reached, int(reply.get("n", reply.get("next", 0))) - base)
            for c in fl.answered(rid):
                answered.append(c.order)
                link.attempt(len(c.frame) + ans_bytes, True, time.monotonic() - c.sent_at)
        for c in fl.run_by_device(reached):         # the device has run it: its answer lost
            link.attempt(len(c.frame) + ans_bytes, False)
        # the link needs this long to carry what is in flight there and back (10 bits a byte)
        drain = 2.0 * fl.wire_bytes(ans_bytes) * 10 / baud
        if answered and link.srtt is not None:
            probe = min(dev.timeout, max(0.03, 3.0 * link.srtt))
        lost, last_answer = _lost(fl, answered, time.monotonic(), last_answer,
                                  max(dev.timeout, drain), max(probe, drain))
        for rid in lost:
            c = fl.chunks.pop(rid)
            link.attempt(len(c.frame) + ans_bytes, False)
            if c.tries > dev.retries:
                raise LinkError(f"no answer to the stream chunk at {base + c.start} after "
                                f"{c.tries} tries")
            dev.retried += 1
            step = units_now()
            for a in range(c.start, c.end, step):    # cut smaller if the link needs it
                send(a, min(c.end, a + step), c.tries + 1)
        dev.drain(on_event)
    dev.seq = base + total
