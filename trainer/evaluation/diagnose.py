"""`tessera diagnose`: where does accuracy go between voices, microphones and bands?

Two tables, both 5-way through the device rule (one column per word, cosine):

* **TTS conditions.** Unseen words by the corpus's test voices are synthesized once (audio kept)
  and re-encoded under one condition at a time: the 8 kHz band, the telephone band, a quieter
  recording, a microphone colouring, a room, babble noise, a faster talker, a shorter vocal tract.
  Each condition is scored twice: enrolled on clean audio and asked in the condition (a channel
  *mismatch*, as a person enrolling on one microphone and speaking through another), and both in
  the condition (what the condition destroys by itself).
* **Real voices.** FSDD (or any folder of ``{label}_{speaker}_{i}.wav``) enrolled by one speaker
  and asked by the others, after removing one difference at a time: as recorded; every recording
  at the same loudness; and each speaker's long-term average spectrum equalized to the mean of all
  speakers (the microphone and room); or every word starting 100 ms into its recording (FSDD's
  speakers differ in leading silence: george and jackson start at once). What remains is the
  voice. The same-speaker score is the ceiling.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from ...runtime.audio import to_int16
from ...runtime.constants import SAMPLE_RATE
from ...runtime.frontend import Cochlea
from ..data import augment as A
from ..data.readers import SpikeSet
from ..learning.episodes import FewShotTasks
from ..learning.adapt import evaluate, features_of
from ..data.levels import (frontend_levels, moved_spikes, pooled_levels,
                           speech_mean)
from ..data.transforms import dense_dataset

__all__ = ["TTS_CONDITIONS", "tts_conditions", "real_voices", "equalize_speakers",
           "level_equalization"]


def _quiet(x, rng):
    return x * 10 ** (-20 / 20)


#: name -> f(float audio at 16 kHz, rng) -> float audio
TTS_CONDITIONS = {
    "clean": lambda x, rng: x,
    "8 kHz band": lambda x, rng: A.band_limit(x, 8000),
    "telephone band": lambda x, rng: A.telephone(x),
    "20 dB quieter": _quiet,
    "microphone colouring": lambda x, rng: A.mic_colour(x, rng, 12.0),
    "room (RT60 0.5 s)": lambda x, rng: A.reverb(x, rng, 0.5, 3.0),
    "babble noise, 10 dB SNR": lambda x, rng: A.add_noise(
        x, rng, 10.0, float(np.sqrt(np.mean(x[np.abs(x) > 0.1 * np.abs(x).max()] ** 2))), "babble"),
    "10 % faster": lambda x, rng: A.speed(x, 1.1),
    "vocal tract 12 % shorter": lambda x, rng: A.vtlp(x, 1.12),
}


def _spikes_set(pcms: list[np.ndarray], labels: np.ndarray, speakers: np.ndarray,
                label_names: list[str], spec, level_eq=None) -> SpikeSet:
    """Spikes of ``pcms``; with a model's ``level_eq``, heard as a device with it hears them
    (:func:`~tessera.trainer.data.readers.heard_by_device`)."""
    if level_eq is not None:
        from ..data.readers import heard_by_device
        events = heard_by_device(pcms.__getitem__, [int(s) for s in speakers], spec, level_eq)
    else:
        fe = Cochlea(spec)
        events = [np.nonzero(fe.encode(pcm)) for pcm in pcms]
    return SpikeSet.from_steps(events, spec.step_seconds, labels, speakers,
                               np.full(len(pcms), 2, np.int8), spec.channels, label_names,
                               [f"s{i}" for i in range(int(np.max(speakers)) + 1)], "diagnose")


def _features(model, sset: SpikeSet) -> torch.Tensor:
    d = model.config.data
    x = dense_dataset(sset, d.steps, d.duration, d.channel_subsets, subsets="first")[0]
    return features_of(model.core, x[:, 0])


def _score(model, tasks, feats, query_feats=None, shots=(1, 5), episodes=300, **kw) -> dict:
    out = {}
    for k in shots:
        r = evaluate(model.core, model.lrs, None, tasks, phase="unseen", ways=5, shots=k,
                     queries=5, episodes=episodes, inner_steps=1, feats=feats,
                     query_feats=query_feats, rule="prototype", **kw)
        out[f"{k}-shot"] = round(100 * r["accuracy"], 1)
        out[f"{k}-shot ci95"] = round(100 * r["ci95"], 1)
    return out


def tts_conditions(model, *, speakers: int = 100, repeats: int = 4, episodes: int = 300,
                   shots=(1, 5), conditions: tuple[str, ...] = tuple(TTS_CONDITIONS),
                   progress: bool = False) -> list[dict]:
    """Score every condition of :data:`TTS_CONDITIONS` on the model's unseen words spoken by the
    default corpus's test voices (synthesized here, with the corpus's seed 0 voices)."""
    from ..data.corpus import SHD_WORDS, CorpusConfig, build_corpus
    from ..data.readers import read_spike_h5

    unseen = list(model.config.data.unseen)
    words = tuple(SHD_WORDS[i] for i in unseen)
    cfg = CorpusConfig(speakers=speakers, repeats=repeats, words=words, keep_audio=True,
                       speaker_splits=("test",))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "diagnose.h5")
        build_corpus(path, cfg, progress=progress)
        import h5py
        with h5py.File(path, "r") as h5:
            pcms = [np.asarray(p, np.float32) / 32768.0 for p in h5["audio/pcm"][:]]
        base = read_spike_h5(path)
    labels, spk = base.labels, base.speakers
    tasks = FewShotTasks(labels, spk, np.full(labels.size, 2, np.int8),
                         unseen=tuple(np.unique(labels).tolist()), all_test=True)
    clean = None
    rows = []
    for name in conditions:
        f = TTS_CONDITIONS[name]
        pcm = [to_int16(np.clip(f(x, np.random.default_rng([7, i])), -1, 1))
               for i, x in enumerate(pcms)]
        feats = _features(model, _spikes_set(pcm, labels, spk, base.label_names, cfg.frontend,
                                             model.level_eq))
        if clean is None:
            clean = feats
        row = dict(condition=name, mismatch=_score(model, tasks, clean, feats, shots, episodes),
                   matched=_score(model, tasks, feats, None, shots, episodes))
        rows.append(row)
    return rows


def equalize_speakers(pcms: list[np.ndarray], speakers: np.ndarray, n_fft: int = 512
                      ) -> list[np.ndarray]:
    """Give every speaker the long-term average spectrum of all speakers together: each
    recording is filtered by sqrt(mean LTAS / its speaker's LTAS) (smoothed over 1/3 octave)."""
    def ltas(x):
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (0, n_fft)), n_fft)[::n_fft // 2]
        return np.mean(np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2, axis=0)

    per = {}
    for s in np.unique(speakers):
        per[int(s)] = np.mean([ltas(pcms[i]) for i in np.nonzero(speakers == s)[0]], axis=0)
    mean = np.mean(list(per.values()), axis=0)
    logf = np.log(np.arange(mean.size, dtype=np.float64) + 1)
    near = np.abs(logf[:, None] - logf[None, :]) < np.log(2) / 6        # 1/3 octave around a bin
    out = []
    gains = {}
    for s, p in per.items():
        g = np.sqrt((mean + 1e-12) / (p + 1e-12))
        gains[s] = np.clip((near @ g) / near.sum(axis=1), 0.03, 30)
    for i, x in enumerate(pcms):
        out.append(A.fft_filter(np.asarray(x, np.float64), gains[int(speakers[i])]))
    return out


def align_onset(x: np.ndarray, lead_s: float = 0.1, floor_db: float = -30.0) -> np.ndarray:
    """Start the recording ``lead_s`` before its first 10 ms frame within ``floor_db`` of the
    loudest frame (silence padded or cut): every word then starts at the same time."""
    n = x.size // 160 * 160
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[:n].reshape(-1, 160) ** 2, axis=1) + 1e-12)
    first = int(np.nonzero(20 * np.log10(rms / rms.max()) > floor_db)[0][0]) * 160
    lead = int(lead_s * SAMPLE_RATE)
    return np.concatenate([np.zeros(max(lead - first, 0), np.float32), x[max(first - lead, 0):]])


