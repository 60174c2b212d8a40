"""The trainer's integer mode: the chip's arithmetic (:mod:`tessera.runtime.chip`) in torch.

An independent implementation, written from the chip's docstring: batched, dense int64 matrix
products instead of the chip's event-driven rows, its own binning, integer square root, softmax
and enrollment step. ``tessera parity`` runs both on the same utterances and compares the spike
rasters, features, logits and enrollment updates bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from ..runtime.chip import ChipTables
from ..runtime.rram import GF

__all__ = ["IntCore"]


def _isqrt(x: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(x)) of non-negative int64 values, exact (float estimate, then corrected)."""
    s = torch.sqrt(x.double()).floor().long()
    for _ in range(3):
        s = torch.where(s * s > x, s - 1, s)
        s = torch.where((s + 1) * (s + 1) <= x, s + 1, s)
    return s


def _sat(v: torch.Tensor, bits: int) -> torch.Tensor:
    return v.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


class IntCore:
    """Integer forward pass and enrollment step of one exported model (ideal RRAM by default;
    pass the chip's read weights to mirror a noisy or drifted chip)."""

    def __init__(self, tab: ChipTables, w_in_read: np.ndarray | None = None,
                 w_rec_read: np.ndarray | None = None):
        self.tab = tab
        n, t = tab.neurons, tab.tile
        tile_of = torch.arange(n) // t
        r_in = torch.from_numpy(np.asarray(w_in_read if w_in_read is not None
                                           else tab.w_in << GF, np.int64))
        self.w_in = r_in * (2 ** (torch.from_numpy(tab.shift_in)[tile_of] - GF))[None, :]
        r_rec = torch.from_numpy(np.asarray(w_rec_read if w_rec_read is not None
                                            else tab.w_rec << GF, np.int64))
        w = torch.zeros(n, n, dtype=torch.int64)
        for (a, b, _), blk, s in zip(tab.routes.tolist(), r_rec, tab.shift_rec.tolist()):
            w[a * t:(a + 1) * t, b * t:(b + 1) * t] += blk * (2 ** (s - GF))
        self.w_rec = w
        self.bias = torch.from_numpy(tab.bias.astype(np.int64))
        self.channels = torch.from_numpy(tab.channels.astype(np.int64))

    def bins(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, ms, channels_total) 1 ms frames -> (B, steps, inputs) counts, from rest."""
        tab = self.tab
        f = frames.long()
        if f.shape[-1] != tab.inputs:
            f = f[..., self.channels]
        b, ms = f.shape[:2]
        total = tab.steps * tab.bin_ms
        if ms < total:
            f = torch.cat([f, f.new_zeros(b, total - ms, f.shape[-1])], 1)
        f = f[:, :total]
        return f.reshape(b, tab.steps, tab.bin_ms, -1).sum(2).clamp(max=255)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binned inputs (B, steps, inputs) -> (rasters (B, steps, n) uint8, phi (B, D) int64)."""
        tab = self.tab
        b = x.shape[0]
        n = tab.neurons
        drive = torch.matmul(x.long(), self.w_in) + self.bias
        v = torch.zeros(b, n, dtype=torch.int64)
        z = torch.zeros(b, n, dtype=torch.int64)
        r = torch.zeros(b, n, dtype=torch.int64)
        acc = torch.zeros(tab.segments, b, n, dtype=torch.int64)
        ras = torch.zeros(b, tab.steps, n, dtype=torch.uint8)
        for t in range(tab.steps):
            rec = torch.matmul(z, self.w_rec)
            v = _sat(torch.div(v * tab.leak_mult, 65536, rounding_mode="floor") + drive[:, t]
                     + rec - tab.threshold * z, tab.membrane_bits)
            z = (v >= tab.threshold).long()
            r = torch.div(r * tab.trace_mult, 65536, rounding_mode="floor") \
                + z * (1 << tab.trace_frac)
            r = r.clamp(max=(1 << (tab.trace_bits - 1)) - 1)
            s = t * tab.segments // tab.steps
            acc[s] = _sat(acc[s] + r, tab.acc_bits)
            ras[:, t] = z.to(torch.uint8)
        seg = torch.arange(tab.steps) * tab.segments // tab.steps
        lens = torch.bincount(seg, minlength=tab.segments)
        f = torch.div(acc, lens[:, None, None], rounding_mode="floor").permute(1, 0, 2).reshape(b, -1)
        return ras, self.normalize(f)

    def normalize(self, f: torch.Tensor) -> torch.Tensor:
        tab = self.tab
        if tab.normalize == "none":
            return f
        norm = _isqrt((f * f).sum(1)) if tab.normalize == "l2" else f.sum(1)
        return torch.div(f * (1 << tab.feature_bits), norm.clamp(min=1)[:, None],
                         rounding_mode="floor")

    def logits(self, phi: torch.Tensor, w_out_read: torch.Tensor) -> torch.Tensor:
        tab = self.tab
        s = torch.matmul(phi, w_out_read)
        k = tab.readout_exp + GF + tab.feature_bits - tab.logit_frac
        return torch.div(s, 2 ** k, rounding_mode="floor") if k >= 0 else s * 2 ** -k

    def softmax(self, lq: torch.Tensor) -> torch.Tensor:
        tab = self.tab
        full = torch.cat([lq, lq.new_zeros(lq.shape[0], 1)], 1)
        d = full - full.max(1, keepdim=True).values
        e2 = -torch.div(d * tab.log2e, 65536, rounding_mode="floor")
        ip = torch.div(e2, 2 ** tab.logit_frac, rounding_mode="floor").clamp(max=62)
        frac = e2 - ip * 2 ** tab.logit_frac
        e = torch.from_numpy(tab.exp2)[frac.clamp(max=(1 << tab.logit_frac) - 1)]
        e = torch.div(e, 2 ** ip, rounding_mode="floor")
        return torch.div(e * (1 << tab.softmax_frac), e.sum(1, keepdim=True),
                         rounding_mode="floor")

    def enroll_delta(self, phis: torch.Tensor, y: torch.Tensor, w_out_read: torch.Tensor
                     ) -> torch.Tensor:
        """The readout level change of one (deterministic-rounding) enrollment step over the
        rows of ``w_out_read`` (D, K); ``y`` indexes those rows."""
        tab = self.tab
        p = self.softmax(self.logits(phis, w_out_read))[:, :-1]
        target = torch.zeros_like(p)
        target[torch.arange(len(y)), y] = 1 << tab.softmax_frac
        g = phis.T @ (target - p)
        s = tab.lr_shift + tab.readout_exp - tab.softmax_frac - tab.feature_bits
        coarse = tab.readout_bits - tab.update_bits if tab.update_bits else 0
        num = g * 2 ** s if s > 0 else g
        den = len(y) * 2 ** (max(-s, 0) + coarse)
        q = torch.div(2 * num + den, 2 * den, rounding_mode="floor")
        if tab.update_bits:
            lim = (1 << (tab.update_bits - 1)) - 1
            q = q.clamp(-lim, lim)
        q = q * 2 ** coarse
        if tab.update_threshold:
            q = torch.where(q.abs() < tab.update_threshold, torch.zeros_like(q), q)
        return q
