"""The integer Mosaic chip emulator: streaming inference and one-shot enrollment (numpy only).

This docstring owns the chip's arithmetic; MODEL_FORMAT.md names the constants, the trainer's
integer mode (:mod:`tessera.trainer.intmode`) re-implements it in torch, and ``tessera parity``
checks the two bit for bit. All values are integers; ``>>`` is an arithmetic (flooring) shift and
``sat_b(v)`` clips v to the signed b-bit range.

Input
    1 ms spike frames of the front-end's channels (``channels_total`` columns, or just the
    model's ``inputs`` columns); the model reads channels ``channels[c]``. Frames are summed into
    bins of ``bin_ms`` ms: ``x[t, c] = min(255, count)``. A window (one utterance) is ``steps``
    bins from :meth:`Chip.reset`; bins past the window are dropped (counted).

Core, one step per bin (n neurons on rows x cols tiles of ``tile`` neurons)::

    I[t]  = x[t] W_in + bias                  W_in[:, j] = R_in[:, j] << (shift_in[tile(j)] - GF)
    v     = sat_MB(((v * leak_mult) >> 16) + I[t] + sum_{i: z_i} W_rec[i] - threshold * z)
    z     = v >= threshold
    r     = sat_TB(((r * trace_mult) >> 16) + (z << RB))
    acc[seg(t)] = sat_AB(acc[seg(t)] + r)     seg(t) = t * segments // steps

``R`` are the integers the RRAM arrays read (:mod:`tessera.runtime.rram`: ``q << GF`` when
ideal); W_rec exists only on the routing table's tile pairs, block (a, b) scaled by its own shift.
The recurrent sum is event-driven: only the rows of neurons that spiked are read.

Readout features, at the end of the window::

    f[s, j] = acc[s, j] // len(s);   phi = (f << PB) // max(isqrt(sum f^2), 1)    (normalize "l2")

flattened segment-major (index s * n + j), as the trainer's features.

Readout and enrollment (K enrolled classes, W the read readout weights, D x K)::

    logit_k = (phi W[:, k]) >> (WE + GF + PB - LQ)     (natural-log units with LQ fraction bits)
    p       = softmax over [logit_1..logit_K, 0]       (the last one: "none of these")
            via e = EXP2[f] >> i, with -(d * LOG2E) >> 16 = i * 2^LQ + f, p_k = (e_k << PQ) // sum e

One enrollment step on N shots (phi_i, class y_i), new classes starting from zero rows::

    g_k    = sum_i ((y_ik << PQ) - p_ik) phi_i
    dW     = round(g * 2^(lr_shift + WE - PQ - PB) / N), at a resolution of 2^(WB - UB) levels
             (UB = update bits; nearest or stochastic rounding), |dW| < update_threshold -> 0
    W      = sat_WB(W + dW), written to the readout's RRAM (changed weights only)

From an empty readout this is the meta-learned device rule (one SGD step of the cross-entropy
from zero: a centred prototype per class); the learning rate is ``2^lr_shift``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .model_format import ModelFile, read_model, unpack_ints
from .rram import GF, RRAMArray, RRAMConfig

__all__ = ["Chip", "ChipTables", "tables_of", "softmax_q", "normalize_features", "events_to_frames"]


def _req(d: dict, key: str, kind, where: str):
    if key not in d:
        raise InputError(f"model field {where}.{key} is missing")
    v = d[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise InputError(f"model field {where}.{key} must be an integer, got {type(v).__name__}")
    if kind is str and not isinstance(v, str):
        raise InputError(f"model field {where}.{key} must be a string")
    return v


@dataclass
class ChipTables:
    """The numeric contents of a model file, checked for consistency."""

    rows: int
    cols: int
    tile: int
    inputs: int
    channels_total: int
    channels: np.ndarray
    bin_ms: int
    steps: int
    segments: int
    weight_bits: int
    w_in: np.ndarray             # (inputs, n) levels
    shift_in: np.ndarray         # (tiles,)
    routes: np.ndarray           # (P, 3): source tile, target tile, hops
    w_rec: np.ndarray            # (P, tile, tile) levels
    shift_rec: np.ndarray        # (P,)
    bias: np.ndarray             # (n,)
    threshold: int
    leak_mult: int
    trace_mult: int
    refractory: int
    membrane_bits: int
    trace_bits: int
    trace_frac: int
    acc_bits: int
    normalize: str
    feature_bits: int
    readout_bits: int
    readout_exp: int
    lr_shift: int
    max_classes: int
    update_bits: int
    update_threshold: int
    stochastic_rounding: bool
    logit_frac: int
    softmax_frac: int
    log2e: int
    exp2: np.ndarray
    w_out_init: np.ndarray | None
    frontend: dict = field(default_factory=dict)

    @property
    def neurons(self) -> int:
        return self.rows * self.cols * self.tile

    @property
    def features(self) -> int:
        return self.segments * self.neurons

    @property
    def qmax(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def readout_qmax(self) -> int:
        return (1 << (self.readout_bits - 1)) - 1

    def segment_lengths(self) -> np.ndarray:
        seg = np.arange(self.steps) * self.segments // self.steps
        return np.bincount(seg, minlength=self.segments)


def tables_of(m: ModelFile) -> ChipTables:
    """Decode and check a model file's core and readout sections."""
    c, r = m.core, m.readout
    g = {k: _req(c, k, int, "core") for k in (
        "rows", "cols", "tile", "inputs", "channels_total", "bin_ms", "steps", "segments",
        "weight_bits", "threshold", "leak_mult", "trace_mult", "refractory", "membrane_bits",
        "trace_bits", "trace_frac", "acc_bits")}
    for k in ("rows", "cols", "tile", "inputs", "bin_ms", "steps", "segments", "threshold"):
        if g[k] < 1:
            raise InputError(f"model field core.{k} must be >= 1, got {g[k]}")
    if not 2 <= g["weight_bits"] <= 8:
        raise InputError(f"core.weight_bits must be 2..8, got {g['weight_bits']}")
    if g["segments"] > g["steps"]:
        raise InputError("core.segments exceeds core.steps")
    n, tiles, t = g["rows"] * g["cols"] * g["tile"], g["rows"] * g["cols"], g["tile"]
    arr = {k: unpack_ints(_req(c, k, dict, "core"), f"core.{k}")
           for k in ("channels", "w_in", "shift_in", "routes", "w_rec", "shift_rec", "bias")}
    shapes = {"channels": (g["inputs"],), "w_in": (g["inputs"], n), "shift_in": (tiles,),
              "bias": (n,)}
    for k, shp in shapes.items():
        if arr[k].shape != shp:
            raise InputError(f"model field core.{k} has shape {arr[k].shape}, the geometry "
                             f"({g['rows']}x{g['cols']} tiles of {t}, {g['inputs']} inputs) "
                             f"needs {shp}")
    p = arr["routes"].shape[0] if arr["routes"].ndim == 2 else -1
    if arr["routes"].shape != (p, 3) or arr["w_rec"].shape != (p, t, t) \
            or arr["shift_rec"].shape != (p,):
        raise InputError(f"model fields core.routes/w_rec/shift_rec do not fit: "
                         f"{arr['routes'].shape}, {arr['w_rec'].shape}, {arr['shift_rec'].shape}")
    if p and (arr["routes"][:, :2].min() < 0 or arr["routes"][:, :2].max() >= tiles):
        raise InputError("core.routes names a tile outside the grid")
    if arr["channels"].min() < 0 or arr["channels"].max() >= g["channels_total"]:
        raise InputError("core.channels names a channel outside the front-end")
    qmax = (1 << (g["weight_bits"] - 1)) - 1
    if np.abs(arr["w_in"]).max(initial=0) > qmax or np.abs(arr["w_rec"]).max(initial=0) > qmax:
        raise InputError(f"core weights exceed the {g['weight_bits']}-bit level range")
    if min(arr["shift_in"].min(initial=GF), arr["shift_rec"].min(initial=GF)) < GF:
        raise InputError(f"core shifts must be >= {GF}")
    h = {k: _req(r, k, int, "readout") for k in (
        "feature_bits", "readout_bits", "readout_exp", "lr_shift", "max_classes", "update_bits",
        "update_threshold", "logit_frac", "softmax_frac", "log2e")}
    if not 2 <= h["readout_bits"] <= 16:
        raise InputError(f"readout.readout_bits must be 2..16, got {h['readout_bits']}")
    if not 0 <= h["update_bits"] <= h["readout_bits"]:
        raise InputError("readout.update_bits must be 0 (full resolution) .. readout_bits")
    if h["max_classes"] < 1:
        raise InputError("readout.max_classes must be >= 1")
    normalize = _req(r, "normalize", str, "readout")
    if normalize not in ("l2", "l1", "none"):
        raise InputError(f"readout.normalize {normalize!r} is not l2, l1 or none")
    exp2 = unpack_ints(_req(r, "exp2", dict, "readout"), "readout.exp2")
    if exp2.shape != (1 << h["logit_frac"],):
        raise InputError("readout.exp2 must have 2^logit_frac entries")
    w0 = None
    if r.get("w_init") is not None:
        w0 = unpack_ints(r["w_init"], "readout.w_init")
        if w0.shape != (g["segments"] * n, h["max_classes"]):
            raise InputError(f"readout.w_init has shape {w0.shape}")
    return ChipTables(**g, channels=arr["channels"], w_in=arr["w_in"], shift_in=arr["shift_in"],
                      routes=arr["routes"], w_rec=arr["w_rec"], shift_rec=arr["shift_rec"],
                      bias=arr["bias"], normalize=normalize, **h,
                      stochastic_rounding=bool(r.get("stochastic_rounding", False)), exp2=exp2,
                      w_out_init=w0, frontend=m.frontend)


