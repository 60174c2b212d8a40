"""Version 3+: stream chunks run in stream order whatever order they arrive in (PROTOCOL.md)."""

from __future__ import annotations

from ..protocol.messages import ProtocolError

__all__ = ["StreamOrder", "SEQ_WINDOW", "SEQ_BYTES"]

SEQ_WINDOW = 512        # version-3 stream chunks that may wait ahead of the stream ...
SEQ_BYTES = 1 << 18     # ... holding at most this many payload bytes together (256 KiB)


class StreamOrder:
    """The stream's offset (``next``) and the chunks that wait ahead of it."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """A new stream: offset 0, nothing waiting."""
        self.next = 0
        self.waiting: dict[int, tuple] = {}       # offset -> (units, run, payload bytes)
        self.bytes = 0

    def take(self, msg: dict, units: int, run, ack: dict) -> dict:
        """A stream chunk may carry ``offset``, the position of its first unit (sample of
        audio, ms of spikes) since reset_state. One that starts ahead of the stream waits (at
        most SEQ_WINDOW of them, SEQ_BYTES of payload together), one already run is
        acknowledged again, and one that overlaps what was run adds only its new part, so a host
        may resend a lost chunk cut differently. ``run(skip)`` runs the chunk from its unit
        ``skip`` on. Without ``offset`` (version 2) a chunk runs at once. The answer's ``next``
        is the offset the stream has reached."""
        off = msg.get("offset")
        if off is None:
            run(0)
            return ack
        if off < 0:
            raise ProtocolError("BAD_FIELD", f"stream chunk offset {off} is negative")
        if off + units <= self.next:
            return dict(ack, offset=off, next=self.next, duplicate=True)
        if off > self.next:
            size = len(msg.get("pcm") or msg.get("data") or b"")
            held = self.bytes - self.waiting.get(off, (0, None, 0))[2]
            if (len(self.waiting) >= SEQ_WINDOW and off not in self.waiting) \
                    or held + size > SEQ_BYTES:
                raise ProtocolError("BUSY", f"{len(self.waiting)} stream chunks ({held} "
                                            f"bytes) already wait for the one at offset "
                                            f"{self.next} (at most {SEQ_WINDOW}, "
                                            f"{SEQ_BYTES} bytes)")
            if units > self.waiting.get(off, (0, None, 0))[0]:   # keep the longer one
                self.waiting[off] = (units, run, size)
                self.bytes = held + size
            return dict(ack, offset=off, next=self.next, buffered=True)
        run(self.next - off)
        self.next = off + units
        while self.waiting:                           # what waited and now fits, in order
            start = min(self.waiting)
            if start > self.next:
                break
            n, later, size = self.waiting.pop(start)
            self.bytes -= size
            if start + n > self.next:
                later(self.next - start)
                self.next = start + n
        return dict(ack, offset=off, next=self.next)
