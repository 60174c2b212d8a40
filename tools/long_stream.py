"""The long stream (``tessera bench protocol --parts stream``): an hour of audio through the chip
and through the board, memory and answers compared block by block."""

from __future__ import annotations

import time

import numpy as np

from ..firmware_sim.boot import pty_sim
from ..runtime.constants import SAMPLE_RATE
from .protocol_bench import rss_mb

__all__ = ["long_stream"]


def _hour_block(seconds: float, seed: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """One block of the long stream: two taught "words" (seeded speech-like bursts, 0.6 s) and
    one untaught, in a fixed order with 1.5-3 s of quiet between, ending quiet; returns the audio
    and (onset ms, word) of each burst."""
    from .bench import speechlike_signal

    words = {w: speechlike_signal(0.6, seed + k) // (k + 1) for k, w in enumerate("abc")}
    rng = np.random.default_rng(seed)
    parts, marks, at = [], [], 0
    total = int(seconds * SAMPLE_RATE)
    while at < total - 4 * SAMPLE_RATE:
        gap = np.zeros(int(rng.uniform(1.5, 3.0) * SAMPLE_RATE), np.int16)
        w = "abc"[int(rng.integers(3))]
        parts += [gap, words[w]]
        at += gap.size
        marks.append((at * 1000 // SAMPLE_RATE, w))
        at += words[w].size
    parts.append(np.zeros(total - at, np.int16))
    return np.concatenate(parts), marks, words


def long_stream(model_path: str, minutes: float = 60.0, block_s: float = 60.0, seed: int = 0
                ) -> dict:
    """``minutes`` of audio (one block of taught and untaught bursts, repeated) streamed as fast
    as it goes, (1) through the chip, one window per burst (every block must give identical
    answers; each window from the model's reference voice level, as the running level follows
    the voice on purpose), and (2) through ``tessera sim --pty`` with continuous detection on (every
    accepted window reported): memory at the start and the end, and the right detections per
    block in the first and the last quarter of the stream (a window's answer depends a little
    on the front-end's state left by the sound before it, so blocks differ slightly; what must
    not happen is a trend: ``no_drift`` allows a difference of 10 % of the taught bursts). The
    board hears one block before the words are taught, so that a model's level equalization
    has met the voice (it follows it on purpose)."""
    block, marks, words = _hour_block(block_s, seed)
    blocks = max(1, int(round(minutes * 60 / block_s)))
    out = dict(bench="long_stream", minutes=round(blocks * block_s / 60, 1), blocks=blocks,
               bursts_per_block=len(marks))
    out["chip"] = _chip_blocks(model_path, block, marks, words, blocks)
    out["board"] = _board_blocks(model_path, block, marks, words, blocks, block_s)
    return out


def _chip_blocks(model_path: str, block, marks, words, blocks: int) -> dict:
    """Part (1): every burst's window through the chip, block after block."""
    from ..runtime.chip import Chip

    chip = Chip.load(model_path)
    for w in "ab":
        chip.reset()
        chip.feed_audio(words[w])
        chip.enroll(w)
    rss0, t0 = rss_mb(), time.perf_counter()
    answers = []
    for _ in range(blocks):
        got = []
        for ms, _w in marks:
            a = ms * SAMPLE_RATE // 1000
            chip.reset()                       # what it hears teaches the chip nothing
            chip.feed_audio(block[a:a + SAMPLE_RATE])
            p = chip.predict()
            got.append((p["label"], round(p["confidence"], 4)))
        answers.append(got)
    return dict(rss_start_mb=rss0, rss_end_mb=rss_mb(),
                       seconds=round(time.perf_counter() - t0, 1),
                       answers_identical_every_block=all(a == answers[0] for a in answers),
                       right_per_block=sum(lab == w if w in "ab" else lab is None
                                           for (lab, _), (_, w) in zip(answers[0], marks)))



def _board_blocks(model_path: str, block, marks, words, blocks: int, block_s: float) -> dict:
    """Part (2): the board over a pty with continuous detection on, block after block."""
    from ..protocol.client import Device

    with pty_sim("", process=True) as (port, proc):
        with Device.open(port, timeout=10.0) as dev:
            dev.load(model_path)
            dev.stream_pcm(block)                  # the board hears the voice first: its
            dev.reset()                            # running level (a model's level
            #                                        equalization) meets it before the words
            for w in "ab":
                dev.enroll(w, words[w])
            dev.reset()
            dev.set_param("min_confidence", 0.0)   # every accepted window is reported:
            dev.set_param("detect", True)              # the most events to compare
            rss_dev0, t0 = rss_mb(proc.pid), time.perf_counter()
            right, wrong, untaught = [], [], []
            for k in range(blocks):
                events: list[dict] = []
                dev.stream_pcm(block, on_event=events.append)
                dev.drain(events.append)
                base = k * int(block_s * 1000)
                said = [min(marks, key=lambda m: abs(m[0] - (e["start_ms"] - base)))[1]
                        for e in events]
                right.append(sum(e["label"] == w for e, w in zip(events, said)))
                untaught.append(sum(w == "c" for w in said))
                wrong.append(len(events) - right[-1] - untaught[-1])
            dev.end_utterance()
            rss_dev1 = rss_mb(proc.pid)
            stats = dev.stats()["device"]
    q = max(1, blocks // 4)                          # first and last quarter of the stream
    taught = sum(w in "ab" for _, w in marks)
    first, last = float(np.mean(right[:q])), float(np.mean(right[-q:]))
    return dict(port=port, rss_start_mb=rss_dev0, rss_end_mb=rss_dev1,
                        seconds=round(time.perf_counter() - t0, 1), taught_per_block=taught,
                        right_per_block_first_quarter=round(first, 2),
                        right_per_block_last_quarter=round(last, 2),
                        wrong_per_block=round(float(np.mean(wrong)), 2),
                        untaught_reported_per_block=round(float(np.mean(untaught)), 2),
                        right_per_block_min_max=[int(min(right)), int(max(right))],
                        no_drift=abs(last - first) <= 0.1 * taught,
                        requests=stats["requests"], errors=stats["errors"])
