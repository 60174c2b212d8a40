"""Continuous keyword detection: taught words found in a running stream of front-end frames.

The device streams 1 ms frames through :func:`detect_step`, a step function over a
:class:`DetectState` (the chip runs each window); events come out as the windows that could still
change them close, and :func:`detect_flush` ends a stream. Four stages:

1. **Windows.** A window of the model's length (1 s) opens at every sound onset (``trigger``
   "onset", the default: a ms whose input events reach ``onset_events`` and 4x their running mean
   after at least ``QUIET_MS`` of quiet) or every ``hop_ms`` ("hop"). Each window runs the chip
   from rest on its own copy of the state (``Chip.snapshot`` / ``restore``), so a window's answer
   never depends on what came before it.
2. **The decision.** A full window is decided by the chip's one rule (for a model whose
   segments are the word's own length, they end where the window's word ends: a next word in
   the same window does not stretch them) (:func:`tessera.runtime.readout.decide`: the
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

__all__ = ["DetectState", "detect_start", "detect_step", "detect_flush", "QUIET_MS"]

QUIET_MS = 100          # an onset needs this much quiet before it; a word ends before as much
SMOOTH_MS = 10          # word boundaries: input events summed over this many ms ...
WORD_LEVEL = (1, 8)     # ... at least this fraction of their peak in the window
LOOKBACK_MS = 300       # a word may have begun this long before its window


class Candidate(NamedTuple):
    """An accepted window waiting for its rivals to close."""

    start: int          # window start, stream ms
    word: tuple         # (word start, word end) ms
    label: str
    cos: float
    confidence: float
    scores: dict
    due: int            # stream ms after which no open window can suppress it


class DetectState(NamedTuple):
    """One detection stream (every field replaced, never changed in place)."""

    windows: tuple = ()         # open windows: (start ms, the chip's StreamState)
    stream_ms: int = 0          # frames heard
    next_start: int = 0         # trigger "hop": the next window's start
    starts: tuple = ()          # stream ms of windows still to open
    quiet_ms: int = QUIET_MS    # ms since the last loud one (the stream starts quiet)
    ema: float = 0.0            # running mean of input events per ms
    counts: np.ndarray = np.zeros(0, np.int64)   # input events per ms since ``counts_from``
    counts_from: int = 0
    pending: tuple = ()         # candidates (:class:`Candidate`)
    last_event: tuple = ()      # (label, start ms) of each word's last report


def detect_start(stream_ms: int = 0) -> DetectState:
    """A new stream (``stream_ms``: where the hop trigger's windows start)."""
    return DetectState(next_start=stream_ms, stream_ms=stream_ms)


def _length(chip) -> int:
    return chip.tab.steps * chip.tab.bin_ms


def _activity(frames: np.ndarray, st: DetectState, chip, params: dict
              ) -> tuple[list[int], DetectState]:
    """The onsets (stream ms) in ``frames``, with the input events per ms kept."""
    counts = chip.input_counts(frames)
    level = float(params["onset_events"])
    onsets = []
    quiet, ema = st.quiet_ms, st.ema
    for k, c in enumerate(counts.tolist()):
        is_loud = c >= level and c >= 4.0 * ema
        if is_loud and quiet >= QUIET_MS:
            onsets.append(st.stream_ms + k)
        quiet = 0 if is_loud else quiet + 1
        ema += (c - ema) / 256.0
    keep = _length(chip) + int(params.get("nms_ms", 0)) + LOOKBACK_MS + 2 * QUIET_MS
    kept, kept_from = np.concatenate([st.counts, counts]), st.counts_from
    if kept.size > 2 * keep:                               # keep the last ``keep`` ms
        cut = kept.size - keep
        kept, kept_from = kept[cut:], kept_from + cut
    return onsets, st._replace(quiet_ms=quiet, ema=ema, counts=kept, counts_from=kept_from)


def word_span(st: DetectState, start: int, length: int) -> tuple[int, int]:
    """The word in the window starting at ``start``: the ms whose input events, summed over
    ``SMOOTH_MS``, reach ``WORD_LEVEL`` of their peak in the window; from the first of them in
    the window, back and forth to the first and last of that run (gaps shorter than ``QUIET_MS``
    belong to the word; it may have begun up to ``LOOKBACK_MS`` before the window)."""
    lo = max(start - LOOKBACK_MS, st.counts_from)
    seg = st.counts[lo - st.counts_from: max(start + length - st.counts_from, 0)]
    own = start - lo                                  # the window's first ms in ``seg``
    if seg.size <= own:
        return start, min(start + length, st.stream_ms)
    sm = np.convolve(seg, np.ones(SMOOTH_MS, np.int64))[SMOOTH_MS - 1:]
    peak = int(sm[own:].max())
    on = np.nonzero(sm * WORD_LEVEL[1] >= peak * WORD_LEVEL[0])[0] if peak else sm[:0]
    inside = on[on >= own]
    if not inside.size:
        return start, min(start + length, st.stream_ms)
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


def detect_step(frames: np.ndarray, st: DetectState, chip, params: dict
                ) -> tuple[list[dict], DetectState]:
    """Frames of the stream -> (the events finished by them, the new state). ``params`` is the
    device's, read at every step (a ``set_param`` applies at once)."""
    tab, length = chip.tab, _length(chip)
    onsets, st = _activity(frames, st, chip, params)
    starts, windows, next_start = list(st.starts), list(st.windows), st.next_start
    if params["trigger"] == "onset":
        starts += onsets
    out: list[dict] = []
    i = 0
    while i < frames.shape[0]:
        if params["trigger"] != "onset" and not starts:
            starts.append(next_start)
            next_start += max(tab.bin_ms, int(params["hop_ms"]))
        while starts and starts[0] <= st.stream_ms:
            chip.reset(frontend=False)
            windows.append((st.stream_ms, chip.snapshot()))
            starts.pop(0)
        take = min([frames.shape[0] - i] + [t - st.stream_ms for t in starts[:1]]
                   + [w + length - st.stream_ms for w, _ in windows])
        part = frames[i:i + take]
        for k, (w, snap) in enumerate(windows):
            chip.restore(snap)
            chip.run(part)
            windows[k] = (w, chip.snapshot())
        i += take
        st = st._replace(stream_ms=st.stream_ms + take)
        for w in [w for w in windows if w[0] + length <= st.stream_ms]:
            windows.remove(w)
            st = _close(w, st, chip, params)
        events, st = _release(st, st.stream_ms, params)
        out += events
    return out, st._replace(starts=tuple(starts), windows=tuple(windows), next_start=next_start)


def detect_flush(st: DetectState, chip, params: dict) -> tuple[list[dict], int, DetectState]:
    """End of stream: close every open window (partial ones padded with silence) and report
    every candidate left; returns (events, windows closed, the state for a next stream)."""
    for w in st.windows:
        st = _close(w, st, chip, params)
    out, st = _release(st, None, params)
    chip.reset()
    return out, len(st.windows), st._replace(windows=(), next_start=st.stream_ms, starts=())


def _close(w: tuple, st: DetectState, chip, params: dict) -> DetectState:
    """Decide one window by the chip's rule; an accepted one becomes a candidate."""
    start, snap = w
    length = _length(chip)
    word = word_span(st, start, length)
    chip.restore(snap)                                # segments of the word's own length end
    bin_ms = chip.tab.bin_ms                          # where the word does (segment_mode own)
    chip.end_utterance(flush_frontend=False, word_bins=-(-(word[1] - start) // bin_ms))
    if not chip.classes():
        return st
    p = chip.predict()
    if p["label"] is None:
        return st
    nms = int(params.get("nms_ms", 0))
    if word[1] - word[0] > int(params.get("max_word_ms", length)):
        return st                                     # sound that fills the window: no word
    cand = Candidate(start, word, p["label"], p["scores"][p["label"]], p["confidence"],
                     p["scores"], start + length + nms)
    rivals = [c for c in st.pending if abs(c.start - cand.start) <= nms]
    if any(c.cos >= cand.cos for c in rivals):
        return st                                     # a better window holds this word
    return st._replace(pending=tuple(c for c in st.pending if c not in rivals) + (cand,))


def _release(st: DetectState, now: int | None, params: dict) -> tuple[list[dict], DetectState]:
    """Candidates no open window can beat any more (all of them when ``now`` is None), in time
    order, through the refractory time per word."""
    ready = [c for c in st.pending if now is None or c.due <= now]
    last_event = dict(st.last_event)
    out = []
    for c in sorted(ready, key=lambda c: c.start):
        last = last_event.get(c.label)
        last_event[c.label] = c.start
        if last is not None and c.start - last < int(params["refractory_ms"]):
            continue                                   # the same word still sounding
        out.append({"t": "event", "id": 0, "kind": "keyword", "label": c.label,
                    "confidence": c.confidence, "start_ms": int(c.word[0]),
                    "end_ms": int(c.word[1]), "window_ms": int(c.start), "scores": c.scores})
    return out, st._replace(pending=tuple(c for c in st.pending if c not in ready),
                            last_event=tuple(last_event.items()))
