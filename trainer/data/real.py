"""`tessera corpus real`: recordings of real people as a training corpus (DSPSpeech-20).

DSPSpeech-20 (MIT; ``<speaker>/<speaker>-<word>-<take>.flac``, 16 kHz mono): 34 people, 20
words (12 Mandarin, 8 English), 6 takes each. Every recording goes through the runtime's front-end
as it was recorded (copy 0) and ``repeats - 1`` more times through a random new voice and channel
(:data:`~tessera.trainer.data.augment.AUGMENT_PRESETS` ``"voice"``: speed, vocal-tract length, pitch,
microphone, room, band, noise); the result is a corpus in the SHD layout with the audio kept, so
the teacher (:mod:`.teacher`) can be run on it, and it joins the TTS corpora as ``--extra-data``
(its English words join the TTS classes of the same name).

Speakers listed in ``holdout`` are the validation split (never trained on: ``--extra-data`` keeps
only the train split); by default the four :data:`HOLDOUT` students. FLAC is read with
``soundfile`` (the ``data`` extra), never on the device side.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time

import numpy as np

from ...runtime.audio import resample, to_int16
from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError
from ...runtime.frontend import Cochlea, FrontendSpec

__all__ = ["DSP_WORDS", "HOLDOUT", "read_flac", "dsp_items", "build_real_corpus",
           "encode_jobs", "voice_copy"]

#: DSPSpeech-20's words in its label order (README of the data set), as ``lang:word`` keys.
DSP_WORDS = ("zh:shuzi", "zh:yuyin", "zh:yuyan", "zh:shibie", "zh:zhongguo", "zh:zonggong",
             "zh:beijing", "zh:beijing-bg", "zh:shanghai", "zh:shanghang", "zh:fudan",
             "zh:fandian", "en:speech", "en:speaker", "en:signal", "en:process", "en:print",
             "en:open", "en:close", "en:project")

#: Validation speakers held out of training by default (named, so every run holds out the same).
HOLDOUT = ("17307130064", "17307130106", "17307130162", "17307130354")

_NAME = re.compile(r"^(?P<speaker>[^-]+)-(?P<word>\d\d)-(?P<take>\d+)\.flac$", re.IGNORECASE)


def read_flac(path: str) -> np.ndarray:
    """One FLAC (or any format libsndfile reads) as float32 at 16 kHz, mono (channels averaged)."""
    try:
        import soundfile as sf
    except ImportError as exc:  # pragma: no cover - install problem
        raise InputError("reading FLAC needs soundfile: pip install -e '.[data]'") from exc
    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise InputError(f"not a readable audio file ({exc})", source=path) from None
    if x.shape[0] == 0:
        raise InputError("audio file holds no samples", source=path)
    x = x.mean(1) * 32768.0
    return resample(x, int(rate), SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else x


def dsp_items(folder: str) -> list[tuple[str, str, int]]:
    """(path, speaker, word index) of every recording under ``folder``, sorted."""
    if not os.path.isdir(folder):
        raise InputError("no such folder", source=folder)
    items = []
    for spk in sorted(os.listdir(folder)):
        sub = os.path.join(folder, spk)
        if not os.path.isdir(sub):
            continue
        for name in sorted(os.listdir(sub)):
            m = _NAME.match(name)
            if m and int(m["word"]) < len(DSP_WORDS):
                items.append((os.path.join(sub, name), m["speaker"], int(m["word"])))
    if not items:
        raise InputError("no <speaker>/<speaker>-<word>-<take>.flac files (DSPSpeech-20 layout)",
                         source=folder)
    return items


def voice_copy(x: np.ndarray, rng: np.random.Generator, aug=None) -> tuple[np.ndarray, str]:
    """One recording (float, -1..1) through a random new voice and channel (``aug``, default the
    ``voice`` preset of :mod:`.augment`: speed, vocal tract, pitch, microphone, room, band,
    noise) at a random level: int16 PCM and what was done."""
    from .augment import AUGMENT_PRESETS, add_noise

    aug = aug or AUGMENT_PRESETS["voice"]
    speech, meta = aug.voice(x, rng)
    peak = float(np.max(np.abs(speech))) or 1.0
    speech = speech / peak * 10 ** (rng.uniform(-18.0, -1.0) / 20)
    rms = float(np.sqrt(np.mean(speech ** 2)))
    kind = str(aug.noise_kinds[int(rng.integers(len(aug.noise_kinds)))])
    speech = add_noise(speech, rng, float(rng.uniform(*aug.snr_db)), rms, kind)
    speech, band = aug.band(speech, rng)
    return to_int16(speech), aug.describe(meta, band)


def encode_jobs(args: tuple) -> list[tuple]:
    """A worker's part: (jobs of (index, path, copy), spec, seed, augment preset) -> (index,
    steps, units, pcm, augmentation) of each recording through a fresh front-end."""
    jobs, spec, seed, augment = args
    from ...runtime.threads import set_blas_threads
    from .augment import AUGMENT_PRESETS

    set_blas_threads(1)
    aug = AUGMENT_PRESETS[augment]
    fe = Cochlea(spec)
    out = []
    for index, path, copy in jobs:
        x = read_flac(path)
        desc = "none"
        if copy:                                    # a new voice and channel
            pcm, desc = voice_copy(x / 32768.0, np.random.default_rng([seed, index, copy]), aug)
        else:
            pcm = to_int16(x / 32768.0)
        steps, units = np.nonzero(fe.encode(pcm))
        out.append((index, steps.astype(np.int32), units.astype(np.uint16), pcm, desc))
    return out


def build_real_corpus(folder: str, out: str, *, holdout: tuple[str, ...] = HOLDOUT,
                      repeats: int = 1, augment: str = "voice", seed: int = 0,
                      workers: int | None = None, progress: bool = True,
                      spec: FrontendSpec | None = None) -> dict:
    """Encode DSPSpeech-20 (``folder``) into a corpus at ``out``; returns a summary."""
    from tqdm import tqdm

    from .augment import AUGMENT_PRESETS
    from .corpus import SPLITS, write_corpus_h5

    if repeats < 1:
        raise InputError("corpus real: repeats must be >= 1")
    if augment not in AUGMENT_PRESETS:
        raise InputError(f"corpus real: unknown augment {augment!r} "
                         f"(one of {', '.join(AUGMENT_PRESETS)})")
    spec = spec or FrontendSpec()
    t0 = time.time()
    items = dsp_items(folder)
    speakers = sorted({s for _, s, _ in items})
    unknown = sorted(set(holdout) - set(speakers))
    if unknown:
        raise InputError(f"corpus real: held-out speaker(s) not in the folder: "
                         f"{', '.join(unknown)}", source=folder)
    if len(set(speakers) - set(holdout)) < 2:
        raise InputError("corpus real: fewer than 2 training speakers left", source=folder)
    jobs = [(i * repeats + c, path, c) for i, (path, _, _) in enumerate(items)
            for c in range(repeats)]
    chunk = 32
    parts = [(jobs[i: i + chunk], spec, seed, augment) for i in range(0, len(jobs), chunk)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(parts)))
    results: list = [None] * len(jobs)
    bar = tqdm(total=len(jobs), unit="utt", desc="corpus real", disable=not progress, leave=False)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        for res in pool.imap_unordered(encode_jobs, parts):
            for r in res:
                results[r[0]] = r
            bar.update(len(res))
    bar.close()
    spk_index = {s: i for i, s in enumerate(speakers)}
    spk_split = [1 if s in holdout else 0 for s in speakers]
    meta = [items[j // repeats] for j in range(len(jobs))]
    write_corpus_h5(
        out, [(r[1], r[2]) for r in results], spec,
        labels=[w for _, _, w in meta], speakers=[spk_index[s] for _, s, _ in meta],
        keys=list(DSP_WORDS), split=[spk_split[spk_index[s]] for _, s, _ in meta],
        speaker_names=[f"dsp:{s}" for s in speakers], speaker_split=spk_split,
        strings=dict(text=[DSP_WORDS[w].split(":")[1] for _, _, w in meta],
                     language=[DSP_WORDS[w].split(":")[0] for _, _, w in meta],
                     augment=[r[4] for r in results],
                     file=[os.path.relpath(p, folder) for p, _, _ in meta]),
        floats=dict(duration_s=[r[3].size / SAMPLE_RATE for r in results]),
        attrs=dict(preset="real", source="DSPSpeech-20 (MIT)", augment=augment, seed=seed,
                   repeats=repeats, holdout=",".join(holdout)),
        audio=[r[3] for r in results])
    return dict(path=out, utterances=len(jobs), recordings=len(items), repeats=repeats,
                speakers=len(speakers), classes=len(DSP_WORDS),
                holdout=list(holdout), split_speakers={SPLITS[0]: spk_split.count(0),
                                                       SPLITS[1]: spk_split.count(1)},
                seconds=round(time.time() - t0, 1), workers=workers)
