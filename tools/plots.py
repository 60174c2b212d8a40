"""PNG plots (matplotlib, Agg backend; imported only where a plot is asked for)."""

from __future__ import annotations

import os

import numpy as np

from ..runtime.constants import SAMPLE_RATE

__all__ = ["raster_png", "rasters_png", "learning_curve_png", "layout_heatmap_png", "save_png",
           "confusion_png", "hits_png", "pipeline_png", "scores_png", "shots_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike, title: str = "", dpi: int = 110) -> str:
    """Title (if any), tight layout, write the PNG, free the figure; returns the path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return os.fspath(path)


def _draw_raster(ax, times: np.ndarray, units: np.ndarray, channels: int, title: str) -> None:
    ax.scatter(times * 1e3, units, s=0.6, marker="|", color="black", linewidths=0.5)
    ax.set_ylim(-0.5, channels - 0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("channel (low → high frequency)")
    ax.set_title(title, fontsize=9)


def raster_png(path: str | os.PathLike, times: np.ndarray, units: np.ndarray, channels: int,
               title: str = "", audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE) -> str:
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
    return save_png(fig, path)


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
    return save_png(fig, path, dpi=100)


def learning_curve_png(path: str | os.PathLike, records: list[dict], title: str = "") -> str:
    """Meta-training curve from ``metrics.jsonl`` records: the training episodes' query accuracy
    (smoothed over 25 iterations), firing rate, and the validation evaluations (mean ± 95 % CI)."""
    plt = _plt()
    train = [r for r in records if "task_loss" in r and "iteration" in r]
    val = [r for r in records if r.get("eval") == "val" and "accuracy" in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    if train:
        it = np.array([r["iteration"] for r in train])
        acc = np.array([r["acc"] for r in train]) * 100
        k = max(1, min(25, len(acc) // 4))
        smooth = np.convolve(acc, np.ones(k) / k, mode="valid")
        ax.plot(it[k - 1:], smooth, lw=1, label=f"meta-training queries (mean of {k} log records)")
        ax2.plot(it, [r["rate"] for r in train], lw=0.8)
    if val:
        ax.errorbar([r["iteration"] for r in val], [100 * r["accuracy"] for r in val],
                    yerr=[100 * r["ci95"] for r in val], marker="o", capsize=3,
                    label=f"validation, {val[0]['ways']}-way {val[0]['shots']}-shot")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("mean firing rate (spikes / neuron / step)")
    ax2.grid(alpha=0.3)
    return save_png(fig, path, title)


def layout_heatmap_png(path: str | os.PathLike, w_rec: np.ndarray, rows: int, cols: int,
                       tile: int, title: str = "", hops: np.ndarray | None = None) -> str:
    """|W_rec| by tile: left, the neuron matrix with tile boundaries; right, the summed |w| of
    every (source tile, target tile) pair, tiles numbered row-major on the grid, with the
    routing hops of each routed pair written in (``hops``: tiles x tiles, -1 where unrouted)."""
    plt = _plt()
    a = np.abs(np.asarray(w_rec, np.float64))
    n_tiles = rows * cols
    by_tile = a.reshape(n_tiles, tile, n_tiles, tile).sum(axis=(1, 3))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    im = ax.imshow(a, cmap="magma", interpolation="nearest")
    for k in range(1, n_tiles):
        ax.axhline(k * tile - 0.5, color="white", lw=0.3)
        ax.axvline(k * tile - 0.5, color="white", lw=0.3)
    ax.set_xlabel("target neuron")
    ax.set_ylabel("source neuron")
    ax.set_title("|W_rec| (lines: tile boundaries)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    im2 = ax2.imshow(by_tile, cmap="viridis", interpolation="nearest")
    ax2.set_xticks(range(n_tiles))
    ax2.set_yticks(range(n_tiles))
    ax2.tick_params(labelsize=6)
    ax2.set_xlabel("target tile (row-major)")
    ax2.set_ylabel("source tile")
    ax2.set_title("sum of |w| per tile pair" + (" (numbers: hops)" if hops is not None
                                                   else ""), fontsize=9)
    if hops is not None:
        top = by_tile.max() or 1.0
        for i in range(n_tiles):
            for j in range(n_tiles):
                if hops[i, j] >= 0:
                    ax2.text(j, i, int(hops[i, j]), ha="center", va="center", fontsize=5,
                             color="black" if by_tile[i, j] > 0.6 * top else "white")
    fig.colorbar(im2, ax=ax2, fraction=0.046)
    return save_png(fig, path, title)


def pipeline_png(path: str | os.PathLike, audio: np.ndarray, frontend: np.ndarray,
                 core: np.ndarray, tile: int, bin_ms: int, title: str = "",
                 sample_rate: int = SAMPLE_RATE) -> str:
    """One utterance through the system: waveform, front-end spikes (1 ms frames, channels),
    core spikes (one row per bin, neurons grouped by tile)."""
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 3, 3]})
    t = np.arange(audio.size) / sample_rate * 1e3
    axes[0].plot(t, audio, lw=0.4, color="tab:blue")
    axes[0].set_ylabel("audio")
    axes[0].set_yticks([])
    ms, ch = np.nonzero(frontend)
    axes[1].scatter(ms, ch, s=1.0, marker="s", color="black", linewidths=0)
    axes[1].set_ylim(-0.5, frontend.shape[1] - 0.5)
    axes[1].set_ylabel("front-end channel")
    axes[1].set_title(f"front-end: {int(frontend.sum())} spikes", fontsize=8)
    st, nu = np.nonzero(core)
    axes[2].scatter(st * bin_ms + bin_ms / 2, nu, s=1.5, marker="s", color="tab:red",
                    linewidths=0)
    for k in range(tile, core.shape[1], tile):
        axes[2].axhline(k - 0.5, color="grey", lw=0.3)
    axes[2].set_ylim(-0.5, core.shape[1] - 0.5)
    axes[2].set_ylabel("core neuron (lines: tiles)")
    axes[2].set_xlabel("time (ms)")
    axes[2].set_title(f"recurrent core: {int(core.sum())} spikes in {core.shape[0]} steps "
                      f"of {bin_ms} ms", fontsize=8)
    return save_png(fig, path, title)


def scores_png(path: str | os.PathLike, audio: np.ndarray, t_ms: np.ndarray,
               scores: dict[str, np.ndarray], words: list[dict], events: list[dict],
               threshold: float, window_ms: int, title: str = "",
               sample_rate: int = SAMPLE_RATE) -> str:
    """A streamed sentence: its waveform with each word's span, the readout's score per enrolled
    word over time (window ending at t), the "none" threshold, and the detections (shaded)."""
    plt = _plt()
    fig, (ax0, ax) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [1, 3]})
    ax0.plot(np.arange(audio.size) / sample_rate, audio, lw=0.3, color="tab:blue")
    ax0.set_yticks([])
    for w in words:
        ax0.annotate(w["word"] + ("" if w["enrolled"] else " (not taught)"),
                     ((w["start_ms"] + w["end_ms"]) / 2000, 0.9), xycoords=("data", "axes fraction"),
                     ha="center", va="top", fontsize=8)
    for name, sc in scores.items():
        ax.plot(t_ms / 1000.0, sc, lw=1.2, label=name)
    ax.axhline(threshold, color="grey", ls=":", lw=1, label="'none' threshold")
    for k, e in enumerate(events):      # the window that gave the answer, and its end
        ax.axvspan(e["start_ms"] / 1000, e["end_ms"] / 1000, color="gold", alpha=0.15)
        ax.axvline(e["end_ms"] / 1000, color="darkgoldenrod", lw=1.2)
        if e.get("cosine") is not None:     # the board's own score, where it made it
            ax.plot(e["end_ms"] / 1000, e["cosine"], "k*", ms=9,
                    label="the board's detection: its cosine" if k == 0 else None)
        ax.annotate(f"detected: {e['label']} ({e['confidence']:.2f})", (e["end_ms"] / 1000, 0.02),
                    xycoords=("data", "axes fraction"), ha="right", fontsize=7)
    ax.set_xlabel(f"time (s); scores of the {window_ms} ms window ending at t")
    ax.set_ylabel("cosine with the word's shot")
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    ax.grid(alpha=0.3)
    return save_png(fig, path, title)


def shots_png(path: str | os.PathLike, curve: list[dict], title: str = "") -> str:
    """Accuracy against shots per word: mean over draws, with the lowest and highest draw."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    k = [c["shots"] for c in curve]
    acc = np.array([c["accuracy"] for c in curve])
    ax.fill_between(k, [100 * c["low"] for c in curve], [100 * c["high"] for c in curve],
                    alpha=0.2)
    ax.plot(k, 100 * acc, "o-")
    ax.axhline(100.0 / curve[0]["words"], color="grey", ls=":", lw=1, label="chance")
    ax.set_xticks(k)
    ax.set_xlabel("shots per word")
    ax.set_ylabel("right word (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path, title)


def confusion_png(path: str | os.PathLike, matrix: list[list[int]], rows: list[str],
                  cols: list[str], title: str = "") -> str:
    """A confusion matrix (rows: truth, columns: answer) with the counts written in."""
    plt = _plt()
    m = np.asarray(matrix, np.float64)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(cols), 1.0 + 0.4 * len(rows)))
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("device answer")
    ax.set_ylabel("truth")
    return save_png(fig, path, title)


