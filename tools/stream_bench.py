"""`tessera bench stream`: are taught words found in a running stream, and nothing else?

For each speaker of an FSDD-style folder and each vocabulary size (digits 0..N-1), the words are
taught over the protocol from one recording each (``{word}_{speaker}_0.wav``), then one long
stream (at least ``minutes`` per speaker) is sent through the device's continuous detection. The
stream is a timeline with a ground truth: the speaker's other recordings of the taught words,
words that are not taught, and noise, each after a pause of 0.3-1.5 s, all over a quiet
background (-60 dBFS). Untaught words are the same speaker's other digits when there are any;
with all ten digits taught, words that espeak-ng says (the ``novel`` corpus words, several
voices) when it is installed, else none (the report says so).

Scoring (:func:`score_timeline`): a taught word is **found** when an event names it and starts
within ``tolerance_ms`` of the word's start (its first 10 ms frame within 30 dB of its loudest);
any other event is **false**, charged to the item whose span (the item and the pause after it)
holds the event's start, or to the next item when its clip starts within ``tolerance_ms`` after
the event: untaught speech, noise, or a taught word (a wrong or repeated answer).
Rates are per minute of that kind of item. The timing error is the event's start minus the word's
start, and its end minus the word's end, over the found words.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from .. import firmware_sim  # noqa: F401  (registers the simulator's sim:// URLs)
from ..host import Session, match_events
from ..runtime.audio import load_audio, resample
from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from .device_bench import speaker_files, teach, check_folder

__all__ = ["word_bounds", "make_timeline", "score_timeline", "stream_bench", "tts_words"]

MS = SAMPLE_RATE // 1000


def word_bounds(pcm: np.ndarray, floor_db: float = -30.0) -> tuple[int, int]:
    """(first, last + 1) sample of the word in a recording: its 10 ms frames within ``floor_db``
    of the loudest one."""
    x = np.asarray(pcm, np.float64)
    n = x.size // 160
    if n == 0:
        return 0, x.size
    rms = np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-9)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > floor_db)[0]
    return int(loud[0]) * 160, min(int(loud[-1] + 1) * 160, x.size)


def tts_words(count: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Untaught words for a vocabulary of all ten digits: the ``novel`` corpus words spoken by
    espeak-ng (bundled by the ``corpus`` extra) in several voices, 16 kHz int16; [] when it is
    not installed."""
    try:
        from ..trainer.data.corpus import NOVEL_WORDS
        from ..trainer.data.tts import Espeak, TTSUnavailable, Voice
    except ImportError:
        return []
    try:
        tts = Espeak()
    except (TTSUnavailable, ImportError, OSError):
        return []
    rng = np.random.default_rng([seed, 0x57])
    out = []
    for i in range(count):
        word = NOVEL_WORDS[i % len(NOVEL_WORDS)][1]
        voice = Voice(["en-us", "en", "en-gb-x-rp"][i % 3], ["m1", "f2", "m3", "f4", "m7"][i % 5],
                      rate=int(rng.integers(140, 190)), pitch=int(rng.integers(30, 70)))
        pcm = resample(tts.synth(word, voice, seed=i).astype(np.float32) / 32768.0,
                       tts.sample_rate, SAMPLE_RATE)
        out.append(np.round(np.clip(pcm * 0.5, -1, 1) * 32767).astype(np.int16))
    return out


