"""The user's path benchmark's pieces (tools/device_bench.py)."""

from tessera.tools.device_bench import score_events, speaker_files


def test_events_score_found_words_and_false_detections():
    spans = [(1000, 1500, "d1"), (3000, 3600, "d2")]
    ev = [dict(label="d1", start_ms=1100, end_ms=1400),          # finds d1
          dict(label="d1", start_ms=1200, end_ms=1450),          # the same word again
          dict(label="d3", start_ms=3100, end_ms=3500),          # wrong label: false
          dict(label="d2", start_ms=5000, end_ms=5400)]          # no word there: false
    assert score_events(ev, spans) == (1, 2)
    assert score_events([], spans) == (0, 0)


def test_speaker_files_are_the_numbered_takes_in_order(tmp_path):
    for i in (0, 1, 2, 4):                                        # 3 is missing: stop there
        (tmp_path / f"7_ann_{i}.wav").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in speaker_files(str(tmp_path), "ann", 7)] == \
        ["7_ann_0.wav", "7_ann_1.wav", "7_ann_2.wav"]
    assert speaker_files(str(tmp_path), "bob", 7) == []
