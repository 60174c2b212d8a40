"""PNG plots (matplotlib, Agg backend; imported only where a plot is asked for)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["raster_png", "rasters_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_raster(ax, times: np.ndarray, units: np.ndarray, channels: int, title: str) -> None:
    ax.scatter(times * 1e3, units, s=0.6, marker="|", color="black", linewidths=0.5)
    ax.set_ylim(-0.5, channels - 0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("channel (low → high frequency)")
    ax.set_title(title, fontsize=9)


def raster_png(path: str | os.PathLike, times: np.ndarray, units: np.ndarray, channels: int,
               title: str = "", audio: np.ndarray | None = None, sample_rate: int = 16000) -> str:
    """Spike raster (time in s, unit index) of one utterance, with its waveform above if given."""
    plt = _plt()
    rows = 2 if audio is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 5 if rows == 2 else 4), sharex=True,
                             gridspec_kw={"height_ratios": [1, 4] if rows == 2 else [1]},
                             squeeze=False)
    if audio is not None:
        t = np.arange(audio.size) / sample_rate * 1e3
        axes[0, 0].plot(t, audio, lw=0.4, color="tab:blue")
        axes[0, 0].set_ylabel("audio")
        axes[0, 0].set_yticks([])
    _draw_raster(axes[-1, 0], times, units, channels,
                 title or f"{times.size} spikes in {channels} channels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def rasters_png(path: str | os.PathLike, samples: list[tuple[np.ndarray, np.ndarray, str]],
                channels: int, cols: int = 4) -> str:
    """A grid of rasters: ``samples`` holds (times, units, title) triples."""
    plt = _plt()
    rows = int(np.ceil(len(samples) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(samples):]:
        ax.axis("off")
    for ax, (times, units, title) in zip(axes.flat, samples):
        _draw_raster(ax, times, units, channels, title)
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.supxlabel("time (ms)")
    fig.supylabel("channel (low → high frequency)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.fspath(path)
