"""`tessera demo`: teach the simulated board new words over its serial port, and show it.

The board is ``tessera sim --pty`` in a child process, and the demo talks to it only through the
protocol, as a host talks to a real board: it loads the model, enrolls each word from ONE
utterance, streams held-out utterances in real time (one window each, as push-to-talk) and a
sentence with continuous detection on. What it cannot see through the port (spike rasters, the
readout's scores over time, accuracy against the number of shots) it computes on a local chip
emulator with the same model file, and says so.

Three sources of words (:class:`DemoSet`): speech synthesized on the spot (:func:`synthesized_set`,
Spanish words the model never saw, by a voice of the corpus's test split it never heard), your
recordings (:func:`folder_set`) and the microphone (:func:`mic_set`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from . import json_default

__all__ = ["DemoSet", "Utterance", "synthesized_set", "folder_set", "mic_set", "run_demo",
           "DEMO_WORDS", "DEMO_OTHERS"]

#: Words of a language meta-training never had (the corpus's ``lang`` words): five to enroll and
#: three that stay unknown (the device should answer "none of these").
DEMO_WORDS = ("perro", "gato", "luna", "flor", "ventana")
DEMO_OTHERS = ("playa", "libro", "manzana")
OTHER = "(other word)"         # the truth of an utterance of a word that was not enrolled
NONE = "none"                  # the device's "none of these"


@dataclass
class Utterance:
    word: str                  # what was said
    pcm: np.ndarray            # 16 kHz int16
    voice: str                 # who said it (a TTS voice, "you", a file's folder)
    enrolled: bool = True      # False: a word that is never taught
    same_voice: bool = True    # the voice of the word's enrollment shot
    source: str = ""           # a file path, or how it was made


@dataclass
class DemoSet:
    """What the demo teaches and asks: one shot per word, the test utterances (held out from the
    shots), and a larger pool per enrolled word for accuracy against shots (may be empty)."""

    shots: dict[str, Utterance]
    tests: list[Utterance]
    pool: dict[str, list[Utterance]] = field(default_factory=dict)
    sentence: list[Utterance] = field(default_factory=list)
    description: str = ""

    def check(self) -> None:
        if len(self.shots) < 2:
            raise InputError(f"the demo needs at least 2 words to enroll, got {len(self.shots)}")
        if not self.tests:
            raise InputError("the demo has no held-out utterances to ask about: give at least "
                             "two recordings of a word (the first is the shot)")


# ---------------------------------------------------------------------- sources
def synthesized_set(folder: str, seed: int = 0, words=DEMO_WORDS, others=DEMO_OTHERS,
                    other_voices: int = 1, progress: bool = False) -> DemoSet:
    """Spanish words, spoken by espeak-ng voices of the default corpus's test split (the same
    100 voices and seed the committed model was trained with, so none of these voices was
    heard in training, and the words are not in its vocabulary). The user's voice (picked by
    ``seed``) says each word four times (tempo, level, noise and onset vary): the first is the
    shot, the other three are asked, with two of each word that is not taught;
    ``other_voices`` more unheard voices say every taught word once (a second person asking
    the device the first one taught)."""
    import h5py

    from ..trainer.data.corpus import CorpusConfig, build_corpus

    words, others = tuple(words), tuple(others)
    path = os.path.join(folder, "demo-words.h5")
    cfg = CorpusConfig(speakers=100, repeats=4, seed=0, keep_audio=True,
                       words=tuple(("es", w) for w in words + others), speaker_splits=("test",))
    built = build_corpus(path, cfg, progress=progress, preset="demo")
    with h5py.File(path, "r") as h5:
        labels = h5["labels"][:]
        spk = h5["extra/speaker"][:]
        names = [s.decode() if isinstance(s, bytes) else s
                 for s in h5["extra/tessera/speaker_names"][:]]
        pcm = [np.asarray(p, np.int16) for p in h5["audio/pcm"][:]]
    os.remove(path)                                   # 40 MB of audio the report does not need
    voices = sorted(set(spk.tolist()))
    rng = np.random.default_rng(seed)
    order = [voices[i] for i in rng.permutation(len(voices))]
    user, rest = order[0], order[1:1 + other_voices]
    vocab = words + others

    def utts(w: int, v: int) -> list[int]:
        return [int(i) for i in np.flatnonzero((labels == w) & (spk == v))]

    def utt(i: int, **kw) -> Utterance:
        w = vocab[labels[i]]
        return Utterance(w, pcm[i], f"{names[spk[i]]}", enrolled=w in words,
                         source=f"espeak-ng, es, test voice {spk[i]}", **kw)

    shots, tests, pool, sentence = {}, [], {}, []
    for w, word in enumerate(words):
        mine = utts(w, user)
        shots[word] = utt(mine[0])
        tests += [utt(i) for i in mine[1:]]
        tests += [utt(utts(w, v)[0], same_voice=False) for v in rest]
        pool[word] = [utt(i, same_voice=spk[i] == user) for i in np.flatnonzero(labels == w)]
    for w, word in enumerate(others, start=len(words)):
        tests += [utt(i) for i in utts(w, user)[:2]]
    for w in (0, len(words), 1, 2):                   # a known word, an unknown one, two known
        sentence.append(utt(utts(w, user)[3 if w < len(words) else 2]))
    rng.shuffle(tests)
    return DemoSet(shots, tests, pool, sentence,
                   description=f"{len(words)} Spanish words the model never saw, taught from one "
                               f"utterance each of the voice {names[user]} (a test voice it never "
                               f"heard), then {len(tests)} held-out utterances asked: that voice "
                               f"again, {len(rest)} other unheard voice(s), and {len(others)} "
                               f"words that are not taught (synthesized in {built['seconds']} s)")


def folder_set(folder: str) -> DemoSet:
    """Your recordings: one sub-folder per word, its files in name order; the first is the
    shot, the others are asked. A sub-folder named ``_other`` holds words that are not taught."""
    from ..runtime.audio import load_audio

    if not os.path.isdir(folder):
        raise InputError("--words needs a folder with one sub-folder of WAV files per word",
                         source=folder)
    shots, tests, pool, sentence = {}, [], {}, []
    subs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    for d in subs:
        files = sorted(f for f in os.listdir(os.path.join(folder, d))
                       if f.lower().endswith(".wav"))
        paths = [os.path.join(folder, d, f) for f in files]
        if not paths:
            continue
        if d == "_other":
            tests += [Utterance(OTHER, load_audio(p), "you", enrolled=False, source=p)
                      for p in paths]
            continue
        utts = [Utterance(d, load_audio(p), "you", source=p) for p in paths]
        shots[d] = utts[0]
        tests += utts[1:]
        pool[d] = utts
    if not shots:
        raise InputError("no word folders with WAV files in it (expected WORD/NAME.wav)",
                         source=folder)
    sentence = [t for t in tests[:4]]
    out = DemoSet(shots, tests, pool, sentence,
                  description=f"{len(shots)} words from {folder}, one recording each taught, "
                              f"{len(tests)} other recordings asked")
    out.check()
    return out


def mic_set(words, seconds: float = 1.5, repeats: int = 2, prompt=print, record=None) -> DemoSet:
    """Record each word once (the shot), then each ``repeats`` more times in a shuffled order,
    plus ``repeats`` words of your choice that are not taught. ``record()`` returns one clip
    (default: the microphone)."""
    if record is None:
        from .microphone import recorder

        record = recorder(seconds)
    words = list(words)
    shots, tests = {}, []
    for w in words:
        prompt(f"say '{w}' now ({seconds:g} s)")
        shots[w] = Utterance(w, record(), "you", source="microphone")
    asks = [(w, True) for w in words for _ in range(repeats)] + [(OTHER, False)] * repeats
    rng = np.random.default_rng()
    for i in rng.permutation(len(asks)):
        w, enrolled = asks[i]
        prompt(f"say '{w}' now" if enrolled else "say any other word now")
        tests.append(Utterance(w, record(), "you", enrolled=enrolled, source="microphone"))
    return DemoSet(shots, tests, {w: [shots[w]] + [t for t in tests if t.word == w]
                                  for w in words}, tests[:4],
                   description=f"{len(words)} words recorded from the microphone")


# ---------------------------------------------------------------------- the run
def run_demo(ds: DemoSet, model: str, folder: str, realtime: bool = True, on_line=print,
             shots_curve=(1, 2, 3, 5), draws: int = 20, seed: int = 0,
             min_confidence: float | None = None) -> dict:
    """The demo proper: ``model`` (a ``.tsr``) loaded into ``tessera sim --pty`` over the port,
    the shots enrolled, the tests and the sentence streamed (``realtime``: paced as a
    microphone), every answer handed to ``on_line`` as it arrives; then the local figures. The
    tests and the sentence's continuous detection are answered by the device's one decision
    rule (its threshold and ``min_confidence``, set for the whole demo when given). Returns the
    summary (also written as ``summary.json``) with the plots' paths."""
    from ..firmware_sim.boot import pty_sim
    from ..protocol.client import Device
    from ..runtime.chip import Chip
    from ..runtime.model_format import decode_model

    ds.check()
    os.makedirs(folder, exist_ok=True)
    try:                                              # read once: the board and the figures
        with open(model, "rb") as fh:
            blob = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read the model: {exc.strerror}", source=model) from None
    chip = Chip(decode_model(blob, model), source=model)   # checked before the board starts
    bin_ms, words = chip.tab.bin_ms, sorted(ds.shots)
    out: dict = dict(description=ds.description, model=model, words=words,
                     model_bytes=len(blob), realtime=realtime)
    with pty_sim("") as port:
        with Device.open(port, timeout=10.0) as dev:
            out["port"] = port
            out["firmware"] = dev.info().get("firmware")
            t0 = time.perf_counter()
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            dev.load(blob)
            out["load"] = dict(seconds=round(time.perf_counter() - t0, 3),
                               bytes_sent=dev.bytes_sent - sent0,
                               bytes_received=dev.bytes_received - recv0)
            on_line(f"loaded {os.path.basename(model)} ({out['model_bytes']} bytes) into the "
                    f"board at {port} in {out['load']['seconds']:.2f} s")
            base = dev.stats()["chip"]
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            if min_confidence is not None:
                dev.set_param("min_confidence", min_confidence)
            enrolls = _teach(dev, ds, words, realtime, on_line)
            out["enroll"] = dict(words=enrolls, bytes_sent=dev.bytes_sent - sent0,
                                 bytes_received=dev.bytes_received - recv0)
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            results, audio_s = _ask(dev, ds, realtime, on_line)
            stats = dev.stats()["chip"]
            out["tests"] = dict(bytes_sent=dev.bytes_sent - sent0,
                                bytes_received=dev.bytes_received - recv0,
                                audio_seconds=round(audio_s, 2))
            out["results"] = results
            out["activity"] = _activity(base, stats, bin_ms)
            out["sentence"] = _stream_sentence(dev, ds.sentence, realtime, on_line)
            out["link"] = dict(bytes_sent=dev.bytes_sent, bytes_received=dev.bytes_received,
                               retries=dev.retried)
    out["table"] = _tables(results, words)
    on_line("drawing the report's figures (on a local chip emulator with the same model) ...")
    from .demo_figures import local_figures

    out["plots"] = local_figures(ds, chip, folder, out, shots_curve, draws, seed)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(out, f, indent=1, default=json_default)
    return out


