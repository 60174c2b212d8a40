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
from ...runtime.errors import InputError
from ...runtime.frontend import Cochlea
from ..data import augment as A
from ..data.readers import SpikeSet
from ..learning.episodes import FewShotTasks
from ..learning.adapt import evaluate, features_of
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
    from .baselines import audio_of
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
def _need_audio_corpus(path: str) -> None:
    """A clear error for a path that is not a readable h5 corpus with its audio."""
    import h5py

    from ...runtime.errors import InputError
    if not os.path.isfile(path):
        raise InputError("no such corpus file", source=path)
    try:
        with h5py.File(path, "r") as h5:
            audio = "audio/pcm" in h5
    except OSError as exc:
        raise InputError(f"not an h5 corpus ({exc})", source=path) from None
    if not audio:
        raise InputError("corpus has no audio (build it with --keep-audio)", source=path)


def _pooled(means: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """The long-term level spectrum of several :func:`_speech_mean` results, weighted by their
    speech steps."""
    return np.average([m for m, _ in means], axis=0, weights=[max(k, 1) for _, k in means])


def _moved_spikes(level: np.ndarray, offset: np.ndarray, spec, tab) -> tuple:
    """The (step, channel) spikes of ``level`` (C, steps) with every channel moved down by its
    ``offset`` (level units) before adaptation and spikes."""
    from ...runtime.frontend import spikes_from_levels, initial_state

    moved = (level - np.round(offset).astype(np.int64)[:, None]).astype(np.int32)
    return np.nonzero(spikes_from_levels(moved, initial_state(spec), tab)[0])


def _fe_levels(pcm: np.ndarray, tab) -> np.ndarray:
    """The front-end's levels (C, steps) of one utterance from rest, int64."""
    from ...runtime.frontend import channel_levels, filterbank
    return channel_levels(filterbank(np.asarray(pcm), tab), tab).astype(np.int64)


def _speech_mean(level: np.ndarray, floor: int) -> tuple[np.ndarray, int]:
    """Each channel's mean level over the utterance's speech steps (mean level above the floor
    at least half its peak) and how many steps that was."""
    a = np.maximum(level - floor, 0).mean(axis=0)
    speech = a >= 0.5 * a.max() if a.max() > 0 else np.ones(a.size, bool)
    return np.maximum(level[:, speech], floor).mean(axis=1), int(speech.sum())


def corpus_level_mean(path: str, tab, n: int = 400, seed: int = 0) -> np.ndarray:
    """The long-term level spectrum (C,) of ``n`` utterances of a corpus built with
    ``--keep-audio``: the reference a device could ship with its model."""
    import h5py
    _need_audio_corpus(path)
    with h5py.File(path, "r") as h5:
        total = h5["audio/pcm"].shape[0]
        idx = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
        pcms = [np.asarray(h5["audio/pcm"][i], np.int16) for i in idx]
    return _pooled([_speech_mean(_fe_levels(p, tab), tab.floor_level) for p in pcms])


def reference_eq(path: str, n: int = 400, seed: int = 0, **params) -> dict:
    """The front-end's level equalization (:class:`~tessera.runtime.frontend.LevelEq`, as a map
    a model keeps) whose reference is the long-term level spectrum of ``n`` utterances of the
    corpus ``path`` (built with ``--keep-audio``), taken over speech steps by the equalizer's
    own rule (``gate``), pooled by steps: what the device's running level reaches for an
    average training voice."""
    import h5py

    from ...runtime.frontend import FrontendSpec, design
    from ...runtime.leveleq import LevelEq, speech_sum

    tab = design(FrontendSpec())
    eq = LevelEq(np.zeros(tab.spec.channels, np.int64), **params).check(tab.spec.channels)
    _need_audio_corpus(path)
    total, steps = np.zeros(tab.spec.channels, np.int64), 0
    with h5py.File(path, "r") as h5:
        count = h5["audio/pcm"].shape[0]
        for i in np.sort(np.random.default_rng(seed).choice(count, min(n, count), replace=False)):
            s_, k_ = speech_sum(_fe_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
                                tab.floor_level, eq.gate)
            total += s_
            steps += k_
    if not steps:
        raise InputError("no speech steps in the corpus's audio", source=path)
    ref = np.round(total / steps).astype(np.int64)
    return dict(ref=ref.tolist(), gate=eq.gate, block=eq.block, shift=eq.shift, frac=eq.frac,
                prior=eq.prior, reference=os.path.basename(path), utterances=int(min(n, count)))


def set_level_eq(model_path: str, reference: str | None = None, *, shift: int | None = None,
                 gate: int | None = None, prior: int | None = None, remove: bool = False
                 ) -> dict:
    """Write the front-end's level equalization into the model file ``model_path`` (see
    :func:`reference_eq`); ``reference``, ``shift`` and ``gate`` default to the model's own, then
    to its training config's ``data.level_eq`` and the equalizer's defaults. Returns the map."""
    import json as _json

    from ...runtime.leveleq import LevelEq
    from ..learning.storage import load_checkpoint, save_checkpoint

    state = load_checkpoint(model_path)
    extra = _json.loads(state.get("extra", "{}") or "{}")
    old = extra.get("level_eq") or {}
    if remove:
        extra.pop("level_eq", None)
        d = {}
    else:
        ref = reference or (None if old else
                            _json.loads(state["config"]).get("data", {}).get("level_eq"))
        if not ref and not old:
            raise InputError("no reference corpus: pass --reference CORPUS (a --keep-audio "
                             "corpus)", source=model_path)
        defaults = LevelEq(np.zeros(1, np.int64))
        params = dict(gate=gate if gate is not None else old.get("gate", defaults.gate),
                      shift=shift if shift is not None else old.get("shift", defaults.shift),
                      prior=prior if prior is not None else old.get("prior", defaults.prior),
                      frac=defaults.frac)                # precision: always this firmware's
        if ref:
            d = reference_eq(ref, **params)
        else:
            d = dict(old, **params)
        level_eq_of(d)                                   # checked before it is written
        extra["level_eq"] = d
    state["extra"] = _json.dumps(extra)
    save_checkpoint(model_path, state)
    return d


def level_eq_of(d: dict | None):
    """A model's ``level_eq`` map as a :class:`~tessera.runtime.frontend.LevelEq` (or None)."""
    from ...runtime.leveleq import LevelEq
    if not d:
        return None
    return LevelEq(np.asarray(d["ref"], np.int64), d["gate"], d["block"], d["shift"],
                   d["frac"], d.get("prior", 0)).check(len(d["ref"]))


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
    from .baselines import audio_of
    from ..data.readers import wav_items, wav_index

    spec = FrontendSpec()
    tab = design(spec)
    names, _, labels, speakers = wav_index(wav_items(folder))
    levels = [_fe_levels(p, tab) for p in audio_of(folder)]
    means = [_speech_mean(L, tab.floor_level) for L in levels]
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, 2, np.int8),
                         unseen=tuple(np.unique(labels).tolist()), all_test=True)
    spk = {int(s): _pooled([means[i] for i in np.nonzero(speakers == s)[0]])
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
        ev = [_moved_spikes(L, off, spec, tab) for L, off in zip(levels, offsets)]
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


def _equalized_events(args) -> list:
    """Worker: (index, (steps, channels)) spikes of utterances whose levels are moved by their
    speaker's offset."""
    import h5py

    from ...runtime.frontend import FrontendSpec, design

    path, items = args
    spec = FrontendSpec()
    tab = design(spec)
    with h5py.File(path, "r") as h5:
        return [(i, _moved_spikes(_fe_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
                                  off, spec, tab)) for i, off in items]


def equalize_corpus(src: str, dst: str, ref: np.ndarray, *, per_speaker: int = 20,
                    workers: int = 2, seed: int = 0) -> dict:
    """A copy of corpus ``src`` (built with ``--keep-audio``) whose spikes are re-encoded with
    each speaker's long-term level spectrum moved to ``ref`` in the front-end (the speaker's
    mean over speech steps of up to ``per_speaker`` of its utterances): the training side of
    :func:`level_equalization`."""
    import shutil
    from multiprocessing import get_context

    import h5py

    from ...runtime.frontend import FrontendSpec, design

    tab = design(FrontendSpec())
    _need_audio_corpus(src)
    with h5py.File(src, "r") as h5:
        speakers = np.asarray(h5["extra/speaker"][:], np.int64)
        rng = np.random.default_rng(seed)
        offsets = {}
        for s in np.unique(speakers):
            idx = np.nonzero(speakers == s)[0]
            pick = rng.choice(idx, min(per_speaker, idx.size), replace=False)
            offsets[int(s)] = _pooled([
                _speech_mean(_fe_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
                             tab.floor_level) for i in pick]) - ref
    n = speakers.size
    chunks = [(src, [(i, offsets[int(speakers[i])]) for i in range(k, n, 8 * workers)])
              for k in range(8 * workers)]
    tmp = dst + ".part"
    shutil.copyfile(src, tmp)
    with get_context("spawn").Pool(workers) as pool, h5py.File(tmp, "r+") as h5:
        times, units = h5["spikes/times"], h5["spikes/units"]
        step_s = np.float32(FrontendSpec().step_seconds)
        for part in pool.imap_unordered(_equalized_events, chunks):
            for i, (steps, ch) in part:
                times[i] = steps.astype(np.float32) * step_s
                units[i] = ch.astype(np.uint16)
    os.replace(tmp, dst)
    return dict(path=dst, utterances=int(n), speakers=len(offsets),
                mean_abs_offset=round(float(np.mean([np.abs(o).mean()
                                                     for o in offsets.values()])), 2))
