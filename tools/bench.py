"""Benchmarks behind ``tessera bench``: speed targets are checked here, not in timed tests."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time

import numpy as np

__all__ = ["bench_frontend", "machine_info", "speechlike_signal"]


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                numpy=np.__version__, date=_dt.date.today().isoformat())


def speechlike_signal(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """Seeded int16 test signal: voiced harmonic complexes with gliding pitch, bursts of noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t) + 30 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 30))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    x = voiced * envelope * 0.25 + 0.15 * noise
    return np.round(np.clip(x / np.max(np.abs(x)) * 0.7, -1, 1) * 32767).astype(np.int16)


def bench_frontend(channels: int = 700, seconds: float = 10.0, repeats: int = 5,
                   chunk_ms: float = 10.0) -> dict:
    """Front-end speed on one core: whole utterances and a 10 ms streaming loop."""
    from ..runtime.frontend import Cochlea, FrontendSpec
    from ..runtime.threads import set_blas_threads

    pinned = set_blas_threads(1)
    spec = FrontendSpec(channels=channels)
    fe = Cochlea(spec)
    pcm = speechlike_signal(seconds)
    fe.encode(pcm[:16000])                                   # warm-up
    whole = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        spikes = fe.encode(pcm)
        whole.append(time.perf_counter() - t0)
    step = int(chunk_ms * 16)
    stream = []
    for _ in range(max(1, repeats // 2)):
        fe.reset()
        t0 = time.perf_counter()
        for i in range(0, pcm.size, step):
            fe.process(pcm[i: i + step])
        stream.append(time.perf_counter() - t0)
    med, med_s = statistics.median(whole), statistics.median(stream)
    steps = spikes.shape[0]
    return dict(bench="frontend", channels=channels, seconds_audio=seconds, repeats=repeats,
                realtime_factor=round(seconds / med, 2),
                realtime_factor_best=round(seconds / min(whole), 2),
                realtime_factor_stream=round(seconds / med_s, 2), stream_chunk_ms=chunk_ms,
                us_per_step=round(med / steps * 1e6, 2),
                spikes_per_second=round(float(spikes.sum()) / seconds, 1),
                blas_threads=1 if pinned else None, **machine_info())
