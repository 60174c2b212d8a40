"""Benchmarks behind ``tessera bench``: speed targets are checked here, not in timed tests."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time

import numpy as np

from ..runtime.constants import SAMPLE_RATE

__all__ = ["bench_frontend", "bench_runtime", "machine_info", "speechlike_signal"]


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


def speechlike_signal(seconds: float, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
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
    """Front-end speed on one core: whole utterances and a 10 ms streaming loop, for every
    backend this machine has (:func:`tessera.runtime.compiled.available`), round by round
    interleaved so that a noisy host weighs on each alike. The top-level figures are those of
    the backend the front-end uses by default; ``by_backend`` has each."""
    from ..runtime import compiled
    from ..runtime.frontend import Cochlea, FrontendSpec
    from ..runtime.threads import set_blas_threads

    pinned = set_blas_threads(1)
    fe = Cochlea(FrontendSpec(channels=channels))
    pcm = speechlike_signal(seconds)
    step = int(chunk_ms * 16)
    names = compiled.available()
    whole: dict = {b: [] for b in names}
    stream: dict = {b: [] for b in names}
    spikes = {}
    for b in names:                                                # warm-up (and compile)
        with compiled.use(b):
            fe.encode(pcm[:SAMPLE_RATE])
    for r in range(repeats):
        for b in names:
            with compiled.use(b):
                t0 = time.perf_counter()
                spikes[b] = fe.encode(pcm)
                whole[b].append(time.perf_counter() - t0)
                if r < max(1, repeats // 2):
                    fe.reset()
                    t0 = time.perf_counter()
                    for i in range(0, pcm.size, step):
                        fe.process(pcm[i: i + step])
                    stream[b].append(time.perf_counter() - t0)
    if any(not np.array_equal(spikes[names[0]], s) for s in spikes.values()):
        raise RuntimeError("the front-end's backends gave different spikes")   # never expected
    steps = spikes[names[0]].shape[0]

    def figures(b: str) -> dict:
        med, med_s = statistics.median(whole[b]), statistics.median(stream[b])
        return dict(realtime_factor=round(seconds / med, 2),
                    realtime_factor_best=round(seconds / min(whole[b]), 2),
                    realtime_factor_stream=round(seconds / med_s, 2),
                    us_per_step=round(med / steps * 1e6, 2))

    by = {b: figures(b) for b in names}
    default = compiled.backend()
    return dict(bench="frontend", channels=channels, seconds_audio=seconds, repeats=repeats,
                backend=default, **by[default], stream_chunk_ms=chunk_ms, by_backend=by,
                same_spikes=True,
                spikes_per_second=round(float(spikes[names[0]].sum()) / seconds, 1),
                blas_threads=1 if pinned else None, **machine_info())


#: utterances streamed back to back per timing of the steady state (a stream that keeps running
#: keeps its tables in cache); a "cold" figure times one utterance right after the other side's
STEADY = 5


def peer_speedups(peer: dict, backends) -> str:
    """How much faster each backend is than one peer of ``bench runtime``, as words."""
    return ", ".join(f"{b} {peer[f'{b}_speedup']}x faster" for b in backends)


def _block(fn):
    def run():
        for _ in range(STEADY):
            fn()
    return run


def _median_time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _torch_loop(float_model, x: np.ndarray):
    """The trainer's float step loop (torch, batch 1, no autograd) on the binned input ``x``."""
    import torch

    from ..trainer.learning.model import core_features

    xb = torch.from_numpy(x.astype(np.float32))[None]
    cfg = float_model.core.cfg

    def loop():
        with torch.no_grad():
            core_features(xb, float_model.core.params, cfg, float_model.core.masks, fused=False)

    loop()
    return loop


def _peers(float_model, x: np.ndarray) -> tuple[dict, dict]:
    """The other libraries' loops on the same bins (:mod:`tessera.tools.peer_loops`), none
    without a float model or with a core they cannot run."""
    if float_model is None:
        return {}, {"all": "a .tsr file has no float model for the peers"}
    if float_model.core.cfg.kind != "lif":
        return {}, {"all": f"the peers run spiking cores; this one is {float_model.core.cfg.kind}"}
    from .peer_loops import peer_loops

    return peer_loops(float_model, x)