def hits_png(path: str | os.PathLike, curves: dict[str, dict],
             points: dict[str, tuple] | None = None, title: str = "") -> str:
    """Correct hits against false accepts (one curve per data set; ``points``: the operating
    points (false accepts, hits) of the chosen threshold)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, c in curves.items():
        ax.plot(100 * np.asarray(c["false_accepts"]), 100 * np.asarray(c["hits"]), label=name)
    for name, (fa, hit) in (points or {}).items():
        ax.plot([100 * fa], [100 * hit], "o")
        ax.annotate(name, (100 * fa, 100 * hit), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    ax.axvline(5, color="grey", lw=0.8, ls=":")
    ax.axhline(90, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false accepts: words not enrolled, accepted (%)")
    ax.set_ylabel("correct hits: enrolled words, right label (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path, title)


def curves_png(path: str, c: dict) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    k = c["inner_steps"][0]["shots"]
    for ax, key, xlabel in ((axes[0], "inner_steps", f"inner steps ({k}-shot)"),
                            (axes[1], "shots", "shots (one inner step)")):
        xs = [r[key] for r in c[key]]
        ys = [100 * r["accuracy"] for r in c[key]]
        err = [100 * r["ci95"] for r in c[key]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("5-way accuracy, unseen classes (%)")
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def incremental_png(path: str, r: dict) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(r["enrolled"], [100 * a for a in r["accuracy"]],
                yerr=[100 * c for c in r["ci95"]], marker="o", capsize=3)
    ax.set_xlabel("words enrolled (one at a time, one readout step each)")
    ax.set_ylabel(f"accuracy over all enrolled words (%), {r['shots']}-shot")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
