"""Binned, channel-reduced arrays of a whole data set, cached on disk.

``load_dense(path)`` bins every utterance into ``steps`` bins over ``duration`` seconds and splits
its channels into ``k`` interleaved subsets (:mod:`tessera.trainer.transforms`): an array
(n, k, steps, channels // k) of uint8 spike counts, plus labels, speakers and splits.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .data import SpikeSet, default_cache_dir, read_any
from .transforms import dense_dataset

__all__ = ["DenseSet", "load_dense", "dense_from_spikes"]


@dataclass
class DenseSet:
    x: np.ndarray            # (n, k, steps, channels) uint8
    labels: np.ndarray
    speakers: np.ndarray
    split: np.ndarray
    label_names: list[str]
    speaker_names: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.labels.size)


def dense_from_spikes(data: SpikeSet, steps: int, duration: float, k: int) -> DenseSet:
    x, labels = dense_dataset(data, steps, duration, k)
    return DenseSet(x, labels, data.speakers.copy(), data.split.copy(), list(data.label_names),
                    list(data.speaker_names), data.source)


def load_dense(path: str | os.PathLike, steps: int = 100, duration: float = 1.0, k: int = 3,
               cache: bool = True) -> DenseSet:
    path = os.fspath(path)
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{steps}|"
                       f"{duration}|{k}|v1".encode()).hexdigest()[:20]
    cfile = os.path.join(default_cache_dir(), "dense", key + ".npz")
    if cache and os.path.exists(cfile):
        try:
            with np.load(cfile) as z:
                return DenseSet(z["x"], z["labels"], z["speakers"], z["split"],
                                list(z["label_names"]), list(z["speaker_names"]), path)
        except (OSError, ValueError, KeyError):
            pass
    d = dense_from_spikes(read_any(path), steps, duration, k)
    if cache:
        os.makedirs(os.path.dirname(cfile), exist_ok=True)
        tmp = cfile + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, x=d.x, labels=d.labels, speakers=d.speakers, split=d.split,
                 label_names=np.array(d.label_names), speaker_names=np.array(d.speaker_names))
        os.replace(tmp, cfile)
    return d