def real_voices(model, folder: str, *, episodes: int = 300, shots=(1, 5)) -> list[dict]:
    """Cross-speaker accuracy on a WAV folder as recorded, loudness-matched, and loudness- and
    spectrum-matched per speaker; the same-speaker score as the ceiling."""
    from ...runtime.frontend import FrontendSpec
    from ..data.levels import audio_of
    from ..data.readers import wav_items, wav_index

    names, _, labels, speakers = wav_index(wav_items(folder))
    raw = [a.astype(np.float32) / 32768.0 for a in audio_of(folder)]
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, 2, np.int8),
                         unseen=tuple(np.unique(labels).tolist()), all_test=True)
    spec = FrontendSpec()

    def level(xs):
        return [x * (0.05 / (np.sqrt(np.mean(x ** 2)) + 1e-9)) for x in xs]

    variants = [("as recorded", raw), ("same loudness", level(raw)),
                ("same loudness and long-term spectrum", level(equalize_speakers(level(raw), speakers))),
                ("word onsets aligned (100 ms lead)", [align_onset(x) for x in raw])]
    rows = []
    for name, xs in variants:
        pcm = [to_int16(np.clip(x, -1, 1)) for x in xs]
        feats = _features(model, _spikes_set(pcm, labels, speakers, names, spec,
                                             model.level_eq))
        rows.append(dict(audio=name,
                         cross_speaker=_score(model, tasks, feats, None, shots, episodes,
                                              cross_speaker=True),
                         same_speaker=_score(model, tasks, feats, None, shots, episodes,
                                             same_speaker=True)))
    return rows