def _teach(dev, ds: DemoSet, words: list[str], realtime: bool, on_line) -> list[dict]:
    """Each word taught over the port from its one shot."""
    enrolls = []
    for w in words:
        u = ds.shots[w]
        dev.reset()
        dev.stream_pcm(u.pcm, realtime=realtime)
        t1 = time.perf_counter()
        r = dev.enroll(w)                        # the utterance just streamed
        ms = (time.perf_counter() - t1) * 1e3
        enrolls.append(dict(word=w, voice=u.voice, round_trip_ms=round(ms, 2),
                            device_ms=r.get("ms")))
        on_line(f"taught '{w}' from one utterance ({u.voice}): "
                f"{ms:.1f} ms round trip")
    return enrolls


def _ask(dev, ds: DemoSet, realtime: bool, on_line) -> tuple[list[dict], float]:
    """Every test utterance asked over the port; the answers and the seconds of audio."""
    results, audio_s = [], 0.0
    for k, u in enumerate(ds.tests, 1):
        pcm = u.pcm
        audio_s += pcm.size / SAMPLE_RATE
        dev.reset()
        dev.stream_pcm(pcm, realtime=realtime)
        t1 = time.perf_counter()
        r = dev.end_utterance()
        lat = (time.perf_counter() - t1) * 1e3
        answer = r.get("label") or NONE
        truth = u.word if u.enrolled else OTHER
        ok = answer == u.word if u.enrolled else answer == NONE
        results.append(dict(word=u.word, truth=truth, enrolled=u.enrolled,
                            voice=u.voice, same_voice=bool(u.same_voice),
                            answer=answer, best=r.get("best"),
                            confidence=round(float(r.get("confidence", 0.0)), 3),
                            correct=bool(ok), latency_ms=round(lat, 2),
                            source=u.source))
        mark = "right" if ok else "WRONG"
        on_line(f"[{k:2d}/{len(ds.tests)}] said '{u.word}'"
                f"{'' if u.enrolled else ' (not taught)'} ({u.voice}) -> "
                f"{answer} ({r.get('confidence', 0):.2f})  {mark}  {lat:.0f} ms")
    return results, audio_s


