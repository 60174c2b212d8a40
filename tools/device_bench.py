"""`tessera bench device`: what a person gets from the board, measured through the protocol.

``enroll_path``: for each speaker of an FSDD-style folder, N words taught one at a time over the
protocol (one recording each: ``{word}_{speaker}_0.wav``), then every other recording of those
words asked with ``infer`` (the user's path of ``shared/tools/user-path``, over ``sim://`` or any
port), in two orders of enrollment; plus silence. ``false_detections``: minutes of speech of words
that are not enrolled, and of noise, streamed through the device's continuous detection (sliding
windows), counting the words it reports.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..host import Session, score_events
from ..runtime.audio import load_audio
from ..runtime.constants import SAMPLE_RATE

__all__ = ["enroll_path", "false_detections", "open_set_path", "teach"]


def speaker_files(folder: str, speaker: str, word: int) -> list[str]:
    out = []
    i = 0
    while os.path.exists(p := os.path.join(folder, f"{word}_{speaker}_{i}.wav")):
        out.append(p)
        i += 1
    return out


def teach(s: Session, folder: str, speaker: str, words: int, threshold="model") -> None:
    """A clean board (no word, no untaught recording, ``threshold`` set), then digits
    0..words-1 taught one at a time from the speaker's first recording of each."""
    s.forget_all()
    s.dev.set_param("threshold", threshold)
    for w in range(words):
        s.teach(f"d{w}", speaker_files(folder, speaker, w)[0])


def check_folder(folder: str, speakers, words: int) -> None:
    """Every speaker has at least two recordings of each of the first ``words`` digits (one to
    teach, one to ask), else a clear error before anything is measured."""
    from ..runtime.errors import InputError

    if not os.path.isdir(folder):
        raise InputError("no such folder", source=folder)
    for spk in speakers:
        missing = [w for w in range(words) if len(speaker_files(folder, spk, w)) < 2]
        if missing:
            raise InputError(f"speaker {spk!r} has fewer than 2 recordings "
                             f"({{word}}_{spk}_{{i}}.wav) of word(s) {missing}", source=folder)


def enroll_path(folder: str, url: str, speakers=("george", "jackson", "lucas"),
                sizes=(5, 10), reverse: bool = True) -> dict:
    check_folder(folder, speakers, max(sizes))
    rows = []
    for spk in speakers:
        for n in sizes:
            words = list(range(n))
            for order in ([words, words[::-1]] if reverse else [words]):
                with Session.open(url) as s:
                    s.forget_all()
                    t0 = time.perf_counter()
                    for w in order:
                        s.teach(f"d{w}", speaker_files(folder, spk, w)[0])
                    enroll_s = (time.perf_counter() - t0) / n
                    ok = near = none = total = 0
                    for w in words:
                        for path in speaker_files(folder, spk, w)[1:]:
                            r = s.ask(path)
                            ok += r["label"] == f"d{w}"
                            near += r["best"] == f"d{w}"
                            none += r["label"] is None
                            total += 1
                    silence = s.ask(np.zeros(SAMPLE_RATE, np.int16))["label"]
                rows.append(dict(speaker=spk, words=n, order="forward" if order == words else
                                 "reverse", accuracy=round(ok / total, 4),
                                 nearest_accuracy=round(near / total, 4), answered_none=none,
                                 queries=total, silence=silence,
                                 enroll_round_trip_ms=round(1000 * enroll_s, 1)))
    return dict(rows=rows, folder=folder, url=url)