# ------------------------------------------------------------ long-term spectrum in the front-end
def level_equalization(model, folder: str, refs: dict[str, np.ndarray] | None = None, *,
                       episodes: int = 300, shots=(1, 5), recent: int = 16, prior: float = 2.0,
                       seed: int = 0) -> list[dict]:
    """Long-term-spectrum normalization *inside the front-end*: before adaptation and spikes,
    every channel's level is moved by (reference - the speaker's long-term level), where the
    speaker's level is its mean over speech steps of all its recordings (an oracle), of the
    ``recent`` recordings heard before (shrunk to the reference with weight ``prior``: what a
    device could keep), or of the utterance itself. References: each of ``refs`` (e.g. a
    training corpus's mean, :func:`corpus_level_mean`) and the mean of the folder's speakers
    (an oracle: the test speakers' own average)."""
    from ...runtime.frontend import FrontendSpec, design
    from ..data.levels import audio_of
    from ..data.readers import wav_items, wav_index

    spec = FrontendSpec()
    tab = design(spec)
    names, _, labels, speakers = wav_index(wav_items(folder))
    levels = [frontend_levels(p, tab) for p in audio_of(folder)]
    means = [speech_mean(L, tab.floor_level) for L in levels]
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, 2, np.int8),
                         unseen=tuple(np.unique(labels).tolist()), all_test=True)
    spk = {int(s): pooled_levels([means[i] for i in np.nonzero(speakers == s)[0]])
           for s in np.unique(speakers)}
    refs = dict(refs or {})
    refs["the folder's speakers (oracle)"] = np.mean(list(spk.values()), axis=0)
    order = np.random.default_rng(seed).permutation(len(levels))

    def running(ref):
        offs, heard = [None] * len(levels), {}
        for i in order:
            h = heard.setdefault(int(speakers[i]), [])[-recent:]
            offs[i] = (sum(h, np.zeros(spec.channels)) + prior * ref) / (len(h) + prior) - ref
            heard[int(speakers[i])].append(means[i][0])
        return offs

    def row(name, offsets):
        ev = [moved_spikes(L, off, spec, tab) for L, off in zip(levels, offsets)]
        sset = SpikeSet.from_steps(ev, spec.step_seconds, labels, speakers,
                                   np.full(len(levels), 2, np.int8), spec.channels, names,
                                   [f"s{i}" for i in range(int(np.max(speakers)) + 1)], "diagnose")
        feats = _features(model, sset)
        return dict(audio=name,
                    cross_speaker=_score(model, tasks, feats, None, shots, episodes,
                                         cross_speaker=True),
                    same_speaker=_score(model, tasks, feats, None, shots, episodes,
                                        same_speaker=True))

    rows = [row("front-end levels as heard", [np.zeros(spec.channels)] * len(levels))]
    for rname, ref in refs.items():
        rows.append(row(f"levels to {rname}: the speaker's mean (oracle)",
                        [spk[int(s)] - ref for s in speakers]))
        if not rname.endswith("(oracle)"):
            rows.append(row(f"levels to {rname}: the {recent} recordings heard before",
                            running(ref)))
            rows.append(row(f"levels to {rname}: the utterance's own mean",
                            [m - ref for m, _ in means]))
    return rows


