"""`tessera export`: a trained model -> the chip's fixed-point ``.tsr`` file (MODEL_FORMAT.md).

Float to integer (the chip's arithmetic is in :mod:`tessera.runtime.chip`):

- membrane unit: threshold / 2^V (``threshold = 2^V``, V = 16 unless the weights need more);
- every weight block (W_in: one per target tile; W_rec: one per connected tile pair of the
  routing table) gets the power-of-two scale 2^shift (in membrane units) that minimises its
  squared quantization error at ``weight_bits`` (clipping the largest weights when that helps);
  levels ``q = clip(round(w 2^V / 2^shift), +-Q)``, Q = 2^(bits-1) - 1;
- leak and trace decay as 16-bit multipliers: round(alpha 2^16), round(kappa 2^16);
- the readout's device rule (prototype columns, cosine scores) with its "none of these" rule:
  threshold, minimum input events (silence) and the calibration of the confidence, from the
  model bundle's ``calibration`` (written by ``tessera calibrate``; defaults otherwise).

The file is built in memory, read back through the chip's own loader (the runtime's decoder,
tables and :class:`~tessera.runtime.chip.Chip`) and checked on a parity sample (seeded random
spike windows: the runtime's spike rasters and features against the trainer's integer mode,
bit for bit) before anything is written; a model that fails is not written.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os

import numpy as np

from ...runtime.errors import InputError
from ...runtime.readout import exp2_table
from ...runtime.tables import cos_to_q
from ...runtime.frontend import FrontendSpec, filter_poles, fixed_poles, floor_level
from ...runtime.poles import exact_poles
from ...runtime.model_format import ModelFile, decode_model, encode_model, pack_ints
from ...runtime.mosaic import hop_matrix
from ...runtime.rram import GF

__all__ = ["ExportConfig", "export_model", "export_bytes", "check_export", "quantize_block",
           "model_calibration", "DEFAULT_CALIBRATION"]


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    weight_bits: int = 8            # core weights (2..8)
    readout_bits: int = 8           # readout weights on the chip
    max_classes: int = 32
    membrane_bits: int = 24
    trace_bits: int = 16
    trace_frac: int = 12
    acc_bits: int = 32
    feature_bits: int = 15
    logit_frac: int = 6
    softmax_frac: int = 15
    cos_frac: int = 12
    bin_ms: int = 10
    none_threshold: float | None = None   # cosine; None: the model's calibration (or 0.8)

    def __post_init__(self) -> None:
        if not 2 <= self.weight_bits <= 8:
            raise InputError(f"weight bits must be 2..8, got {self.weight_bits}")
        if not 2 <= self.readout_bits <= 16:
            raise InputError(f"readout bits must be 2..16, got {self.readout_bits}")
        if self.none_threshold is not None and not -1.0 <= self.none_threshold <= 1.0:
            raise InputError(f"the none threshold is a cosine in [-1, 1], got "
                             f"{self.none_threshold}")
        if not 1 <= self.max_classes <= 1024:
            raise InputError("max classes must be 1..1024")


def quantize_block(w: np.ndarray, bits: int, unit_bits: int) -> tuple[np.ndarray, int]:
    """Levels and shift of one block: w * 2^unit_bits ~ q << shift, shift >= GF, the shift of
    least squared error among the four largest useful ones."""
    qmax = (1 << (bits - 1)) - 1
    a = np.asarray(w, np.float64) * 2.0 ** unit_bits
    peak = float(np.abs(a).max(initial=0.0))
    if peak == 0.0:
        return np.zeros(a.shape, np.int64), GF
    top = max(GF, math.ceil(math.log2(peak / qmax)))
    best = None
    for s in range(top, max(GF, top - 3) - 1, -1):
        q = np.clip(np.rint(a / 2.0 ** s), -qmax, qmax)
        err = float(((q * 2.0 ** s - a) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, q.astype(np.int64), s)
    return best[1], best[2]


#: used when a model's bundle has no calibration: a cosine threshold, no spike floor, and a
#: confidence that rises from 0.5 at the threshold
DEFAULT_CALIBRATION = dict(none_threshold=0.8, min_inputs=0, calib=[20.0, 0.0, -16.0])


def model_calibration(model) -> dict:
    """The open-set calibration a model carries in its bundle (``source``: what it was fitted
    on), or the defaults (``source`` None)."""
    c = getattr(model, "calibration", None)
    if not c:
        return dict(DEFAULT_CALIBRATION, source=None)
    try:
        out = dict(none_threshold=float(c["none_threshold"]), min_inputs=int(c["min_inputs"]),
                   calib=[float(x) for x in c["calib"]],
                   source=str(c.get("fitted_on") or "the model's bundle"))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unusable calibration in the model ({type(exc).__name__}: {exc})",
                         source=getattr(model, "path", "")) from None
    if len(out["calib"]) != 3 or not -1 <= out["none_threshold"] <= 1 or out["min_inputs"] < 0:
        raise InputError("calibration needs calib [a, m, b], a threshold in [-1, 1] and "
                         "min_inputs >= 0", source=getattr(model, "path", ""))
    return out


def _decays(model) -> dict:
    """leak_mult and trace_mult: one integer each, or per-neuron packed arrays when the core
    learned its time constants (units of 2^-16, below 2^16)."""
    import torch

    from ..learning.model import decays

    alpha, kappa = decays(model.core.params, model.core.cfg)
    out = {}
    for k, d in (("leak_mult", alpha), ("trace_mult", kappa)):
        if torch.is_tensor(d):
            m = np.clip(np.round(d.detach().numpy().astype(np.float64) * 65536), 0, 65535)
            out[k] = pack_ints(m.astype(np.int64), 16, signed=False)
        else:
            out[k] = min(int(round(d * 65536)), 65535)
    return out


def _quantized_core(p: dict, core, bits: int, V: int) -> tuple:
    """The core's weights as the chip's integer tables: input weights per tile, and the
    recurrent blocks between tiles that hold a non-zero level (with their routes and hops)."""
    n, t, tiles, theta = core.neurons, core.tile, core.rows * core.cols, core.theta
    w_in = p["w_in"] / theta
    w_rec = p["w_rec"] / theta
    hops = hop_matrix(core.rows, core.cols)
    q_in = np.zeros((core.inputs, n), np.int64)
    sh_in = np.zeros(tiles, np.int64)
    for j in range(tiles):
        q_in[:, j * t:(j + 1) * t], sh_in[j] = quantize_block(w_in[:, j * t:(j + 1) * t],
                                                              bits, V)
    routes, blocks, sh_rec = [], [], []
    for a in range(tiles):
        for b in range(tiles):
            blk = w_rec[a * t:(a + 1) * t, b * t:(b + 1) * t]
            if not np.any(blk):
                continue
            q, s = quantize_block(blk, bits, V)
            if not np.any(q):
                continue
            routes.append((a, b, int(hops[a, b])))
            blocks.append(q)
            sh_rec.append(s)
    return q_in, sh_in, routes, blocks, sh_rec


def _frontend_section(spec: FrontendSpec, chans: np.ndarray, eq) -> dict:
    """The model file's front-end: the filterbank of the channels the model reads and its level
    equalization (``eq``, or none)."""
    fc, pole, r = filter_poles(spec)
    fc_mhz, fixed = [int(round(f * 1000)) for f in fc[chans]], fixed_poles(pole[chans], r[chans])
    frontend = dict(spec=spec.to_dict(), floor_level=floor_level(spec))
    exact_mhz, exact = exact_poles(spec, chans)
    if exact_mhz != fc_mhz or not np.array_equal(exact, fixed):
        # a reader derives the poles exactly (runtime/poles.py); where float64 rounded one
        # the other way, the file carries the ones the model was trained with
        frontend.update(fc_mhz=fc_mhz, poles=pack_ints(fixed, 32))
    if eq is not None:                     # the long-term level equalization, channels read
        frontend["eq"] = dict(ref=pack_ints(eq.ref[chans], 16, signed=False), gate=eq.gate,
                              block=eq.block, shift=eq.shift, frac=eq.frac, prior=eq.prior)
    return frontend


def export_model(model, out: str, cfg: ExportConfig | None = None, accuracy: dict | None = None,
                 source: str = "", calibration: dict | None = None, parity: int = 8) -> dict:
    """Write ``model`` (a :class:`~tessera.trainer.learning.train.Model`) as a ``.tsr`` file,
    once its bytes read back through the chip's loader and pass :func:`check_export` on
    ``parity`` windows (nothing is written otherwise)."""
    from ...runtime.atomic import write_atomic

    blob, info = export_bytes(model, cfg, accuracy, source, calibration)
    info["parity"] = check_export(blob, samples=parity, source=source or out)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    write_atomic(out, blob)
    return dict(out=out, **info)


def check_export(blob: bytes, samples: int = 8, seed: int = 0, source: str = "") -> dict:
    """Read a ``.tsr``'s bytes back through the chip's own loader and run ``samples`` seeded
    random spike windows through the chip (as a stream, in pieces, and as a batch) and through
    the trainer's integer mode (:class:`~tessera.trainer.learning.intmode.IntCore`): spike
    rasters and features must agree bit for bit. Raises :class:`InputError` naming the first
    difference."""
    import torch

    from ...runtime.chip import Chip
    from ..learning.intmode import IntCore

    chip = Chip(decode_model(blob, source or "<export>"))
    tab = chip.tab
    ms = tab.steps * tab.bin_ms
    rng = np.random.default_rng(seed)
    frames = np.zeros((samples, ms, tab.channels_total), np.uint8)
    rate = rng.uniform(0.005, 0.05, samples)
    for j in range(samples):
        frames[j][:, tab.channels] = rng.random((ms, tab.inputs)) < rate[j]
    ref = IntCore(tab)
    ras_ref, phi_ref = ref.forward(ref.bins(torch.from_numpy(frames)))
    batch = chip.run_batch(frames)
    for j in range(samples):
        chip.reset()
        cuts = np.sort(rng.integers(0, ms + 1, size=3))
        pieces = [chip.run(c) for c in np.split(frames[j], cuts)]
        phi = chip.features()
        ras = np.vstack(pieces + [chip.tail])
        for what, a, b in (("spike raster", ras, ras_ref[j].numpy()),
                           ("features (stream)", phi, phi_ref[j].numpy()),
                           ("features (batch)", batch[j], phi_ref[j].numpy())):
            if not np.array_equal(a, b):
                raise InputError(f"export check: the exported file's {what} of parity window "
                                 f"{j} differs from the trainer's integer mode: not written",
                                 source=source)
    chip.reset()
    return dict(windows=samples, bit_exact=True, checked=["read back by the chip's loader",
                                                           "spike rasters", "features"])


def export_bytes(model, cfg: ExportConfig | None = None, accuracy: dict | None = None,
                 source: str = "", calibration: dict | None = None) -> tuple[bytes, dict]:
    """``model`` as the bytes of a ``.tsr`` file, and what they hold."""
    cfg = cfg or ExportConfig()
    core = model.core.cfg
    if core.kind != "lif":
        raise InputError(f"only spiking (lif) cores run on the chip; this model is a {core.kind} "
                         f"baseline", source=source)
    if core.adapt:
        raise InputError(f"the chip has no adaptation trace; this model was trained with "
                         f"core.adapt = {core.adapt}", source=source)
    p = {k: (v * model.core.masks[k]).detach().numpy().astype(np.float64)
         if k in model.core.masks else v.detach().numpy().astype(np.float64)
         for k, v in model.core.params.items()}
    t = core.tile
    theta = core.theta
    V = 16
    q_in, sh_in, routes, blocks, sh_rec = _quantized_core(p, core, cfg.weight_bits, V)
    bias = np.rint(p["b"] / theta * 2.0 ** V).astype(np.int64)
    lr = float(model.lrs["w_out"])
    cal = calibration or model_calibration(model)
    thr = cal["none_threshold"] if cfg.none_threshold is None else cfg.none_threshold
    one_l = 1 << cfg.logit_frac
    dc = model.config.data
    stride = dc.channel_subsets
    spec = FrontendSpec()
    chans = np.arange(core.inputs, dtype=np.int64) * stride            # subset 0: 0, k, 2k, ...
    if chans.max() >= spec.channels:
        raise InputError(f"the model's {core.inputs} inputs x {stride} subsets exceed the front-"
                         f"end's {spec.channels} channels", source=source)
    bin_ms = int(round(1000 * dc.duration / dc.steps))
    if abs(bin_ms * dc.steps - 1000 * dc.duration) > 1e-6:
        raise InputError(f"the model's bins ({dc.duration} s / {dc.steps}) are not whole "
                         f"milliseconds", source=source)
    cfg_digest = hashlib.sha256(json.dumps(
        dataclasses.asdict(model.config), sort_keys=True, default=str).encode()).hexdigest()[:16]
    meta = dict(created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                source=source, iteration=model.iteration, config_sha256_16=cfg_digest,
                algorithm=model.config.meta.algorithm, inner_lr=lr,
                accuracy_at_export=accuracy or {
                    f"{r_['shots']}-shot": r_["accuracy"] for r_ in model.extra.get("results", [])},
                export=dataclasses.asdict(cfg))
    frontend = _frontend_section(spec, chans, model.level_eq)
    mf = ModelFile(
        meta=meta,
        frontend=frontend,
        core=dict(rows=core.rows, cols=core.cols, tile=t, inputs=core.inputs,
                  channels_total=spec.channels, channels=pack_ints(chans, 16, signed=False),
                  bin_ms=bin_ms, steps=dc.steps, segments=core.segments,
                  weight_bits=cfg.weight_bits, w_in=pack_ints(q_in, cfg.weight_bits),
                  shift_in=pack_ints(sh_in, 8, signed=False),
                  routes=pack_ints(np.array(routes, np.int64).reshape(-1, 3), 8, signed=False),
                  w_rec=pack_ints(np.array(blocks, np.int64).reshape(-1, t, t), cfg.weight_bits),
                  shift_rec=pack_ints(np.array(sh_rec, np.int64), 8, signed=False),
                  bias=pack_ints(bias, 32), threshold=1 << V,
                  **_decays(model), refractory=0,
                  membrane_bits=cfg.membrane_bits, trace_bits=cfg.trace_bits,
                  trace_frac=cfg.trace_frac, acc_bits=cfg.acc_bits,
                  **({"segment_mode": "own"} if core.segment_mode == "own" else {})),
        readout=dict(normalize=core.normalize, feature_bits=cfg.feature_bits,
                     readout_bits=cfg.readout_bits, max_classes=cfg.max_classes,
                     rule="prototype", cos_frac=cfg.cos_frac,
                     none_threshold=cos_to_q(thr, cfg.cos_frac),
                     min_inputs=int(cal["min_inputs"]),
                     calib=[int(round(x * one_l)) for x in cal["calib"]],
                     logit_frac=cfg.logit_frac,
                     softmax_frac=cfg.softmax_frac, log2e=int(round(math.log2(math.e) * 65536)),
                     exp2=pack_ints(exp2_table(cfg.logit_frac), 32, signed=False)),
        labels=[])
    blob = encode_model(mf)
    return blob, dict(bytes=len(blob), weight_bits=cfg.weight_bits, routes=len(routes),
                none_threshold=thr, calibrated=cal["source"], connections=int(
                    sum(int((b != 0).sum()) for b in blocks)))
