"""Binned, channel-reduced arrays of a whole data set, cached on disk.

``load_dense(path)`` bins every utterance into ``steps`` bins over ``duration`` seconds and splits
its channels into ``k`` interleaved subsets (:mod:`tessera.trainer.data.transforms`): an array
(n, k, steps, channels // k) of uint8 spike counts, plus labels, speakers and splits.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .readers import SpikeSet, default_cache_dir, read_any
from .transforms import dense_dataset

__all__ = ["DenseSet", "load_dense", "dense_from_spikes", "with_training_extras"]


@dataclass
class DenseSet:
    x: np.ndarray            # (n, k, steps, channels) uint8
    labels: np.ndarray
    speakers: np.ndarray
    split: np.ndarray
    label_names: list[str]
    speaker_names: list[str]
    source: str
    teacher: np.ndarray | None = None   # (n, segments, 96) float16 teacher embeddings, NaN where
    #                                     an utterance has none (trainer/learning/teacher.py)

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, idx: np.ndarray) -> DenseSet:
        return DenseSet(self.x[idx], self.labels[idx], self.speakers[idx], self.split[idx],
                        list(self.label_names), list(self.speaker_names), self.source,
                        None if self.teacher is None else self.teacher[idx])


def dense_from_spikes(data: SpikeSet, steps: int, duration: float, k: int) -> DenseSet:
    x, labels = dense_dataset(data, steps, duration, k)
    return DenseSet(x, labels, data.speakers.copy(), data.split.copy(), list(data.label_names),
                    list(data.speaker_names), data.source)


def load_dense(path: str | os.PathLike, steps: int = 100, duration: float = 1.0, k: int = 3,
               cache: bool = True, progress: bool | None = None, level_eq=None) -> DenseSet:
    """The binned corpus ``path``; ``level_eq``: a WAV folder is heard through that long-term
    level equalization (:func:`~tessera.trainer.data.readers.read_wav_folder`); spike files are as
    stored."""
    path = os.fspath(path)
    st = os.stat(path)
    eq = "" if level_eq is None or not os.path.isdir(path) else f"|eq{level_eq.key()}"
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{steps}|"
                       f"{duration}|{k}|v1{eq}".encode()).hexdigest()[:20]
    cfile = os.path.join(default_cache_dir(), "dense", key + ".npz")
    if cache and os.path.exists(cfile):
        try:
            with np.load(cfile) as z:
                return DenseSet(z["x"], z["labels"], z["speakers"], z["split"],
                                list(z["label_names"]), list(z["speaker_names"]), path)
        except (OSError, ValueError, KeyError):
            pass
    d = dense_from_spikes(read_any(path, level_eq=level_eq if eq else None, progress=progress),
                          steps, duration, k)
    if cache:
        os.makedirs(os.path.dirname(cfile), exist_ok=True)
        tmp = cfile + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, x=d.x, labels=d.labels, speakers=d.speakers, split=d.split,
                 label_names=np.array(d.label_names), speaker_names=np.array(d.speaker_names))
        os.replace(tmp, cfile)
    return d


def with_training_extras(main: DenseSet, extras: list[DenseSet]) -> DenseSet:
    """``main`` plus the train-split utterances of ``extras`` for meta-training.

    A word is a class by its name (``lang:word``): an extra corpus's word that the main set or an
    earlier extra already has joins that class (another synthesizer, or augmented copies, of the
    same word: episodes then mix them), other words become new classes after the main set's.
    Speakers are matched by name, so a voice of the main set keeps its identity (and its split) in
    the extras. Only train-split utterances of the extras are kept: validation and test voices
    never appear, and unseen classes are never drawn from train voices.
    """
    if not extras:
        return main
    xs, labels, speakers, splits = [main.x], [main.labels], [main.speakers], [main.split]
    with_teacher = [d.teacher for d in [main] + extras if d.teacher is not None]
    teachers = [_teacher_or_nan(main, with_teacher)]
    label_names = list(main.label_names)
    speaker_names = list(main.speaker_names)
    for ex in extras:
        if ex.x.shape[1:] != main.x.shape[1:]:
            raise ValueError(f"{ex.source}: binned shape {ex.x.shape[1:]} differs from "
                             f"{main.source}'s {main.x.shape[1:]}")
        keep = np.nonzero(ex.split == 0)[0]
        label_lut = []
        for n in ex.label_names:
            if n not in label_names:
                label_names.append(n)
            label_lut.append(label_names.index(n))
        for n in ex.speaker_names:
            if n not in speaker_names:
                speaker_names.append(n)
        lut = np.array([speaker_names.index(n) for n in ex.speaker_names], np.int64)
        xs.append(ex.x[keep])
        labels.append(np.array(label_lut, np.int64)[ex.labels[keep]])
        speakers.append(lut[ex.speakers[keep]])
        splits.append(ex.split[keep])
        teachers.append(_teacher_or_nan(ex, with_teacher, keep))
    return DenseSet(np.concatenate(xs), np.concatenate(labels), np.concatenate(speakers),
                    np.concatenate(splits), label_names, speaker_names, main.source,
                    np.concatenate(teachers) if with_teacher else None)


def _teacher_or_nan(d: DenseSet, any_teacher: list, keep: np.ndarray | None = None):
    """``d``'s teacher rows (``keep`` of them), NaN rows where ``d`` has none; None when no set
    of the join has a teacher."""
    if not any_teacher:
        return None
    n = len(d) if keep is None else keep.size
    if d.teacher is None:
        return np.full((n,) + any_teacher[0].shape[1:], np.nan, np.float16)
    return d.teacher if keep is None else d.teacher[keep]
