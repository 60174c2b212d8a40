"""The microphone helpers (tessera/host/microphone.py), with sounddevice absent or faked."""

import sys
import types

import numpy as np
import pytest

from tessera.runtime.errors import InputError
from tessera.host import microphone


def test_no_sounddevice_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)            # import fails
    with pytest.raises(InputError, match="mic extra"):
        microphone.recorder(1.0)
    with pytest.raises(InputError, match="mic extra"):
        next(microphone.blocks())


def _fake(monkeypatch, works=True):
    sd = types.SimpleNamespace()

    def check_input_settings(**kw):
        if not works:
            raise RuntimeError("no default input device")
    sd.check_input_settings = check_input_settings
    sd.rec = lambda n, **kw: np.arange(n, dtype=np.int16)[:, None]
    sd.wait = lambda: None

    class Stream:
        def __init__(self, **kw):
            self.k = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            self.k += 1
            return np.full((n, 1), self.k, np.int16), False
    sd.InputStream = Stream
    monkeypatch.setitem(sys.modules, "sounddevice", sd)


def test_a_recorder_and_live_blocks_from_a_device(monkeypatch):
    _fake(monkeypatch)
    clip = microphone.recorder(0.5)()
    assert clip.dtype == np.int16 and clip.shape == (8000,)
    live = microphone.blocks()
    first, second = next(live), next(live)
    assert first.shape == (microphone.BLOCK,) and first[0] == 1 and second[0] == 2


def test_no_input_device_is_a_named_error(monkeypatch):
    _fake(monkeypatch, works=False)
    with pytest.raises(InputError, match="no microphone"):
        microphone.recorder(1.0)
