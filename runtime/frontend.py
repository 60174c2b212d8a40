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
    build or on the machine. The same holds for the compiled backend
    (:mod:`tessera.runtime.compiled`, numba when installed): it sums the modes in its own order
    and gives the same spikes, bit for bit (the tests compare the two).

Envelope, compression, adaptation, spikes (one step per hop)
    ``e2 = |rs(y_j, SB - EB)|^2`` (exact integer); level ``l = MLOG2(e2)`` in units of 2^-LB octaves of power,
    where MLOG2 is Mitchell's integer log2 (exponent, then the top LB mantissa bits taken as the
    fraction; error < 0.09 octave). ``a = max(l - floor, 0)``; ``S`` = sum of ``a`` over the
    previous W steps; drive ``d = clip(a - (S * kappa_num >> (log2(W) + kappa_shift)), 0, 2^TH - 1)``.
    A non-leaky integrate-and-fire neuron per channel with subtractive reset: ``v += d``; a spike
    when ``v >= 2^TH``, then ``v -= 2^TH``. Since ``d < 2^TH``, at most one spike per channel per step.

Long-term level equalization (optional)
    Before adaptation, levels may be moved to a reference: :mod:`tessera.runtime.leveleq`.

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

from typing import NamedTuple

import numpy as np

from . import compiled
from .errors import InputError
from .filterdesign import (FrontendSpec, FrontendTables, design, erb_space,  # noqa: F401
                           filter_poles, fixed_poles, floor_level, tables_from_fixed,
                           tables_from_poles)
from .leveleq import EqState, LevelEq, eq_initial, equalize, learned, restored_state  # noqa: F401

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


class FrontendState(NamedTuple):
    """Streaming state; every field holds integers."""

    modes: np.ndarray       # (K*C,) complex128 mode states at the current superblock start
    pending: np.ndarray     # (< G*H,) int64 samples of the current superblock received so far
    emitted: int            # output steps of the current superblock already emitted
    history: np.ndarray     # (W, C) int64 previous values of a
    voltage: np.ndarray     # (C,) int64 integrate-and-fire voltages
    eq: EqState | None = None   # the level equalizer's running state (kept across utterances)


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


def channel_levels(y: np.ndarray, tab: FrontendTables) -> np.ndarray:
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
    """int32 when every partial sum of :func:`spikes_from_levels` over ``steps`` steps stays
    below 2^31 (always with the default spec), else int64."""
    a_max = max(2 * (17 + spec.env_bits) * (1 << spec.level_bits) - floor, 0) + 1
    W = spec.adapt_steps
    worst = max((W + steps) * a_max, W * a_max * max(spec.adapt_num, 1),
                (steps + 1) << spec.theta_bits)
    return np.int32 if worst < 2 ** 31 else np.int64


