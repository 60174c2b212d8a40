"""A model file's numbers, checked: the core and readout fields by name, the chip's design rules
in order, and the front-end's tables (pure functions; :class:`~tessera.runtime.chip.Chip` runs
what they return). MODEL_FORMAT.md names every field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .model_format import ModelFile, unpack_ints
from .rram import GF

__all__ = ["ChipTables", "CORE_FIELDS", "READOUT_FIELDS", "SEGMENT_MODES", "tables_of", "design_rules",
           "frontend_of", "level_eq_of"]


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
    segment_mode: str = "window"  # the readout's segments: of the window or the utterance's own

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

    def cos_to_q(self, cosine: float) -> int:
        """A cosine as the readout's registers hold it (units of 2^-cos_frac, rounded): the one
        conversion (:func:`cos_to_q`)."""
        return cos_to_q(cosine, self.cos_frac)

    def cos_from_q(self, q):
        """A cosine register (or an array of them) as a float cosine."""
        return cos_from_q(q, self.cos_frac)



def cos_to_q(cosine: float, cos_frac: int) -> int:
    """A cosine in the readout's fixed point (units of 2^-cos_frac, rounded to nearest)."""
    return int(round(float(cosine) * (1 << cos_frac)))


def cos_from_q(q, cos_frac: int):
    """A fixed-point cosine (an int or an integer array) as float."""
    return q / (1 << cos_frac)


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
#: core.segment_mode (optional; absent: "window"): runtime/segments.py
SEGMENT_MODES = ("window", "own")
#: Optional string fields: section -> {name: (the value when absent, the values allowed)}
OPTIONAL_FIELDS = {"core": {"segment_mode": ("window", SEGMENT_MODES)}, "readout": {}}


def _fields(d, spec: dict, where: str) -> dict:
    """The section ``d`` decoded by ``spec``: unknown and missing fields, and fields of the wrong
    kind, are refused with their names."""
    if not isinstance(d, dict):
        raise InputError(f"model section {where} must be a map")
    optional = OPTIONAL_FIELDS[where]
    unknown = sorted(set(d) - set(spec) - set(optional), key=str)
    if unknown:
        raise InputError(f"model field {where}.{unknown[0]} is not known (this reader knows "
                         f"{', '.join([*spec, *optional])})")
    out = {}
    for key, (default, allowed) in optional.items():
        v = d.get(key, default)
        if not isinstance(v, str) or v not in allowed:
            raise InputError(f"model field {where}.{key} must be one of {', '.join(allowed)}, "
                             f"got {str(v)[:24]!r}")
        out[key] = v
    for key, kind in spec.items():                 # the scalars first: they size the arrays
        if kind == "decay" and not isinstance(d.get(key), dict):
            out[key] = _req(d, key, int, where)
        elif kind not in ("array", "decay"):
            out[key] = _req(d, key, kind, where)
    expect = _EXPECTED[where](out, d)
    for key, kind in spec.items():                 # every array's declared shape is checked
        if key in out:                             # against the model's own dimensions
            continue                               # before anything is inflated or allocated
        out[key] = unpack_ints(_req(d, key, dict, where), f"{where}.{key}", expect.get(key))
    return out


def _int(g: dict, key: str, lo: int, hi: int, where: str) -> int:
    v = g.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InputError(f"model field {where}.{key} must be {lo}..{hi}, got {str(v)[:24]}")
    return v


def _core_shapes(g: dict, d: dict) -> dict:
    """The shapes the core's arrays must have, from its scalars (refused first when they
    exceed the size limits: nothing is sized from an unchecked number)."""
    rows, cols, t = (_int(g, k, 1, 4096, "core") for k in ("rows", "cols", "tile"))
    n, tiles = rows * cols * t, rows * cols
    if n > 4096:
        raise InputError(f"the model is larger than any chip this emulates: {n} neurons "
                         f"(<= 4096)")
    inputs = _int(g, "inputs", 1, 4096, "core")
    routes = d.get("routes")
    shape = routes.get("shape") if isinstance(routes, dict) else None
    p = shape[0] if (isinstance(shape, list) and len(shape) == 2 and isinstance(shape[0], int)
                     and not isinstance(shape[0], bool) and 0 <= shape[0] <= tiles * tiles) \
        else 0
    return {"channels": (inputs,), "w_in": (inputs, n), "shift_in": (tiles,), "bias": (n,),
            "leak_mult": (n,), "trace_mult": (n,), "routes": (p, 3), "w_rec": (p, t, t),
            "shift_rec": (p,)}


def _readout_shapes(g: dict, d: dict) -> dict:
    return {"exp2": (1 << _int(g, "logit_frac", 0, 16, "readout"),)}


_EXPECTED = {"core": _core_shapes, "readout": _readout_shapes}


def design_rules(g: dict) -> list[tuple[str, bool, str]]:
    """(rule, holds, what it requires) for a decoded core + readout ``g``, in checking order."""
    return core_rules(g) + readout_rules(g)


def core_rules(g: dict) -> list[tuple[str, bool, str]]:
    """The core section's design rules, in checking order."""
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
    ]
    return rules


