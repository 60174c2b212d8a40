"""Waveform augmentation for the corpus builder: the channel and the voice, not the word.

Each function takes float audio at 16 kHz and returns float audio at 16 kHz; randomness comes
from an explicit ``numpy.random.Generator``. :class:`Augment` chains them with probabilities, the
way a corpus utterance is rendered (``tessera corpus build --augment channel``).

    >>> import numpy as np
    >>> x = np.sin(2 * np.pi * 6000 * np.arange(16000) / 16000)
    >>> float(np.abs(band_limit(x, 8000)).max()) < 0.01      # nothing above 4 kHz survives
    True
    >>> y = band_limit(np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000), 8000)
    >>> bool(0.95 < np.abs(y[1000:-1000]).max() < 1.05)       # speech band passes
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError

RATE = SAMPLE_RATE

__all__ = ["band_limit", "telephone", "mic_colour", "reverb", "speed", "vtlp", "add_noise",
           "Augment", "AUGMENT_PRESETS", "pink_noise", "time_stretch", "pitch_shift"]


def fft_filter(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Zero-phase filter by a magnitude response sampled on ``rfft`` bins of a padded length."""
    n = x.size
    spec = np.fft.rfft(x, 2 * n)
    g = np.interp(np.linspace(0, 1, spec.size), np.linspace(0, 1, gain.size), gain)
    return np.fft.irfft(spec * g, 2 * n)[:n].astype(np.float32)


def band_limit(x: np.ndarray, rate: int = 8000) -> np.ndarray:
    """As if recorded at ``rate`` Hz and played back at 16 kHz: nothing above ``0.475 * rate``."""
    if not 2000 <= rate <= RATE:
        raise InputError(f"band_limit: rate must be 2000..{RATE} Hz, not {rate}")
    f = np.linspace(0, RATE / 2, 2049)
    cut = 0.475 * rate
    gain = np.clip((cut - f) / (0.025 * rate) + 0.5, 0, 1)      # a steep linear-phase edge
    return fft_filter(np.asarray(x, np.float64), gain)


def telephone(x: np.ndarray) -> np.ndarray:
    """The 300-3,400 Hz telephone band."""
    f = np.linspace(0, RATE / 2, 2049)
    gain = np.clip((f - 250) / 100, 0, 1) * np.clip((3500 - f) / 200, 0, 1)
    return fft_filter(np.asarray(x, np.float64), gain)


def mic_colour(x: np.ndarray, rng: np.random.Generator, max_db: float = 10.0) -> np.ndarray:
    """A microphone and room colouring: a smooth random response over log frequency (knots
    every octave, ``max_db`` peak to peak at most) with a random low cut (40-300 Hz)."""
    f = np.linspace(0, RATE / 2, 2049)
    knots = np.geomspace(62.5, 8000, 8)
    db = rng.uniform(-max_db / 2, max_db / 2, knots.size)
    resp = 10 ** (np.interp(np.log(np.maximum(f, 1.0)), np.log(knots), db) / 20)
    low = rng.uniform(40, 300)
    resp *= 1 / np.sqrt(1 + (low / np.maximum(f, 1.0)) ** 4)       # 2nd-order high-pass shape
    return fft_filter(np.asarray(x, np.float64), resp)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float | None = None,
           drr_db: float | None = None) -> np.ndarray:
    """A synthetic room: exponentially decaying noise tail (``rt60`` s) after a direct path, mixed
    at a direct-to-reverberant ratio ``drr_db``; length kept, level kept."""
    rt60 = float(rng.uniform(0.15, 0.8)) if rt60 is None else rt60
    drr_db = float(rng.uniform(-3, 12)) if drr_db is None else drr_db
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60)
    tail[: int(0.002 * RATE)] = 0.0                      # first reflections after 2 ms
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
    rir = np.concatenate([[1.0], tail])
    m = x.size + rir.size - 1
    y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(rir, m), m)[: x.size]
    return (y * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(y ** 2)) + 1e-12))).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch and formants move with it), by polyphase resampling."""
    from scipy.signal import resample_poly
    if not 0.5 <= factor <= 2.0:
        raise InputError(f"speed: factor must be 0.5..2, not {factor}")
    fr = Fraction(factor).limit_denominator(64)
    return resample_poly(np.asarray(x, np.float64), fr.denominator, fr.numerator).astype(np.float32)


def vtlp(x: np.ndarray, alpha: float, f_hi: float = 4800.0) -> np.ndarray:
    """Vocal-tract-length perturbation: warp the short-time spectrum's frequency axis by ``alpha``
    (piecewise linear, as Jaitly and Hinton 2013: f -> alpha f below the knee, then to Nyquist),
    keeping the frame's phase; duration and pitch period stay."""
    from scipy.signal import istft, stft
    if not 0.7 <= alpha <= 1.4:
        raise InputError(f"vtlp: alpha must be 0.7..1.4, not {alpha}")
    n = x.size
    _, _, z = stft(np.asarray(x, np.float64), fs=RATE, nperseg=512, noverlap=384)
    f = np.linspace(0, RATE / 2, z.shape[0])
    knee = f_hi * min(alpha, 1.0) / alpha
    nyq = RATE / 2
    warped = np.where(f <= knee, f * alpha,
                      nyq - (nyq - f_hi * min(alpha, 1.0)) / (nyq - knee) * (nyq - f))
    # output bin at frequency g takes the input magnitude at the warp's inverse of g
    src = np.interp(f, warped, f)
    mag = np.abs(z)
    out_mag = np.empty_like(mag)
    for j in range(mag.shape[1]):
        out_mag[:, j] = np.interp(src, f, mag[:, j])
    _, y = istft(out_mag * np.exp(1j * np.angle(z)), fs=RATE, nperseg=512, noverlap=384)
    y = y[:n] if y.size >= n else np.pad(y, (0, n - y.size))
    return (y * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(y ** 2)) + 1e-12))).astype(np.float32)


