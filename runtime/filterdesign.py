"""The front-end's filterbank, designed: a :class:`FrontendSpec` -> integer tables (float64 design,
integer storage; the equations are :mod:`tessera.runtime.frontend`'s docstring)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .constants import FRAME_SAMPLES, SAMPLE_RATE
from .errors import InputError
from .leveleq import LevelEq

__all__ = ["FrontendSpec", "FrontendTables", "erb_space", "mitchell_log2", "filter_poles",
           "design", "POLE_BITS", "fixed_poles", "tables_from_fixed", "tables_from_poles",
           "floor_level"]


@dataclass(frozen=True)
class FrontendSpec:
    """Everything that defines the front-end; tables are derived from it by :func:`design`.

    Unknown fields are rejected by :meth:`from_dict`, so a misspelled key is an error, not ignored.
    """

    channels: int = 700
    sample_rate: int = SAMPLE_RATE
    f_lo: float = 50.0
    f_hi: float = 7600.0
    order: int = 4                # K: poles (modes) per channel
    bw_scale: float = 1.0         # two-sided 3 dB bandwidth in ERBs
    hop: int = FRAME_SAMPLES      # H: samples per output step (1 ms at 16 kHz)
    superblock: int = 4           # G: output steps per state update
    coef_bits: int = 24           # CB: fraction bits of the input coefficients
    trans_bits: int = 20          # TB: fraction bits of the mode transitions p^(jH)
    state_bits: int = 12          # SB: fraction bits of the mode states
    env_bits: int = 4             # EB: fraction bits of the envelope before squaring
    level_bits: int = 4           # LB: level unit = 2^-LB octave of power (0.19 dB at 4)
    floor_db: float = -66.0       # tone level (dB re full scale) below which a channel is silent
    adapt_steps: int = 32         # W: adaptation window in steps (power of two)
    adapt_num: int = 3            # kappa = adapt_num / 2^adapt_shift of the recent mean is removed
    adapt_shift: int = 2
    theta_bits: int = 10          # TH: integrate-and-fire threshold 2^TH

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):           # types first: a file may hold anything
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float) if f.type == "float"
                                                     else int):
                kind = "a number" if f.type == "float" else "an integer"
                raise InputError(f"FrontendSpec: {f.name} must be {kind}, "
                                 f"got {type(v).__name__}")
            if f.type == "float" and not np.isfinite(v):
                raise InputError(f"FrontendSpec: {f.name} must be finite, got {v}")
        n_in = self.hop * self.superblock
        checks = [
            (self.channels <= 4096, "channels must be <= 4096"),
            (1 <= self.hop <= 1024 and 1 <= self.superblock <= 64,
             "hop must be 1..1024 and superblock 1..64"),
            (1 <= self.coef_bits <= 40 and 1 <= self.trans_bits <= 30
             and 1 <= self.state_bits <= 30 and 0 <= self.level_bits <= 8,
             "coef_bits 1..40, trans_bits and state_bits 1..30, level_bits 0..8"),
            (-200.0 <= self.floor_db <= 0.0, "floor_db must be in [-200, 0]"),
            (self.adapt_steps <= 4096 and 0 <= self.adapt_shift <= 16
             and 0 <= self.adapt_num <= (1 << self.adapt_shift),
             "adapt_steps <= 4096, adapt_shift 0..16, 0 <= adapt_num <= 2^adapt_shift"),
            (self.channels >= 1, "channels must be >= 1"),
            (self.sample_rate == SAMPLE_RATE, f"sample_rate must be {SAMPLE_RATE} (resample first)"),
            (0 < self.f_lo < self.f_hi < self.sample_rate / 2, "need 0 < f_lo < f_hi < fs/2"),
            (1 <= self.order <= 8, "order must be 1..8"),
            (0.1 <= self.bw_scale <= 10, "bw_scale must be in [0.1, 10]"),
            (self.hop >= 1 and self.superblock >= 1, "hop and superblock must be >= 1"),
            (self.adapt_steps >= 1 and self.adapt_steps & (self.adapt_steps - 1) == 0,
             "adapt_steps must be a power of two"),
            (1 <= self.theta_bits <= 16, "theta_bits must be 1..16"),
            (0 <= self.env_bits <= self.state_bits, "need 0 <= env_bits <= state_bits"),
            # exactness of the float64 evaluation (see the module docstring)
            (16 + self.coef_bits + max(n_in - 1, 0).bit_length() <= 52,
             "coef_bits too large: input sums would exceed 2^53"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"FrontendSpec: {msg}")

    @classmethod
    def from_dict(cls, d: dict) -> FrontendSpec:
        if not isinstance(d, dict):
            raise InputError(f"FrontendSpec: expected a map of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"FrontendSpec: unknown field(s) {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short stable hash of the spec (used as a cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def step_seconds(self) -> float:
        return self.hop / self.sample_rate


class FrontendTables(NamedTuple):
    """Integer tables derived from a :class:`FrontendSpec` (complex arrays hold Gaussian integers).

    ``state_mat`` and ``mid_mats`` are float64 views of the complex input matrices Bq (N rows)
    and Wq_j (its first j*H rows: the others are zero), columns interleaved re/im, so real
    matmuls of the samples give every input sum exactly. Modes are laid out k-major: index
    k*C + c.
    """

    spec: FrontendSpec
    fc: np.ndarray          # (C,) float64 centre frequencies, Hz
    trans: np.ndarray       # (G, K*C) complex128: Lq_j, the mode transitions after j steps
    state_mat: np.ndarray   # (N, 2*K*C) float64, Bq times 2^-(CB-SB)
    mid_mats: tuple         # G-1 arrays (j*H, 2*C) float64, Wq_j times 2^-(CB-SB)
    floor_level: int        # level units
    eq: LevelEq | None = None   # long-term level equalization (module docstring), or none


def erb_space(f_lo: float, f_hi: float, n: int) -> np.ndarray:
    """``n`` frequencies equally spaced on the ERB-number scale (Glasberg & Moore 1990)."""
    e = lambda f: 21.4 * np.log10(4.37e-3 * f + 1.0)  # noqa: E731
    return (10.0 ** (np.linspace(e(f_lo), e(f_hi), n) / 21.4) - 1.0) / 4.37e-3


def mitchell_log2(e2: np.ndarray, level_bits: int) -> np.ndarray:
    """Integer log2 of non-negative integer-valued float64 ``e2``, in units of 2^-level_bits.

    Exponent plus the top ``level_bits`` mantissa bits (Mitchell 1962); 0 maps to a large negative
    number. Works on the IEEE-754 bit pattern, so it is exact and identical on every machine.
    """
    bits = np.ascontiguousarray(e2, dtype=np.float64).view(np.int64)
    return (bits >> (52 - level_bits)) - (1023 << level_bits)


def filter_poles(spec: FrontendSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float64 filter bank: centre frequencies (C,), poles (C, K) and residues (C, K)."""
    C, K, fs = spec.channels, spec.order, float(spec.sample_rate)
    fc = erb_space(spec.f_lo, spec.f_hi, C)
    half_bw = 0.5 * spec.bw_scale * 24.7 * (4.37e-3 * fc + 1.0)          # Hz
    k = np.arange(K)
    proto = np.exp(1j * np.pi * (2 * k + K + 1) / (2 * K))                 # unit Butterworth poles
    lp = 2 * np.pi * half_bw[:, None] * proto[None, :]                     # low-pass prototype
    diff = lp[:, :, None] - lp[:, None, :]                                 # lp_i - lp_j
    diff[:, k, k] = 1.0
    resid = np.prod(-lp, axis=1, keepdims=True) / np.prod(diff, axis=2)    # analog residues
    pole = np.exp((lp + 2j * np.pi * fc[:, None]) / fs)                    # shifted to f_c
    r = resid / fs                                                         # impulse invariance
    z = np.exp(2j * np.pi * fc / fs)[:, None]
    r = r / np.abs(np.sum(r / (1.0 - pole / z), axis=1, keepdims=True))    # |H(f_c)| = 1
    return fc, pole, r


