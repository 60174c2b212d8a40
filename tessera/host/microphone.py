"""The microphone (the ``mic`` extra, sounddevice): a fixed-length recorder for the demo and a
live 100 ms block stream for ``tessera device stream --mic``; a missing package or device is a
named error."""

from __future__ import annotations

import numpy as np

from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError

__all__ = ["recorder", "blocks"]

BLOCK = 1600             # samples per live block (100 ms)


def _sounddevice():
    try:
        import sounddevice as sd
    except ImportError:
        raise InputError("--mic needs the mic extra: pip install -e '.[mic]'") from None
    try:
        sd.check_input_settings(samplerate=SAMPLE_RATE, channels=1, dtype="int16")
    except Exception as exc:                              # noqa: BLE001 (PortAudio errors)
        raise InputError(f"no microphone to record from ({exc})") from None
    return sd


def recorder(seconds: float):
    """A function that records ``seconds`` of 16 kHz int16 mono from the default microphone."""
    sd = _sounddevice()

    def record() -> np.ndarray:
        x = sd.rec(int(seconds * SAMPLE_RATE), samplerate=SAMPLE_RATE, channels=1,
                   dtype="int16")
        sd.wait()
        return np.asarray(x[:, 0])
    return record


def blocks():
    """16 kHz int16 blocks of 100 ms from the default microphone, as they arrive, until the
    caller stops (Ctrl-C)."""
    sd = _sounddevice()
    try:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                blocksize=BLOCK)
    except Exception as exc:                              # noqa: BLE001 (PortAudio errors)
        raise InputError(f"no microphone to record from ({exc})") from None
    with stream as s:
        while True:
            block, _ = s.read(BLOCK)
            yield np.asarray(block[:, 0])
