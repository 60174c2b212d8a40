"""Continuous keyword detection: taught words found in a running stream of front-end frames.

The device streams 1 ms frames through :meth:`Detector.feed`; events come out as the windows that
could still change them close. Four stages:

1. **Windows.** A window of the model's length (1 s) opens at every sound onset (``trigger``
   "onset", the default: a ms whose input events reach ``onset_events`` and 4x their running mean
   after at least ``QUIET_MS`` of quiet) or every ``hop_ms`` ("hop"). Each window runs the chip
   from rest on its own copy of the state (``Chip.snapshot`` / ``restore``), so a window's answer
   never depends on what came before it.
2. **The decision.** A full window is decided by the chip's one rule (``Chip.decide``: the
   cosine threshold, the silence floor and the confidence gate, the same as ``infer``). A
   rejected window is dropped, and so is one whose sound lasts longer than ``max_word_ms`` (a
   steady noise fills the window; a word does not).
3. **Non-maximum suppression.** Accepted windows whose starts lie within ``nms_ms`` of each other
   compete: only the highest cosine survives. A candidate is reported once every window that
   could beat it has closed (``nms_ms`` after its own window closes).
4. **Refractory time per word.** A word reported again within ``refractory_ms`` of its last
   report (start to start) is the same word still sounding: dropped.

Each event carries the word's own start and end (``start_ms``, ``end_ms``; the window's start is
``window_ms``): where the input events of the window, summed over ``SMOOTH_MS``, first reach
``WORD_LEVEL`` of their peak, and the last such ms before ``QUIET_MS`` without one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Detector", "QUIET_MS"]

QUIET_MS = 100          # an onset needs this much quiet before it; a word ends before as much
SMOOTH_MS = 10          # word boundaries: input events summed over this many ms ...
WORD_LEVEL = (1, 8)     # ... at least this fraction of their peak in the window
LOOKBACK_MS = 300       # a word may have begun this long before its window


class _Candidate(NamedTuple):
    start: int          # window start, stream ms
    word: tuple         # (word start, word end) ms
    label: str
    cos: float
    confidence: float
    scores: dict
    due: int            # stream ms after which no open window can suppress it


class Detector:
    """Sliding-window detection over one stream for ``chip`` with the device's ``params`` (a
    dict read at every step, so a ``set_param`` applies at once). :meth:`reset` starts a new
    stream; :meth:`feed` takes frames and returns finished events; :meth:`flush` ends the
    stream (open windows are completed with silence)."""

    def __init__(self, chip, params: dict):
        self.chip = chip
        self.params = params
        self.reset()

    def reset(self) -> None:
        self.windows: list[dict] = []
        self.stream_ms = 0
        self.next_start = 0
        self.starts: list[int] = []               # stream times of windows still to open
        self.quiet_ms = QUIET_MS                  # the stream starts quiet
        self.ema = 0.0
        self.counts = np.zeros(0, np.int64)       # input events per ms since ``counts_from``
        self.counts_from = 0
        self.pending: list[_Candidate] = []
        self.last_event: dict[str, int] = {}

    @property
    def length(self) -> int:
        return self.chip.tab.steps * self.chip.tab.bin_ms

    # ------------------------------------------------------------------ activity
    def _activity(self, frames: np.ndarray) -> list[int]:
        """Keep the input events per ms and return the onsets (stream ms) in ``frames``."""
        counts = self.chip.input_counts(frames)
        level = float(self.params["onset_events"])
        onsets = []
        for k, c in enumerate(counts.tolist()):
            is_loud = c >= level and c >= 4.0 * self.ema
            if is_loud and self.quiet_ms >= QUIET_MS:
                onsets.append(self.stream_ms + k)
            self.quiet_ms = 0 if is_loud else self.quiet_ms + 1
            self.ema += (c - self.ema) / 256.0
        keep = self.length + int(self.params.get("nms_ms", 0)) + LOOKBACK_MS + 2 * QUIET_MS
        self.counts = np.concatenate([self.counts, counts])
        if self.counts.size > 2 * keep:                      # keep the last ``keep`` ms
            cut = self.counts.size - keep
            self.counts, self.counts_from = self.counts[cut:], self.counts_from + cut
        return onsets

    def _word(self, start: int) -> tuple[int, int]:
        """The word in the window starting at ``start``: the ms whose input events, summed over
        ``SMOOTH_MS``, reach ``WORD_LEVEL`` of their peak in the window; from the first of them
        in the window, back and forth to the first and last of that run (gaps shorter than
        ``QUIET_MS`` belong to the word; it may have begun up to ``LOOKBACK_MS`` before the
        window)."""
        lo = max(start - LOOKBACK_MS, self.counts_from)
        seg = self.counts[lo - self.counts_from: max(start + self.length - self.counts_from, 0)]
        own = start - lo                                  # the window's first ms in ``seg``
        if seg.size <= own:
            return start, min(start + self.length, self.stream_ms)
        sm = np.convolve(seg, np.ones(SMOOTH_MS, np.int64))[SMOOTH_MS - 1:]
        peak = int(sm[own:].max())
        on = np.nonzero(sm * WORD_LEVEL[1] >= peak * WORD_LEVEL[0])[0] if peak else sm[:0]
        inside = on[on >= own]
        if not inside.size:
            return start, min(start + self.length, self.stream_ms)
        k = int(np.searchsorted(on, inside[0]))
        first = last = int(on[k])
        for j in on[:k][::-1].tolist():                  # back over short gaps
            if first - j > QUIET_MS:
                break
            first = j
        for j in on[k + 1:].tolist():                    # on to the word's end
            if j - last > QUIET_MS:
                break
            last = j
        # sm[j] sums seg[j .. j + SMOOTH_MS - 1]: the word's first and last events lie there
        first += int(np.argmax(seg[first:first + SMOOTH_MS] > 0))
        tail = seg[last:last + SMOOTH_MS]
        last += int(np.nonzero(tail)[0][-1]) if tail.any() else 0
        return lo + first, lo + last + 1

    # ------------------------------------------------------------------ windows
    def feed(self, frames: np.ndarray) -> list[dict]:
        chip = self.chip
        tab = chip.tab
        length = self.length
        onsets = self._activity(frames)
        if self.params["trigger"] == "onset":
            self.starts += onsets
        out: list[dict] = []
        i = 0
        while i < frames.shape[0]:
            if self.params["trigger"] != "onset" and not self.starts:
                self.starts.append(self.next_start)
                self.next_start += max(tab.bin_ms, int(self.params["hop_ms"]))
            while self.starts and self.starts[0] <= self.stream_ms:
                chip.reset(frontend=False)
                self.windows.append(dict(start=self.stream_ms, snap=chip.snapshot()))
                self.starts.pop(0)
            ends = [w["start"] + length for w in self.windows]
            take = min([frames.shape[0] - i] + [t - self.stream_ms for t in self.starts[:1]]
                       + [e - self.stream_ms for e in ends])
            part = frames[i:i + take]
            for w in self.windows:
                chip.restore(w["snap"])
                chip.run(part)
                w["snap"] = chip.snapshot()
            i += take
            self.stream_ms += take
            for w in [w for w in self.windows if w["start"] + length <= self.stream_ms]:
                self._close(w)
            out += self._release(self.stream_ms)
        return out

    def flush(self) -> tuple[list[dict], int]:
        """End of stream: close every open window (partial ones padded with silence), report
        every candidate left; returns (events, windows closed)."""
        n = len(self.windows)
        for w in list(self.windows):
            self._close(w)
        out = self._release(None)
        self.chip.reset()
        self.next_start = self.stream_ms
        self.starts = []
        return out, n

    def _close(self, w: dict) -> None:
        """Decide one window by the chip's rule; an accepted one becomes a candidate."""
        chip = self.chip
        chip.restore(w["snap"])
        chip.end_utterance(flush_frontend=False)
        self.windows.remove(w)
        if not chip.classes():
            return
        p = chip.predict()
        if p["label"] is None:
            return
        nms = int(self.params.get("nms_ms", 0))
        word = self._word(w["start"])
        if word[1] - word[0] > int(self.params.get("max_word_ms", self.length)):
            return                                    # sound that fills the window: no word
        cand = _Candidate(w["start"], word, p["label"],
                          p["scores"][p["label"]], p["confidence"], p["scores"],
                          w["start"] + self.length + nms)
        rivals = [c for c in self.pending if abs(c.start - cand.start) <= nms]
        if any(c.cos >= cand.cos for c in rivals):
            return                                    # a better window holds this word
        for c in rivals:
            self.pending.remove(c)
        self.pending.append(cand)

    def _release(self, now: int | None) -> list[dict]:
        """Candidates no open window can beat any more (all of them when ``now`` is None), in
        time order, through the refractory time per word."""
        ready = [c for c in self.pending if now is None or c.due <= now]
        out = []
        for c in sorted(ready, key=lambda c: c.start):
            self.pending.remove(c)
            last = self.last_event.get(c.label)
            self.last_event[c.label] = c.start
            if last is not None and c.start - last < int(self.params["refractory_ms"]):
                continue                               # the same word still sounding
            out.append({"t": "event", "id": 0, "kind": "keyword", "label": c.label,
                        "confidence": c.confidence, "start_ms": int(c.word[0]),
                        "end_ms": int(c.word[1]), "window_ms": int(c.start),
                        "scores": c.scores})
        return out