def design(spec: FrontendSpec) -> FrontendTables:
    """Design the band-pass bank in float64 and quantize it (see the module docstring)."""
    return tables_from_poles(spec, *filter_poles(spec))


POLE_BITS = 31   # fraction bits of the poles and residues a model file carries (int32)


def fixed_poles(pole: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Poles and residues (C, K) as int32 fixed point with POLE_BITS fraction bits: (C, K, 4)
    holding Re p, Im p, Re r, Im r (all have magnitude < 1)."""
    a = np.stack([pole.real, pole.imag, r.real, r.imag], axis=-1)
    if np.abs(a).max() >= 1.0:
        raise InputError("a pole or residue has magnitude >= 1: cannot hold it in Q1.31")
    return np.round(a * 2.0 ** POLE_BITS).astype(np.int32)


def tables_from_fixed(spec: FrontendSpec, fc: np.ndarray, fixed: np.ndarray) -> FrontendTables:
    """Tables for the channels of ``fixed`` (see :func:`fixed_poles`), with ``spec.channels``
    set to their number. The derivation uses only multiplications and additions (numpy's complex
    power of small integer exponents is repeated multiplication), no libm transcendental: the
    tables, and so the spikes, do not depend on the machine's exp()."""
    a = np.asarray(fixed, np.float64) * 2.0 ** -POLE_BITS
    pole, r = a[..., 0] + 1j * a[..., 1], a[..., 2] + 1j * a[..., 3]
    spec = dataclasses.replace(spec, channels=int(pole.shape[0]))
    return tables_from_poles(spec, np.asarray(fc, np.float64), pole, r)


def tables_from_poles(spec: FrontendSpec, fc: np.ndarray, pole: np.ndarray, r: np.ndarray
                      ) -> FrontendTables:
    """Quantized block-form tables of the filters with poles and residues (C, K)."""
    C, K, G, H = pole.shape[0], spec.order, spec.superblock, spec.hop
    if C != spec.channels or pole.shape != (C, K) or r.shape != (C, K):
        raise InputError(f"FrontendSpec: poles {pole.shape} and residues {r.shape} do not fit "
                         f"{spec.channels} channels of order {K}")
    N = G * H
    if not np.abs(pole).max(initial=0.0) < 1.0:
        raise InputError("FrontendSpec: a filter pole has magnitude >= 1 (an unstable filter)")
    # worst-case mode magnitude per unit input, for the exactness bound below
    peak = np.max(np.abs(r) / (1.0 - np.abs(pole)), initial=0.0)
    need = 15 + np.log2(max(peak, 2.0 ** -60)) + spec.state_bits + spec.trans_bits + 1 \
        + np.log2(2 * K)
    if not need <= 52:
        raise InputError(f"FrontendSpec: state_bits + trans_bits too large for this filter bank "
                         f"(products would reach 2^{need:.1f}; need <= 2^52)")
    j = np.arange(1, G + 1)[:, None, None]
    trans = (pole.T[None] ** (j * H))                                      # (G, K, C)
    i = np.arange(N)[:, None, None, None]
    expo = j[None] * H - 1 - i                                             # (N, G, 1, 1)
    coef = np.where(expo >= 0, r.T[None, None] * pole.T[None, None] ** np.maximum(expo, 0), 0)
    cb, tb = 2.0 ** spec.coef_bits, 2.0 ** spec.trans_bits
    q = lambda a, sc: np.round(a.real * sc) + 1j * np.round(a.imag * sc)  # noqa: E731
    scale = 2.0 ** (spec.state_bits - spec.coef_bits)       # rs's scaling folded in (exact)
    state_mat = np.ascontiguousarray(q(coef[:, G - 1], cb).reshape(N, K * C)).view(np.float64)
    state_mat *= scale                                                     # Bq
    mid = q(coef[:, : G - 1].sum(axis=2), cb)                              # (N, G-1, C): Wq_j
    if np.any(mid[np.arange(N)[:, None] >= (np.arange(G - 1)[None] + 1) * H]):
        raise AssertionError("Wq_j reads a sample past step j")            # by construction
    mid_mats = tuple(np.ascontiguousarray(mid[: (j + 1) * H, j]).view(np.float64) * scale
                     for j in range(G - 1))
    return FrontendTables(spec, fc, q(trans, tb).reshape(G, K * C), state_mat, mid_mats,
                          floor_level(spec))


def floor_level(spec: FrontendSpec) -> int:
    """The silence floor (a tone at ``floor_db``) in level units."""
    floor_e2 = np.floor((2.0 ** (14 + spec.env_bits) * 10 ** (spec.floor_db / 20)) ** 2)
    return int(mitchell_log2(np.array([floor_e2]), spec.level_bits)[0])
