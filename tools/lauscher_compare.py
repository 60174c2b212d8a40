"""Compare tessera's front-end with lauscher (the cochlea model behind SHD) on the same WAVs.

lauscher is not a dependency (it takes about a minute per word at 700 channels); run it yourself,
in any environment, and hand its outputs here::

    python -m lauscher WORD.wav WORD.npz --num_channels 700         # once per file, lauscher's venv
    tessera bench lauscher WORD.wav ... --png cmp.png --json

Each ``WORD.npz`` beside ``WORD.wav`` holds lauscher's (2, n) array of spike times (s) and
channels. Prints spike counts and per-channel rates of both, and draws their rasters side by side.
"""

from __future__ import annotations

import os

import numpy as np

from ..runtime.audio import load_audio
from ..runtime.errors import InputError
from ..runtime.frontend import Cochlea


def _stats(times: np.ndarray, units: np.ndarray, channels: int) -> dict:
    span = float(times.max()) if times.size else 0.0
    rate = np.bincount(units.astype(np.int64), minlength=channels) / span if span else np.zeros(1)
    return dict(spikes=int(times.size), span_s=round(span, 3),
                rate_hz_per_channel_mean=round(float(rate.mean()), 2),
                rate_hz_per_channel_max=round(float(rate.max()), 1),
                active_channel_fraction=round(float((rate > 0).mean()), 3))


def compare(wavs: list[str], png: str | None = None) -> list[dict]:
    fe = Cochlea()
    rows, panels = [], []
    for wav in wavs:
        spikes = fe.encode(load_audio(wav))
        steps, units = np.nonzero(spikes)
        ours = (steps * fe.spec.step_seconds, units)
        npz = os.path.splitext(wav)[0] + ".npz"
        try:
            with np.load(npz) as z:
                data = z[z.files[0]]
        except (OSError, ValueError, IndexError) as exc:
            raise InputError(f"no readable lauscher output beside {os.path.basename(wav)} "
                             f"({type(exc).__name__}: run lauscher on it first)", source=npz) \
                from None
        if data.ndim != 2 or data.shape[0] != 2:
            raise InputError(f"lauscher output must be a (2, n) array of times and channels, "
                             f"got {data.shape}", source=npz)
        theirs = (data[0], data[1].astype(np.int64))
        rows.append(dict(file=os.path.basename(wav), tessera=_stats(*ours, 700),
                         lauscher=_stats(*theirs, 700)))
        panels += [(*ours, f"tessera: {os.path.basename(wav)}"),
                   (*theirs, f"lauscher: {os.path.basename(wav)}")]
    if png:
        from .plots import rasters_png

        rasters_png(png, panels, 700, cols=2)
    return rows
