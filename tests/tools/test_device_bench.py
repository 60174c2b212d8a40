"""The user's path benchmark's pieces (tools/device_bench.py)."""

from tessera.tools.device_bench import speaker_files


def test_speaker_files_are_the_numbered_takes_in_order(tmp_path):
    for i in (0, 1, 2, 4):                                        # 3 is missing: stop there
        (tmp_path / f"7_ann_{i}.wav").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in speaker_files(str(tmp_path), "ann", 7)] == \
        ["7_ann_0.wav", "7_ann_1.wav", "7_ann_2.wav"]
    assert speaker_files(str(tmp_path), "bob", 7) == []
