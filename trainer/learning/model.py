"""Recurrent spiking core on Mosaic tiles plus leaky readout (torch, float mode).

This docstring owns the network's equations; the integer mode and the runtime link here.

One step (dt = one time bin), neuron state v, spikes z::

    I(t) = x(t) W_in + z(t-1) W_rec + b
    v(t) = alpha * v(t-1) + I(t) - theta * z(t-1)          (reset by subtraction)
    z(t) = H(v(t) - theta)                                 surrogate dH/dv = 1 / (beta |v - theta| + 1)^2

alpha = exp(-dt / tau_mem) for every neuron, or one meta-learned value per neuron with
``tau_learn`` (alpha = sigmoid(a_mem), likewise kappa below; the chip's per-neuron ``leak_mult``
and ``trace_mult``). With ``adapt`` > 0 (trainer only, not on the chip), an adaptation trace
a(t) = rho a(t-1) + z(t) is subtracted from the membrane: v(t) -= adapt * a(t-1).

Readout (a leaky integrator per class, read as its mean over time)::

    r(t) = kappa * r(t-1) + z(t)                            filtered spikes
    phi  = mean_t r(t)  (optionally divided by its L2 norm)  the readout's feature vector
           with ``segments`` = S > 1: the means of r over S equal time segments, concatenated
           (S weight banks in the readout, bank s integrating during segment s)
    logits = phi W_out + b_out                              = mean_t of o(t) = kappa o(t-1) + z(t) W_out

Because the readout is linear in its weights, one SGD step of the readout from zero (the device
rule) is a prototype classifier on ``phi``: see :mod:`tessera.trainer.learning.meta`.

Parameters live in a plain dict of tensors (``w_in``, ``w_rec``, ``b``, ``w_out``, ``b_out``) so
``torch.func`` can treat them functionally. The recurrent matrix is masked by the layout
(connections beyond the hop budget are structurally zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ...runtime.mosaic import Layout

__all__ = ["fast_sigmoid", "spike", "CoreConfig", "LIFState", "decays", "lif_step", "init_params", "input_lengths", "core_features",
           "readout_logits", "Core", "lif_spikes", "own_segments"]


def fast_sigmoid(u: torch.Tensor, beta: float) -> torch.Tensor:
    """u / (beta |u| + 1): its derivative is the surrogate 1 / (beta |u| + 1)^2."""
    return u / (beta * u.abs() + 1.0)


def spike(u: torch.Tensor, beta: float = 10.0) -> torch.Tensor:
    """Heaviside forward, fast-sigmoid surrogate gradient 1 / (beta |u| + 1)^2.

    Written as H(u) + s(u) - stop_grad(s(u)) with s the fast sigmoid, in plain torch ops: every
    order of derivative flows (MAML's second order: d/du of the surrogate is
    -2 beta sign(u) / (beta |u| + 1)^3) and ``torch.func`` transforms apply without a custom
    autograd Function.
    """
    s = fast_sigmoid(u, beta)
    return (u >= 0).to(u.dtype) + (s - s.detach())      # exactly 0 or 1 forward


@dataclass(frozen=True)
class CoreConfig:
    inputs: int = 233
    rows: int = 4
    cols: int = 4
    tile: int = 16
    tau_mem_ms: float = 30.0
    tau_out_ms: float = 60.0
    dt_ms: float = 10.0
    theta: float = 1.0
    surrogate_beta: float = 10.0
    max_hops: int = 27            # hop budget: recurrent connections longer than this are removed
    border_inputs: bool = False   # inputs enter only the first row of tiles (as on the Mosaic)
    normalize: str = "l2"         # readout features: "none", "l1" or "l2"
    classes: int = 5              # readout width (ways)
    dense: bool = False           # the dense baseline: all-to-all, no layout loss, no pruning
    smooth: bool = False          # replace spikes by the fast sigmoid (gradient checks only)
    segments: int = 8             # readout banks: phi = filtered spikes averaged per time segment
    segment_mode: str = "window"  # segments of the window ("window") or of each utterance's own
                                  # length, up to its last input bin ("own"; input_lengths)
    kind: str = "lif"             # "lif" (the spiking core) or "gru" (the non-spiking baseline)
    tau_learn: bool = False       # per-neuron time constants, meta-learned (params a_mem, a_out)
    tau_spread: float = 1.0       # their initial values: log-uniform over [tau, tau_spread * tau]
    adapt: float = 0.0            # spike-frequency adaptation: v -= adapt * a(t-1), 0 = off
    tau_adapt_ms: float = 300.0   # a(t) = rho a(t-1) + z(t), rho = exp(-dt / tau_adapt)

    def __post_init__(self) -> None:
        if self.kind not in ("lif", "gru"):
            raise ValueError(f"unknown core kind {self.kind!r} (lif or gru)")
        if self.segment_mode not in ("window", "own"):
            raise ValueError(f"unknown segment_mode {self.segment_mode!r} (window or own)")
        if self.segment_mode == "own" and (self.kind != "lif" or self.adapt or self.smooth):
            raise ValueError("segment_mode own needs the plain LIF core (no adaptation, spikes)")

    @property
    def layout(self) -> Layout:
        return Layout(self.rows, self.cols, self.tile)

    @property
    def neurons(self) -> int:
        return self.rows * self.cols * self.tile

    @property
    def alpha(self) -> float:
        return math.exp(-self.dt_ms / self.tau_mem_ms)

    @property
    def kappa(self) -> float:
        return math.exp(-self.dt_ms / self.tau_out_ms)

    @property
    def rho(self) -> float:
        return math.exp(-self.dt_ms / self.tau_adapt_ms)

    @property
    def gates(self) -> int:
        """Columns of W_in / W_rec per neuron: 1, or 3 for the GRU (reset, update, candidate)."""
        return 3 if self.kind == "gru" else 1

    def rec_mask(self) -> np.ndarray:
        n = self.neurons
        if self.kind == "gru":
            return np.ones((n, 3 * n), bool)
        if self.dense:
            return ~np.eye(n, dtype=bool)
        m = self.layout.hop_mask(self.max_hops)
        np.fill_diagonal(m, False)
        return m

    def in_mask(self) -> np.ndarray:
        if self.kind == "gru":
            return np.ones((self.inputs, 3 * self.neurons), bool)
        if self.border_inputs and not self.dense:
            return self.layout.input_mask(self.inputs)
        return np.ones((self.inputs, self.neurons), bool)


class LIFState(NamedTuple):
    v: torch.Tensor
    z: torch.Tensor
    r: torch.Tensor
    a: torch.Tensor | float = 0.0     # the adaptation trace (``adapt`` > 0)


def decays(p: dict, cfg: CoreConfig) -> tuple:
    """(alpha, kappa): floats, or per-neuron tensors (n,) when the core learns its time
    constants (alpha = sigmoid(a_mem), kappa = sigmoid(a_out))."""
    if "a_mem" in p:
        return torch.sigmoid(p["a_mem"]), torch.sigmoid(p["a_out"])
    return cfg.alpha, cfg.kappa


def lif_step(drive: torch.Tensor, state: LIFState, w_rec: torch.Tensor, cfg: CoreConfig,
             alpha=None, kappa=None) -> tuple[torch.Tensor, LIFState]:
    """One time step (see the module docstring); ``drive`` is x(t) W_in + b, (batch, n);
    ``alpha`` and ``kappa`` (floats or per-neuron tensors) default to the config's."""
    alpha = cfg.alpha if alpha is None else alpha
    kappa = cfg.kappa if kappa is None else kappa
    v = alpha * state.v + drive + state.z @ w_rec - cfg.theta * state.z - cfg.adapt * state.a
    if cfg.smooth:
        z = 0.5 + 0.5 * fast_sigmoid(v - cfg.theta, cfg.surrogate_beta)
    else:
        z = spike(v - cfg.theta, cfg.surrogate_beta)
    r = kappa * state.r + z
    a = cfg.rho * state.a + z if cfg.adapt else state.a
    return z, LIFState(v, z, r, a)


