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

import base64
import html
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from . import json_default

__all__ = ["DemoSet", "Utterance", "synthesized_set", "folder_set", "mic_set", "run_demo",
           "write_report", "DEMO_WORDS", "DEMO_OTHERS"]

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


def _recorder(seconds: float):
    """A function that records ``seconds`` of 16 kHz int16 mono from the default microphone."""
    try:
        import sounddevice as sd
    except ImportError:
        raise InputError("--mic needs the mic extra: pip install -e '.[mic]'") from None
    try:
        sd.check_input_settings(samplerate=SAMPLE_RATE, channels=1, dtype="int16")
    except Exception as exc:                              # noqa: BLE001 (PortAudio errors)
        raise InputError(f"no microphone to record from ({exc})") from None

    def record() -> np.ndarray:
        x = sd.rec(int(seconds * SAMPLE_RATE), samplerate=SAMPLE_RATE, channels=1,
                   dtype="int16")
        sd.wait()
        return np.asarray(x[:, 0])
    return record


def mic_set(words, seconds: float = 1.5, repeats: int = 2, prompt=print, record=None) -> DemoSet:
    """Record each word once (the shot), then each ``repeats`` more times in a shuffled order,
    plus ``repeats`` words of your choice that are not taught. ``record()`` returns one clip
    (default: the microphone)."""
    record = record or _recorder(seconds)
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
    from ..protocol.client import Device
    from ..firmware_sim.boot import pty_sim

    from ..runtime.chip import Chip

    ds.check()
    os.makedirs(folder, exist_ok=True)
    bin_ms = Chip.load(model).tab.bin_ms            # checks the file before the board starts
    words = sorted(ds.shots)
    out: dict = dict(description=ds.description, model=model, words=words,
                     model_bytes=os.path.getsize(model), realtime=realtime)
    with pty_sim("") as port:
        if not port:
            raise InputError("the firmware simulator did not start on a pseudo-terminal")
        with Device.open(port, timeout=10.0) as dev:
            out["port"] = port
            out["firmware"] = dev.info().get("firmware")
            t0 = time.perf_counter()
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            dev.load(model)
            out["load"] = dict(seconds=round(time.perf_counter() - t0, 3),
                               bytes_sent=dev.bytes_sent - sent0,
                               bytes_received=dev.bytes_received - recv0)
            on_line(f"loaded {os.path.basename(model)} ({out['model_bytes']} bytes) into the "
                    f"board at {port} in {out['load']['seconds']:.2f} s")
            base = dev.stats()["chip"]
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            if min_confidence is not None:
                dev.set_param("min_confidence", min_confidence)
            enrolls = []
            for w in words:
                u = ds.shots[w]
                dev.request({"t": "reset_state"})
                dev.stream_pcm(u.pcm, realtime=realtime)
                dev.request({"t": "end_of_utterance", "shot": True})
                t1 = time.perf_counter()
                r = dev.request({"t": "enroll", "label": w, "shots": 1})
                ms = (time.perf_counter() - t1) * 1e3
                enrolls.append(dict(word=w, voice=u.voice, round_trip_ms=round(ms, 2),
                                    device_ms=r.get("ms")))
                on_line(f"taught '{w}' from one utterance ({u.voice}): "
                        f"{ms:.1f} ms round trip")
            out["enroll"] = dict(words=enrolls, bytes_sent=dev.bytes_sent - sent0,
                                 bytes_received=dev.bytes_received - recv0)
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            results, audio_s = [], 0.0
            for k, u in enumerate(ds.tests, 1):
                pcm = u.pcm
                audio_s += pcm.size / SAMPLE_RATE
                dev.request({"t": "reset_state"})
                dev.stream_pcm(pcm, realtime=realtime)
                t1 = time.perf_counter()
                r = dev.request({"t": "end_of_utterance"})
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
    out["plots"] = _local_figures(ds, model, folder, out, shots_curve, draws, seed)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(out, f, indent=1, default=json_default)
    return out


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
    dev.request({"t": "reset_state"})
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


