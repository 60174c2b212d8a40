"""Corpora heard at a reference level: the long-term level spectrum of a corpus's speech, the
front-end's level equalization a model ships (its reference), a corpus re-encoded with each
speaker moved to the reference, and the audio of a data set."""

from __future__ import annotations

import os

import numpy as np

from ...runtime.errors import InputError

__all__ = ["audio_of", "need_audio_corpus", "pooled_levels", "moved_spikes", "frontend_levels",
           "speech_mean", "corpus_level_mean", "reference_eq", "level_eq_of", "equalize_corpus"]


def audio_of(source: str) -> list[np.ndarray] | None:
    """The 16 kHz audio of every utterance of a data set, in its order: a WAV folder's files, or
    a corpus built with ``--keep-audio``; None when the data set has no audio."""
    import os

    from ...runtime.audio import load_audio
    if os.path.isdir(source):
        from .readers import wav_items
        return [load_audio(p) for p, _, _ in wav_items(source)]
    try:
        import h5py
        with h5py.File(source, "r") as h5:
            if "audio/pcm" not in h5:
                return None
            return [np.asarray(p, np.int16) for p in h5["audio/pcm"][:]]
    except OSError:
        return None


def need_audio_corpus(path: str) -> None:
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


def pooled_levels(means: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """The long-term level spectrum of several :func:`speech_mean` results, weighted by their
    speech steps."""
    return np.average([m for m, _ in means], axis=0, weights=[max(k, 1) for _, k in means])


def moved_spikes(level: np.ndarray, offset: np.ndarray, spec, tab) -> tuple:
    """The (step, channel) spikes of ``level`` (C, steps) with every channel moved down by its
    ``offset`` (level units) before adaptation and spikes."""
    from ...runtime.frontend import spikes_from_levels, initial_state

    moved = (level - np.round(offset).astype(np.int64)[:, None]).astype(np.int32)
    return np.nonzero(spikes_from_levels(moved, initial_state(spec), tab)[0])


def frontend_levels(pcm: np.ndarray, tab) -> np.ndarray:
    """The front-end's levels (C, steps) of one utterance from rest, int64."""
    from ...runtime.frontend import channel_levels, filterbank
    return channel_levels(filterbank(np.asarray(pcm), tab), tab).astype(np.int64)


def speech_mean(level: np.ndarray, floor: int) -> tuple[np.ndarray, int]:
    """Each channel's mean level over the utterance's speech steps (mean level above the floor
    at least half its peak) and how many steps that was."""
    a = np.maximum(level - floor, 0).mean(axis=0)
    speech = a >= 0.5 * a.max() if a.max() > 0 else np.ones(a.size, bool)
    return np.maximum(level[:, speech], floor).mean(axis=1), int(speech.sum())


def corpus_level_mean(path: str, tab, n: int = 400, seed: int = 0) -> np.ndarray:
    """The long-term level spectrum (C,) of ``n`` utterances of a corpus built with
    ``--keep-audio``: the reference a device could ship with its model."""
    import h5py
    need_audio_corpus(path)
    with h5py.File(path, "r") as h5:
        total = h5["audio/pcm"].shape[0]
        idx = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
        pcms = [np.asarray(h5["audio/pcm"][i], np.int16) for i in idx]
    return pooled_levels([speech_mean(frontend_levels(p, tab), tab.floor_level) for p in pcms])


def reference_eq(path: str, n: int = 400, seed: int = 0, **params) -> dict:
    """The front-end's level equalization (:class:`~tessera.runtime.leveleq.LevelEq`, as a map
    a model keeps) whose reference is the long-term level spectrum of ``n`` utterances of the
    corpus ``path`` (built with ``--keep-audio``), taken over speech steps by the equalizer's
    own rule (``gate``), pooled by steps: what the device's running level reaches for an
    average training voice."""
    import h5py

    from ...runtime.frontend import FrontendSpec, design
    from ...runtime.leveleq import LevelEq, speech_sum

    tab = design(FrontendSpec())
    eq = LevelEq(np.zeros(tab.spec.channels, np.int64), **params).check(tab.spec.channels)
    need_audio_corpus(path)
    total, steps = np.zeros(tab.spec.channels, np.int64), 0
    with h5py.File(path, "r") as h5:
        count = h5["audio/pcm"].shape[0]
        for i in np.sort(np.random.default_rng(seed).choice(count, min(n, count), replace=False)):
            s_, k_ = speech_sum(frontend_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
                                tab.floor_level, eq.gate)
            total += s_
            steps += k_
    if not steps:
        raise InputError("no speech steps in the corpus's audio", source=path)
    ref = np.round(total / steps).astype(np.int64)
    return dict(ref=ref.tolist(), gate=eq.gate, block=eq.block, shift=eq.shift, frac=eq.frac,
                prior=eq.prior, reference=os.path.basename(path), utterances=int(min(n, count)))


def level_eq_of(d: dict | None):
    """A model's ``level_eq`` map as a :class:`~tessera.runtime.leveleq.LevelEq` (or None)."""
    from ...runtime.leveleq import LevelEq
    if not d:
        return None
    return LevelEq(np.asarray(d["ref"], np.int64), d["gate"], d["block"], d["shift"],
                   d["frac"], d.get("prior", 0)).check(len(d["ref"]))


def _equalized_events(args) -> list:
    """Worker: (index, (steps, channels)) spikes of utterances whose levels are moved by their
    speaker's offset."""
    import h5py

    from ...runtime.frontend import FrontendSpec, design

    path, items = args
    spec = FrontendSpec()
    tab = design(spec)
    with h5py.File(path, "r") as h5:
        return [(i, moved_spikes(frontend_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
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
    need_audio_corpus(src)
    with h5py.File(src, "r") as h5:
        speakers = np.asarray(h5["extra/speaker"][:], np.int64)
        rng = np.random.default_rng(seed)
        offsets = {}
        for s in np.unique(speakers):
            idx = np.nonzero(speakers == s)[0]
            pick = rng.choice(idx, min(per_speaker, idx.size), replace=False)
            offsets[int(s)] = pooled_levels([
                speech_mean(frontend_levels(np.asarray(h5["audio/pcm"][i], np.int16), tab),
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
