"""Data for the chip: a data set's utterances as the 1 ms spike frames the chip reads, its
held-out utterances, and a chip with a data set whose channels fit its front-end."""

from __future__ import annotations

import numpy as np

from ...runtime.chip import Chip
from ...runtime.errors import InputError
from ...runtime.spikes import events_to_frames
from .readers import read_any

__all__ = ["frames_of", "held_out_indices", "chip_and_data"]


def frames_of(data, idx: np.ndarray, ms: int, channels: int) -> np.ndarray:
    """The utterances ``idx`` of ``data`` as (utterances, ms, channels) frames of 1 ms."""
    out = np.zeros((idx.size, ms, channels), np.uint8)
    for j, i in enumerate(idx):
        times, units = data.sample(int(i))
        out[j] = events_to_frames(times, units, channels, ms)
    return out


def held_out_indices(data) -> np.ndarray:
    """The test split's utterances, or every one when the data set records no split."""
    idx = np.nonzero(data.split == 2)[0]
    return idx if idx.size else np.arange(len(data.labels))


def chip_and_data(model_path: str, data_path: str, progress: bool = False):
    """The chip of a ``.tsr`` file and a corpus whose frames fit its front-end."""
    chip = Chip.load(model_path)
    data = read_any(data_path, progress=progress)
    if data.channels != chip.tab.channels_total:
        raise InputError(f"data has {data.channels} channels, the model's front-end "
                         f"{chip.tab.channels_total}", source=data_path)
    return chip, data