def false_detections(folder: str, url: str, speaker: str = "jackson", enrolled=(0, 1, 2, 3, 4),
                     minutes: float = 2.0, noise_minutes: float = 1.0, seed: int = 0,
                     hop_ms: int = 250, trigger: str = "onset") -> dict:
    """Continuous detection over speech of words NOT enrolled (the speaker's other digits,
    0.3-1.5 s pauses) and over noise: words reported per minute."""
    from ..trainer.evaluation.openset import noise_clips

    from ..runtime.errors import InputError

    rng = np.random.default_rng(seed)
    others = [p for w in range(10) if w not in enrolled for p in speaker_files(folder, speaker, w)]
    if not others:
        raise InputError(f"speaker {speaker!r} has no recordings of digits other than the "
                         f"taught {list(enrolled)}: nothing to stream for false detections",
                         source=folder)
    parts, total = [], 0
    while total < minutes * 60 * SAMPLE_RATE:
        pcm = load_audio(others[rng.integers(len(others))])
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), np.int16)
        parts += [pcm, gap]
        total += pcm.size + gap.size
    speech = np.concatenate(parts)
    clips = noise_clips(seconds=5.0, count=int(noise_minutes * 12) + 1, seed=seed + 1)
    noise = np.concatenate([c for _, c in clips[1:]])           # no pure silence
    out = {}
    with Session.open(url) as s:
        s.forget_all()
        for w in enrolled:
            s.teach(f"d{w}", speaker_files(folder, speaker, w)[0])
        detector = {"hop_ms": hop_ms, "trigger": trigger}
        for name, pcm in (("speech_of_other_words", speech), ("noise", noise)):
            t0 = time.perf_counter()
            events = s.stream(pcm, params=detector)["events"]
            mins = pcm.size / SAMPLE_RATE / 60
            out[name] = dict(minutes=round(mins, 2), detections=len(events),
                             per_minute=round(len(events) / mins, 3),
                             labels=sorted({e["label"] for e in events}),
                             seconds_to_stream=round(time.perf_counter() - t0, 1))
        # the enrolled words themselves in a stream: how many are found
        parts, spans, at = [], [], 0
        for w in enrolled:
            for p in speaker_files(folder, speaker, w)[1:6]:
                pcm = load_audio(p)
                parts += [pcm, np.zeros(SAMPLE_RATE, np.int16)]
                spans.append((at // 16, (at + pcm.size) // 16, f"d{w}"))
                at += pcm.size + SAMPLE_RATE
        events = s.stream(np.concatenate(parts), params=detector)["events"]
        found, wrong = score_events(events, spans)
        out["enrolled_words_stream"] = dict(words=len(spans), detected=found,
                                            events=len(events), wrong_events=wrong)
    out.update(speaker=speaker, enrolled=[f"d{w}" for w in enrolled], url=url, hop_ms=hop_ms,
               trigger=trigger)
    return out


def open_set_path(folder: str, url: str, speakers=("george", "jackson", "lucas"), words: int = 5,
                  other=(5, 6), modes=("model", "person", "person+other"),
                  others_per_word: int = 3, asked_per_word: int | None = None) -> dict:
    """"None" fitted to the person, through the protocol: ``words`` digits taught one at a time
    (one recording each), then the speaker's other recordings of them (positives: accepted with
    the right label = a hit) and of the digits neither taught nor in ``other`` (negatives:
    accepted at all = a false accept). Threshold modes: the model file's ("model"), fitted at
    enrollment from the taught words alone ("person", leave-one-out), and fitted with
    ``others_per_word`` recordings of each ``other`` digit given as untaught ("person+other",
    the ``_other`` folder of ``device untaught``). ``asked_per_word``: at most this many
    recordings asked of each word (default: all)."""
    check_folder(folder, speakers, words)
    negatives = [w for w in range(10) if w >= words and w not in other]
    rows = []
    for spk in speakers:
        for mode in modes:
            with Session.open(url) as s:
                teach(s, folder, spk, words, "model" if mode == "model" else "person")
                if mode == "person+other":
                    s.untaught(*[p for w in other
                                 for p in speaker_files(folder, spk, w)[:others_per_word]])
                thr = s.dev.params()["threshold_in_use"]
                hits = pos = fa = neg = 0
                for w in range(words):
                    for path in speaker_files(folder, spk, w)[1:][:asked_per_word]:
                        hits += s.ask(path)["label"] == f"d{w}"
                        pos += 1
                for w in negatives:
                    for path in speaker_files(folder, spk, w)[others_per_word:][:asked_per_word]:
                        fa += s.ask(path)["label"] is not None
                        neg += 1
                s.dev.set_param("threshold", "model")
                s.clear_untaught()
            rows.append(dict(speaker=spk, mode=mode, threshold=round(thr, 3),
                             hit_rate=round(hits / pos, 4), false_accept_rate=round(fa / neg, 4),
                             positives=pos, negatives=neg, negative_words=negatives))
    return dict(rows=rows, words=words, other=list(other), folder=folder, url=url)
