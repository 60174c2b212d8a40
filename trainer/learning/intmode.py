"""The trainer's integer mode: the chip's arithmetic (:mod:`tessera.runtime.chip`) in torch.

An independent implementation, written from the chip's docstring: batched, dense int64 matrix
products instead of the chip's event-driven rows, its own binning, integer square root, cosine
scores and enrollment column. ``tessera parity`` runs both on the same utterances and compares
the spike rasters, features, cosine scores and enrolled columns bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from ...runtime.chip import ChipTables
from ...runtime.rram import GF
from .model import input_lengths

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
        r_in = torch.tensor(np.asarray(w_in_read if w_in_read is not None
                                       else tab.w_in << GF, np.int64))
        self.w_in = r_in * (2 ** (torch.tensor(tab.shift_in)[tile_of] - GF))[None, :]
        r_rec = torch.tensor(np.asarray(w_rec_read if w_rec_read is not None
                                        else tab.w_rec << GF, np.int64))
        w = torch.zeros(n, n, dtype=torch.int64)
        for (a, b, _), blk, s in zip(tab.routes.tolist(), r_rec, tab.shift_rec.tolist()):
            w[a * t:(a + 1) * t, b * t:(b + 1) * t] += blk * (2 ** (s - GF))
        self.w_rec = w
        self.bias = torch.from_numpy(tab.bias.astype(np.int64))
        self.channels = torch.from_numpy(tab.channels.astype(np.int64))
        self.leak = torch.tensor(tab.leak_mult, dtype=torch.int64)      # (n,) per neuron
        self.trace = torch.tensor(tab.trace_mult, dtype=torch.int64)

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
        own = tab.segment_mode == "own"               # every step's traces, folded at the end
        acc = torch.zeros(tab.steps if own else tab.segments, b, n, dtype=torch.int64)
        ras = torch.zeros(b, tab.steps, n, dtype=torch.uint8)
        for t in range(tab.steps):
            rec = torch.matmul(z, self.w_rec)
            v = _sat(torch.div(v * self.leak, 65536, rounding_mode="floor") + drive[:, t]
                     + rec - tab.threshold * z, tab.membrane_bits)
            z = (v >= tab.threshold).long()
            r = torch.div(r * self.trace, 65536, rounding_mode="floor") \
                + z * (1 << tab.trace_frac)
            r = r.clamp(max=(1 << (tab.trace_bits - 1)) - 1)
            s = t if own else t * tab.segments // tab.steps
            acc[s] = _sat(acc[s] + r, tab.acc_bits)
            ras[:, t] = z.to(torch.uint8)
        if own:                                       # runtime/segments.py: up to the last input bin
            length = input_lengths(x, tab.steps)
            t = torch.arange(tab.steps)
            seg = torch.where(t[None] < length[:, None], t[None] * tab.segments // length[:, None],
                              tab.segments)                               # (B, steps)
            one = (seg[:, None, :] == torch.arange(tab.segments)[None, :, None]).long()
            acc = _sat(torch.einsum("bst,tbn->sbn", one, acc), tab.acc_bits)
            lens = one.sum(2).T.clamp(min=1)[:, :, None]                    # (S, B, 1)
        else:
            seg = torch.arange(tab.steps) * tab.segments // tab.steps
            lens = torch.bincount(seg, minlength=tab.segments)[:, None, None]
        f = torch.div(acc, lens, rounding_mode="floor").permute(1, 0, 2).reshape(b, -1)
        return ras, self.normalize(f)

    def normalize(self, f: torch.Tensor) -> torch.Tensor:
        tab = self.tab
        if tab.normalize == "none":
            return f
        norm = _isqrt((f * f).sum(1)) if tab.normalize == "l2" else f.sum(1)
        return torch.div(f * (1 << tab.feature_bits), norm.clamp(min=1)[:, None],
                         rounding_mode="floor")

    def cosines(self, phi: torch.Tensor, w_read: torch.Tensor) -> torch.Tensor:
        """cos_k of the prototype readout in units of 2^-cos_frac: phi (B, D), w_read (D, K)."""
        dot = phi @ w_read
        den = (_isqrt((phi * phi).sum(1))[:, None] * _isqrt((w_read * w_read).sum(0))[None, :])
        return torch.div(dot * (1 << self.tab.cos_frac), den.clamp(min=1), rounding_mode="floor")

    def prototype_column(self, phis: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The levels and scale exponent that enrolling a new word with shots ``phis`` (N, D)
        writes into its column."""
        n = phis.shape[0]
        mean = torch.div(phis.sum(0) + n // 2, n, rounding_mode="floor")
        q = (1 << (self.tab.readout_bits - 1)) - 1
        peak = int(mean.abs().max())
        exp = 0
        while (peak + ((1 << exp) >> 1)) >> exp > q:
            exp += 1
        return torch.div(mean + ((1 << exp) >> 1), 2 ** exp, rounding_mode="floor"), exp