def time_stretch(x: np.ndarray, factor: float, frame: int = 640, hop: int = 160,
                 search: int = 160) -> np.ndarray:
    """Make ``x`` ``factor`` times longer without changing its pitch: WSOLA (waveform-similarity
    overlap-add, Verhelst and Roelands 1993). Hann frames of ``frame`` samples are laid every
    ``hop`` output samples; each is read near ``hop / factor`` input samples after the last,
    shifted by up to ``search`` samples to the position that best continues the previous frame."""
    if not 0.5 <= factor <= 2.0:
        raise InputError(f"time_stretch: factor must be 0.5..2, not {factor}")
    x = np.asarray(x, np.float64)
    n_out = int(round(x.size * factor))
    if x.size < frame + 2 * search or factor == 1.0:
        return np.interp(np.linspace(0, x.size - 1, max(n_out, 1)), np.arange(x.size),
                         x).astype(np.float32) if x.size else x.astype(np.float32)
    pad = np.concatenate([np.zeros(search), x, np.zeros(frame + 2 * search)])
    win = np.hanning(frame)
    out = np.zeros(n_out + frame)
    norm = np.zeros(n_out + frame)
    prev = search                                     # read position of the last frame (padded)
    for k, pos in enumerate(range(0, n_out, hop)):
        nominal = search + int(pos / factor)
        if k == 0:
            start = nominal
        else:                                         # continue the previous frame's waveform
            target = pad[prev + hop: prev + hop + frame]
            lo = max(0, nominal - search)
            seg = pad[lo: nominal + search + frame]
            corr = np.correlate(seg, target, mode="valid")
            start = lo + int(np.argmax(corr))
        out[pos: pos + frame] += pad[start: start + frame] * win
        norm[pos: pos + frame] += win
        prev = start
    return (out[:n_out] / np.maximum(norm[:n_out], 1e-3)).astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Raise (or lower) the pitch by ``semitones`` and keep the duration: play faster by the
    ratio (pitch and formants move), then stretch back to the length with :func:`time_stretch`."""
    if not -7.0 <= semitones <= 7.0:
        raise InputError(f"pitch_shift: semitones must be -7..7, not {semitones}")
    r = 2.0 ** (semitones / 12.0)
    y = time_stretch(speed(x, r), r)
    return y[:x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / (np.std(x) + 1e-12)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, ref_rms: float,
              kind: str = "white") -> np.ndarray:
    """Add white, pink or babble-like (speech-shaped, amplitude-modulated) noise at ``snr_db``
    below ``ref_rms``."""
    if kind == "white":
        noise = rng.standard_normal(x.size)
    elif kind == "pink":
        noise = pink_noise(rng, x.size)
    elif kind == "babble":
        noise = fft_filter(pink_noise(rng, x.size), 1 / np.sqrt(1 + (np.linspace(0, 8000, 2049) / 1000) ** 2))
        env = np.abs(fft_filter(rng.standard_normal(x.size), np.exp(-np.linspace(0, 8000, 2049) / 4)))
        noise = noise * env
        noise /= np.std(noise) + 1e-12
    else:
        raise InputError(f"add_noise: unknown kind {kind!r} (white, pink, babble)")
    return (x + noise * ref_rms * 10 ** (-snr_db / 20)).astype(np.float32)


@dataclass(frozen=True)
class Augment:
    """Probabilities and ranges of a random augmentation chain (speech first, then the room,
    then the noise and the recording band). ``p_*`` = 0 turns a stage off."""

    p_speed: float = 0.0
    speed: tuple[float, float] = (0.88, 1.14)
    p_vtlp: float = 0.0
    vtlp: tuple[float, float] = (0.86, 1.16)
    p_mic: float = 0.0
    mic_db: float = 12.0
    p_reverb: float = 0.0
    p_band8k: float = 0.0
    p_telephone: float = 0.0
    snr_db: tuple[float, float] = (15.0, 45.0)
    noise_kinds: tuple[str, ...] = ("white", "pink")
    p_pitch: float = 0.0             # pitch shift without a change of duration (drawn last, and
    pitch: tuple[float, float] = (-4.0, 4.0)   # only when p_pitch > 0: presets without it keep
    #                                            their random draws)

    def __post_init__(self) -> None:
        for name in ("p_speed", "p_vtlp", "p_mic", "p_reverb", "p_band8k", "p_telephone",
                     "p_pitch"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"augment: {name} must be in [0, 1]")
        if self.p_band8k + self.p_telephone > 1:
            raise InputError("augment: p_band8k + p_telephone must be <= 1")

    def voice(self, speech: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Speed, vocal-tract length, microphone, room: applied to the speech alone."""
        meta = {}
        if rng.random() < self.p_speed:
            meta["speed"] = round(float(rng.uniform(*self.speed)), 3)
            speech = speed(speech, meta["speed"])
        if rng.random() < self.p_vtlp:
            meta["vtlp"] = round(float(rng.uniform(*self.vtlp)), 3)
            speech = vtlp(speech, meta["vtlp"])
        if rng.random() < self.p_mic:
            meta["mic"] = 1
            speech = mic_colour(speech, rng, self.mic_db)
        if rng.random() < self.p_reverb:
            meta["reverb"] = 1
            speech = reverb(speech, rng)
        if self.p_pitch and rng.random() < self.p_pitch:
            meta["pitch"] = round(float(rng.uniform(*self.pitch)), 2)
            speech = pitch_shift(speech, meta["pitch"])
        return speech, meta

    def band(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """The recording's band, applied last (after the noise)."""
        u = rng.random()
        if u < self.p_band8k:
            return band_limit(x, 8000), "8k"
        if u < self.p_band8k + self.p_telephone:
            return telephone(x), "telephone"
        return x, "full"

    def describe(self, meta: dict, band: str) -> str:
        parts = [f"{k}={v}" if k in ("speed", "vtlp", "pitch") else k for k, v in meta.items()]
        return ",".join(parts + ([band] if band != "full" else [])) or "none"


#: ``tessera corpus build --augment NAME``
AUGMENT_PRESETS = {
    "none": Augment(),
    # channels and voices the corpus voices never had: microphones, rooms, 8 kHz and telephone
    # bands, louder noise, speed and vocal-tract length
    "channel": Augment(p_speed=0.5, p_vtlp=0.5, p_mic=0.7, p_reverb=0.35, p_band8k=0.35,
                       p_telephone=0.1, snr_db=(5.0, 45.0), noise_kinds=("white", "pink", "babble")),
    # every utterance through an 8 kHz recording chain (the FSDD case), nothing else changed
    "8k": Augment(p_band8k=1.0),
    # "channel" plus a new voice for real recordings: speed, vocal-tract length and pitch moved
    # more often (a person becomes another person), microphones, rooms, bands, noise
    "voice": Augment(p_speed=0.5, p_vtlp=0.7, p_mic=0.7, p_reverb=0.35, p_band8k=0.35,
                     p_telephone=0.1, snr_db=(5.0, 45.0), noise_kinds=("white", "pink", "babble"),
                     p_pitch=0.7),
}
