"""`tessera demo`: teach the simulated board new words over its serial port, and show it.

The board is ``tessera sim --pty`` in a child process, and the demo talks to it only through the
protocol, as a host talks to a real board, through the host session
(:class:`tessera.host.Session`, the one ``tessera device`` uses): it loads the model, teaches
each word from ONE utterance (reboot-safe), asks held-out utterances in real time (one window
each, as push-to-talk) and streams a sentence with continuous detection on; the answers are
scored by the host's one rule (:mod:`tessera.host.scoring`). What it cannot see through the port
(spike rasters, the readout's scores over time, accuracy against the number of shots) it
computes on a local chip emulator with the same model file, and says so.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..host.scoring import NONE, OTHER, confusion, score_events
from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from .sets import DemoSet, Utterance

__all__ = ["run_demo", "demo_table"]


def run_demo(ds: DemoSet, model: str, folder: str, realtime: bool = True, on_line=print,
             shots_curve=(1, 2, 3, 5), draws: int = 20, seed: int = 0,
             min_confidence: float | None = None) -> dict:
    """The demo proper: ``model`` (a ``.tsr``) loaded into ``tessera sim --pty`` over the port,
    the shots taught, the tests and the sentence streamed (``realtime``: paced as a microphone),
    every answer handed to ``on_line`` as it arrives; then the local figures. The tests and the sentence's continuous detection are answered by
    the device's one decision rule (its threshold and ``min_confidence``, set for the whole demo
    when given). Returns the summary with the plots' paths (``tessera demo`` writes it as
    ``summary.json``)."""
    from ..firmware_sim.boot import pty_sim
    from ..host.session import Session
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
        with Session.open(port, timeout=10.0) as s:
            dev = s.dev
            out["port"] = port
            out["firmware"] = s.info.get("firmware")
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
            enrolls = _teach(s, ds, words, on_line)
            out["enroll"] = dict(words=enrolls, bytes_sent=dev.bytes_sent - sent0,
                                 bytes_received=dev.bytes_received - recv0)
            sent0, recv0 = dev.bytes_sent, dev.bytes_received
            results, audio_s = _ask(s, ds, realtime, on_line)
            stats = dev.stats()["chip"]
            out["tests"] = dict(bytes_sent=dev.bytes_sent - sent0,
                                bytes_received=dev.bytes_received - recv0,
                                audio_seconds=round(audio_s, 2))
            out["results"] = results
            out["activity"] = _activity(base, stats, bin_ms)
            out["sentence"] = _stream_sentence(s, ds.sentence, realtime, on_line)
            out["link"] = dict(bytes_sent=dev.bytes_sent, bytes_received=dev.bytes_received,
                               retries=dev.retried)
    out["table"] = demo_table(results, words)
    on_line("drawing the report's figures (on a local chip emulator with the same model) ...")
    from .figures import local_figures

    out["plots"] = local_figures(ds, chip, folder, out, shots_curve, draws, seed)
    return out


def _teach(s, ds: DemoSet, words: list[str], on_line) -> list[dict]:
    """Each word taught over the port from its one shot (the host session's reboot-safe
    teach)."""
    enrolls = []
    for w in words:
        u = ds.shots[w]
        t1 = time.perf_counter()
        r = s.teach(w, u.pcm)
        ms = (time.perf_counter() - t1) * 1e3
        enrolls.append(dict(word=w, voice=u.voice, round_trip_ms=round(ms, 2),
                            device_ms=r.get("ms")))
        on_line(f"taught '{w}' from one utterance ({u.voice}): {ms:.1f} ms round trip")
    return enrolls


def _ask(s, ds: DemoSet, realtime: bool, on_line) -> tuple[list[dict], float]:
    """Every test utterance asked over the port; the answers and the seconds of audio."""
    results, audio_s = [], 0.0
    for k, u in enumerate(ds.tests, 1):
        audio_s += u.pcm.size / SAMPLE_RATE
        s.dev.reset()
        s.dev.stream_pcm(u.pcm, realtime=realtime)
        t1 = time.perf_counter()
        r = s.dev.end_utterance()
        lat = (time.perf_counter() - t1) * 1e3
        results.append(_result(u, r, lat))
        mark = "right" if results[-1]["correct"] else "WRONG"
        on_line(f"[{k:2d}/{len(ds.tests)}] said '{u.word}'"
                f"{'' if u.enrolled else ' (not taught)'} ({u.voice}) -> "
                f"{results[-1]['answer']} ({r.get('confidence', 0):.2f})  {mark}  {lat:.0f} ms")
    return results, audio_s


def _result(u: Utterance, r: dict, latency_ms: float) -> dict:
    answer = r.get("label") or NONE
    ok = answer == u.word if u.enrolled else answer == NONE
    return dict(word=u.word, truth=u.word if u.enrolled else OTHER, enrolled=u.enrolled,
                voice=u.voice, same_voice=bool(u.same_voice), answer=answer, best=r.get("best"),
                confidence=round(float(r.get("confidence", 0.0)), 3), correct=bool(ok),
                latency_ms=round(latency_ms, 2), source=u.source)


def _activity(before: dict, after: dict, bin_ms: int) -> dict:
    """The chip's counters over the tests, and per second of network time."""
    d = {k: after[k] - before[k] for k in ("steps", "synops", "spikes")}
    secs = max(d["steps"], 1) * bin_ms / 1000.0
    d.update(network_seconds=round(secs, 2), synops_per_s=round(d["synops"] / secs),
             spikes_per_s=round(d["spikes"] / secs))
    return d