def _feature_bound(g: dict) -> int:
    """The largest per-segment mean f the core can give: a trace's largest value (its width,
    or the bound its decay gives), and never above the accumulator's."""
    decay = int(np.max(np.asarray(g["trace_mult"]), initial=0))
    trace = min((1 << (g["trace_bits"] - 1)) - 1,
                ((1 << g["trace_frac"]) * 65536) // max(65536 - decay, 1) + 1)
    return max(min(trace, (1 << (g["acc_bits"] - 1)) - 1), 1)


def _arithmetic_fits(g: dict) -> bool:
    """Every product and sum of the features and the readout fits a signed 64-bit integer (the
    chip's arithmetic never wraps): phi = (f << PB) // norm, the l2 norm's sum of squares, the
    cosine's (phi . W) << CQ (W: readout levels, shifted by a column scale of at most 62)."""
    if not (2 <= g["trace_bits"] <= 48 and 0 <= g["trace_frac"] <= 46 and 2 <= g["acc_bits"] <= 62
            and g["segments"] >= 1 and min(g["rows"], g["cols"], g["tile"]) >= 1):
        return True                                # an earlier rule names these
    f, pb, cq = _feature_bound(g), g["feature_bits"], g["cos_frac"]
    d = g["segments"] * g["rows"] * g["cols"] * g["tile"]
    w = 1 << (g["readout_bits"] - 1)
    phi_sum = {"l2": math.isqrt(d) + 1 << pb, "l1": 1 << pb}.get(g["normalize"], d * f)
    top = 1 << 63
    return (f << pb) < top and d * f * f < top and (phi_sum * w << cq) < top \
        and (max(phi_sum, 1 << pb) ** 2 < top)


def readout_rules(g: dict) -> list[tuple[str, bool, str]]:
    """The readout section's design rules (after the core's), in checking order."""
    return [
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
        ("calibration range", all(abs(x) < 1 << 40 for x in g["calib"])
         and g["log2e"] < 1 << 24,
         "readout.calib values must be below 2^40 in magnitude and log2e below 2^24 (the "
         "confidence's products stay inside 64 bits)"),
        ("64-bit arithmetic", 1 <= g["feature_bits"] <= 30 and 4 <= g["cos_frac"] <= 16
         and 2 <= g["readout_bits"] <= 16 and _arithmetic_fits(g),
         "the model's widths let the features or the cosines overflow 64 bits (trace_bits, "
         "acc_bits, feature_bits, readout_bits, cos_frac and the segments x neurons are too "
         "large together)"),
    ]


def tables_of(m: ModelFile) -> ChipTables:
    """Decode and check a model file's core and readout sections: every field by name
    (:data:`CORE_FIELDS`, :data:`READOUT_FIELDS`), then the named design rules in order; the
    first rule broken is the error."""
    g = _fields(m.core, CORE_FIELDS, "core")
    g.update(_fields(m.readout, READOUT_FIELDS, "readout"))
    for _, holds, message in design_rules(g):
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


def frontend_of(tab: ChipTables, source: str = "<model>"):
    """The model's front-end (a :class:`~tessera.runtime.frontend.Cochlea` at rest, whose
    running level learns only what it is taught) from its ``frontend`` section, checked by
    running a few steps of sound through it; None when the model reads spikes only."""
    from .frontend import Cochlea, FrontendSpec, tables_from_fixed
    from .poles import exact_poles

    fe = tab.frontend
    if not fe:
        return None
    try:
        spec = FrontendSpec.from_dict(fe["spec"])
        if ("poles" in fe) != ("fc_mhz" in fe):
            raise ValueError("frontend.poles and frontend.fc_mhz come together or not at all")
        if "poles" in fe:
            fixed = unpack_ints(fe["poles"], "frontend.poles", (tab.inputs, spec.order, 4))
            fc = np.asarray(fe["fc_mhz"], np.float64) / 1000.0
        else:                          # format 4: derived exactly from the spec (runtime/poles.py)
            if spec.channels != tab.channels_total:
                raise ValueError(f"frontend.spec has {spec.channels} channels, core.channels_"
                                 f"total {tab.channels_total}")
            fc_mhz, fixed = exact_poles(spec, tab.channels)
            fc = np.asarray(fc_mhz, np.float64) / 1000.0
        if fixed.shape != (tab.inputs, spec.order, 4):
            raise ValueError(f"frontend.poles has shape {fixed.shape}, needs "
                             f"({tab.inputs}, {spec.order}, 4)")
        if fc.shape != (tab.inputs,):
            raise ValueError(f"frontend.fc_mhz has shape {fc.shape}, needs ({tab.inputs},)")
        tables = tables_from_fixed(spec, fc, fixed)._replace(floor_level=int(fe["floor_level"]))
        if fe.get("eq") is not None:
            tables = tables._replace(eq=level_eq_of(fe["eq"], tab.inputs))
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise InputError(f"model front-end section is unusable ({exc})", source=source) from None
    if tables.spec.channels != tab.inputs:
        raise InputError("model front-end channels do not match core.inputs", source=source)
    cochlea = Cochlea(tables=tables, learn_level=False)   # a chip's running level learns only
    try:                                           # what it is taught (learn_speech)
        cochlea.encode(np.tile(np.array([3000, -3000], np.int16),
                               tables.spec.hop * tables.spec.superblock * 2))
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        raise InputError(f"model front-end section is unusable ({exc})", source=source) from None
    cochlea.reset()
    return cochlea


def level_eq_of(d, inputs: int):
    """The front-end's level equalization from a model file's ``frontend.eq`` map."""
    from .leveleq import LevelEq

    if not isinstance(d, dict):
        raise ValueError(f"frontend.eq must be a map, got {type(d).__name__}")
    unknown = sorted(set(d) - {"ref", "gate", "block", "shift", "frac", "prior"})
    if unknown:
        raise ValueError(f"frontend.eq has unknown field(s) {unknown}")
    names = ("gate", "block", "shift", "frac", "prior")
    for k in names:
        if k in d and (isinstance(d[k], bool) or not isinstance(d[k], int)):
            raise ValueError(f"frontend.eq.{k} must be an integer")
    ref = unpack_ints(d["ref"], "frontend.eq.ref", (inputs,))
    return LevelEq(ref, **{k: d[k] for k in names if k in d}).check(inputs)