def init_params(cfg: CoreConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, k = cfg.neurons, cfg.gates
    w_in = torch.randn(cfg.inputs, k * n, generator=g) * (1.0 / math.sqrt(cfg.inputs))
    w_rec = torch.randn(n, k * n, generator=g) * ((1.0 if k == 3 else 0.5) / math.sqrt(n))
    w_in = w_in * torch.from_numpy(cfg.in_mask())
    w_rec = w_rec * torch.from_numpy(cfg.rec_mask())
    p = {"w_in": w_in, "w_rec": w_rec, "b": torch.zeros(k * n),
         "w_out": torch.zeros(n * cfg.segments, cfg.classes), "b_out": torch.zeros(cfg.classes)}
    if cfg.tau_learn:
        for key, tau in (("a_mem", cfg.tau_mem_ms), ("a_out", cfg.tau_out_ms)):
            taus = tau * cfg.tau_spread ** torch.rand(n, generator=g)
            decay = torch.exp(-cfg.dt_ms / taus)
            p[key] = torch.log(decay / (1 - decay))          # sigmoid(a) = decay
    return p


class _LIFScan(torch.autograd.Function):
    """The core's time loop with a hand-written BPTT backward (first order only).

    Same equations as :func:`lif_step`; it saves only the membrane potentials and spikes, and
    its backward runs one matmul and a few elementwise ops per step, about 3x faster than
    autograd's tape. Not twice differentiable: MAML's second order uses the plain loop.
    Returns (acc = sum_t r(t), spike count per neuron summed over batch and time).
    """

    @staticmethod
    def forward(ctx, drive, w_rec, alpha, kappa, theta, beta, bptt, segments, adapt=0.0, rho=0.0):
        b, steps, n = drive.shape
        seg_of = [t * segments // steps for t in range(steps)]
        w_eff = w_rec - theta * torch.eye(n, dtype=drive.dtype)
        v = drive.new_zeros(b, n)
        z = drive.new_zeros(b, n)
        r = drive.new_zeros(b, n)
        acc = drive.new_zeros(segments, b, n)
        vs = drive.new_empty(steps, b, n)
        zs = drive.new_empty(steps + 1, b, n)
        rs = drive.new_empty(steps, b, n) if ctx.needs_input_grad[3] else None
        a = drive.new_zeros(b, n)
        zs[0] = 0
        for t in range(steps):
            v = alpha * v + drive[:, t] + z @ w_eff
            if adapt:
                v = v - adapt * a
            z = (v >= theta).to(drive.dtype)
            if adapt:
                a = rho * a + z
            r = kappa * r + z
            acc[seg_of[t]] += r
            vs[t] = v
            zs[t + 1] = z
            if rs is not None:
                rs[t] = r
        ctx.save_for_backward(vs, zs, w_eff, rs if rs is not None else vs.new_empty(0),
                              alpha if torch.is_tensor(alpha) else torch.tensor(alpha),
                              kappa if torch.is_tensor(kappa) else torch.tensor(kappa))
        ctx.consts = (theta, beta, bptt, seg_of, adapt, rho)
        return acc, zs[1:].sum(dim=(0, 1))

    @staticmethod
    def backward(ctx, g_acc, g_count):
        vs, zs, w_eff, rs, alpha, kappa = ctx.saved_tensors
        theta, beta, bptt, seg_of, adapt, rho = ctx.consts
        steps, b, n = vs.shape
        first = 0 if bptt is None else max(0, steps - bptt)
        g_r = torch.zeros_like(g_acc[0])
        g_v_next = torch.zeros_like(g_acc[0])
        g_drive = vs.new_zeros(b, steps, n)
        g_vs = vs.new_zeros(steps, b, n)
        g_kappa = vs.new_zeros(n) if ctx.needs_input_grad[3] else None
        g_a = torch.zeros_like(g_acc[0])
        w_t = w_eff.t()
        for t in range(steps - 1, first - 1, -1):
            g_r = g_acc[seg_of[t]] + kappa * g_r
            if g_kappa is not None and t > 0:            # r(t) = kappa r(t-1) + z(t)
                g_kappa += (g_r * rs[t - 1]).sum(0)
            g_z = g_r + g_v_next @ w_t + g_count
            if adapt:                                    # a(t) = rho a(t-1) + z(t); v(t+1) -= adapt a(t)
                g_a = rho * g_a - adapt * g_v_next
                g_z = g_z + g_a
            u = vs[t] - theta
            g_v = g_z / (beta * u.abs() + 1.0) ** 2 + alpha * g_v_next
            g_vs[t] = g_v
            g_drive[:, t] = g_v
            g_v_next = g_v
        g_w = torch.einsum("tbi,tbj->ij", zs[first:steps], g_vs[first:])
        g_alpha = None
        if ctx.needs_input_grad[2]:                      # v(t) = alpha v(t-1) + ...
            lo = max(first, 1)                           # v(-1) = 0
            g_alpha = torch.einsum("tbj,tbj->j", g_vs[lo:], vs[lo - 1:steps - 1])
        return g_drive, g_w, g_alpha, g_kappa, None, None, None, None, None, None


class _LIFSpikes(torch.autograd.Function):
    """The core's time loop returning every step's spikes z and traces r (batch, steps, n), so
    that any readout can be built on them (segments of each utterance's own length, counts or
    traces); a hand-written BPTT backward like :class:`_LIFScan` (first order only)."""

    @staticmethod
    def forward(ctx, drive, w_rec, alpha, kappa, theta, beta):
        b, steps, n = drive.shape
        w_eff = w_rec - theta * torch.eye(n, dtype=drive.dtype)
        v = drive.new_zeros(b, n)
        z = drive.new_zeros(b, n)
        r = drive.new_zeros(b, n)
        vs = drive.new_empty(steps, b, n)
        zs = drive.new_zeros(steps + 1, b, n)
        rs = drive.new_empty(steps, b, n)
        for t in range(steps):
            v = alpha * v + drive[:, t] + z @ w_eff
            z = (v >= theta).to(drive.dtype)
            r = kappa * r + z
            vs[t], zs[t + 1], rs[t] = v, z, r
        ctx.save_for_backward(vs, zs, w_eff, rs,
                              alpha if torch.is_tensor(alpha) else torch.tensor(alpha),
                              kappa if torch.is_tensor(kappa) else torch.tensor(kappa))
        ctx.consts = (theta, beta)
        return zs[1:].transpose(0, 1), rs.transpose(0, 1)

    @staticmethod
    def backward(ctx, g_z_out, g_r_out):
        vs, zs, w_eff, rs, alpha, kappa = ctx.saved_tensors
        theta, beta = ctx.consts
        steps, b, n = vs.shape
        g_z_out = g_z_out.transpose(0, 1)
        g_r_out = g_r_out.transpose(0, 1)
        g_r = vs.new_zeros(b, n)
        g_v_next = vs.new_zeros(b, n)
        g_vs = vs.new_empty(steps, b, n)
        g_kappa = vs.new_zeros(n) if ctx.needs_input_grad[3] else None
        w_t = w_eff.t()
        for t in range(steps - 1, -1, -1):
            g_r = g_r_out[t] + kappa * g_r
            if g_kappa is not None and t > 0:
                g_kappa += (g_r * rs[t - 1]).sum(0)
            g_z = g_z_out[t] + g_r + g_v_next @ w_t
            g_v = g_z / (beta * (vs[t] - theta).abs() + 1.0) ** 2 + alpha * g_v_next
            g_vs[t] = g_v
            g_v_next = g_v
        g_w = torch.einsum("tbi,tbj->ij", zs[:steps], g_vs)
        g_alpha = None
        if ctx.needs_input_grad[2]:
            g_alpha = torch.einsum("tbj,tbj->j", g_vs[1:], vs[:-1])
            g_alpha = g_alpha.sum() if alpha.dim() == 0 else g_alpha
        if g_kappa is not None and kappa.dim() == 0:
            g_kappa = g_kappa.sum()
        return g_vs.transpose(0, 1), g_w, g_alpha, g_kappa, None, None


def lif_spikes(drive: torch.Tensor, w_rec: torch.Tensor, alpha, kappa, theta: float = 1.0,
               beta: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step's spikes and readout traces (batch, steps, n) of the core driven by ``drive``
    (batch, steps, n) = x W_in + b: the equations of this module's docstring."""
    return _LIFSpikes.apply(drive, w_rec, alpha, kappa, theta, beta)


def input_lengths(x: torch.Tensor, window: int) -> torch.Tensor:
    """Each utterance's own length in bins (batch,): up to and including its last bin with an
    input event, at most ``window`` and at least 1 (the chip's rule for ``segment_mode`` "own":
    trailing silence never changes the features)."""
    t = torch.arange(1, x.shape[1] + 1)
    last = ((x[:, :window] != 0).any(-1).long() * t[:window]).amax(1) if x.shape[1] else None
    return torch.ones(x.shape[0], dtype=torch.long) if last is None else last.clamp(min=1)


def own_segments(z: torch.Tensor, lens: torch.Tensor, segments: int) -> torch.Tensor:
    """Means of ``z`` (batch, steps, n) over ``segments`` equal parts of each utterance's own
    length ``lens`` (batch,), concatenated segment-major: (batch, segments * n)."""
    b, steps, n = z.shape
    t = torch.arange(steps, dtype=z.dtype)[None]
    seg = torch.clamp((t * segments / lens[:, None].to(z.dtype)).long(), max=segments - 1)
    oh = torch.nn.functional.one_hot(seg, segments).to(z.dtype) * (t < lens[:, None]).to(z.dtype)[..., None]
    acc = torch.einsum("bts,btn->bsn", oh, z) / oh.sum(1).clamp(min=1)[..., None]
    return acc.reshape(b, segments * n)


def core_features(x: torch.Tensor, p: dict, cfg: CoreConfig, masks: dict | None = None,
                  bptt: int | None = None, fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the core over ``x`` (batch, steps, inputs).

    Returns the readout features phi (batch, segments * n) and the mean firing rate per neuron (n,).
    ``bptt`` truncates backpropagation to the last ``bptt`` steps.
    """
    b, steps, _ = x.shape
    n = cfg.neurons
    w_in, w_rec = p["w_in"], p["w_rec"]
    if masks is not None:
        w_in = w_in * masks["w_in"]
        w_rec = w_rec * masks["w_rec"]
    if cfg.segment_mode == "own":              # equal parts of each utterance's own length
        alpha, kappa = decays(p, cfg)
        z, tr = lif_spikes(x @ w_in + p["b"], w_rec, alpha, kappa, cfg.theta, cfg.surrogate_beta)
        phi = own_segments(tr, input_lengths(x, steps), cfg.segments)
        return normalize_rows(phi, cfg.normalize), z.mean((0, 1))
    if cfg.kind == "gru":
        acc, rate = _gru_scan(x, w_in, w_rec, p["b"], cfg)
    elif fused and not cfg.smooth:
        drive = (x.reshape(b * steps, -1) @ w_in).reshape(b, steps, n) + p["b"]  # all steps at once
        alpha, kappa = decays(p, cfg)
        acc, count = _LIFScan.apply(drive, w_rec, alpha, kappa, cfg.theta,
                                    cfg.surrogate_beta, bptt, cfg.segments, cfg.adapt, cfg.rho)
        rate = count / (b * steps)
    else:
        drive = (x.reshape(b * steps, -1) @ w_in).reshape(b, steps, n) + p["b"]
        zero = x.new_zeros(b, n)
        state = LIFState(zero, zero, zero)
        alpha, kappa = decays(p, cfg)
        acc = [x.new_zeros(b, n) for _ in range(cfg.segments)]
        rate = x.new_zeros(n)
        for t in range(steps):
            if bptt is not None and t == steps - bptt:
                state = LIFState(*(s_.detach() if torch.is_tensor(s_) else s_ for s_ in state))
                acc = [a.detach() for a in acc]
            z, state = lif_step(drive[:, t], state, w_rec, cfg, alpha, kappa)
            seg = t * cfg.segments // steps
            acc[seg] = acc[seg] + state.r
            early = bptt is not None and t < steps - bptt      # outside the truncation window
            rate = rate + (z.detach() if early else z).mean(0)
        rate = rate / steps
        acc = torch.stack(acc)
    # (segments, b, n) -> (b, segments * n), each segment's mean
    return readout_features(acc, steps, cfg.normalize), rate


def readout_features(acc: torch.Tensor, steps: int, normalize: str) -> torch.Tensor:
    """The readout features from the trace sums per segment ``acc`` (segments, b, n): each
    segment's mean, segment-major (b, segments * n), normalized ("l2", "l1" or "none")."""
    segments, b = acc.shape[0], acc.shape[1]
    lens = torch.tensor([sum(1 for t in range(steps) if t * segments // steps == s_)
                         for s_ in range(segments)], dtype=acc.dtype)
    return normalize_rows((acc / lens[:, None, None]).permute(1, 0, 2).reshape(b, -1), normalize)


def normalize_rows(phi: torch.Tensor, normalize: str) -> torch.Tensor:
    """Each row of ``phi`` normalized: "l2", "l1" or "none"."""
    if normalize == "l2":
        return phi / (phi.norm(dim=1, keepdim=True) + 1e-6)
    if normalize == "l1":
        return phi / (phi.sum(dim=1, keepdim=True) + 1e-6)
    return phi


def _gru_scan(x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor, b: torch.Tensor,
              cfg: CoreConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-spiking baseline: a GRU (PyTorch's gate equations, no hidden-side bias) whose
    hidden state h takes the place of the filtered spikes r in the readout. Runs torch's fused
    GRU kernel through ``torch.func.functional_call`` (about 6x faster than a Python loop;
    ``bptt`` truncation does not apply to it). Returns (per-segment sums of h, zero rates)."""
    steps, n = x.shape[1], cfg.neurons
    key = (x.shape[-1], n)
    if key not in _GRU_MODULES:
        _GRU_MODULES[key] = torch.nn.GRU(x.shape[-1], n, batch_first=True)
    params = {"weight_ih_l0": w_in.t(), "weight_hh_l0": w_rec.t(), "bias_ih_l0": b,
              "bias_hh_l0": b.new_zeros(3 * n)}
    h, _ = torch.func.functional_call(_GRU_MODULES[key], params, (x,))
    seg = torch.arange(steps) * cfg.segments // steps
    acc = torch.stack([h[:, seg == s_].sum(1) for s_ in range(cfg.segments)])
    return acc, x.new_zeros(n)


_GRU_MODULES: dict = {}


def readout_logits(phi: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
    return phi @ w_out + b_out


class Core:
    """Holds a config, its layout masks and parameters (a dict of leaf tensors)."""

    def __init__(self, cfg: CoreConfig, seed: int = 0):
        self.cfg = cfg
        self.params = {k: v.requires_grad_(True) for k, v in init_params(cfg, seed).items()}
        self.masks = {"w_in": torch.from_numpy(cfg.in_mask()).float(),
                      "w_rec": torch.from_numpy(cfg.rec_mask()).float()}

    def features(self, x: torch.Tensor, params: dict | None = None, bptt: int | None = None,
                 fused: bool = True):
        return core_features(x, params or self.params, self.cfg, self.masks, bptt, fused)
