"""Text-to-speech through the espeak-ng library bundled in the ``espeakng-loader`` package.

ctypes, synchronous synthesis to memory: no system binary, no subprocess, no network. espeak-ng
(GPL-3.0) is loaded only here, by the corpus builder; install it with the ``corpus`` extra.

The library keeps global state, so there is one :class:`Espeak` per process (worker processes of
the corpus builder each make their own).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

from ..runtime.errors import TesseraError

__all__ = ["Espeak", "TTSUnavailable", "Voice", "list_variants"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TTSUnavailable(TesseraError):
    """espeak-ng cannot be loaded; the message says why and how to install it."""


@dataclass(frozen=True)
class Voice:
    """One synthesis setting: language/accent, voice variant and prosody."""

    language: str = "en-us"
    variant: str = ""
    rate: int = 160        # words per minute
    pitch: int = 50        # 0..100
    pitch_range: int = 50  # 0..100

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language


def _loader():
    try:
        import espeakng_loader
    except ImportError as exc:
        raise TTSUnavailable(
            "the espeakng-loader package is not installed; install tessera with the 'corpus' "
            "extra: pip install -e '.[corpus]'") from exc
    return espeakng_loader


def list_variants() -> list[str]:
    """Names of the voice variants shipped with the bundled espeak-ng data (about 100)."""
    root = os.path.join(_loader().get_data_path(), "voices", "!v")
    return sorted(f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f)))


class Espeak:
    """Synchronous espeak-ng synthesis to int16 arrays.

    >>> tts = Espeak()                                   # doctest: +SKIP
    >>> pcm = tts.synth("seven", Voice("en-gb", "m3"))   # doctest: +SKIP
    >>> tts.sample_rate                                  # doctest: +SKIP
    22050
    """

    _instance_pid: int | None = None

    def __init__(self) -> None:
        loader = _loader()
        try:
            self._lib = ctypes.CDLL(loader.get_library_path())
        except OSError as exc:
            raise TTSUnavailable(f"cannot load the bundled espeak-ng library: {exc}") from exc
        data = loader.get_data_path().encode()
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(data), 0)
        if rate <= 0:
            raise TTSUnavailable(f"espeak_Initialize failed (returned {rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CB(self._collect)       # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: Voice = Voice(), seed: int = 0) -> np.ndarray:
        """Speak ``text`` -> int16 samples at :attr:`sample_rate`.

        ``seed`` seeds espeak-ng's noise generator (breathy and whispered voices use it).
        """
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed & 0x7FFFFFFF))
        if voice.name != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise TTSUnavailable(f"espeak-ng has no voice {voice.name!r}")
            self._voice = voice.name
        for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch),
                             (_RANGE, voice.pitch_range), (_VOLUME, 100)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        raw = text.encode("utf-8")
        rc = self._lib.espeak_Synth(ctypes.c_char_p(raw), len(raw) + 1, 0, 0, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        if rc != 0:
            raise TTSUnavailable(f"espeak_Synth failed with code {rc} for {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
