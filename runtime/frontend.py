"""Streaming cochlea front-end in fixed point: 16 kHz int16 audio -> SHD-like spikes at 1 ms.

This docstring owns the front-end's equations; other modules link here.

Filterbank
    Channel c is an order-K complex (analytic) band-pass filter: a K-pole Butterworth low-pass
    prototype of two-sided 3 dB bandwidth ``bw_scale * ERB(f_c)`` shifted to the centre frequency
    f_c and discretised by impulse invariance. Its K distinct poles give a parallel (modal) form ::

        sigma_k[n] = p_k sigma_k[n-1] + r_k x[n]        k = 1..K (one complex mode per pole)
        y[n]       = sum_k sigma_k[n]

    with the residues r_k scaled so that |H(f_c)| = 1: a tone ``A cos(2 pi f_c t)`` gives
    ``|y| = A/2``. Centre frequencies are equally spaced on the ERB-number scale from ``f_lo`` to
    ``f_hi``; channel 0 is the lowest (tonotopic order). The magnitude of the analytic output is the
    channel's envelope: the smooth equivalent of half-wave rectification and low-pass filtering.

Block form, held in fixed point
    Over a superblock of N = G*H samples (H = ``hop`` samples = one 1 ms output step, G =
    ``superblock`` steps) each mode evolves on its own ::

        sigma_k(jH) = p_k^(jH) sigma_k(0) + sum_{i < jH} r_k p_k^(jH-1-i) x[i]      j = 1..G

    The coefficients are designed in float64 and stored as integers: ``Lq_jk`` = p_k^(jH) with TB
    fraction bits; ``Bq_k`` = the input weights of sigma_k(N) and ``Wq_j`` = those of
    sum_k sigma_k(jH), both with CB fraction bits. With rs(v, b) = floor(v / 2^b) and states held
    with SB fraction bits ::

        sigma(N) = rs(Lq_G sigma(0), TB) + rs(Bq x, CB - SB)                  (state update)
        y_j      = rs(sum_k Lq_jk sigma_k(0), TB) + rs(Wq_j x, CB - SB)        (j < G)
        y_G      = sum_k sigma_k(N)

    Every product is taken on integer values whose sums stay below 2^53, so evaluating them with
    float64 BLAS is exact: the spikes do not depend on how the audio was chunked, on the BLAS
    build or on the machine.

Envelope, compression, adaptation, spikes (one step per hop)
    ``e2 = |rs(y_j, SB - EB)|^2`` (exact integer); level ``l = MLOG2(e2)`` in units of 2^-LB octaves of power,
    where MLOG2 is Mitchell's integer log2 (exponent, then the top LB mantissa bits taken as the
    fraction; error < 0.09 octave). ``a = max(l - floor, 0)``; ``S`` = sum of ``a`` over the
    previous W steps; drive ``d = clip(a - (S * kappa_num >> (log2(W) + kappa_shift)), 0, 2^TH - 1)``.
    A non-leaky integrate-and-fire neuron per channel with subtractive reset: ``v += d``; a spike
    when ``v >= 2^TH``, then ``v -= 2^TH``. Since ``d < 2^TH``, at most one spike per channel per step.

Long-term level equalization (optional, :class:`LevelEq`; a model file's ``frontend.eq``)
    Before adaptation every channel's level is moved by ``-off_c``: the speaker's long-term level
    spectrum is brought to a reference ``ref_c`` (the training corpus's), so that a voice, a
    microphone or a room that is brighter or louder than the training speakers' is heard as
    theirs. The device keeps a running long-term level ``m_c`` (fraction bits ``frac``), starting
    at ``ref_c``. A step is speech when ``sum_c max(l_c - floor, 0) >= gate * C`` (the mean level
    above the floor, on the levels before the move); steps are taken in blocks of ``block``
    counted from the first step the front-end heard (whatever the chunking). At the end of a
    block with ``n`` speech steps whose levels ``max(l_c, floor)`` sum to ``s_c`` ::

        m_c += ((s_c << frac) - n * m_c + 2^(shift-1)) >> shift   (2^-shift a speech step)
        off_c = ((m_c + 2^(frac-1)) >> frac) - ref_c               (used by the next block)

    With ``prior`` > 0 the first speech steps move it faster: while ``prior + h`` (``h`` the
    speech steps heard so far, this block's included) is below 2^shift, the update is
    ``m_c += ((s_c << frac) - n * m_c + d // 2) // d`` with ``d = prior + h``: ``m`` is then
    the mean of everything heard, with the reference counted as ``prior`` steps, so a new voice is met
    within a few words, and a word said many times in a row later moves it little.

    The state survives :meth:`Cochlea.reset` (a new utterance from rest): it follows whoever
    speaks to the device, over about 2^shift speech steps. :meth:`Cochlea.reset_levels` forgets
    it.

Example
    >>> import numpy as np
    >>> fe = Cochlea(FrontendSpec(channels=64))
    >>> pcm = (3000 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).astype(np.int16)
    >>> spikes = fe.encode(pcm)           # (steps, channels) uint8, one row per 1 ms
    >>> spikes.shape
    (1000, 64)
    >>> fe.reset()
    >>> bool(np.array_equal(spikes, np.vstack([fe.process(pcm[:777]), fe.process(pcm[777:])])))
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .constants import FRAME_SAMPLES, SAMPLE_RATE
from .errors import InputError

__all__ = [
    "filter_poles",
    "filterbank",
    "FrontendSpec",
    "FrontendTables",
    "FrontendState",
    "Cochlea",
    "LevelEq",
    "design",
    "initial_state",
    "frontend_step",
    "erb_space",
    "fixed_poles",
    "floor_level",
    "tables_from_fixed",
    "tables_from_poles",
]


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


class LevelEq(NamedTuple):
    """Long-term level equalization of the front-end (see the module docstring)."""

    ref: np.ndarray         # (C,) int64 reference long-term level per channel, level units
    gate: int = 40          # a step is speech when its mean level above the floor >= gate
    block: int = 16         # steps per update of the running level
    shift: int = 15         # each speech step moves the running level 2^-shift of the way ...
    frac: int = 16          # fraction bits of the running level (so that a speech step's
    #                         2^-shift still moves it: it comes within 2^(shift-frac) of a level)
    prior: int = 0          # ... or 1/(prior + speech steps heard) while that is larger: the
    #                         mean of all that was heard, weighed against the reference as
    #                         ``prior`` steps of it (0: 2^-shift from the start)

    def key(self) -> str:
        """A short stable hash of every field: what caches and comparisons of equalizers use."""
        blob = f"{np.asarray(self.ref).tolist()}|{tuple(self[1:])}".encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def check(self, channels: int) -> LevelEq:
        """This equalizer with its fields checked (a model file may hold anything)."""
        ref = np.asarray(self.ref)
        ok = [(ref.shape == (channels,) and ref.dtype.kind in "iu",
               f"ref must be {channels} integers, got {ref.dtype} {ref.shape}"),
              (ref.size == 0 or (int(ref.min()) >= 0 and int(ref.max()) < 1 << 12),
               "ref levels must be in 0..4095"),
              (0 <= self.gate < 1 << 12, "gate must be in 0..4095"),
              (1 <= self.block <= 1024, "block must be 1..1024"),
              (1 <= self.shift <= 24 and 0 <= self.frac <= 16, "shift 1..24 and frac 0..16"),
              (0 <= self.prior <= 1 << 24, "prior must be in 0..2^24")]
        for good, msg in ok:
            if not good:
                raise InputError(f"level equalization: {msg}")
        return self._replace(ref=ref.astype(np.int64), gate=int(self.gate),
                             block=int(self.block), shift=int(self.shift), frac=int(self.frac),
                             prior=int(self.prior))


class EqState(NamedTuple):
    """Running state of :class:`LevelEq` (integers)."""

    mean: np.ndarray        # (C,) int64 running long-term level, ``frac`` fraction bits
    offset: np.ndarray      # (C,) int64 the move of the current block, level units
    pos: int                # steps of the current block heard
    acc: np.ndarray         # (C,) int64 sum of the block's speech-step levels
    n: int                  # the block's speech steps
    heard: int = 0          # speech steps heard since the reference (counted to 2^shift)


def eq_initial(eq: LevelEq) -> EqState:
    C = eq.ref.size
    return EqState(eq.ref.astype(np.int64) << eq.frac, np.zeros(C, np.int64), 0,
                   np.zeros(C, np.int64), 0, 0)


def speech_sum(level: np.ndarray, floor: int, gate: int) -> tuple[np.ndarray, int]:
    """The sum over the speech steps of ``level`` (C, steps) of ``max(level, floor)`` per
    channel, int64, and the number of speech steps (module docstring: the equalizer's rule)."""
    speech = np.maximum(level - floor, 0).sum(axis=0, dtype=np.int64) >= gate * level.shape[0]
    if not speech.any():
        return np.zeros(level.shape[0], np.int64), 0
    return np.maximum(level[:, speech], floor).sum(axis=1, dtype=np.int64), int(speech.sum())


def equalize(level: np.ndarray, st: EqState, eq: LevelEq, floor: int
             ) -> tuple[np.ndarray, EqState]:
    """Move ``level`` (C, steps) int32 in place by the running offsets; returns it and the new
    state (module docstring)."""
    T = level.shape[1]
    mean, offset, pos, acc, n = st.mean.copy(), st.offset, st.pos, st.acc.copy(), st.n
    heard, cap = st.heard, 1 << eq.shift
    t = 0
    while t < T:
        k = min(eq.block - pos, T - t)
        seg = level[:, t:t + k]
        s_, k_ = speech_sum(seg, floor, eq.gate)
        acc += s_
        n += k_
        seg -= offset.astype(seg.dtype)[:, None]
        pos, t = pos + k, t + k
        if pos == eq.block:
            if n and eq.prior and eq.prior + heard + n < cap:   # the mean of all heard so far
                heard += n                                     # (rounded: no drift)
                d = eq.prior + heard
                mean += ((acc << eq.frac) - n * mean + (d >> 1)) // d
            elif n:
                heard = min(heard + n, cap)
                mean += ((acc << eq.frac) - n * mean + (cap >> 1)) >> eq.shift
            offset = ((mean + (1 << eq.frac >> 1)) >> eq.frac) - eq.ref
            acc[:], n, pos = 0, 0, 0
    return level, EqState(mean, offset, pos, acc, n, heard)


class FrontendState(NamedTuple):
    """Streaming state; every field holds integers."""

    modes: np.ndarray       # (K*C,) complex128 mode states at the current superblock start
    pending: np.ndarray     # (< G*H,) int64 samples of the current superblock received so far
    emitted: int            # output steps of the current superblock already emitted
    history: np.ndarray     # (W, C) int64 previous values of a
    voltage: np.ndarray     # (C,) int64 integrate-and-fire voltages
    eq: EqState | None = None   # the level equalizer's running state (kept across utterances)


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


def initial_state(spec: FrontendSpec) -> FrontendState:
    C = spec.channels
    return FrontendState(np.zeros(spec.order * C, complex), np.zeros(0, np.int64), 0,
                         np.zeros((spec.adapt_steps, C), np.int64), np.zeros(C, np.int64))


def _rs(v: np.ndarray, bits: int) -> np.ndarray:
    """floor(v / 2^bits) of an integer-valued float or complex array, in place (exact)."""
    f = v.view(np.float64)
    np.multiply(f, 2.0 ** -bits, out=f)
    np.floor(f, out=f)
    return v


def _filter_superblocks(x: np.ndarray, modes: np.ndarray, tab: FrontendTables
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Run whole or partial superblocks ``x`` (n, N) from mode state ``modes``.

    Returns the complex outputs (n*G, C), scaled to EB fraction bits, and the mode state after
    each superblock (n, K*C). Rows of a partial superblock must be zero past the received samples;
    their outputs are valid for the steps whose samples have all arrived, their state only once
    the superblock is complete.
    """
    spec = tab.spec
    C, K, G, H = spec.channels, spec.order, spec.superblock, spec.hop
    n = x.shape[0]
    # the matrices carry the 2^-(CB-SB) of rs (a power of two: the sums stay exact), so only
    # floor; Wq_j reads only the first j*H samples of a superblock (the rest of its rows are 0)
    proj = (x @ tab.state_mat).view(np.complex128)
    np.floor(proj.view(np.float64), out=proj.view(np.float64))
    starts = np.empty((n + 1, K * C), complex)
    starts[0] = modes
    lam = tab.trans[G - 1] * 2.0 ** -spec.trans_bits                    # exact power-of-2 scaling
    tmp = np.empty(K * C, complex)
    tmp_f = tmp.view(np.float64)
    for m in range(n):                                                   # the sequential part
        np.multiply(lam, starts[m], out=tmp)
        np.floor(tmp_f, out=tmp_f)
        np.add(tmp, proj[m], out=starts[m + 1])
    out = np.empty((n, G, C), complex)
    if G > 1:                                                            # steps inside superblocks
        # sum over the K modes of transition x start state, one small complex matrix product
        # per channel ((n, K) x (K, G-1)); the sums are exact integers, so BLAS's order of
        # summation gives the same values
        acc = np.matmul(np.ascontiguousarray(starts[:n].reshape(n, K, C).transpose(2, 0, 1)),
                        tab.trans[: G - 1].reshape(G - 1, K, C).transpose(2, 1, 0))
        acc = np.ascontiguousarray(acc.transpose(2, 1, 0))              # (G-1, n, C)
        _rs(acc, spec.trans_bits)
        for j, w in enumerate(tab.mid_mats):
            mid = (x[:, : (j + 1) * H] @ w).view(np.complex128)
            np.floor(mid.view(np.float64), out=mid.view(np.float64))
            np.add(acc[j], mid, out=out[:, j])
    np.add.reduce(starts[1:].reshape(n, K, C), axis=1, out=out[:, G - 1])
    out = out.reshape(n * G, C)
    _rs(out, spec.state_bits - spec.env_bits)
    return out, starts[1:]


def _levels(y: np.ndarray, tab: FrontendTables) -> np.ndarray:
    """Level MLOG2(|y|^2) of complex envelope samples ``y`` (steps, C), as int32 (C, steps).
    Overwrites ``y`` (a temporary of the caller's)."""
    f = y.view(np.float64)
    np.multiply(f, f, out=f)
    e2 = f[:, 0::2] + f[:, 1::2]                                         # exact: < 2^(2*(17+EB))
    bits = e2.view(np.int64)                                             # mitchell_log2, in place
    bits >>= 52 - tab.spec.level_bits
    bits -= 1023 << tab.spec.level_bits
    return bits.T.astype(np.int32, order="C")                            # channel-major


def _scan_dtype(spec: FrontendSpec, floor: int, steps: int):
    """int32 when every partial sum of :func:`_spikes_from_levels` over ``steps`` steps stays
    below 2^31 (always with the default spec), else int64."""
    a_max = max(2 * (17 + spec.env_bits) * (1 << spec.level_bits) - floor, 0) + 1
    W = spec.adapt_steps
    worst = max((W + steps) * a_max, W * a_max * max(spec.adapt_num, 1),
                (steps + 1) << spec.theta_bits)
    return np.int32 if worst < 2 ** 31 else np.int64


def _spikes_from_levels(level: np.ndarray, state: FrontendState, tab: FrontendTables
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptation and integrate-and-fire over ``level`` (C, steps), vectorised over time.

    Works channel-major because a scan along the contiguous axis is several times faster, in
    int32 when every sum provably fits (:func:`_scan_dtype`), else int64: the same integers.
    Returns spikes (steps, C) uint8, the new history (W, C) and voltage (C,).
    """
    spec = tab.spec
    W, steps = spec.adapt_steps, level.shape[1]
    dt = _scan_dtype(spec, tab.floor_level, steps)
    ext = np.empty((level.shape[0], W + steps), dt)
    ext[:, :W] = state.history.T
    np.subtract(level, tab.floor_level, out=ext[:, W:], casting="unsafe")
    level = ext[:, W:]
    np.maximum(level, 0, out=level)                                     # a
    csum = np.cumsum(ext, axis=1, dtype=dt)
    window = csum[:, W - 1: W - 1 + steps].copy()                       # sum of ext[:, :t+W]
    window[:, 1:] -= csum[:, : steps - 1]                               # minus ext[:, :t]
    window *= spec.adapt_num
    window >>= int(np.log2(W)) + spec.adapt_shift                       # kappa * mean
    np.subtract(level, window, out=window)                              # drive
    np.clip(window, 0, (1 << spec.theta_bits) - 1, out=window)
    total = np.cumsum(window, axis=1, dtype=dt)
    total += state.voltage.astype(dt)[:, None]
    fired = total >> spec.theta_bits
    counts = np.empty((level.shape[0], steps), np.uint8)               # spikes, channel-major
    counts[:, 0] = fired[:, 0] - (state.voltage >> spec.theta_bits)
    np.subtract(fired[:, 1:], fired[:, :-1], out=counts[:, 1:], casting="unsafe")
    voltage = total[:, -1].astype(np.int64) - (fired[:, -1].astype(np.int64) << spec.theta_bits)
    return np.ascontiguousarray(counts.T), ext[:, -W:].T.astype(np.int64), voltage


PIECE = 4096   # samples per internal piece: keeps temporaries cache-sized (results do not depend on it)


def frontend_step(pcm: np.ndarray, state: FrontendState, tab: FrontendTables
                  ) -> tuple[np.ndarray, FrontendState]:
    """Pure step: int16-range samples -> (spikes (steps, C) uint8, new state).

    One output row per completed hop; samples of an incomplete hop wait in the state.
    """
    pcm = np.asarray(pcm, np.int64)
    if pcm.size <= PIECE:
        return _step(pcm, state, tab)
    out = []
    for i in range(0, pcm.size, PIECE):
        spikes, state = _step(pcm[i: i + PIECE], state, tab)
        out.append(spikes)
    return np.concatenate(out), state


def _step(pcm: np.ndarray, state: FrontendState, tab: FrontendTables
          ) -> tuple[np.ndarray, FrontendState]:
    spec = tab.spec
    G, H, N = spec.superblock, spec.hop, spec.superblock * spec.hop
    buf = np.concatenate([state.pending, pcm])
    n_full, rest = divmod(buf.size, N)
    ready = rest // H                        # steps of the trailing partial superblock available
    if n_full * G + ready == state.emitted:  # no step completed by this chunk
        return np.zeros((0, spec.channels), np.uint8), state._replace(pending=buf)
    rows = n_full + (1 if ready else 0)
    x = np.zeros((rows, N))
    used = min(buf.size, rows * N)
    x.reshape(-1)[:used] = buf[:used]
    out, ends = _filter_superblocks(x, state.modes, tab)
    # drop the steps of the first superblock sent before and the incomplete trailing ones
    out = out[state.emitted: n_full * G + ready]
    level, eqs = _levels(out, tab), state.eq
    if tab.eq is not None:
        level, eqs = equalize(level, eqs if eqs is not None else eq_initial(tab.eq), tab.eq,
                              tab.floor_level)
    spikes, history, voltage = _spikes_from_levels(level, state, tab)
    modes = ends[n_full - 1] if n_full else state.modes
    return spikes, FrontendState(modes, buf[n_full * N:], ready, history, voltage, eqs)


def filterbank(pcm: np.ndarray, tab: FrontendTables) -> np.ndarray:
    """Complex envelope samples (steps, C) of a whole utterance from rest, in units of
    2^-EB input LSB: the fixed-point filter bank alone, for tests and plots."""
    spec = tab.spec
    N = spec.superblock * spec.hop
    steps = np.asarray(pcm).size // spec.hop
    x = np.zeros(((steps * spec.hop + N - 1) // N, N))
    x.reshape(-1)[: steps * spec.hop] = np.asarray(pcm)[: steps * spec.hop]
    out, _ = _filter_superblocks(x, initial_state(spec).modes, tab)
    return out[:steps]


class Cochlea:
    """Streaming front-end: ``process(chunk)`` returns the spikes of every completed 1 ms step.

    Any chunking of the same audio gives identical spikes. Use :meth:`reset` between utterances
    if they should not influence each other.
    """

    def __init__(self, spec: FrontendSpec | None = None, tables: FrontendTables | None = None):
        self.spec = spec or (tables.spec if tables is not None else FrontendSpec())
        self.tables = tables if tables is not None else design(self.spec)
        self.state = initial_state(self.spec)

    def reset(self) -> None:
        """A new utterance from rest; the level equalizer's running level is kept."""
        self.state = initial_state(self.spec)._replace(eq=self.state.eq)

    def reset_levels(self) -> None:
        """Forget the level equalizer's running level (back to the reference)."""
        self.state = self.state._replace(eq=None)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm)
        if pcm.ndim != 1:
            raise InputError(f"audio chunk must be 1-D, got shape {pcm.shape}")
        if pcm.dtype.kind == "f":
            if not np.all(np.isfinite(pcm)):
                raise InputError("audio chunk contains NaN or infinite samples")
            pcm = np.round(np.clip(pcm, -1.0, 1.0) * 32767.0)
        elif pcm.dtype.kind not in "iu":
            raise InputError(f"audio chunk must be integer PCM or float, got {pcm.dtype}")
        elif pcm.size and (pcm.min() < -32768 or pcm.max() > 32767):
            raise InputError("integer audio chunk outside the int16 range")
        spikes, self.state = frontend_step(pcm, self.state, self.tables)
        return spikes

    def flush(self) -> np.ndarray:
        """Pad the last incomplete step with zeros and return its spikes (if any)."""
        short = (-self.state.pending.size) % self.spec.hop
        return self.process(np.zeros(short, np.int16)) if self.state.pending.size % self.spec.hop \
            else np.zeros((0, self.spec.channels), np.uint8)

    def encode(self, pcm: np.ndarray) -> np.ndarray:
        """Whole utterance from a fresh state: reset, process, flush."""
        self.reset()
        out = self.process(pcm)
        tail = self.flush()
        return np.vstack([out, tail]) if tail.size else out
