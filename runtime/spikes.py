"""Spike events (time, channel) counted into frames or bins: one rule for the chip's 1 ms frames
and the trainer's bins."""

from __future__ import annotations

import numpy as np

__all__ = ["bin_events", "events_to_frames"]


def bin_events(times: np.ndarray, units: np.ndarray, channels: int, steps: int,
               per_second: float, nudge: float = 0.0) -> np.ndarray:
    """Events (seconds, channel) counted in ``steps`` bins of 1/``per_second`` s:
    (steps, channels) uint8, bin ``floor(t * per_second + nudge)``; counts saturate at 255 and
    events outside the bins or the channels are dropped."""
    f = np.floor(np.asarray(times, np.float64) * per_second + nudge).astype(np.int64)
    u = np.asarray(units, np.int64)
    keep = (f >= 0) & (f < steps) & (u >= 0) & (u < channels)
    counts = np.bincount(f[keep] * channels + u[keep], minlength=steps * channels)
    return np.minimum(counts, 255).astype(np.uint8).reshape(steps, channels)


def events_to_frames(times: np.ndarray, units: np.ndarray, channels: int, ms: int = 1000
                     ) -> np.ndarray:
    """Spike events (seconds, channel) -> (ms, channels) uint8 frames of 1 ms (counts saturate
    at 255; events outside [0, ms) ms or the channels are dropped). Times that are whole
    milliseconds in float32 (the corpus's) land in their own frame."""
    return bin_events(times, units, channels, ms, 1000.0, 1e-3)