_CLIP = getattr(getattr(np, "_core", np).umath, "clip", None) or np.clip   # the bare ufunc


def _shift(v, s: int):
    return v >> s if s >= 0 else v << -s


def normalize_features(f: np.ndarray, tab: ChipTables) -> np.ndarray:
    """phi from the per-segment means f (..., D), integer (see the module docstring)."""
    f = np.asarray(f, np.int64)
    if tab.normalize == "none":
        return f.copy()
    flat = f.reshape(-1, f.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        if tab.normalize == "l2":
            norm = math.isqrt(int(np.dot(row, row)))
        else:
            norm = int(row.sum())
        out[i] = (row << tab.feature_bits) // max(norm, 1)
    return out.reshape(f.shape)


def softmax_q(logit_q: np.ndarray, tab: ChipTables) -> np.ndarray:
    """Integer softmax over the last axis with a zero "none" logit appended: (..., K+1) in units
    of 2^-PQ."""
    lq = np.asarray(logit_q, np.int64)
    full = np.concatenate([lq, np.zeros(lq.shape[:-1] + (1,), np.int64)], axis=-1)
    d = full - full.max(axis=-1, keepdims=True)                       # <= 0
    e2 = -((d * tab.log2e) >> 16)                                     # >= 0, LQ fraction bits
    ip = np.minimum(e2 >> tab.logit_frac, 62)
    e = tab.exp2[e2 & ((1 << tab.logit_frac) - 1)] >> ip
    return (e << tab.softmax_frac) // e.sum(axis=-1, keepdims=True)


class Counters:
    """NeuroBench-style activity counters since the last :meth:`Chip.reset_counters`."""

    def __init__(self, tab: ChipTables, max_hop: int):
        self.steps = 0
        self.dropped_bins = 0
        self.input_events = 0
        self.synops_input = 0
        self.synops_recurrent = 0
        self.spikes = np.zeros(tab.neurons, np.int64)
        self.routing = np.zeros(max_hop + 1, np.int64)
        self.enrollments = 0
        self.weight_writes = 0


class Chip:
    """One Mosaic chip running one exported model (see the module docstring).

    >>> chip = Chip.load("model.tsr")                            # doctest: +SKIP
    >>> chip.feed_audio(pcm, 16000); chip.enroll("lights")       # doctest: +SKIP
    >>> chip.reset(); chip.feed_audio(pcm2, 16000); chip.predict()["label"]   # doctest: +SKIP
    """

    def __init__(self, model: ModelFile, rram: RRAMConfig | None = None, source: str = "<model>"):
        self.model, self.source = model, source
        self.tab = tab = tables_of(model)
        self.rram_cfg = rram or RRAMConfig()
        self.rng = np.random.default_rng([self.rram_cfg.seed, 0x7E55])
        n, t = tab.neurons, tab.tile
        self.labels_all = list(model.labels)
        self.hops = tab.routes[:, 2].astype(np.int64)
        self.max_hop = int(self.hops.max(initial=0))
        self.in_arr = RRAMArray(tab.w_in, tab.qmax, self.rram_cfg, self.rng)
        self.rec_arr = RRAMArray(tab.w_rec, tab.qmax, self.rram_cfg, self.rng)
        w0 = tab.w_out_init if tab.w_out_init is not None else np.zeros(
            (tab.features, tab.max_classes), np.int64)
        self.out_arr = RRAMArray(w0, tab.readout_qmax, self.rram_cfg, self.rng)
        self.class_names: list[str | None] = [None] * tab.max_classes
        self.lengths = tab.segment_lengths()
        self.seg_of = np.arange(tab.steps) * tab.segments // tab.steps
        self.logit_shift = tab.readout_exp + GF + tab.feature_bits - tab.logit_frac
        self.decay = np.concatenate([np.full(n, tab.leak_mult, np.int64),
                                     np.full(n, tab.trace_mult, np.int64)])
        # an upper bound of the readout trace r (r <= (r * m >> 16) + s  =>  r < s / (1 - m/2^16))
        self.trace_bound = ((1 << tab.trace_frac) * 65536) // max(65536 - tab.trace_mult, 1) + 1
        self._cochlea = None
        self._n, self._t = n, t
        self.refresh_weights()
        self.counters = Counters(tab, self.max_hop)
        self.reset()

    # ------------------------------------------------------------------ set-up
    @classmethod
    def load(cls, path: str | os.PathLike, rram: RRAMConfig | None = None) -> Chip:
        return cls(read_model(path), rram, os.fspath(path))

    def refresh_weights(self) -> None:
        """Re-read the RRAM arrays into the integer weights the arithmetic uses."""
        tab, n, t = self.tab, self._n, self._t
        tile_of = np.arange(n) // t
        self.W_in = self.in_arr.read() << (tab.shift_in[tile_of] - GF)[None, :]
        rec = self.rec_arr.read() << (tab.shift_rec - GF)[:, None, None]
        W = np.zeros((n, n), np.int64)
        fan = np.zeros((n, self.max_hop + 1), np.int64)
        for (a, b, h), block in zip(tab.routes, rec):
            W[a * t:(a + 1) * t, b * t:(b + 1) * t] += block
            fan[a * t:(a + 1) * t, h] += (block != 0).any(axis=1)
        self.W_rec = W
        self.W_rec_theta = W - tab.threshold * np.eye(n, dtype=np.int64)
        self.W_in_f = self.W_in.astype(np.float64)       # exact: see _drive
        self.W_rec_f = W.astype(np.float64)
        self.fanout_hops = fan                           # routing events per spike, per hop
        self.fanout = (W != 0).sum(axis=1)               # recurrent synapses per spike
        self.fanin_input = (self.W_in != 0).sum(axis=1)  # synapses per input event
        self.W_out = self.out_arr.read()

    def age(self, seconds: float) -> None:
        """Simulated time passes: conductance drift of every array (then re-read)."""
        for a in (self.in_arr, self.rec_arr, self.out_arr):
            a.age(seconds)
        self.refresh_weights()

    @property
    def cochlea(self):
        if self._cochlea is None:
            from .frontend import Cochlea, FrontendSpec, tables_from_fixed

            fe = self.tab.frontend
            try:
                spec = FrontendSpec.from_dict(fe["spec"])
                fixed = unpack_ints(fe["poles"], "frontend.poles")
                fc = np.asarray(fe["fc_mhz"], np.float64) / 1000.0
                tables = tables_from_fixed(spec, fc, fixed)._replace(
                    floor_level=int(fe["floor_level"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"model front-end section is unusable ({exc})",
                                 source=self.source) from None
            if tables.spec.channels != self.tab.inputs:
                raise InputError("model front-end channels do not match core.inputs",
                                 source=self.source)
            self._cochlea = Cochlea(tables=tables)
        return self._cochlea

    # ------------------------------------------------------------------ streaming
    def reset(self) -> None:
        """Start a new utterance (window): neuron state, bins and the front-end from rest."""
        n, tab = self._n, self.tab
        if self.rram_cfg.read_noise:
            for a in (self.in_arr, self.rec_arr, self.out_arr):
                a.sample_read()
            self.refresh_weights()
        self.state = np.zeros(2 * n, np.int64)      # membranes and traces side by side, so
        self.v, self.r = self.state[:n], self.state[n:]   # one multiply-shift decays both
        self.z = np.zeros(n, bool)
        self.acc = np.zeros((tab.segments, n), np.int64)
        self.t = 0
        self.pending = np.zeros(tab.inputs, np.int64)
        self.pending_ms = 0
        self.ended = False
        self.phi: np.ndarray | None = None
        if self._cochlea is not None:
            self._cochlea.reset()

    def reset_counters(self) -> None:
        self.counters = Counters(self.tab, self.max_hop)

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        f = np.asarray(frames)
        tab = self.tab
        if f.ndim != 2 or f.shape[1] not in (tab.channels_total, tab.inputs):
            raise InputError(f"spike frames must be (ms, {tab.channels_total}) or (ms, "
                             f"{tab.inputs}), got shape {f.shape}")
        if f.dtype.kind not in "biu":
            raise InputError(f"spike frames must be integer counts, got {f.dtype}")
        if f.size and f.min() < 0:
            raise InputError("spike frames hold negative counts")
        if f.shape[1] == tab.channels_total and tab.channels_total != tab.inputs:
            f = f[:, tab.channels]
        return f.astype(np.int64)

    def _bins(self, f: np.ndarray) -> np.ndarray:
        """Complete bins from pending + frames ``f``; the rest waits in ``pending``."""
        B = self.tab.bin_ms
        total = self.pending_ms + f.shape[0]
        nb = total // B
        if nb == 0:
            self.pending += f.sum(axis=0)
            self.pending_ms = total
            return np.zeros((0, self.tab.inputs), np.int64)
        first = B - self.pending_ms
        bins = np.empty((nb, self.tab.inputs), np.int64)
        bins[0] = self.pending + f[:first].sum(axis=0)
        if nb > 1:
            bins[1:] = f[first:first + (nb - 1) * B].reshape(nb - 1, B, -1).sum(axis=1)
        used = first + (nb - 1) * B
        self.pending = f[used:].sum(axis=0)
        self.pending_ms = f.shape[0] - used
        return bins

    def run(self, frames: np.ndarray) -> np.ndarray:
        """Stream 1 ms spike frames; returns the core's spikes (bins completed, n) as uint8.
        Any chunking of the same frames gives identical results."""
        if self.ended:
            raise InputError("the utterance has ended (predict/enroll read it): call reset()")
        return self._run_bins(self._bins(self._frames(frames)))

    def _run_bins(self, bins: np.ndarray) -> np.ndarray:
        tab, c = self.tab, self.counters
        room = tab.steps - self.t
        if bins.shape[0] > room:
            c.dropped_bins += bins.shape[0] - room
            bins = bins[:room]
        x = np.minimum(bins, 255)
        k = x.shape[0]
        raster = np.zeros((k, self._n), np.uint8)
        if not k:
            return raster
        drive = (x.astype(np.float64) @ self.W_in_f).astype(np.int64) + tab.bias    # exact
        c.input_events += int(x.sum())
        c.synops_input += int(x.sum(axis=0) @ self.fanin_input)
        v, z, r, acc = self.v, self.z, self.r, self.acc
        theta = tab.threshold
        spike_val = 1 << tab.trace_frac
        mlo, mhi = -(1 << (tab.membrane_bits - 1)), (1 << (tab.membrane_bits - 1)) - 1
        thi = (1 << (tab.trace_bits - 1)) - 1
        alo, ahi = -(1 << (tab.acc_bits - 1)), (1 << (tab.acc_bits - 1)) - 1
        # saturations that provably never act are skipped (results are the same): the trace
        # is bounded by spike_val / (1 - trace_mult / 2^16), the accumulators by steps x that
        trace_can_overflow = self.trace_bound > thi
        acc_can_overflow = tab.steps * min(thi, self.trace_bound) > ahi
        idx = np.flatnonzero(z)
        W = self.W_rec_theta                          # W_rec - threshold * I: reset folded in
        clip, minimum, flatnonzero = _CLIP, np.minimum, np.flatnonzero
        traces = np.empty((k, self._n), np.int64)     # r after each step (summed per segment
        fired = []                                    # below unless the sums can saturate)
        state, decay = self.state, self.decay
        for i, d in enumerate(drive):
            state *= decay                           # v * leak_mult and r * trace_mult ...
            state >>= 16                             # ... >> 16, both at once
            v += d
            if idx.size:
                v += W[idx].sum(axis=0)
            clip(v, mlo, mhi, out=v)
            np.greater_equal(v, theta, out=z)
            idx = flatnonzero(z)
            r[idx] += spike_val
            if trace_can_overflow:
                minimum(r, thi, out=r)
            traces[i] = r
            fired.append(idx)
        segs = self.seg_of[self.t:self.t + k]
        if acc_can_overflow:                          # step by step, saturating every add
            for i in range(k):
                a = acc[segs[i]]
                a += traces[i]
                clip(a, alo, ahi, out=a)
        else:                                         # exact: no partial sum can saturate
            for s_ in np.unique(segs):
                acc[s_] += traces[segs == s_].sum(axis=0)
        for i, f in enumerate(fired):
            raster[i, f] = 1
        self.t += k
        per_neuron = raster.sum(axis=0, dtype=np.int64)
        c.spikes += per_neuron
        c.synops_recurrent += int(per_neuron @ self.fanout)
        c.routing += per_neuron @ self.fanout_hops
        c.steps += k
        return raster

    def feed_audio(self, pcm: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
        """Stream audio through the model's integer front-end; returns the core's spikes."""
        pcm = np.asarray(pcm)
        if sample_rate != 16000:
            from .audio import resample

            if pcm.dtype.kind == "f":
                pcm = np.round(np.clip(pcm, -1, 1) * 32767).astype(np.int16)
            pcm = resample(pcm.astype(np.int16), int(sample_rate), 16000)
        return self.run(self.cochlea.process(pcm))

    def end_utterance(self) -> np.ndarray:
        """Close the window: flush the front-end and the partial bin, run silent bins to the
        window's end (their spikes: ``self.tail``); returns (and keeps) the features phi."""
        if self.ended:
            return self.phi
        tail = []
        if self._cochlea is not None and self._cochlea.state.pending.size:
            tail.append(self._run_bins(self._bins(self._frames(self._cochlea.flush()))))
        if self.pending_ms and self.t < self.tab.steps:
            tail.append(self._run_bins(self.pending[None].copy()))
        self.pending[:] = 0
        self.pending_ms = 0
        rest = self.tab.steps - self.t
        if rest > 0:
            tail.append(self._run_bins(np.zeros((rest, self.tab.inputs), np.int64)))
        self.tail = np.vstack(tail) if tail else np.zeros((0, self._n), np.uint8)
        f = self.acc // self.lengths[:, None]
        self.phi = normalize_features(f.reshape(-1), self.tab)
        self.ended = True
        return self.phi

    def features(self) -> np.ndarray:
        return self.end_utterance().copy()

    # ------------------------------------------------------------------ readout
    def _active(self) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.class_names) if c is not None], np.int64)

    def logits_q(self, phi: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        rows = self._active() if rows is None else rows
        s = np.asarray(phi, np.int64) @ self.W_out[:, rows]
        return _shift(s, self.logit_shift)

    def predict(self) -> dict:
        """Label, per-class scores (logits, natural units) and confidence (softmax probability of
        the winner among the enrolled classes and "none")."""
        t0 = time.perf_counter()
        phi = self.end_utterance()
        rows = self._active()
        if not rows.size:
            raise InputError("no classes enrolled: enroll a word first")
        lq = self.logits_q(phi, rows)
        p = softmax_q(lq, self.tab)
        best = int(np.argmax(lq))
        names = [self.class_names[i] for i in rows]
        return dict(label=names[best], scores={nm: float(x) / (1 << self.tab.logit_frac)
                                               for nm, x in zip(names, lq)},
                    confidence=float(p[best]) / (1 << self.tab.softmax_frac),
                    none=float(p[-1]) / (1 << self.tab.softmax_frac),
                    latency_us=round((time.perf_counter() - t0) * 1e6, 1))

    def classes(self) -> list[str]:
        return [c for c in self.class_names if c is not None]

    def enroll(self, label: str, shots: list[np.ndarray] | None = None) -> dict:
        """ONE step of the device rule for ``label`` with ``shots`` (feature vectors from
        :meth:`features`; default: the current utterance)."""
        if not isinstance(label, str) or not label or len(label) > 64:
            raise InputError("label must be a non-empty string of at most 64 characters")
        shots = [self.end_utterance()] if shots is None else list(shots)
        return self.enroll_many({label: shots})

    def enroll_many(self, shots_by_label: dict[str, list[np.ndarray]]) -> dict:
        """One joint step over the shots of several classes (an episode's support set)."""
        t0 = time.perf_counter()
        tab = self.tab
        names, phis, ys = list(self.class_names), [], []
        for label, shots in shots_by_label.items():
            if not isinstance(label, str) or not label:
                raise InputError("labels must be non-empty strings")
            if label not in names:
                if None not in names:
                    raise InputError(f"readout full: {tab.max_classes} classes enrolled (forget "
                                     f"one first)")
                names[names.index(None)] = label
            if not shots:
                raise InputError(f"no shots for {label!r}")
            for phi in shots:
                phi = np.asarray(phi, np.int64)
                if phi.shape != (tab.features,):
                    raise InputError(f"a shot must be a feature vector of {tab.features}, got "
                                     f"{phi.shape}")
                phis.append(phi)
                ys.append(names.index(label))
        rows = np.array([i for i, c in enumerate(names) if c is not None], np.int64)
        P = np.stack(phis)
        y = np.searchsorted(rows, np.array(ys))
        p = softmax_q(_shift(P @ self.W_out[:, rows], self.logit_shift), tab)[:, :-1]
        target = np.zeros_like(p)
        target[np.arange(len(y)), y] = 1 << tab.softmax_frac
        g = P.T @ (target - p)                                         # (D, K)
        delta = self._scale_update(g, len(phis))
        q = tab.readout_qmax
        new = np.clip(self.out_arr.levels[:, rows] + delta, -q, q)
        written = self.out_arr.program_columns(rows, new)
        self.W_out[:, rows] = self.out_arr.read_columns(rows)
        self.class_names = names
        self.W_out = self.out_arr.read()
        self.counters.enrollments += 1
        self.counters.weight_writes += written
        return dict(classes=self.classes(), shots=len(phis), written=written,
                    ms=round((time.perf_counter() - t0) * 1e3, 3))

    def _scale_update(self, g: np.ndarray, n: int) -> np.ndarray:
        """dW in readout levels from the summed gradient g (see the module docstring)."""
        tab = self.tab
        s = tab.lr_shift + tab.readout_exp - tab.softmax_frac - tab.feature_bits
        coarse = tab.readout_bits - tab.update_bits if tab.update_bits else 0
        num = g << s if s > 0 else g
        den = n << (max(-s, 0) + coarse)
        if tab.stochastic_rounding:
            q, rem = np.divmod(num, den)
            q += self.rng.integers(0, den, size=q.shape) < rem
        else:
            q = (2 * num + den) // (2 * den)
        if tab.update_bits:
            lim = (1 << (tab.update_bits - 1)) - 1
            np.clip(q, -lim, lim, out=q)
        q <<= coarse
        if tab.update_threshold:
            q[np.abs(q) < tab.update_threshold] = 0
        return q

    def forget(self, label: str) -> None:
        if label not in self.class_names:
            raise InputError(f"{label!r} is not enrolled (enrolled: {self.classes()})")
        i = np.array([self.class_names.index(label)])
        self.counters.weight_writes += self.out_arr.program_columns(
            i, np.zeros((self.tab.features, 1), np.int64))
        self.class_names[int(i[0])] = None
        self.W_out[:, i] = self.out_arr.read_columns(i)

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """The counters, sparsities and memory footprint."""
        tab, c = self.tab, self.counters
        n = self._n
        per_tile = c.spikes.reshape(tab.rows * tab.cols, tab.tile).sum(axis=1)
        total_spikes = int(c.spikes.sum())
        nnz = int((self.W_rec != 0).sum())
        weights = tab.w_in.size + tab.w_rec.size
        mem = dict(weights=(weights * tab.weight_bits + 7) // 8,
                   readout=(tab.features * tab.max_classes * tab.readout_bits + 7) // 8,
                   state=(n * (tab.membrane_bits + tab.trace_bits + 1)
                          + tab.segments * n * tab.acc_bits + tab.inputs * 8 + 7) // 8)
        mem["total"] = sum(mem.values())
        return dict(steps=c.steps, dropped_bins=c.dropped_bins, input_events=c.input_events,
                    synops=c.synops_input + c.synops_recurrent, synops_input=c.synops_input,
                    synops_recurrent=c.synops_recurrent, spikes=total_spikes,
                    spikes_per_tile=per_tile.tolist(),
                    routing_events_per_hop={str(h): int(v) for h, v in enumerate(c.routing)},
                    activation_sparsity=round(1 - total_spikes / max(n * c.steps, 1), 5),
                    connection_sparsity=round(1 - nnz / (n * (n - 1)), 5),
                    memory_bytes=mem, enrollments=c.enrollments, weight_writes=c.weight_writes,
                    classes=self.classes())

    # ------------------------------------------------------------------ batched
    def run_batch(self, frames: np.ndarray, rasters: bool = False):
        """Many utterances at once (B, ms, channels) from rest, each a full window: returns the
        features phi (B, D) (and the spike rasters (B, steps, n) with ``rasters``). The streams
        step together (one numpy call per operation for all of them, float64 holding the
        integers exactly); identical results to one stream at a time. Does
        not touch the streaming state or the counters."""
        tab = self.tab
        f = np.asarray(frames)
        if f.ndim != 3:
            raise InputError(f"batched frames must be (utterances, ms, channels), got {f.shape}")
        b = f.shape[0]
        x = np.stack([self._frames(u) for u in f]) if b else np.zeros((0, 0, tab.inputs))
        ms = x.shape[1]
        nb = min(-(-ms // tab.bin_ms), tab.steps)
        bins = np.zeros((b, tab.steps, tab.inputs), np.int64)
        pad = np.zeros((b, nb * tab.bin_ms, tab.inputs), np.int64)
        take = min(ms, nb * tab.bin_ms)
        pad[:, :take] = x[:, :take]
        bins[:, :nb] = pad.reshape(b, nb, tab.bin_ms, -1).sum(axis=2)
        return self.run_bins_batch(np.minimum(bins, 255), rasters)

    def run_bins_batch(self, x: np.ndarray, rasters: bool = False):
        """The core over binned inputs x (B, steps, inputs) (counts <= 255)."""
        tab, n = self.tab, self._n
        b = x.shape[0]
        drive = (x.reshape(-1, tab.inputs).astype(np.float64) @ self.W_in_f).astype(np.int64)
        drive = drive.reshape(b, tab.steps, n) + tab.bias
        # float64 holds every value exactly (all below 2^53; the scalings are powers of two)
        drive = drive.astype(np.float64)
        v = np.zeros((b, n))
        r = np.zeros((b, n))
        zf = np.zeros((b, n))
        acc = np.zeros((tab.segments, b, n))
        out = np.zeros((b, tab.steps, n), np.uint8) if rasters else None
        mlo, mhi = -(1 << (tab.membrane_bits - 1)), (1 << (tab.membrane_bits - 1)) - 1
        thi = (1 << (tab.trace_bits - 1)) - 1
        alo, ahi = -(1 << (tab.acc_bits - 1)), (1 << (tab.acc_bits - 1)) - 1
        lm, tm = tab.leak_mult * 2.0 ** -16, tab.trace_mult * 2.0 ** -16
        spike = float(1 << tab.trace_frac)
        theta = float(tab.threshold)
        for t in range(tab.steps):
            v *= lm
            np.floor(v, out=v)
            v += drive[:, t]
            bi, ii = np.nonzero(zf)          # event-driven: the rows of the neurons that spiked
            if bi.size:
                starts = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]])
                v[bi[starts]] += np.add.reduceat(self.W_rec_f[ii], starts, axis=0)
                v[bi, ii] -= theta
            np.clip(v, mlo, mhi, out=v)
            np.greater_equal(v, theta, out=zf, casting="unsafe")
            r *= tm
            np.floor(r, out=r)
            r += spike * zf
            np.minimum(r, thi, out=r)
            a = acc[self.seg_of[t]]
            a += r
            np.clip(a, alo, ahi, out=a)
            if rasters:
                out[:, t] = zf
        acc = acc.astype(np.int64)
        f = (acc // self.lengths[:, None, None]).transpose(1, 0, 2).reshape(b, -1)
        phi = normalize_features(f, tab)
        return (phi, out) if rasters else phi


def events_to_frames(times: np.ndarray, units: np.ndarray, channels: int, ms: int = 1000
                     ) -> np.ndarray:
    """Spike events (seconds, channel) -> (ms, channels) uint8 frames of 1 ms (counts saturate
    at 255; events outside [0, ms) ms or the channels are dropped). Times that are whole
    milliseconds in float32 (the corpus's) land in their own frame."""
    f = np.floor(np.asarray(times, np.float64) * 1000.0 + 1e-3).astype(np.int64)
    u = np.asarray(units, np.int64)
    keep = (f >= 0) & (f < ms) & (u >= 0) & (u < channels)
    counts = np.bincount(f[keep] * channels + u[keep], minlength=ms * channels)
    return np.minimum(counts, 255).astype(np.uint8).reshape(ms, channels)
