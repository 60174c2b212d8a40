"""RRAM device model for hardware-aware training (torch, straight-through gradients).

A weight w in [-w_max, w_max] is held by a differential pair of conductances (G+, G-) in
[g_min, g_max] (REFERENCE.md: 0.1-12 uS). The device effects, each optional:

- levels: a device holds one of ``levels`` equally spaced conductances; programming rounds to a
  level deterministically or stochastically (seed 003's Q_{C,S});
- write noise on every programming: std = a * G + b (a = 0.09, b = 0.26 uS);
- read noise on every read: std = 0.03 * G + 0.13 uS;
- drift: G(t) = G0 * (t / t0)^(-nu), t0 = 38.6 s, nu = 0.04 (for t > t0);
- stuck-at faults: a fixed fraction of devices stuck at g_min or g_max.

``device_weight`` returns the weight the hardware would compute with; its gradient is the identity
(straight-through), so training sees the noise and the levels but learns the ideal weights.
Inner-loop updates have their own transforms: ``quantize_update`` (bits, stochastic rounding),
``threshold_update`` (apply only |dw| above a fraction of the range) and the error-triggered
rule of SOEL (:func:`error_triggered`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RRAMTrainConfig", "quantize", "device_weight", "quantize_update", "threshold_update",
           "error_triggered"]


@dataclass(frozen=True)
class RRAMTrainConfig:
    """The device model that training sees (the ``[rram]`` config section), in physical units:
    conductances in µS, noise as (a, b) of std = a·G + b µS. Not the chip's own emulation
    (:class:`tessera.runtime.rram.RRAMConfig`, in fractions of the level range Q)."""

    enabled: bool = False
    weight_bits: int = 0             # 0: no level quantization; else 2^(bits-1) - 1 levels per sign
    stochastic: bool = False         # stochastic rounding when programming
    w_max_std: float = 2.5           # w_max = w_max_std * std(w) (the clipping range)
    g_min: float = 0.1               # uS
    g_max: float = 12.0
    write_noise: tuple[float, float] = (0.09, 0.26)
    read_noise: tuple[float, float] = (0.0, 0.0)
    drift_seconds: float = 0.0       # simulated time since programming
    drift_nu: float = 0.04
    drift_t0: float = 38.6
    stuck_fraction: float = 0.0
    update_bits: int = 0             # inner-loop update quantization (0: off)
    update_threshold: float = 0.0    # fraction of the update range below which dw is dropped
    noise_scale: float = 1.0         # scales write/read noise (0 turns noise off)


def _ste(ideal: torch.Tensor, device: torch.Tensor) -> torch.Tensor:
    return ideal + (device - ideal).detach()


def quantize(x: torch.Tensor, step: torch.Tensor | float, stochastic: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Round ``x`` to multiples of ``step`` (deterministic or stochastic), straight-through."""
    y = x / step
    if stochastic:
        low = torch.floor(y)
        frac = y - low
        u = torch.rand(y.shape, generator=generator, dtype=y.dtype)
        q = low + (u < frac).to(y.dtype)
    else:
        q = torch.round(y)
    return _ste(x, q * step)


def _gaussian(shape, generator, dtype) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype)


def device_weight(w: torch.Tensor, cfg: RRAMTrainConfig, generator: torch.Generator | None = None,
                  stuck: torch.Tensor | None = None) -> torch.Tensor:
    """The weight as the RRAM array computes with it, straight-through to the ideal ``w``.

    ``stuck`` (same shape as ``w``, int8): 0 healthy, 1 G+ stuck at g_max, 2 G- stuck at g_max,
    3 both stuck at g_min.
    """
    if not cfg.enabled:
        return w
    wd = w.detach()
    nz = wd[wd != 0]
    w_max = float(cfg.w_max_std * nz.std()) if nz.numel() > 1 else float(wd.abs().max() + 1e-12)
    w_max = max(w_max, 1e-12)
    span = cfg.g_max - cfg.g_min
    target = wd.clamp(-w_max, w_max) / w_max * span           # conductance difference, uS
    if cfg.weight_bits:
        levels = 2 ** (cfg.weight_bits - 1) - 1
        target = quantize(target, span / levels, cfg.stochastic, generator)
    g_pos = cfg.g_min + target.clamp(min=0)
    g_neg = cfg.g_min + (-target).clamp(min=0)
    a, b = cfg.write_noise
    if cfg.noise_scale and (a or b):
        g_pos = g_pos + cfg.noise_scale * (a * g_pos + b) * _gaussian(w.shape, generator, w.dtype)
        g_neg = g_neg + cfg.noise_scale * (a * g_neg + b) * _gaussian(w.shape, generator, w.dtype)
    g_pos, g_neg = g_pos.clamp(cfg.g_min, cfg.g_max), g_neg.clamp(cfg.g_min, cfg.g_max)
    if stuck is not None:
        g_pos = torch.where(stuck == 1, torch.full_like(g_pos, cfg.g_max), g_pos)
        g_neg = torch.where(stuck == 2, torch.full_like(g_neg, cfg.g_max), g_neg)
        both = stuck == 3
        g_pos = torch.where(both, torch.full_like(g_pos, cfg.g_min), g_pos)
        g_neg = torch.where(both, torch.full_like(g_neg, cfg.g_min), g_neg)
    if cfg.drift_seconds > cfg.drift_t0:
        factor = (cfg.drift_seconds / cfg.drift_t0) ** (-cfg.drift_nu)
        g_pos, g_neg = g_pos * factor, g_neg * factor
    ra, rb = cfg.read_noise
    if cfg.noise_scale and (ra or rb):
        g_pos = g_pos + cfg.noise_scale * (ra * g_pos + rb) * _gaussian(w.shape, generator, w.dtype)
        g_neg = g_neg + cfg.noise_scale * (ra * g_neg + rb) * _gaussian(w.shape, generator, w.dtype)
    device = (g_pos - g_neg) / span * w_max
    device = torch.where(wd == 0, torch.zeros_like(device), device)   # absent connections stay absent
    return _ste(w, device)


def stuck_map(shape, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random stuck-at fault codes (see :func:`device_weight`) for ``fraction`` of the pairs."""
    u = torch.rand(shape, generator=generator)
    code = torch.randint(1, 4, shape, generator=generator, dtype=torch.int8)
    return torch.where(u < fraction, code, torch.zeros_like(code))


def quantize_update(delta: torch.Tensor, bits: int, stochastic: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantize an update to 2^(bits-1) - 1 levels per sign of its own max magnitude."""
    if not bits:
        return delta
    top = delta.detach().abs().max()
    if top == 0:
        return delta
    step = top / (2 ** (bits - 1) - 1)
    return quantize(delta, step, stochastic, generator)


def threshold_update(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep only the entries with |dw| above ``fraction`` of the update's range."""
    if not fraction:
        return delta
    keep = delta.detach().abs() >= fraction * delta.detach().abs().max()
    return delta * keep.to(delta.dtype)


def error_triggered(probs: torch.Tensor, onehot: torch.Tensor, theta: float) -> torch.Tensor:
    """SOEL: the error (p - y) of an output only where |p - y| exceeds ``theta``, else 0."""
    err = probs - onehot
    return err * (err.detach().abs() > theta).to(err.dtype)
