"""Spike-train transforms: pure functions, each wrapped in a small frozen dataclass.

Randomness always comes from an explicit ``numpy.random.Generator``; nothing touches global state.
A sample is ``(times, units)``: spike times in seconds and channel indices.

    >>> import numpy as np
    >>> times, units = np.array([0.0, 0.5, 0.99]), np.array([0, 3, 5])
    >>> Bin(steps=4, duration=1.0, channels=6)((times, units)).sum(axis=0).tolist()
    [1, 0, 0, 1, 0, 1]
    >>> [u.tolist() for _, u in ChannelSubsets(k=2)((times, units))]
    [[0], [1, 2]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...runtime.errors import InputError
from ...runtime.spikes import bin_events

__all__ = ["bin_spikes", "channel_subset", "time_shift", "channel_jitter", "Bin",
           "ChannelSubsets", "TimeShift", "ChannelJitter", "dense_dataset"]

Sample = tuple[np.ndarray, np.ndarray]


def bin_spikes(times: np.ndarray, units: np.ndarray, steps: int, duration: float,
               channels: int) -> np.ndarray:
    """Count spikes in ``steps`` equal time bins over [0, duration): (steps, channels) uint8.

    Spikes at or after ``duration`` are dropped; counts saturate at 255.
    """
    return bin_events(times, units, channels, steps, steps / duration)


def channel_subset(times: np.ndarray, units: np.ndarray, k: int, i: int) -> Sample:
    """Regular spatial sampling: keep channels i, i+k, i+2k, ... renumbered 0, 1, 2, ..."""
    keep = (units % k) == i
    return times[keep], units[keep] // k


def time_shift(times: np.ndarray, units: np.ndarray, shift: float) -> Sample:
    """Move every spike by ``shift`` seconds; spikes before 0 are dropped."""
    t = times + shift
    keep = t >= 0
    return t[keep], units[keep]


def channel_jitter(times: np.ndarray, units: np.ndarray, offsets: np.ndarray,
                   channels: int) -> Sample:
    """Add an integer offset to each spike's channel; spikes pushed outside are dropped."""
    u = units + offsets
    keep = (u >= 0) & (u < channels)
    return times[keep], u[keep]


@dataclass(frozen=True)
class Bin:
    steps: int = 100
    duration: float = 1.4
    channels: int = 700

    def __post_init__(self) -> None:
        if self.steps < 1 or self.duration <= 0 or self.channels < 1:
            raise InputError("Bin: steps, duration and channels must be positive")

    def __call__(self, sample: Sample) -> np.ndarray:
        return bin_spikes(*sample, self.steps, self.duration, self.channels)


@dataclass(frozen=True)
class ChannelSubsets:
    """Split a sample into its ``k`` interleaved channel subsets, each a sample of its own.

    With C input channels each subset has ``C // k`` channels (a trailing remainder is dropped).
    """

    k: int = 3

    def __call__(self, sample: Sample, channels: int | None = None) -> list[Sample]:
        times, units = sample
        out = [channel_subset(times, units, self.k, i) for i in range(self.k)]
        if channels is not None:
            n = channels // self.k
            out = [(t[u < n], u[u < n]) for t, u in out]
        return out


@dataclass(frozen=True)
class TimeShift:
    """Shift the whole sample by a uniform random amount in [-max_shift, max_shift] seconds."""

    max_shift: float = 0.05

    def get_params(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(-self.max_shift, self.max_shift))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return time_shift(*sample, self.get_params(rng))


@dataclass(frozen=True)
class ChannelJitter:
    """Move every spike by an independent random integer in [-max_jitter, max_jitter] channels,
    plus (``max_global``) one common random shift of the whole spectrum."""

    channels: int
    max_jitter: int = 1
    max_global: int = 0

    def get_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        common = rng.integers(-self.max_global, self.max_global + 1) if self.max_global else 0
        return rng.integers(-self.max_jitter, self.max_jitter + 1, size=n) + common

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        times, units = sample
        return channel_jitter(times, units, self.get_params(rng, units.size), self.channels)


def dense_dataset(data, steps: int = 100, duration: float = 1.4, k: int = 1,
                  subsets: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Bin a whole :class:`~tessera.trainer.data.readers.SpikeSet`: (n, k_out, steps, channels // k) uint8.

    ``subsets="all"`` keeps every channel subset (axis 1 has ``k`` entries), ``"first"`` only
    subset 0. Returns the array and the utterance labels.
    """
    n_ch = data.channels // k
    binner = Bin(steps, duration, n_ch)
    split = ChannelSubsets(k)
    keep = k if subsets == "all" else 1
    out = np.zeros((len(data), keep, steps, n_ch), np.uint8)
    for i in range(len(data)):
        for j, s in enumerate(split(data.sample(i), data.channels)[:keep]):
            out[i, j] = binner(s)
    return out, data.labels.copy()
