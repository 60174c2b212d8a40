"""The demo's word sets (tessera/demo/sets.py)."""

import wave

import numpy as np
import pytest
from helpers import assert_clean_error, tessera

from tessera.runtime.errors import InputError


def test_demo_word_folders_and_microphone(tmp_path):
    from tessera.demo import OTHER, folder_set, mic_set

    def wav(path, seconds=0.3):
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.random.default_rng(0).normal(0, 3000, int(16000 * seconds)))
                          .astype("<i2").tobytes())

    for word in ("lamp", "fan"):
        for k in range(3):
            wav(tmp_path / "w" / word / f"{k}.wav")
    wav(tmp_path / "w" / "_other" / "x.wav")
    ds = folder_set(str(tmp_path / "w"))
    assert sorted(ds.shots) == ["fan", "lamp"] and ds.shots["fan"].source.endswith("0.wav")
    assert len(ds.tests) == 5 and sum(u.word == OTHER for u in ds.tests) == 1
    assert [u.word for u in ds.sentence] == ["fan", OTHER, "lamp"]   # not one word four times
    (tmp_path / "one" / "lamp").mkdir(parents=True)
    wav(tmp_path / "one" / "lamp" / "0.wav")
    wav(tmp_path / "one" / "fan" / "0.wav")
    with pytest.raises(InputError, match="no held-out utterances"):
        folder_set(str(tmp_path / "one"))
    with pytest.raises(InputError, match="cannot tell the word"):
        folder_set(str(tmp_path / "one" / "lamp"))
    asked = []
    ds = mic_set(["yes", "no"], repeats=2, prompt=asked.append,
                 record=lambda: np.zeros(800, np.int16))
    assert sorted(ds.shots) == ["no", "yes"] and len(ds.tests) == 6 and len(asked) == 8
    assert_clean_error(tessera("demo", "--words", tmp_path / "none"), "sub-folder")
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert_clean_error(tessera("demo", "--mic", "--out", tmp_path / "m"), "mic extra")
