"""The host session (tessera/host/session.py): recordings in any format the host reads, and
what a person would not mean caught before it is taught."""

import numpy as np
import pytest
from helpers import assert_clean_error, tessera

from tessera.host import Session
from tessera.host.session import load_recording
from tessera.runtime.audio import write_wav
from tessera.runtime.errors import InputError
from tessera.tools.bench import speechlike_signal


def test_flac_reads_as_the_same_samples_as_wav(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    pcm = speechlike_signal(0.5, 1).astype(np.int16)
    write_wav(tmp_path / "a.wav", pcm, 16000)
    soundfile.write(tmp_path / "a.flac", pcm, 8000 * 2, subtype="PCM_16")
    assert np.array_equal(load_recording(str(tmp_path / "a.flac")),
                          load_recording(str(tmp_path / "a.wav")))
    (tmp_path / "b.flac").write_bytes(b"fLaC not really")
    with pytest.raises(InputError, match="soundfile can read") as e:
        load_recording(str(tmp_path / "b.flac"))
    assert "b.flac" in str(e.value)


def test_silence_is_refused_and_a_known_recording_is_said(tmp_path):
    shot = speechlike_signal(0.6, 3)
    with Session.open(f"sim://?flash={tmp_path / 'f.img'}") as s:
        with pytest.raises(InputError, match="silent"):
            s.teach("quiet", np.zeros(16000, np.int16))
        assert s.words() == []                               # nothing was taught
        assert "warnings" not in s.teach("lamp", shot)
        again = s.teach("fan", shot)                           # the same recording, new word
        assert "already taught as 'lamp'" in again["warnings"][0]
        assert sorted(s.words()) == ["fan", "lamp"]            # taught all the same
        assert "warnings" not in s.teach("bell", speechlike_signal(0.6, 4))   # another one


def test_enroll_of_silence_is_a_clean_error_and_a_duplicate_a_warning(tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros(16000, np.int16), 16000)
    write_wav(tmp_path / "word.wav", speechlike_signal(0.6, 3).astype(np.int16), 16000)
    url = f"sim://?flash={tmp_path / 'f.img'}"
    assert_clean_error(tessera("device", "enroll", "--port", url, "--label", "quiet",
                               tmp_path / "silence.wav"), "silent", "silence.wav")
    for label in ("lamp", "fan"):
        r = tessera("device", "enroll", "--port", url, "--label", label, tmp_path / "word.wav",
                    "--save")
        assert r.returncode == 0, r.stderr
    assert "warning: this recording is already taught as 'lamp'" in r.stderr


def test_rename_over_the_cli_keeps_the_word(tmp_path):
    write_wav(tmp_path / "word.wav", speechlike_signal(0.6, 3).astype(np.int16), 16000)
    url = f"sim://?flash={tmp_path / 'f.img'}"
    assert tessera("device", "enroll", "--port", url, "--label", "lamp",
                   tmp_path / "word.wav").returncode == 0
    r = tessera("device", "rename", "--port", url, "--label", "lamp", "--to", "light")
    assert r.returncode == 0 and "'lamp' is now 'light'" in r.stdout, r.stderr
    ask = tessera("device", "infer", "--port", url, tmp_path / "word.wav", "--json")
    import json
    assert json.loads(ask.stdout)["best"] == "light"
    assert_clean_error(tessera("device", "rename", "--port", url, "--label", "lamp", "--to",
                               "x"), "'lamp' is not enrolled")