def _stream_sentence(s, sentence: list[Utterance], realtime: bool, on_line) -> dict:
    """The sentence's words one after another (0.5 s apart, 1 s of quiet at the end) with
    continuous detection on: the device's events as they arrive, with the time each was
    received, scored by the host's rule."""
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
        cos = (e.get("scores") or {}).get(e["label"])
        e = dict(label=e["label"], confidence=round(float(e["confidence"]), 3),
                 start_ms=int(e["start_ms"]), end_ms=int(e["end_ms"]),
                 cosine=None if cos is None else round(float(cos), 4),
                 received_s=round(time.perf_counter() - t0, 3))
        events.append(e)
        on_line(f"  detected '{e['label']}' in {e['start_ms'] / 1000:.2f}-"
                f"{e['end_ms'] / 1000:.2f} s (probability {100 * e['confidence']:.0f} % that it "
                f"is right), received at {e['received_s']:.2f} s")

    params = s.dev.params()
    said = ", ".join(sp["word"] + ("" if sp["enrolled"] else " (not taught)") for sp in spans)
    on_line(f"streaming a {pcm.size / SAMPLE_RATE:.1f} s sentence with continuous detection "
            f"(the same rule as the answers above: cosine >= "
            f"{params['threshold_in_use']:.3f}, confidence >= {params['min_confidence']:g}); "
            f"what is said in it: {said}")
    s.stream(pcm, on_event=show, realtime=realtime)
    taught = [(sp["start_ms"], sp["end_ms"], sp["word"]) for sp in spans if sp["enrolled"]]
    found, false = score_events(events, taught)
    on_line(f"  the sentence: {found} of {len(taught)} taught words found, {false} false "
            f"detection(s)" + ("" if events else " (no word detected)"))
    return dict(words=spans, events=events, seconds=round(pcm.size / SAMPLE_RATE, 2),
                found=found, taught=len(taught), false_detections=false, pcm=pcm)


def demo_table(results: list[dict], words: list[str]) -> dict:
    """The host's confusion of the answers (:func:`tessera.host.confusion`), with accuracy by
    voice (the shot's, others') and latency."""
    c = confusion([(r["truth"], r["answer"]) for r in results], words)
    enrolled = [r for r in results if r["enrolled"]]
    same = [r for r in enrolled if r["same_voice"]]
    diff = [r for r in enrolled if not r["same_voice"]]
    lat = [r["latency_ms"] for r in results]

    def acc(rs):
        return round(sum(r["correct"] for r in rs) / len(rs), 3) if rs else None

    per_word = [dict(word=w, **{k: v for k, v in c["per_word"].get(
        w, dict(asked=0, right=0, wrong=0, none=0, accuracy=0.0)).items()}) for w in words]
    return dict(per_word=per_word, accuracy=acc(enrolled), accuracy_same_voice=acc(same),
                accuracy_other_voices=acc(diff), asked=c["asked"], right=c["right"],
                not_taught_asked=c["not_taught_asked"],
                not_taught_rejected=c["not_taught_asked"] - c["not_taught_accepted"],
                confusion=dict(rows=c["rows"], cols=c["cols"], matrix=c["matrix"]),
                latency_ms=dict(median=round(float(np.median(lat)), 2) if lat else None,
                                max=round(float(np.max(lat)), 2) if lat else None))
