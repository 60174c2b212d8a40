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
    (leak_mult and trace_mult: one value for every neuron, or one per neuron)
    acc[seg(t)] = sat_AB(acc[seg(t)] + r)     seg(t) = t * segments // steps

``R`` are the integers the RRAM arrays read (:mod:`tessera.runtime.rram`: ``q << GF`` when
ideal); W_rec exists only on the routing table's tile pairs, block (a, b) scaled by its own shift.
The recurrent sum is event-driven: only the rows of neurons that spiked are read. These steps
are :func:`tessera.runtime.core.core_step`, a pure function that streaming and batched inference
share.

Readout features, at the end of the window::

    f[s, j] = acc[s, j] // len(s);   phi = (f << PB) // max(isqrt(sum f^2), 1)    (normalize "l2")

flattened segment-major (index s * n + j), as the trainer's features.

Readout: a prototype per enrolled word (the device rule; K enrolled classes, W_k the read
levels of column k, CQ = cos_frac)::

    cos_k   = (phi . W_k << CQ) // max(isqrt(phi . phi) * isqrt(W_k . W_k), 1)
    best    = argmax_k cos_k (ties: the first label in sorted order, whatever the order of
              enrollment); c1, c2 = the largest and second cosines (c2 = 0 when K = 1)
    z       = ((a * c1 + m * (c1 - c2)) >> CQ) + b        (a, m, b = calib; logit units 2^-LQ)
    p       = sigmoid(z) = softmax over [z, 0], via e = EXP2[f] >> i with
              -(d * LOG2E) >> 16 = i * 2^LQ + f, p = (e << PQ) // sum e
    accept  = inputs(window) >= min_inputs  and  c1 >= none_threshold  and  p >= min_confidence
              else the answer: none (inputs: the input events x summed over the window's bins:
              silence has none; none_threshold and min_confidence are this device's registers,
              the model file's threshold and 0 until set)
    confidence = p if accepted else 2^PQ - p   (calibrated: the probability the answer is right)

This one rule answers ``infer``, the windows of continuous detection and the demo alike.

Enrollment of label k with N new shots phi_i (k's registers: n shots so far, column scale e)::

    S      = sum_i phi_i + n * (L_k << e)            (L_k: the column's programmed levels)
    mean   = (S + (n+N) // 2) // (n+N);   e = smallest e >= 0 with round(max|mean| / 2^e) <= Q
    L_k    = (mean + 2^e / 2) >> e,  n = n + N       written to the readout's RRAM column k only

Only column k changes, so enrollments of different words commute (any order gives the same
readout), more shots can be added to a word later, and ``forget`` clears one column. From one
shot this is the one high-learning-rate step of the meta-learned rule: the query's cosine with the
shot (the trainer's ``meta.rule = "prototype"``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .constants import SAMPLE_RATE
from .core import core_state, core_step, core_tables, input_current, trace_bound
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
    if kind is dict and not isinstance(v, dict):
        raise InputError(f"model field {where}.{key} must be a packed array (a map)")
    if kind is list and not isinstance(v, list):
        raise InputError(f"model field {where}.{key} must be a list")
    return v


@dataclass(frozen=True)
class ChipTables:
    """The numeric contents of a model file, checked for consistency; frozen (fields and arrays
    read-only): a chip's mutable state lives in :class:`Chip`, never in its tables."""

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
    leak_mult: np.ndarray        # (n,) membrane decay per neuron, units of 2^-16
    trace_mult: np.ndarray       # (n,) readout trace decay per neuron
    refractory: int
    membrane_bits: int
    trace_bits: int
    trace_frac: int
    acc_bits: int
    normalize: str
    feature_bits: int
    readout_bits: int
    max_classes: int
    cos_frac: int
    none_threshold: int
    min_inputs: int
    calib: tuple
    logit_frac: int
    softmax_frac: int
    log2e: int
    exp2: np.ndarray
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


#: The model file's core and readout fields (MODEL_FORMAT.md): ``int``, ``str``, ``list``,
#: ``"array"`` (a packed integer array) or ``"decay"`` (an int or a packed array of n values).
#: A file with a field missing, or with one not listed here, is refused with the field's name.
CORE_FIELDS = {
    "rows": int, "cols": int, "tile": int, "inputs": int, "channels_total": int, "bin_ms": int,
    "steps": int, "segments": int, "weight_bits": int, "threshold": int, "refractory": int,
    "membrane_bits": int, "trace_bits": int, "trace_frac": int, "acc_bits": int,
    "leak_mult": "decay", "trace_mult": "decay",
    "channels": "array", "w_in": "array", "shift_in": "array", "routes": "array",
    "w_rec": "array", "shift_rec": "array", "bias": "array",
}
READOUT_FIELDS = {
    "normalize": str, "rule": str, "feature_bits": int, "readout_bits": int, "max_classes": int,
    "cos_frac": int, "none_threshold": int, "min_inputs": int, "logit_frac": int,
    "softmax_frac": int, "log2e": int, "calib": list, "exp2": "array",
}


def _fields(d, spec: dict, where: str) -> dict:
    """The section ``d`` decoded by ``spec``: unknown and missing fields, and fields of the wrong
    kind, are refused with their names."""
    if not isinstance(d, dict):
        raise InputError(f"model section {where} must be a map")
    unknown = sorted(set(d) - set(spec), key=str)
    if unknown:
        raise InputError(f"model field {where}.{unknown[0]} is not known (this reader knows "
                         f"{', '.join(spec)})")
    out = {}
    for key, kind in spec.items():
        if kind == "array":
            out[key] = unpack_ints(_req(d, key, dict, where), f"{where}.{key}")
        elif kind == "decay":
            v = _req(d, key, object, where)
            out[key] = unpack_ints(v, f"{where}.{key}") if isinstance(v, dict) \
                else _req(d, key, int, where)
        else:
            out[key] = _req(d, key, kind, where)
    return out


def _design_rules(g: dict) -> list[tuple[str, bool, str]]:
    """(rule, holds, what it requires) for a decoded core + readout ``g``, in checking order."""
    n, tiles, t = g["rows"] * g["cols"] * g["tile"], g["rows"] * g["cols"], g["tile"]
    qmax = (1 << (g["weight_bits"] - 1)) - 1 if 2 <= g["weight_bits"] <= 8 else 0
    routes, w_rec, shift_rec = g["routes"], g["w_rec"], g["shift_rec"]
    p = routes.shape[0] if routes.ndim == 2 else -1
    geometry = f"{g['rows']}x{g['cols']} tiles of {t}, {g['inputs']} inputs"
    rules = [
        ("positive geometry", all(g[k] >= 1 for k in ("rows", "cols", "tile", "inputs", "bin_ms",
                                                      "steps", "segments", "threshold")),
         "core.rows, cols, tile, inputs, bin_ms, steps, segments and threshold must be >= 1"),
        ("weight bits", 2 <= g["weight_bits"] <= 8,
         f"core.weight_bits must be 2..8, got {g['weight_bits']}"),
        ("size limits", n <= 4096 and g["inputs"] <= 4096 and g["steps"] <= 10_000
         and g["bin_ms"] <= 1000 and g["channels_total"] <= 4096,
         f"the model is larger than any chip this emulates: {n} neurons (<= 4096), "
         f"{g['inputs']} inputs and {g['channels_total']} channels (<= 4096), {g['steps']} "
         f"steps (<= 10000) of {g['bin_ms']} ms (<= 1000)"),
        ("register widths", 2 <= g["membrane_bits"] <= 48 and 2 <= g["trace_bits"] <= 48
         and 2 <= g["acc_bits"] <= 62 and 0 <= g["trace_frac"] <= g["trace_bits"] - 2,
         f"core.membrane_bits and trace_bits must be 2..48, acc_bits 2..62 and trace_frac "
         f"0..trace_bits-2, got {g['membrane_bits']}, {g['trace_bits']}, {g['acc_bits']}, "
         f"{g['trace_frac']}"),
        ("threshold fits the membrane", 2 <= g["membrane_bits"] <= 48
         and g["threshold"] < (1 << (g["membrane_bits"] - 1)),
         "core.threshold must be below the membrane's largest value"),
        ("segments fit the window", g["segments"] <= g["steps"],
         "core.segments exceeds core.steps"),
        ("no refractory period", g["refractory"] == 0,
         f"core.refractory must be 0 (this chip resets by subtraction and has no refractory "
         f"period), got {g['refractory']}"),
    ]
    for k, shp in (("channels", (g["inputs"],)), ("w_in", (g["inputs"], n)),
                   ("shift_in", (tiles,)), ("bias", (n,))):
        rules.append((f"core.{k} shape", g[k].shape == shp,
                      f"model field core.{k} has shape {g[k].shape}, the geometry ({geometry}) "
                      f"needs {shp}"))
    for k in ("leak_mult", "trace_mult"):
        v = g[k]
        rules.append((f"core.{k} shape", np.ndim(v) == 0 or np.shape(v) == (n,),
                      f"model field core.{k} has shape {np.shape(v)}: it must be an integer or "
                      f"a packed array of {n} values (one per neuron)"))
        rules.append((f"core.{k} range", bool(np.all((np.asarray(v) >= 0)
                                                      & (np.asarray(v) < 65536))),
                      f"model field core.{k} must be a decay in [0, 65536) (units of 2^-16)"))
    rules += [
        ("routing table fits", routes.shape == (p, 3) and w_rec.shape == (p, t, t)
         and shift_rec.shape == (p,),
         f"model fields core.routes/w_rec/shift_rec do not fit: {routes.shape}, {w_rec.shape}, "
         f"{shift_rec.shape}"),
        ("routes inside the grid", p <= 0 or (routes[:, :2].min() >= 0
                                               and routes[:, :2].max() < tiles),
         "core.routes names a tile outside the grid"),
        ("channels inside the front-end", g["channels"].size == 0 or (
            g["channels"].min() >= 0 and g["channels"].max() < g["channels_total"]),
         "core.channels names a channel outside the front-end"),
        ("weight levels", np.abs(g["w_in"]).max(initial=0) <= qmax
         and np.abs(w_rec).max(initial=0) <= qmax,
         f"core weights exceed the {g['weight_bits']}-bit level range"),
        ("shifts", min(g["shift_in"].min(initial=GF), shift_rec.min(initial=GF)) >= GF
         and max(g["shift_in"].max(initial=GF), shift_rec.max(initial=GF)) <= 24,
         f"core shifts must be {GF}..24 (so that every sum of weights stays exact)"),
        ("readout bits", 2 <= g["readout_bits"] <= 16,
         f"readout.readout_bits must be 2..16, got {g['readout_bits']}"),
        ("readout capacity", 1 <= g["max_classes"] <= 1024,
         "readout.max_classes must be 1..1024"),
        ("feature and probability fractions", 1 <= g["feature_bits"] <= 30
         and 1 <= g["softmax_frac"] <= 30 and g["log2e"] >= 1,
         "readout.feature_bits and softmax_frac must be 1..30 and log2e >= 1"),
        ("cosine fraction", 4 <= g["cos_frac"] <= 16,
         f"readout.cos_frac must be 4..16, got {g['cos_frac']}"),
        ("none threshold", 4 <= g["cos_frac"] <= 16
         and -(1 << g["cos_frac"]) <= g["none_threshold"] <= (1 << g["cos_frac"]),
         f"readout.none_threshold must be a cosine in [-1, 1] (units of 2^-{g['cos_frac']})"),
        ("silence floor", g["min_inputs"] >= 0, "readout.min_inputs must be >= 0"),
        ("device rule", g["rule"] == "prototype",
         f"readout.rule {g['rule']!r} is not known (this chip runs 'prototype')"),
        ("calibration", len(g["calib"]) == 3 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in g["calib"]),
         "model field readout.calib must be a list of 3 integers"),
        ("normalization", g["normalize"] in ("l2", "l1", "none"),
         f"readout.normalize {g['normalize']!r} is not l2, l1 or none"),
        ("exponential table", 0 <= g["logit_frac"] <= 16
         and g["exp2"].shape == (1 << g["logit_frac"],),
         "readout.exp2 must have 2^logit_frac entries"),
    ]
    return rules


def tables_of(m: ModelFile) -> ChipTables:
    """Decode and check a model file's core and readout sections: every field by name
    (:data:`CORE_FIELDS`, :data:`READOUT_FIELDS`), then the named design rules in order; the
    first rule broken is the error."""
    g = _fields(m.core, CORE_FIELDS, "core")
    g.update(_fields(m.readout, READOUT_FIELDS, "readout"))
    for _, holds, message in _design_rules(g):
        if not holds:
            raise InputError(message)
    n = g["rows"] * g["cols"] * g["tile"]
    for k in ("leak_mult", "trace_mult"):
        g[k] = np.broadcast_to(np.asarray(g[k], np.int64), (n,)).copy()
    g["calib"] = tuple(g["calib"])
    del g["rule"]
    for v in g.values():                             # frozen tables: arrays read-only too
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return ChipTables(**g, frontend=m.frontend)


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


def _level_eq(d, inputs: int):
    """The front-end's level equalization from a model file's ``frontend.eq`` map."""
    from .frontend import LevelEq

    if not isinstance(d, dict):
        raise ValueError(f"frontend.eq must be a map, got {type(d).__name__}")
    unknown = sorted(set(d) - {"ref", "gate", "block", "shift", "frac", "prior"})
    if unknown:
        raise ValueError(f"frontend.eq has unknown field(s) {unknown}")
    names = ("gate", "block", "shift", "frac", "prior")
    for k in names:
        if k in d and (isinstance(d[k], bool) or not isinstance(d[k], int)):
            raise ValueError(f"frontend.eq.{k} must be an integer")
    ref = unpack_ints(d["ref"], "frontend.eq.ref")
    return LevelEq(ref, **{k: d[k] for k in names if k in d}).check(inputs)


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
        self.out_arr = RRAMArray(np.zeros((tab.features, tab.max_classes), np.int64),
                                 tab.readout_qmax, self.rram_cfg, self.rng)
        self.class_names: list[str | None] = [None] * tab.max_classes
        self.shots = np.zeros(tab.max_classes, np.int64)    # per-class registers: shots and
        self.exps = np.zeros(tab.max_classes, np.int64)     # column scale (levels << exp)
        self.none_threshold = tab.none_threshold            # per device: set_threshold
        self.min_confidence = 0                             # per device, units of 2^-PQ
        self.lengths = tab.segment_lengths()
        self.seg_of = np.arange(tab.steps) * tab.segments // tab.steps
        # the accumulators provably never saturate when steps x (the trace's bound) fits
        self.acc_can_overflow = tab.steps * min((1 << (tab.trace_bits - 1)) - 1,
                                                trace_bound(tab)) > (1 << (tab.acc_bits - 1)) - 1
        self._cochlea = None
        self._n, self._t = n, t
        self.refresh_weights()
        self.counters = Counters(tab, self.max_hop)
        if tab.frontend:                  # checked now, not at the first audio: a model that
            self.cochlea                  # loads is a model that runs (or a named error now)
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
        self.core = core_tables(tab, self.W_in, W)       # what core_step reads
        self.fanout_hops = fan                           # routing events per spike, per hop
        self.fanout = (W != 0).sum(axis=1)               # recurrent synapses per spike
        self.fanin_input = (self.W_in != 0).sum(axis=1)  # synapses per input event
        self.W_out = self.out_arr.read()
        self._refresh_norms()

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
                if fixed.shape != (self.tab.inputs, spec.order, 4):
                    raise ValueError(f"frontend.poles has shape {fixed.shape}, needs "
                                     f"({self.tab.inputs}, {spec.order}, 4)")
                fc = np.asarray(fe["fc_mhz"], np.float64) / 1000.0
                if fc.shape != (self.tab.inputs,):
                    raise ValueError(f"frontend.fc_mhz has shape {fc.shape}, needs "
                                     f"({self.tab.inputs},)")
                tables = tables_from_fixed(spec, fc, fixed)._replace(
                    floor_level=int(fe["floor_level"]))
                if fe.get("eq") is not None:
                    tables = tables._replace(eq=_level_eq(fe["eq"], self.tab.inputs))
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise InputError(f"model front-end section is unusable ({exc})",
                                 source=self.source) from None
            if tables.spec.channels != self.tab.inputs:
                raise InputError("model front-end channels do not match core.inputs",
                                 source=self.source)
            cochlea = Cochlea(tables=tables)
            try:                                   # a few steps of sound: the tables work
                cochlea.encode(np.tile(np.array([3000, -3000], np.int16),
                                       tables.spec.hop * tables.spec.superblock * 2))
            except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
                raise InputError(f"model front-end section is unusable ({exc})",
                                 source=self.source) from None
            cochlea.reset()
            self._cochlea = cochlea
        return self._cochlea

    def reset_levels(self) -> None:
        """Forget the front-end's running long-term level (the level equalization starts again
        from the model's reference)."""
        if self._cochlea is not None:
            self._cochlea.reset_levels()

    def level_offset(self) -> np.ndarray | None:
        """The level equalization's current move per input channel (level units), or None
        when the model has none."""
        if not self.tab.frontend or self.cochlea.tables.eq is None:
            return None
        st = self.cochlea.state.eq
        return np.zeros(self.tab.inputs, np.int64) if st is None else st.offset.copy()

    def level_state(self) -> tuple[np.ndarray, int] | None:
        """The front-end's running long-term level (inputs,) int64 (``frac`` fraction bits) and
        the speech steps it has heard: what a device keeps in flash with its words; None when
        the model has no equalization or the level is still the reference."""
        if not self.tab.frontend or self._cochlea is None or self._cochlea.state.eq is None:
            return None
        return self._cochlea.state.eq.mean.copy(), int(self._cochlea.state.eq.heard)

    def restore_level_state(self, mean, heard: int = 0) -> None:
        """Continue from a running level that :meth:`level_state` gave (checked: a flash image
        may hold anything)."""
        from .frontend import eq_initial

        eq = self.cochlea.tables.eq if self.tab.frontend else None
        if eq is None:
            raise InputError("this model has no level equalization to restore")
        m = np.asarray(mean)
        if m.shape != (self.tab.inputs,) or m.dtype.kind not in "iu" or (m.size and (
                int(m.min()) < 0 or int(m.max()) >= 4096 << eq.frac)):
            raise InputError(f"a running level must be {self.tab.inputs} integers in "
                             f"0..{(4096 << eq.frac) - 1}")
        if isinstance(heard, bool) or not isinstance(heard, int) or not \
                0 <= heard <= 1 << eq.shift:
            raise InputError(f"the speech steps a running level heard must be an integer in "
                             f"0..{1 << eq.shift}")
        m = m.astype(np.int64)
        st = eq_initial(eq)._replace(mean=m, offset=((m + (1 << eq.frac >> 1)) >> eq.frac)
                                     - eq.ref, heard=heard)
        self.cochlea.state = self.cochlea.state._replace(eq=st)

    def cochlea_pending(self) -> bool:
        """Audio samples wait in the front-end for a complete 1 ms step."""
        return self._cochlea is not None and self._cochlea.state.pending.size > 0

    # ------------------------------------------------------------------ streaming
    def reset(self, frontend: bool = True) -> None:
        """Start a new utterance (window): neuron state, bins and (``frontend``) the front-end
        from rest."""
        n, tab = self._n, self.tab
        if self.rram_cfg.read_noise:
            for a in (self.in_arr, self.rec_arr, self.out_arr):
                a.sample_read()
            self.refresh_weights()
        self.core_state = core_state(self.core)
        self.acc = np.zeros((tab.segments, n), np.int64)
        self.t = 0
        self.window_spikes = 0
        self.window_inputs = 0
        self.pending = np.zeros(tab.inputs, np.int64)
        self.pending_ms = 0
        self.ended = False
        self.phi: np.ndarray | None = None
        if frontend and self._cochlea is not None:
            self._cochlea.reset()

    @property
    def v(self) -> np.ndarray:
        """The membranes (n,) after the last step (a view of the core state)."""
        return self.core_state.vr[:self._n]

    @property
    def r(self) -> np.ndarray:
        """The readout traces (n,) after the last step."""
        return self.core_state.vr[self._n:]

    def snapshot(self) -> dict:
        """The streaming state of the current window (not the front-end's): a device that
        slides overlapping windows keeps one per window and swaps them in (:meth:`restore`)."""
        return dict(core=self.core_state, acc=self.acc.copy(), pending=self.pending.copy(),
                    t=self.t, pending_ms=self.pending_ms, ended=self.ended,
                    window_spikes=self.window_spikes, window_inputs=self.window_inputs,
                    phi=self.phi)    # core_step never changes a state: no copy needed

    def restore(self, snap: dict) -> None:
        self.core_state = snap["core"]
        self.acc[...], self.pending[...] = snap["acc"], snap["pending"]
        self.t, self.pending_ms, self.ended = snap["t"], snap["pending_ms"], snap["ended"]
        self.window_spikes, self.phi = snap["window_spikes"], snap["phi"]
        self.window_inputs = snap["window_inputs"]

    def reset_counters(self) -> None:
        self.counters = Counters(self.tab, self.max_hop)

    def input_counts(self, frames: np.ndarray) -> np.ndarray:
        """The input events the model reads in each 1 ms frame (ms,), int64: what onset
        detection and word boundaries listen to."""
        return self._frames(frames).sum(axis=1, dtype=np.int64)

    def _frames(self, frames: np.ndarray, batch: bool = False) -> np.ndarray:
        """Checked spike frames (ms, inputs) (``batch``: (utterances, ms, inputs)), the model's
        columns only, in their own integer type."""
        f = np.asarray(frames)
        tab = self.tab
        lead = "(utterances, ms, " if batch else "(ms, "
        if f.ndim != 2 + batch or f.shape[-1] not in (tab.channels_total, tab.inputs):
            raise InputError(f"spike frames must be {lead}{tab.channels_total}) or {lead}"
                             f"{tab.inputs}), got shape {f.shape}")
        if f.dtype.kind not in "biu":
            raise InputError(f"spike frames must be integer counts, got {f.dtype}")
        if f.dtype.kind == "i" and f.size and f.min() < 0:
            raise InputError("spike frames hold negative counts")
        if f.shape[-1] == tab.channels_total and tab.channels_total != tab.inputs:
            f = f[..., tab.channels]
        return f

    def _bins(self, f: np.ndarray) -> np.ndarray:
        """Complete bins from pending + frames ``f``; the rest waits in ``pending``."""
        B = self.tab.bin_ms
        total = self.pending_ms + f.shape[0]
        nb = total // B
        if nb == 0:
            self.pending += f.sum(axis=0, dtype=np.int64)
            self.pending_ms = total
            return np.zeros((0, self.tab.inputs), np.int64)
        first = B - self.pending_ms
        bins = np.empty((nb, self.tab.inputs), np.int64)
        bins[0] = self.pending + f[:first].sum(axis=0, dtype=np.int64)
        if nb > 1:
            bins[1:] = f[first:first + (nb - 1) * B].reshape(nb - 1, B, -1).sum(
                axis=1, dtype=np.int64)
        used = first + (nb - 1) * B
        self.pending = f[used:].sum(axis=0, dtype=np.int64)
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
        current = input_current(x, self.core)
        c.input_events += int(x.sum())
        self.window_inputs += int(x.sum())
        c.synops_input += int(x.sum(axis=0) @ self.fanin_input)
        traces = np.empty((k, self._n), np.int64)     # r after each step
        state, tables, n = self.core_state, self.core, self._n
        for i in range(k):
            z, state = core_step(current[i], state, tables)
            raster[i] = z
            traces[i] = state.vr[n:]
        self.core_state = state
        self._accumulate(self.acc, traces, self.seg_of[self.t:self.t + k])
        self.t += k
        per_neuron = raster.sum(axis=0, dtype=np.int64)
        self.window_spikes += int(per_neuron.sum())
        c.spikes += per_neuron
        c.synops_recurrent += int(per_neuron @ self.fanout)
        c.routing += per_neuron @ self.fanout_hops
        c.steps += k
        return raster

    def _accumulate(self, acc: np.ndarray, traces: np.ndarray, segs: np.ndarray) -> None:
        """acc[seg(t)] = sat_AB(acc[seg(t)] + r[t]) for the traces (k, ..., n) of steps with
        segments ``segs`` (k,); acc: (segments, ..., n), updated in place."""
        if self.acc_can_overflow:                     # step by step, saturating every add
            hi = (1 << (self.tab.acc_bits - 1)) - 1
            for s_, r in zip(segs, traces):
                a = acc[s_]
                a += r
                np.clip(a, -hi - 1, hi, out=a)
        else:                                         # exact: no partial sum can saturate
            for s_ in np.unique(segs):
                acc[s_] += traces[segs == s_].sum(axis=0)

    def feed_audio(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Stream audio through the model's integer front-end; returns the core's spikes.

        ``pcm``: int16 samples, or float samples in [-1, 1], at ``sample_rate`` Hz; other rates
        are resampled to 16 kHz exactly as :func:`~tessera.runtime.audio.load_audio` does with a
        file (so both give the same spikes). Resampling is per call: stream whole utterances, or
        16 kHz audio in chunks."""
        from .audio import TARGET_RATE, resample, to_int16

        pcm = np.asarray(pcm)
        if pcm.ndim != 1 or pcm.dtype.kind not in "iuf":
            raise InputError(f"audio must be a 1-D array of samples, got {pcm.dtype} {pcm.shape}")
        if sample_rate != TARGET_RATE:
            x = pcm.astype(np.float64) / 32768.0 if pcm.dtype.kind in "iu" else pcm
            pcm = resample(x, int(sample_rate), TARGET_RATE)
        return self.run(self.cochlea.process(to_int16(pcm)))

    def end_utterance(self, flush_frontend: bool = True) -> np.ndarray:
        """Close the window: flush the front-end (``flush_frontend``) and the partial bin, run
        silent bins to the window's end (their spikes: ``self.tail``); returns (and keeps) the
        features phi."""
        if self.ended:
            return self.phi
        tail = []
        if flush_frontend and self._cochlea is not None and self._cochlea.state.pending.size:
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
        """Columns of the enrolled classes, in label order (ties go to the first label whatever
        the order of enrollment)."""
        named = sorted((c, i) for i, c in enumerate(self.class_names) if c is not None)
        return np.array([i for _, i in named], np.int64)

    def _refresh_norms(self) -> None:
        w = self.W_out
        self.col_norm = np.array([math.isqrt(int(x)) for x in np.einsum("dk,dk->k", w, w)],
                                 np.int64)

    def scores_q(self, phi: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of phi (..., D) with the readout columns ``rows`` (default: the enrolled
        classes), in units of 2^-cos_frac (see the module docstring)."""
        rows = self._active() if rows is None else rows
        phi = np.asarray(phi, np.int64)
        dot = phi @ self.W_out[:, rows]
        flat = phi.reshape(-1, phi.shape[-1])
        nphi = np.array([math.isqrt(int(x)) for x in np.einsum("id,id->i", flat, flat)],
                        np.int64).reshape(phi.shape[:-1] + (1,))
        den = np.maximum(nphi * self.col_norm[rows], 1)
        return (dot << self.tab.cos_frac) // den

    def column_cosines(self) -> np.ndarray:
        """(K, K) cosines between the enrolled words' columns, in 2^-cos_frac, in the order of
        :meth:`classes` sorted (the rows of :meth:`_active`); the diagonal is 1. Leave-one-out
        among the enrolled words: column k against the others is what an untaught word of the
        same person scores (a word the person taught is not another's)."""
        rows = self._active()
        w = self.W_out[:, rows]
        den = np.maximum(np.outer(self.col_norm[rows], self.col_norm[rows]), 1)
        return ((w.T @ w) << self.tab.cos_frac) // den

    def decide(self, cos_q: np.ndarray, inputs: int) -> tuple[int, bool, int]:
        """(index of the best class, accepted, confidence in 2^-softmax_frac) from the cosines of
        one window and its input event count."""
        tab = self.tab
        order = np.argsort(-cos_q, kind="stable")
        best = int(order[0])
        c1 = int(cos_q[best])
        c2 = int(cos_q[order[1]]) if cos_q.size > 1 else 0
        a, m, b = tab.calib
        z = ((a * c1 + m * (c1 - c2)) >> tab.cos_frac) + b
        p = int(softmax_q(np.array([z], np.int64), tab)[0])        # sigmoid(z)
        accepted = inputs >= tab.min_inputs and c1 >= self.none_threshold \
            and p >= self.min_confidence
        return best, accepted, p if accepted else (1 << tab.softmax_frac) - p

    def predict(self) -> dict:
        """The window's answer: ``label`` (None: "none of these"), ``confidence`` (calibrated:
        the probability that the answer is right), ``best`` (the nearest enrolled word even when
        rejected), ``scores`` (cosine per enrolled word)."""
        t0 = time.perf_counter()
        phi = self.end_utterance()
        rows = self._active()
        if not rows.size:
            raise InputError("no classes enrolled: enroll a word first")
        cq = self.scores_q(phi, rows)
        best, accepted, p = self.decide(cq, self.window_inputs)
        names = [self.class_names[i] for i in rows]
        one = 1 << self.tab.cos_frac
        return dict(label=names[best] if accepted else None, best=names[best],
                    scores={nm: float(x) / one for nm, x in zip(names, cq)},
                    confidence=float(p) / (1 << self.tab.softmax_frac),
                    spikes=int(self.window_spikes), inputs=int(self.window_inputs),
                    latency_us=round((time.perf_counter() - t0) * 1e6, 1))

    def classes(self) -> list[str]:
        return [c for c in self.class_names if c is not None]

    def shots_of(self, label: str) -> int:
        return int(self.shots[self.class_names.index(label)]) if label in self.class_names else 0

    def enroll(self, label: str, shots: list[np.ndarray] | None = None) -> dict:
        """Teach ``label`` from ``shots`` (feature vectors from :meth:`features`; default: the
        current utterance). A new label takes a free column; an enrolled one adds the shots to
        its prototype. Only this label's column is written: order-invariant."""
        shots = [self.end_utterance()] if shots is None else list(shots)
        return self.enroll_many({label: shots})

    def enroll_many(self, shots_by_label: dict[str, list[np.ndarray]]) -> dict:
        """Several labels at once: the same per-label update as :meth:`enroll` (one column
        each), so any order of single enrollments gives the same columns as this."""
        t0 = time.perf_counter()
        tab = self.tab
        names = list(self.class_names)
        plan = []
        for label, shots in shots_by_label.items():
            if not isinstance(label, str) or not label or len(label) > 64:
                raise InputError("label must be a non-empty string of at most 64 characters")
            if label.lower() == "none":
                raise InputError("'none' is the answer for no enrolled word; choose another label")
            if not shots:
                raise InputError(f"no shots for {label!r}")
            P = []
            for phi in shots:
                phi = np.asarray(phi, np.int64)
                if phi.shape != (tab.features,):
                    raise InputError(f"a shot must be a feature vector of {tab.features}, got "
                                     f"{phi.shape}")
                P.append(phi)
            if label not in names:
                if None not in names:
                    raise InputError(f"readout full: {tab.max_classes} classes enrolled (forget "
                                     f"one first)")
                names[names.index(None)] = label
            plan.append((names.index(label), np.stack(P)))
        written = 0
        for col, P in plan:                     # checked above: nothing is written on an error
            n_old, n_new = int(self.shots[col]), P.shape[0]
            total = P.sum(axis=0)
            if n_old:                           # the column's prototype, from its levels
                total = total + n_old * (self.out_arr.levels[:, col] << int(self.exps[col]))
            n = n_old + n_new
            mean = (total + n // 2) // n
            exp = 0
            while ((int(np.abs(mean).max(initial=0)) + (1 << exp >> 1)) >> exp) > tab.readout_qmax:
                exp += 1
            levels = (mean + (1 << exp >> 1)) >> exp
            written += self.out_arr.program_columns(np.array([col]), levels[:, None])
            self.shots[col], self.exps[col] = n, exp
        self.class_names = names
        self.W_out = self.out_arr.read()
        self._refresh_norms()
        self.counters.enrollments += 1
        self.counters.weight_writes += written
        return dict(classes=self.classes(), shots=sum(p.shape[0] for _, p in plan),
                    written=written, ms=round((time.perf_counter() - t0) * 1e3, 3),
                    shots_per_class={self.class_names[c]: int(self.shots[c]) for c, _ in plan})

    def forget(self, label: str) -> None:
        """Remove one word: its column is cleared, no other column is touched."""
        if label not in self.class_names:
            raise InputError(f"{label!r} is not enrolled (enrolled: {self.classes()})")
        i = np.array([self.class_names.index(label)])
        self.counters.weight_writes += self.out_arr.program_columns(
            i, np.zeros((self.tab.features, 1), np.int64))
        self.class_names[int(i[0])] = None
        self.shots[i], self.exps[i] = 0, 0
        self.W_out[:, i] = self.out_arr.read_columns(i)
        self._refresh_norms()

    def readout_state(self) -> dict:
        """What a device keeps across power cycles besides the model: columns and registers."""
        return dict(levels=self.out_arr.levels.copy(), classes=list(self.class_names),
                    shots=self.shots.tolist(), exps=self.exps.tolist())

    def restore_readout(self, state: dict) -> None:
        levels = np.asarray(state["levels"], np.int64)
        k = self.tab.max_classes
        if levels.shape != (self.tab.features, k) or len(state["classes"]) != k \
                or len(state["shots"]) != k or len(state["exps"]) != k:
            raise InputError("stored readout does not fit the model")
        self.out_arr.program_columns(np.arange(k), levels)
        self.class_names = list(state["classes"])
        self.shots = np.asarray(state["shots"], np.int64)
        self.exps = np.asarray(state["exps"], np.int64)
        self.W_out = self.out_arr.read()
        self._refresh_norms()

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
        step together through :func:`~tessera.runtime.core.core_step` (one numpy call per
        operation for all of them); identical results to one stream at a time. Does not touch
        the streaming state or the counters."""
        tab, B = self.tab, self.tab.bin_ms
        x = self._frames(frames, batch=True)
        b, ms = x.shape[:2]
        take = min(ms, tab.steps * B)                     # frames past the window are dropped
        full = take // B
        bins = np.zeros((b, tab.steps, tab.inputs), np.int64)
        bins[:, :full] = x[:, :full * B].reshape(b, full, B, -1).sum(axis=2, dtype=np.int64)
        if take > full * B:                               # the last, partial bin
            bins[:, full] = x[:, full * B:take].sum(axis=1, dtype=np.int64)
        return self.run_bins_batch(np.minimum(bins, 255), rasters)

    def run_bins_batch(self, x: np.ndarray, rasters: bool = False):
        """The core over binned inputs x (B, steps, inputs) (counts <= 255)."""
        tab, n = self.tab, self._n
        b = x.shape[0]
        current = input_current(x, self.core)                     # (B, steps, n)
        state = core_state(self.core, batch=b)
        traces = np.empty((tab.steps, b, n), np.int64)
        out = np.zeros((b, tab.steps, n), np.uint8) if rasters else None
        for t in range(tab.steps):
            z, state = core_step(current[:, t], state, self.core)
            traces[t] = state.vr[:, n:]
            if rasters:
                out[:, t] = z
        acc = np.zeros((tab.segments, b, n), np.int64)
        self._accumulate(acc, traces, self.seg_of)
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
