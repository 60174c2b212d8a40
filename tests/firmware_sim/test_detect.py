"""Continuous detection as a step function over a DetectState (firmware_sim/detect.py)."""

import numpy as np

from tessera.firmware_sim.detect import DetectState, detect_flush, detect_start, detect_step
from tessera.firmware_sim.params import DEFAULT_PARAMS
from tessera.tools.bench import speechlike_signal


def _chip_with_words(model4):
    from tessera.runtime.chip import Chip

    chip = Chip.load(model4)
    words = {w: speechlike_signal(0.6, 10 + k) for k, w in enumerate("ab")}
    for w, pcm in words.items():
        chip.reset()
        chip.feed_audio(pcm)
        chip.enroll(w)
    chip.readout.none_threshold = -(1 << chip.tab.cos_frac)        # accept every window
    return chip, words


def _frames(chip, pcm):
    chip.reset()
    return chip.cochlea.encode(pcm)


def test_silence_opens_no_window_and_reports_nothing(model4):
    chip, _ = _chip_with_words(model4)
    params = dict(DEFAULT_PARAMS, detect=True)
    events, st = detect_step(np.zeros((3000, chip.tab.channels_total), np.uint8),
                             detect_start(), chip, params)
    assert events == [] and st.windows == () and st.stream_ms == 3000
    more, closed, st = detect_flush(st, chip, params)
    assert more == [] and closed == 0


def test_a_word_is_reported_once_and_the_step_leaves_its_input_state_alone(model4):
    chip, words = _chip_with_words(model4)
    params = dict(DEFAULT_PARAMS, detect=True, min_confidence=0.0)
    quiet = np.zeros(8000, np.int16)
    frames = _frames(chip, np.concatenate([quiet, words["a"], quiet, quiet]))
    start = detect_start()
    events, st = detect_step(frames[:700], start, chip, params)
    assert start == DetectState() and start.stream_ms == 0        # a new state, not a change
    rest, st = detect_step(frames[700:], st, chip, params)
    late, _, st = detect_flush(st, chip, params)
    got = events + rest + late
    assert [e["label"] for e in got] == ["a"]
    assert 400 <= got[0]["start_ms"] <= 600 and got[0]["end_ms"] > got[0]["start_ms"]


def test_any_cut_of_the_stream_gives_the_same_events(model4):
    chip, words = _chip_with_words(model4)
    params = dict(DEFAULT_PARAMS, detect=True)
    quiet = np.zeros(6000, np.int16)
    frames = _frames(chip, np.concatenate([quiet, words["b"], quiet, words["a"], quiet, quiet]))
    runs = []
    for cuts in ([], [1], [333, 1200, 2501]):
        st, out = detect_start(), []
        for part in np.split(frames, cuts):
            ev, st = detect_step(part, st, chip, params)
            out += ev
        ev, _, st = detect_flush(st, chip, params)
        runs.append(out + ev)
    assert runs[0] == runs[1] == runs[2]