def _bench_models(model_path: str, bits: int) -> tuple[str, object, dict]:
    """The ``.tsr`` the runtime bench runs, the float model (None for a ``.tsr``) and the model
    file's bytes per weight width."""
    import tempfile

    from ..runtime.chip import Chip

    tmp = tempfile.mkdtemp(prefix="tessera-bench-")
    float_model = None
    sizes = {}
    if model_path.endswith(".tsr"):
        tsr = model_path
        sizes[Chip.load(tsr).tab.weight_bits] = os.path.getsize(tsr)
    else:
        import torch

        from ..trainer.exchange.export import ExportConfig, export_model
        from ..trainer.learning.storage import load_model

        torch.set_num_threads(1)
        float_model = load_model(model_path)
        for b in sorted({4, bits}):
            path = os.path.join(tmp, f"model-{b}bit.tsr")
            sizes[b] = export_model(float_model, path, ExportConfig(weight_bits=b))["bytes"]
        tsr = os.path.join(tmp, f"model-{bits}bit.tsr")
    return tsr, float_model, sizes


def _enroll_ms(chip, repeats: int) -> float:
    """Median ms of one enrollment (one shot, one step) into a readout that holds 4 words."""
    phi = chip.features()
    for k in range(4):
        chip.enroll(f"word{k}", [phi])
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        chip.enroll("probe", [phi])
        times.append(time.perf_counter() - t0)
        chip.forget("probe")
    return round(statistics.median(times) * 1e3, 3)


