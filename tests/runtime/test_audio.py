import struct

import numpy as np
import pytest
from helpers import tone, wav_bytes

from tessera.runtime.audio import load_audio, read_wav, resample, to_int16, write_wav
from tessera.runtime.errors import InputError


def put(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_roundtrip_int16(tmp_path):
    x = tone(440, 0.1)
    write_wav(tmp_path / "a.wav", x, 16000)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and np.array_equal(to_int16(y), x)


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
def test_pcm_widths(tmp_path, bits):
    x = np.linspace(-0.5, 0.5, 100)
    if bits == 8:
        raw = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.round(x * (2 ** 23 - 1)).astype(np.int32)
        raw = b"".join(struct.pack("<i", int(i))[:3] for i in v)
    else:
        raw = np.round(x * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    y, _ = read_wav(put(tmp_path, "a.wav", wav_bytes(raw, bits=bits)))
    assert np.allclose(y, x, atol=2.0 / 2 ** (bits - 1) + 1e-3)


def test_float_and_extensible(tmp_path):
    x = np.linspace(-0.5, 0.5, 50).astype("<f4")
    y, _ = read_wav(put(tmp_path, "f.wav", wav_bytes(x.tobytes(), tag=3, bits=32)))
    assert np.allclose(y, x)


def test_stereo_needs_mixdown(tmp_path):
    st = np.stack([tone(300, 0.05), np.zeros(800, np.int16)], axis=1).astype("<i2")
    p = put(tmp_path, "s.wav", wav_bytes(st.tobytes(), channels=2))
    with pytest.raises(InputError, match="2 channels, expected mono"):
        read_wav(p)
    y, _ = read_wav(p, mixdown=True)
    assert y.size == 800


@pytest.mark.parametrize("name,data,msg", [
    ("empty.wav", wav_bytes(b""), "0 samples"),
    ("nan.wav", wav_bytes(np.array([0, np.nan], "<f4").tobytes(), tag=3, bits=32), "NaN"),
    ("text.wav", b"hello, this is not audio", "not a WAV file"),
    ("alaw.wav", wav_bytes(b"\x00" * 10, tag=6, bits=8), "unsupported WAV encoding"),
    ("nodata.wav", wav_bytes(b"")[:36], "no data chunk"),
])
def test_bad_wavs_name_file_and_problem(tmp_path, name, data, msg):
    p = put(tmp_path, name, data)
    with pytest.raises(InputError, match=msg) as err:
        load_audio(p)
    assert name in str(err.value)


def test_missing_file():
    with pytest.raises(InputError, match="no such file"):
        read_wav("/nonexistent/x.wav")


@pytest.mark.parametrize("rin,f", [(8000, 440.0), (22050, 3000.0), (44100, 1000.0), (48000, 5000.0)])
def test_resample_keeps_tones(rin, f):
    x = np.sin(2 * np.pi * f * np.arange(rin // 2) / rin)
    y = resample(x, rin, 16000)
    ref = np.sin(2 * np.pi * f * np.arange(y.size) / 16000)
    assert y.size == 8000
    assert np.abs(y[300:-300] - ref[300:-300]).max() < 0.01


def test_resample_removes_aliases():
    x = np.sin(2 * np.pi * 10000 * np.arange(22050) / 22050)   # above the new Nyquist
    assert np.sqrt(np.mean(resample(x, 22050, 16000)[300:-300] ** 2)) < 0.003