# ---------------------------------------------------------------------- local figures
def _local_figures(ds: DemoSet, model: str, folder: str, out: dict, shots_curve, draws: int,
                   seed: int) -> dict:
    from ..runtime.chip import Chip
    from . import plots

    chip = Chip.load(model)
    tab = chip.tab
    pngs = {}
    # audio -> front-end spikes -> core spikes, for the first word's shot
    w0 = sorted(ds.shots)[0]
    pcm = ds.shots[w0].pcm
    chip.reset()
    fe = chip.cochlea.encode(pcm)[: tab.steps * tab.bin_ms]
    chip.reset()
    core = chip.run(fe)
    chip.end_utterance()
    core = np.vstack([core, chip.tail])
    pngs["pipeline"] = plots.pipeline_png(
        os.path.join(folder, "pipeline.png"), pcm, fe, core, tab.tile, tab.bin_ms,
        title=f"'{w0}' ({ds.shots[w0].voice}): audio, the front-end's {fe.shape[1]} channels "
              f"the model reads, the core's {tab.neurons} neurons on {tab.rows * tab.cols} tiles")
    # the learned layout by tile, with the routing table's hop distances
    hops = np.full((tab.rows * tab.cols,) * 2, -1)
    for a, b, h in tab.routes:
        hops[a, b] = h
    pngs["layout"] = plots.layout_heatmap_png(
        os.path.join(folder, "layout.png"), chip.W_rec, tab.rows, tab.cols, tab.tile,
        hops=hops, title=f"the learned recurrent core on a {tab.rows}x{tab.cols} grid of "
                         f"{tab.tile}-neuron tiles (numbers: routing hops between tiles)")
    # confusion of the answers the board gave
    c = out["table"]["confusion"]
    pngs["confusion"] = plots.confusion_png(os.path.join(folder, "confusion.png"), c["matrix"],
                                            c["rows"], c["cols"],
                                            title="the board's answers (rows: what was said)")
    # readout scores over time of the streamed sentence (local chip, same model and shots)
    for w in sorted(ds.shots):
        chip.reset()
        chip.run(chip.cochlea.encode(ds.shots[w].pcm))
        chip.enroll(w)
    sent = out.get("sentence") or {}
    if sent:
        pcm = sent.pop("pcm")
        t_ms, scores = _scores_over_time(chip, pcm)
        pngs["scores"] = plots.scores_png(
            os.path.join(folder, "scores.png"), pcm, t_ms, scores, sent["words"],
            sent["events"], chip.readout.none_threshold / (1 << tab.cos_frac),
            window_ms=tab.steps * tab.bin_ms,
            title="readout scores while the sentence streams (cosine with each enrolled word, "
                  "window ending at t); " + ("shaded: the windows of the board's detections"
                                             if sent["events"] else "the board detected no word"))
    # accuracy against the number of shots (local chip, shots drawn from the pool)
    curve = _shots_curve(chip, ds, shots_curve, draws, seed)
    if curve:
        out["shots_curve"] = curve
        pngs["shots"] = plots.shots_png(os.path.join(folder, "shots.png"), curve,
                                        title="accuracy against shots per word (local chip)")
    return pngs


def _scores_over_time(chip, pcm: np.ndarray, hop_ms: int = 50):
    """Cosine of each enrolled word with the window that ends at t, every ``hop_ms``."""
    tab = chip.tab
    length = tab.steps * tab.bin_ms
    chip.reset()
    frames = chip.cochlea.encode(pcm)
    ends = np.arange(hop_ms, frames.shape[0] + 1, hop_ms)
    wins = np.zeros((ends.size, length, frames.shape[1]), frames.dtype)
    for i, e in enumerate(ends):
        seg = frames[max(0, e - length):e]
        wins[i, length - seg.shape[0]:] = seg
    phi = chip.run_batch(wins)
    cq = chip.scores_q(phi)
    names = [chip.readout.names[i] for i in chip.enrolled()]
    return ends, {w: cq[:, j] / (1 << tab.cos_frac) for j, w in enumerate(names)}