def _batch_peak_mib(chip, fb: np.ndarray) -> float:
    """Peak memory one ``run_batch`` of the utterances ``fb`` allocates (tracemalloc sees
    numpy's buffers), MiB per utterance; the input frames themselves are not counted."""
    import tracemalloc

    tracemalloc.start()
    try:
        chip.run_batch(fb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return round(peak / 2 ** 20 / fb.shape[0], 3)


def _stream_times(stream, torch_loop, repeats: int, peers: dict | None = None
                  ) -> tuple[dict, dict]:
    """µs per 10 ms step of ``stream`` (one utterance) on every backend (and the torch loop),
    interleaved so that machine noise hits all alike: steady (``STEADY`` utterances back to
    back, a stream that keeps running) and cold (one utterance right after the other side's).
    ``peers``: other loops on the same bins, timed steady in the same rounds. Returns
    ({backend: figures}, {peer: figures})."""
    from ..runtime.compiled import available, use

    names, peers = available(), dict(peers or {})
    t = {(b, k): [] for b in names + ["torch"] for k in ("steady", "cold")}
    t.update({(p, "steady"): [] for p in peers})
    for _ in range(repeats):
        for name in names:
            with use(name):
                t[name, "cold"].append(_median_time(stream, 1))
                t[name, "steady"].append(_median_time(_block(stream), 1) / STEADY)
        if torch_loop is not None:
            t["torch", "cold"].append(_median_time(torch_loop, 1))
            t["torch", "steady"].append(_median_time(_block(torch_loop), 1) / STEADY)
        for p, loop in peers.items():
            t[p, "steady"].append(_median_time(_block(loop), 1) / STEADY)
    med = {key: statistics.median(v) for key, v in t.items() if v}
    us = lambda key: round(med[key] / stream.steps * 1e6, 2)     # noqa: E731
    out = {}
    for name in names:
        out[name] = dict(us_per_network_step=us((name, "steady")),
                         us_per_network_step_cold=us((name, "cold")),
                         realtime_factor=round(stream.seconds / med[name, "steady"], 1))
        if torch_loop is not None:
            out[name].update(
                torch_us_per_network_step=us(("torch", "steady")),
                speedup_vs_torch=round(med["torch", "steady"] / med[name, "steady"], 2),
                speedup_vs_torch_cold=round(med["torch", "cold"] / med[name, "cold"], 2))
    peer_out = {p: dict(us_per_network_step=us((p, "steady")),
                        **{f"{name}_speedup": round(med[p, "steady"] / med[name, "steady"], 2)
                           for name in names}) for p in peers}
    return out, peer_out


def bench_runtime(model_path: str, bits: int = 8, repeats: int = 20, batch: int = 64,
                  seed: int = 0) -> dict:
    """The chip emulator on one core: streaming us per 1 ms of input, next to the trainer's float
    torch step loop and a dense integer matmul floor on the same input; batched throughput;
    enrollment time; model file size at 4-bit weights (and at ``bits``).

    ``model_path``: a trained model (``model.tsb``, exported here at ``bits`` and at 4 bits)
    or a ``.tsr`` file (then the torch comparison and the 4-bit size are left out).
    """
    from ..runtime.chip import Chip
    from ..runtime.compiled import backend
    from ..runtime.core import bins_of
    from ..runtime.threads import set_blas_threads

    pinned = set_blas_threads(1)
    tsr, float_model, sizes = _bench_models(model_path, bits)
    chip = Chip.load(tsr)
    tab = chip.tab
    ms = tab.steps * tab.bin_ms
    pcm = speechlike_signal(ms / 1000.0, seed)
    chip.reset()
    chip.feed_audio(pcm)
    t_audio = _median_time(lambda: (chip.reset(), chip.feed_audio(pcm), chip.end_utterance()),
                           max(3, repeats // 4))
    frames = chip.cochlea.encode(pcm)                           # (ms, inputs) spike frames

    def stream():
        chip.reset()
        chip.run(frames)
        chip.end_utterance()

    stream.steps, stream.seconds = tab.steps, ms / 1000.0
    stream()
    chip.reset()
    x = np.minimum(bins_of(chip.frames(frames), np.zeros(chip.tab.inputs, np.int64), 0,
                           chip.tab.bin_ms)[0], 255)     # the chip's bins, for the others
    chip.reset()
    torch_loop = _torch_loop(float_model, x) if float_model is not None else None
    loops, missing = _peers(float_model, x)
    times, peer_times = _stream_times(stream, torch_loop, repeats, loops)
    spikes = chip.stats()
    # the dense integer floor: one int64 matvec per step for input and recurrence, nothing else
    z = np.zeros(tab.neurons, np.int64)
    W_in, W_rec = chip.W_in, chip.W_rec

    def dense_floor():
        zz = z
        for t in range(tab.steps):
            zz = ((x[t] @ W_in + zz @ W_rec) > 0).astype(np.int64)

    t_dense = _median_time(dense_floor, max(3, repeats // 2))
    out = dict(bench="runtime", model=model_path, weight_bits=tab.weight_bits,
               neurons=tab.neurons, inputs=tab.inputs, bin_ms=tab.bin_ms, ms_per_utterance=ms,
               backend=backend(), **times[backend()],
               feed_audio_realtime_factor=round(ms / 1000.0 / t_audio, 1),
               dense_int_floor_us_per_step=round(t_dense / ms * 1e6, 3),
               spikes_per_utterance=round(spikes["spikes"] / max(1, spikes["steps"]) * tab.steps),
               model_bytes=sizes.get(4, os.path.getsize(tsr)), model_bytes_by_bits=sizes)
    out["by_backend"] = times
    out["peers"] = peer_times
    out["peers_missing"] = missing
    # batched: many streams at once (core.batch_steps)
    fb = np.broadcast_to(frames, (batch,) + frames.shape).copy()
    chip.run_batch(fb)                                            # warm-up
    t_batch = _median_time(lambda: chip.run_batch(fb), max(5, repeats // 4))
    out["batch"] = batch
    out["batch_utterances_per_s"] = round(batch / t_batch, 1)
    out["batch_realtime_factor"] = round(batch * ms / 1000.0 / t_batch, 1)
    out["batch_peak_mib_per_utterance"] = _batch_peak_mib(chip, fb)
    out["enroll_ms"] = _enroll_ms(chip, repeats)
    out["blas_threads"] = 1 if pinned else None
    out.update(machine_info())
    return out
