"""The host's one scoring rule (tessera/host/scoring.py) and folder rule (recordings.py)."""

import pytest

from tessera.host import OTHER, confusion, folder_recordings, match_events, score_events
from tessera.runtime.errors import InputError


def test_events_score_found_words_and_false_detections():
    spans = [(1000, 1500, "d1"), (3000, 3600, "d2")]
    ev = [dict(label="d1", start_ms=1100, end_ms=1400),          # finds d1
          dict(label="d1", start_ms=1200, end_ms=1450),          # the same word again: false
          dict(label="d3", start_ms=3100, end_ms=3500),          # wrong label: false
          dict(label="d2", start_ms=5000, end_ms=5400)]          # no word there: false
    assert score_events(ev, spans) == (1, 3)
    assert match_events(ev, spans) == {0: 0}
    assert score_events([], spans) == (0, 0)


def test_tolerance_widens_each_word_and_the_earliest_event_finds_it():
    spans = [(1000, 1500, "a")]
    late = dict(label="a", start_ms=1600, end_ms=2000)           # 100 ms after the word ends
    early = dict(label="a", start_ms=700, end_ms=950)             # 50 ms before it starts
    assert score_events([late], spans) == (0, 1)
    assert score_events([late], spans, tolerance_ms=150) == (1, 0)
    assert match_events([late, early], spans, tolerance_ms=150) == {0: 1}   # by start time


def test_confusion_counts_words_none_and_untaught_words():
    rows = [("a", "a"), ("a", "b"), ("a", None), ("b", "b"), ("x", "none"), ("x", "a")]
    c = confusion(rows, ["b", "a"])
    assert c["cols"] == ["a", "b", "none"] and c["rows"] == ["a", "b", OTHER]
    assert c["matrix"] == [[1, 1, 1], [0, 1, 0], [1, 0, 1]]
    assert c["per_word"]["a"] == dict(asked=3, right=1, wrong=1, none=1, accuracy=0.3333)
    assert (c["asked"], c["right"], c["accuracy"]) == (4, 2, 0.5)
    assert (c["not_taught_asked"], c["not_taught_accepted"], c["false_accepts"]) == (2, 1, 0.5)
    assert confusion([], ["a"])["accuracy"] is None


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")


def test_folder_rule_reads_both_layouts_and_the_other_folder(tmp_path):
    for name in ("3_george_10.wav", "3_george_2.wav", "lamp2.flac", "lamp-b.wav", "notes.txt"):
        _touch(tmp_path / name)
    for name in ("yes/1.wav", "yes/10.wav", "yes/2.wav", "_other/cough.wav", "_skip/x.wav",
                 ".hidden/y.wav"):
        _touch(tmp_path / name)
    got = [(p.split(str(tmp_path))[1], w) for p, w in folder_recordings(str(tmp_path))]
    assert got == [("/3_george_2.wav", "3"), ("/3_george_10.wav", "3"),
                   ("/lamp2.flac", "lamp"), ("/lamp-b.wav", "lamp"),
                   ("/yes/1.wav", "yes"), ("/yes/2.wav", "yes"), ("/yes/10.wav", "yes"),
                   ("/_other/cough.wav", None)]


def test_folder_rule_names_what_it_cannot_place(tmp_path):
    _touch(tmp_path / "12.wav")
    with pytest.raises(InputError, match="cannot tell the word") as e:
        folder_recordings(str(tmp_path))
    assert "12.wav" in str(e.value)
    (tmp_path / "12.wav").unlink()
    _touch(tmp_path / "_other" / "a.wav")
    with pytest.raises(InputError, match="no recordings of a word"):
        folder_recordings(str(tmp_path))
    with pytest.raises(InputError, match="not a folder"):
        folder_recordings(str(tmp_path / "missing"))