def _shots_curve(chip, ds: DemoSet, shots_curve, draws: int, seed: int) -> list[dict]:
    pool = {w: u for w, u in ds.pool.items() if len(u) >= 2}
    if len(pool) < 2:
        return []
    words = sorted(pool)
    feats, who = [], []
    for w in words:
        for u in pool[w]:
            chip.reset()
            chip.run(chip.cochlea.encode(u.pcm))
            feats.append(chip.features())
            who.append(w)
    feats, who = np.stack(feats), np.array(who)
    rng = np.random.default_rng(seed)
    curve = []
    for k in shots_curve:
        if min(len(pool[w]) for w in words) <= k:
            break
        accs = []
        for _ in range(draws):
            for w in chip.classes():
                chip.forget(w)
            test = np.ones(len(who), bool)
            for w in words:
                idx = rng.choice(np.flatnonzero(who == w), size=k, replace=False)
                chip.enroll(w, list(feats[idx]))
                test[idx] = False
            cq = chip.scores_q(feats[test])
            names = np.array([chip.readout.names[i] for i in chip.enrolled()])
            accs.append(float(np.mean(names[cq.argmax(axis=1)] == who[test])))
        curve.append(dict(shots=k, accuracy=round(float(np.mean(accs)), 4),
                          low=round(float(np.min(accs)), 4), high=round(float(np.max(accs)), 4),
                          draws=draws, words=len(words)))
    return curve


# ---------------------------------------------------------------------- the report
def _img(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list], tid: str) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table id="{tid}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def write_report(folder: str, s: dict) -> str:
    """One self-contained HTML page (images embedded; opens with no server): ``report.html``."""
    t = s["table"]
    per_word = _table(["word", "asked", "right", "wrong word", "none", "accuracy"],
                      [[r["word"], r["asked"], r["right"], r["wrong"], r["none"], r["accuracy"]]
                       for r in t["per_word"]], "per-word")
    act = s["activity"]
    totals = [["enrolled words asked", t["asked"]], ["answered right", t["right"]],
              ["accuracy", t["accuracy"]],
              ["accuracy, the shot's voice", t["accuracy_same_voice"]],
              ["accuracy, other voices", "n/a (no recording by another voice)"
               if t["accuracy_other_voices"] is None else t["accuracy_other_voices"]],
              ["words not taught, asked", t["not_taught_asked"]],
              ["words not taught, answered none", t["not_taught_rejected"]],
              ["answer latency after the last sample, median ms", t["latency_ms"]["median"]],
              ["answer latency, max ms", t["latency_ms"]["max"]],
              ["bytes to the board (all)", s["link"]["bytes_sent"]],
              ["bytes from the board (all)", s["link"]["bytes_received"]],
              ["synaptic operations per second", act["synops_per_s"]],
              ["spikes per second", act["spikes_per_s"]]]
    results = _table(["said", "voice", "answer", "confidence", "right", "latency ms"],
                     [[r["word"] + ("" if r["enrolled"] else " (not taught)"), r["voice"],
                       r["answer"], r["confidence"], "yes" if r["correct"] else "no",
                       r["latency_ms"]] for r in s["results"]], "results")
    figs = [("pipeline", "From audio to spikes: the front-end and the recurrent core"),
            ("scores", "A streamed sentence: the readout's scores and the detections"),
            ("layout", "The learned layout, by tile, with hop distances"),
            ("shots", "Accuracy against shots"),
            ("confusion", "Confusion of the board's answers")]
    body = [f"<h1>tessera demo</h1><p>{html.escape(s['description'])}.</p>",
            f"<p>Model {html.escape(os.path.basename(s['model']))} ({s['model_bytes']} bytes), "
            f"loaded over the protocol into the simulated board (firmware "
            f"{html.escape(str(s.get('firmware')))}) on a pseudo-terminal; every answer below "
            f"came back through the port. Figures marked <i>local chip</i> were computed on the "
            f"host's chip emulator with the same model file and shots.</p>",
            "<h2>Totals</h2>", _table(["", "value"], totals, "totals"),
            "<h2>Per word</h2>", per_word]
    for key, title in figs:
        if key in s["plots"]:
            body.append(f"<h2>{html.escape(title)}</h2><img alt=\"{key}\" "
                        f"src=\"{_img(s['plots'][key])}\">")
    body += ["<h2>Every answer</h2>", results,
             '<script type="application/json" id="summary">'
             + json.dumps({k: v for k, v in s.items() if k != "plots"}, default=json_default)
             .replace("</", "<\\/") + "</script>"]
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>tessera demo</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
            "img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>")
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