def _activity(before: dict, after: dict, bin_ms: int) -> dict:
    """The chip's counters over the tests, and per second of network time."""
    d = {k: after[k] - before[k] for k in ("steps", "synops", "spikes")}
    secs = max(d["steps"], 1) * bin_ms / 1000.0
    d.update(network_seconds=round(secs, 2), synops_per_s=round(d["synops"] / secs),
             spikes_per_s=round(d["spikes"] / secs))
    return d


def _stream_sentence(dev, sentence: list[Utterance], realtime: bool, on_line) -> dict:
    """The sentence's words one after another (0.5 s apart, 1 s of quiet at the end) with
    continuous detection on: the device's events as they arrive, with the time each was
    received."""
    if not sentence:
        return {}
    gap = np.zeros(int(0.5 * SAMPLE_RATE), np.int16)
    parts, spans, at = [gap], [], gap.size
    for u in sentence:
        parts += [u.pcm, gap]
        spans.append(dict(word=u.word, enrolled=u.enrolled, start_ms=1000 * at // SAMPLE_RATE,
                          end_ms=1000 * (at + u.pcm.size) // SAMPLE_RATE))
        at += u.pcm.size + gap.size
    pcm = np.concatenate(parts + [np.zeros(SAMPLE_RATE // 2, np.int16)])
    events = []
    t0 = time.perf_counter()

    def show(e):
        e = dict(label=e["label"], confidence=round(float(e["confidence"]), 3),
                 start_ms=int(e["start_ms"]), end_ms=int(e["end_ms"]),
                 received_s=round(time.perf_counter() - t0, 3))
        events.append(e)
        on_line(f"  detected '{e['label']}' in {e['start_ms'] / 1000:.2f}-"
                f"{e['end_ms'] / 1000:.2f} s (probability {100 * e['confidence']:.0f} % that it "
                f"is right), "
                f"received at {e['received_s']:.2f} s")

    params = dev.params()
    said = ", ".join(s["word"] + ("" if s["enrolled"] else " (not taught)") for s in spans)
    on_line(f"streaming a {pcm.size / SAMPLE_RATE:.1f} s sentence with continuous detection "
            f"(the same rule as the answers above: cosine >= "
            f"{params['threshold_in_use']:.3f}, confidence >= {params['min_confidence']:g}); "
            f"what is said in it: {said}")
    dev.reset()
    dev.set_param("detect", True)
    dev.stream_pcm(pcm, realtime=realtime, on_event=show)
    dev.end_utterance()
    dev.drain(show)
    dev.set_param("detect", False)
    from .device_bench import score_events

    taught = [(sp["start_ms"], sp["end_ms"], sp["word"]) for sp in spans if sp["enrolled"]]
    found, false = score_events(events, taught)
    on_line(f"  the sentence: {found} of {len(taught)} taught words found, {false} false "
            f"detection(s)" + ("" if events else " (no word detected)"))
    return dict(words=spans, events=events, seconds=round(pcm.size / SAMPLE_RATE, 2),
                found=found, taught=len(taught), false_detections=false, pcm=pcm)


def _tables(results: list[dict], words: list[str]) -> dict:
    """Accuracy per word, the confusion matrix, rejections, latency."""
    per_word = []
    for w in words:
        rs = [r for r in results if r["enrolled"] and r["word"] == w]
        right = sum(r["correct"] for r in rs)
        per_word.append(dict(word=w, asked=len(rs), right=right,
                             wrong=sum(r["answer"] not in (w, NONE) for r in rs),
                             none=sum(r["answer"] == NONE for r in rs),
                             accuracy=round(right / max(len(rs), 1), 3)))
    enrolled = [r for r in results if r["enrolled"]]
    others = [r for r in results if not r["enrolled"]]
    same = [r for r in enrolled if r["same_voice"]]
    diff = [r for r in enrolled if not r["same_voice"]]
    rows = words + ([OTHER] if others else [])
    cols = words + [NONE]
    conf = [[sum(1 for r in results if r["truth"] == t and r["answer"] == a) for a in cols]
            for t in rows]
    lat = [r["latency_ms"] for r in results]

    def acc(rs):
        return round(sum(r["correct"] for r in rs) / len(rs), 3) if rs else None

    return dict(per_word=per_word, accuracy=acc(enrolled), accuracy_same_voice=acc(same),
                accuracy_other_voices=acc(diff), asked=len(enrolled),
                right=sum(r["correct"] for r in enrolled),
                not_taught_asked=len(others),
                not_taught_rejected=sum(r["answer"] == NONE for r in others),
                confusion=dict(rows=rows, cols=cols, matrix=conf),
                latency_ms=dict(median=round(float(np.median(lat)), 2),
                                max=round(float(np.max(lat)), 2)))