def spikes_from_levels(level: np.ndarray, state: FrontendState, tab: FrontendTables
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


def frontend_step(pcm: np.ndarray, state: FrontendState, tab: FrontendTables,
                  learn_level: bool = True) -> tuple[np.ndarray, FrontendState]:
    """Pure step: int16-range samples -> (spikes (steps, C) uint8, new state).

    One output row per completed hop; samples of an incomplete hop wait in the state.
    ``learn_level``: the level equalization (if any) learns as it hears (:class:`Cochlea`'s).
    """
    pcm = np.asarray(pcm, np.int64)
    if pcm.size <= PIECE:
        return _step(pcm, state, tab, learn_level)
    out = []
    for i in range(0, pcm.size, PIECE):
        spikes, state = _step(pcm[i: i + PIECE], state, tab, learn_level)
        out.append(spikes)
    return np.concatenate(out), state


def _step(pcm: np.ndarray, state: FrontendState, tab: FrontendTables, learn_level: bool
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
    kern = compiled.steps()
    # the steps of the first superblock sent before and the incomplete trailing ones are dropped
    keep = slice(state.emitted, n_full * G + ready)
    if kern is not None:                 # the same integers, compiled; levels step-major
        level_t, ends = _levels_compiled(x, state.modes, tab, kern)
        level = level_t[keep].T
    else:
        out, ends = _filter_superblocks(x, state.modes, tab)
        level = channel_levels(out[keep], tab)
    eqs = state.eq
    if tab.eq is not None:
        level, eqs = equalize(level, eqs if eqs is not None else eq_initial(tab.eq), tab.eq,
                              tab.floor_level, learn_level)
    if kern is not None:
        history, voltage = state.history.copy(), state.voltage.copy()
        spikes = np.empty(level.T.shape, np.uint8)
        kern.fe_spikes(level.T, tab.floor_level, history, voltage, spec.adapt_num,
                       int(np.log2(spec.adapt_steps)) + spec.adapt_shift, spec.theta_bits,
                       spikes)
    else:
        spikes, history, voltage = spikes_from_levels(level, state, tab)
    modes = ends[n_full - 1] if n_full else state.modes
    return spikes, FrontendState(modes, buf[n_full * N:], ready, history, voltage, eqs)


_PLANAR: dict = {}


def _planar(tab: FrontendTables) -> tuple:
    """The compiled path's tables: re and im apart (columns [re | im]), kept per table set."""
    key = id(tab.state_mat)
    hit = _PLANAR.get(key)
    if hit is not None and hit[0] is tab.state_mat:
        return hit[1]
    spec = tab.spec
    C, K, G = spec.channels, spec.order, spec.superblock

    def cols(m: np.ndarray, width: int) -> np.ndarray:   # interleaved -> planar columns
        return np.ascontiguousarray(np.concatenate([m[:, 0::2], m[:, 1::2]], axis=1)
                                    ).reshape(m.shape[0], 2 * width)

    tr = tab.trans.view(np.float64).reshape(G, K * C, 2)
    lam = np.ascontiguousarray(tr[G - 1].T) * 2.0 ** -spec.trans_bits     # exact
    trans = np.ascontiguousarray(tr[: G - 1].transpose(0, 2, 1))
    planar = (cols(tab.state_mat, K * C), tuple(cols(w, C) for w in tab.mid_mats), lam, trans)
    if len(_PLANAR) >= 8:
        _PLANAR.clear()
    _PLANAR[key] = (tab.state_mat, planar)
    return planar


def _levels_compiled(x: np.ndarray, modes: np.ndarray, tab: FrontendTables, kern
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Levels (n*G, C) int32 of superblocks ``x`` (n, N) and the mode states after each (n, K*C)
    complex: the compiled kernel :func:`tessera.runtime.compiled.fe_levels` between the input
    products (BLAS, exact: see the module docstring)."""
    spec = tab.spec
    C, K, G, H = spec.channels, spec.order, spec.superblock, spec.hop
    n = x.shape[0]
    state_mat, mid_mats, lam, trans = _planar(tab)
    proj = (x @ state_mat).reshape(n, 2, K * C)
    mids = np.empty((G - 1, n, 2 * C))
    for j, w in enumerate(mid_mats):
        np.matmul(x[:, : (j + 1) * H], w, out=mids[j])
    st = np.empty((n + 1, 2, K * C))
    st[0, 0], st[0, 1] = modes.real, modes.imag
    level = np.empty((n * G, C), np.int32)
    kern.fe_levels(proj, st, lam, trans, mids.reshape(G - 1, n, 2, C), 2.0 ** -spec.trans_bits,
                   2.0 ** -(spec.state_bits - spec.env_bits), spec.level_bits, level,
                   np.empty(C))
    ends = st[1:, 0] + 1j * st[1:, 1]
    return level, ends


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


def _unheard(eq: EqState) -> EqState:
    """The running level without the speech an utterance summed for it (not learned)."""
    return eq._replace(acc=np.zeros_like(eq.acc), n=0)


class Cochlea:
    """Streaming front-end: ``process(chunk)`` returns the spikes of every completed 1 ms step.

    Any chunking of the same audio gives identical spikes. Use :meth:`reset` between utterances
    if they should not influence each other.
    """

    def __init__(self, spec: FrontendSpec | None = None, tables: FrontendTables | None = None,
                 learn_level: bool = True):
        self.spec = spec or (tables.spec if tables is not None else FrontendSpec())
        self.tables = tables if tables is not None else design(self.spec)
        self.state = initial_state(self.spec)
        # the level equalizer learns from every utterance (True) or only from what
        # learn_speech is given (False: a chip's; tessera.runtime.leveleq's docstring)
        self.learn_level = learn_level

    def reset(self) -> None:
        """A new utterance from rest; the level equalizer's running level is kept (and, when
        it does not learn by itself, what the last utterance heard is dropped)."""
        eq = self.state.eq
        if eq is not None and not self.learn_level:
            eq = _unheard(eq)
        self.state = initial_state(self.spec)._replace(eq=eq)

    def heard_speech(self) -> tuple[np.ndarray, int] | None:
        """What the utterance since :meth:`reset` heard, for :meth:`learn_speech`: the sums of
        its speech steps' levels per channel (C,) int64 and their number; None without a level
        equalization or when the level learns by itself (``learn_level``)."""
        st = self.state.eq
        if self.tables.eq is None or self.learn_level:
            return None
        return (np.zeros(self.spec.channels, np.int64), 0) if st is None else (st.acc.copy(),
                                                                               int(st.n))

    def learn_speech(self, sums, n: int) -> None:
        """The running level takes in what an utterance heard (:meth:`heard_speech`): a word the
        person taught. Checked; nothing happens without a level equalization."""
        eq = self.tables.eq
        if eq is None:
            return
        st = self.state.eq if self.state.eq is not None else eq_initial(eq)
        self.state = self.state._replace(eq=learned(st, eq, sums, n))

    def learn_heard(self) -> None:
        """The running level takes in what the utterance since :meth:`reset` heard (once:
        then it is dropped)."""
        heard = self.heard_speech()
        if heard is not None:
            self.learn_speech(*heard)
            self.state = self.state._replace(eq=_unheard(self.state.eq))

    def reset_levels(self) -> None:
        """Forget the level equalizer's running level (back to the reference)."""
        self.state = self.state._replace(eq=None)

    def pending(self) -> bool:
        """Audio samples wait for a complete 1 ms step."""
        return self.state.pending.size > 0

    def level_offset(self) -> np.ndarray | None:
        """The level equalization's current move per channel (level units); None without one."""
        if self.tables.eq is None:
            return None
        st = self.state.eq
        return np.zeros(self.spec.channels, np.int64) if st is None else st.offset.copy()

    def level_state(self) -> tuple[np.ndarray, int] | None:
        """The running long-term level (C,) int64 (``frac`` fraction bits) and the speech steps
        it heard: what a device keeps in flash with its words; None when there is no
        equalization or the level is still the reference."""
        st = self.state.eq
        return None if st is None else (st.mean.copy(), int(st.heard))

    def restore_level_state(self, mean, heard: int = 0) -> None:
        """Continue from a running level that :meth:`level_state` gave (checked: a flash image
        may hold anything)."""
        eq = self.tables.eq
        if eq is None:
            raise InputError("this model has no level equalization to restore")
        self.state = self.state._replace(eq=restored_state(eq, mean, heard))

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
        spikes, self.state = frontend_step(pcm, self.state, self.tables, self.learn_level)
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