def make_timeline(taught: dict[str, list[np.ndarray]], untaught: list[np.ndarray],
                  noise: list[np.ndarray], minutes: float, seed: int = 0,
                  mix=(0.6, 0.25, 0.15), background_dbfs: float = -60.0
                  ) -> tuple[np.ndarray, list[dict]]:
    """One stream and its truth: items drawn with probabilities ``mix`` (taught word, untaught
    word, noise), each after a 0.3-1.5 s pause, until ``minutes``. Each item: kind, label (taught
    words), start_ms / end_ms (the word itself; the whole clip for noise) and until_ms (where the
    next pause ends: the item's share of the timeline)."""
    rng = np.random.default_rng(seed)
    kinds = ["taught", "untaught", "noise"]
    p = np.array([m if pool else 0.0 for m, pool in zip(mix, (taught, untaught, noise))], float)
    if p.sum() == 0:
        raise InputError("bench stream: nothing to put in the stream")
    p /= p.sum()
    bags = {lab: [] for lab in taught}
    parts, items, at = [], [], 0
    total = int(minutes * 60 * SAMPLE_RATE)
    while at < total:
        gap = int(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
        parts.append(np.zeros(gap, np.float64))
        at += gap
        if items:
            items[-1]["until_ms"] = at // MS
        kind = kinds[int(rng.choice(3, p=p))]
        if kind == "taught":
            label = list(taught)[int(rng.integers(len(taught)))]
            if not bags[label]:
                bags[label] = list(rng.permutation(len(taught[label])))
            clip = taught[label][int(bags[label].pop())]
        elif kind == "untaught":
            label, clip = None, untaught[int(rng.integers(len(untaught)))]
        else:
            label, clip = None, noise[int(rng.integers(len(noise)))]
        a, b = word_bounds(clip) if kind != "noise" else (0, clip.size)
        items.append(dict(kind=kind, label=label, start_ms=(at + a) // MS, end_ms=(at + b) // MS,
                          clip_ms=(at // MS, (at + clip.size) // MS)))
        parts.append(np.asarray(clip, np.float64))
        at += clip.size
    tail = int(1.5 * SAMPLE_RATE)
    parts.append(np.zeros(tail, np.float64))
    at += tail
    items[-1]["until_ms"] = at // MS
    x = np.concatenate(parts)
    bg = rng.standard_normal(x.size) * 32767 * 10 ** (background_dbfs / 20)
    return np.clip(np.round(x + bg), -32768, 32767).astype(np.int16), items


def score_timeline(events: list[dict], items: list[dict], tolerance_ms: int = 300) -> dict:
    """Found, missed and false detections of a stream's events against its timeline, by the
    host's one rule (:func:`tessera.host.match_events`: an event finds a taught word when it
    names it and its window overlaps the word's span widened by ``tolerance_ms``); a false
    detection is charged to the item it lies in."""
    starts = np.array([it["clip_ms"][0] for it in items])
    taught_items = [i for i, it in enumerate(items) if it["kind"] == "taught"]
    spans = [(items[i]["start_ms"], items[i]["end_ms"], items[i]["label"]) for i in taught_items]
    matched = match_events(events, spans, tolerance_ms)
    found = {taught_items[j]: events[e] for j, e in matched.items()}
    used = set(matched.values())
    false = {"taught": 0, "untaught": 0, "noise": 0}
    for k, e in enumerate(events):
        if k in used:
            continue
        # an event belongs to the item whose clip starts at most ``tolerance_ms`` after it
        # (a word heard a little early is that word's), else to the item whose pause it is in
        j = int(np.searchsorted(starts, e["start_ms"] + tolerance_ms, side="right")) - 1
        false[items[max(j, 0)]["kind"]] += 1
    minutes = {k: sum(it["until_ms"] - it["clip_ms"][0] for it in items if it["kind"] == k)
               / 60_000 for k in false}
    taught = [i for i, it in enumerate(items) if it["kind"] == "taught"]
    d_start = [found[i]["start_ms"] - items[i]["start_ms"] for i in found]
    d_end = [found[i]["end_ms"] - items[i]["end_ms"] for i in found]

    def stat(v):
        a = np.abs(np.asarray(v, float))
        return dict(median_ms=round(float(np.median(a)), 1) if a.size else None,
                    p90_ms=round(float(np.percentile(a, 90)), 1) if a.size else None)

    return dict(
        taught_words=len(taught), found=len(found), missed=len(taught) - len(found),
        found_rate=round(len(found) / max(len(taught), 1), 4),
        false_in_untaught=false["untaught"], false_in_noise=false["noise"],
        false_in_taught=false["taught"],
        minutes=dict((k, round(v, 3)) for k, v in minutes.items()),
        false_per_min_untaught=round(false["untaught"] / minutes["untaught"], 3)
        if minutes["untaught"] else None,
        false_per_min_noise=round(false["noise"] / minutes["noise"], 3)
        if minutes["noise"] else None,
        start_error=stat(d_start), end_error=stat(d_end),
        mean_start_offset_ms=round(float(np.mean(d_start)), 1) if d_start else None)


def stream_bench(folder: str, url: str, speakers=("george", "jackson", "lucas"), sizes=(5, 10),
                 minutes: float = 5.0, seed: int = 0, tolerance_ms: int = 300,
                 thresholds=("model",), params: dict | None = None,
                 say=lambda line: None) -> dict:
    """Every speaker, vocabulary size and threshold (``set_param threshold``: "model", "person"
    or a cosine, set before the words are taught): teach, stream the timeline, score (see the
    module). ``params``: other device parameters for the streams (e.g. ``min_confidence``)."""
    from ..trainer.evaluation.openset import noise_clips

    check_folder(folder, speakers, max(sizes))
    clips = noise_clips(seconds=3.0, count=13, seed=seed + 1)
    noise = [c for name, c in clips if name != "silence"]
    spoken = None
    rows = []
    for spk in speakers:
        for n in sizes:
            taught = {f"d{w}": [load_audio(p) for p in speaker_files(folder, spk, w)[1:]]
                      for w in range(n)}
            untaught = [load_audio(p) for w in range(n, 10) for p in speaker_files(folder, spk, w)]
            source = f"{spk}'s digits {n}-9" if untaught else None
            if not untaught:
                spoken = tts_words(seed=seed) if spoken is None else spoken
                untaught = spoken
                source = "espeak-ng words (novel corpus)" if spoken else "none (no espeak-ng)"
            pcm, items = make_timeline(taught, untaught, noise, minutes,
                                       seed=[seed, zlib.crc32(spk.encode()), n])
            for thr in thresholds:
                say(f"{spk}, {n} words, threshold {thr}: {pcm.size / SAMPLE_RATE / 60:.1f} min "
                    f"stream ...")
                rows.append(_one_stream(url, folder, spk, n, thr, pcm, items, tolerance_ms,
                                        source, params or {}))
    return dict(rows=rows, folder=folder, url=url, minutes=minutes, tolerance_ms=tolerance_ms,
                thresholds=list(thresholds))


def _one_stream(url, folder, spk, n, thr, pcm, items, tolerance_ms, source, params) -> dict:
    with Session.open(url) as s:
        teach(s, folder, spk, n, thr)
        before = s.dev.params()
        for k, v in params.items():
            s.dev.set_param(k, v)
        t0 = time.perf_counter()
        events = s.stream(pcm)["events"]
        elapsed = time.perf_counter() - t0
        used = s.dev.params()
        for k in params:
            s.dev.set_param(k, before[k])
        s.dev.set_param("threshold", "model")
    r = score_timeline(events, items, tolerance_ms)
    r.update(speaker=spk, words=n, threshold=thr,
             stream_minutes=round(pcm.size / SAMPLE_RATE / 60, 2), untaught_source=source,
             timeline=[[it["kind"], it["label"], it["start_ms"], it["end_ms"]] for it in items],
             detections=[[e["label"], e["start_ms"], e["end_ms"]] for e in events],
             events=len(events), seconds_to_stream=round(elapsed, 1),
             detector={k: used.get(k) for k in ("trigger", "hop_ms", "refractory_ms",
                                                "min_confidence", "threshold_in_use",
                                                "nms_ms", "max_word_ms")})
    return r
