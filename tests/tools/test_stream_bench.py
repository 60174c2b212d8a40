"""`tessera bench stream`: the timeline, its scoring, and one short stream through the board."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.runtime.constants import SAMPLE_RATE
from tessera.tools.stream_bench import make_timeline, score_timeline, word_bounds


def _word(ms_lead: int, ms_word: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lead = np.zeros(ms_lead * 16)
    word = rng.standard_normal(ms_word * 16) * 8000
    return np.round(np.concatenate([lead, word, np.zeros(1600)])).astype(np.int16)


def test_word_bounds_find_the_word_not_the_silence():
    a, b = word_bounds(_word(120, 400))
    assert abs(a - 120 * 16) <= 160 and abs(b - 520 * 16) <= 160


def test_timeline_is_long_enough_ordered_and_true():
    taught = {"a": [_word(50, 300, 1)], "b": [_word(10, 500, 2)]}
    pcm, items = make_timeline(taught, [_word(0, 400, 3)], [np.full(8000, 3000, np.int16)],
                               minutes=0.5, seed=4)
    assert pcm.dtype == np.int16 and pcm.size >= 0.5 * 60 * SAMPLE_RATE
    assert {it["kind"] for it in items} == {"taught", "untaught", "noise"}
    for it, nxt in zip(items, items[1:] + [None]):
        assert it["clip_ms"][0] <= it["start_ms"] < it["end_ms"] <= it["clip_ms"][1]
        assert it["end_ms"] <= it["until_ms"]
        if nxt is not None:
            assert it["until_ms"] == nxt["clip_ms"][0]     # its pause ends where the next starts
        assert (it["label"] in taught) == (it["kind"] == "taught")
    assert items[-1]["until_ms"] == pcm.size // 16


def _items():
    # taught "a" at 1000, untaught at 3000, noise at 5000, taught "b" at 7000; end 9000
    return [dict(kind="taught", label="a", start_ms=1000, end_ms=1400, clip_ms=(990, 1500),
                 until_ms=2900),
            dict(kind="untaught", label=None, start_ms=3000, end_ms=3400, clip_ms=(2900, 3500),
                 until_ms=4900),
            dict(kind="noise", label=None, start_ms=4900, end_ms=5900, clip_ms=(4900, 5900),
                 until_ms=6900),
            dict(kind="taught", label="b", start_ms=7000, end_ms=7300, clip_ms=(6900, 7400),
                 until_ms=9000)]


def _ev(label, start, end=None):
    return {"label": label, "start_ms": start, "end_ms": end or start + 400}


def test_scoring_counts_each_kind_of_mistake():
    ev = [_ev("a", 1020, 1420), _ev("a", 1100),          # found, then a repeat
          _ev("b", 3010),                                 # an untaught word taken for b
          _ev("a", 5200),                                 # noise
          _ev("a", 7000)]                                 # the wrong word for b
    r = score_timeline(ev, _items())
    assert (r["found"], r["missed"], r["taught_words"]) == (1, 1, 2)
    assert (r["false_in_taught"], r["false_in_untaught"], r["false_in_noise"]) == (2, 1, 1)
    assert r["start_error"]["median_ms"] == 20 and r["end_error"]["median_ms"] == 20
    minutes = r["minutes"]
    assert minutes["untaught"] == pytest.approx(2000 / 60000, abs=1e-3)
    assert r["false_per_min_untaught"] == pytest.approx(1 / (2000 / 60000), rel=1e-2)


@given(shift=st.integers(-1000, 1000), tol=st.integers(1, 600))
@settings(max_examples=50, deadline=None)
def test_found_only_within_the_tolerance(shift, tol):
    # the host's rule: the event's window [7000 + shift, 7400 + shift] must overlap b's span
    # [7000, 7300] widened by the tolerance on each side
    r = score_timeline([_ev("b", 7000 + shift)], _items(), tolerance_ms=tol)
    assert r["found"] == (-400 - tol < shift < 300 + tol)
    assert r["found"] + sum(r[k] for k in ("false_in_taught", "false_in_untaught",
                                           "false_in_noise")) == 1


def test_a_short_stream_through_the_board(fsdd):
    from tessera.firmware_sim import factory_model
    from tessera.tools.stream_bench import stream_bench

    r = stream_bench(str(fsdd), f"sim://?model={factory_model()}", speakers=("jackson",),
                     sizes=(5,), minutes=0.4, thresholds=("model", "person"))
    model, person = r["rows"]
    assert model["taught_words"] >= 5 and model["found"] >= 1
    assert person["detector"]["threshold_in_use"] >= model["detector"]["threshold_in_use"]
    assert person["events"] <= model["events"]               # a stricter "none" finds no more


def test_open_set_path_fits_none_to_the_person(fsdd):
    from tessera.firmware_sim import factory_model
    from tessera.tools.device_bench import open_set_path

    r = open_set_path(str(fsdd), f"sim://?model={factory_model()}", speakers=("lucas",),
                      words=3, other=(3,), asked_per_word=4)
    rows = {x["mode"]: x for x in r["rows"]}
    assert set(rows) == {"model", "person", "person+other"}
    assert rows["model"]["positives"] == 12 and rows["model"]["negatives"] == 6 * 4
    assert rows["model"]["threshold"] <= rows["person"]["threshold"] \
        <= rows["person+other"]["threshold"]
    assert rows["person+other"]["false_accept_rate"] <= rows["model"]["false_accept_rate"]


def test_bench_stream_set_takes_device_parameters():
    from tessera.cli.bench import _param
    from tessera.runtime.errors import InputError

    assert _param("min_confidence=0.5") == ("min_confidence", 0.5)
    assert _param("trigger=hop") == ("trigger", "hop")
    assert _param("detect=true") == ("detect", True)
    for bad in ("min_confidence", "=3", ""):
        with pytest.raises(InputError, match="NAME=VALUE"):
            _param(bad)
