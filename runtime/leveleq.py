"""Long-term level equalization of the front-end (a model file's ``frontend.eq``).

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

What it learns from. A front-end that learns (``Cochlea(learn_level=True)``, the offline
encoders' "every utterance of a speaker, in turn") updates it block by block as above. A chip's
front-end does not (``learn_level=False``): every step is moved by the offsets of the running
level as it stands, and the utterance's speech steps are only summed (``n`` steps, sums
``s_c``: :meth:`Cochlea.heard_speech`); the device hands them to :func:`learned` (one block of
the update above, ``n`` at most ``MAX_LEARN``) when the person says what the utterance was (an
``enroll``), never for what a stream or a question merely heard. So the same sound gives the
same spikes until the person teaches the device something.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from .errors import InputError

__all__ = ["LevelEq", "EqState", "eq_initial", "speech_sum", "equalize", "learned",
           "restored_state"]


MAX_LEARN = 1 << 20     # speech steps one utterance may teach the running level (17 minutes)


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


def _moved(mean: np.ndarray, heard: int, acc: np.ndarray, n: int, eq: LevelEq
           ) -> tuple[np.ndarray, int]:
    """The running level ``mean`` (updated in place) and its speech steps heard, after ``n``
    speech steps whose levels sum to ``acc`` (the module docstring's update)."""
    cap = 1 << eq.shift
    if n and eq.prior and eq.prior + heard + n < cap:   # the mean of all heard so far
        heard += n                                     # (rounded: no drift)
        d = eq.prior + heard
        mean += ((acc << eq.frac) - n * mean + (d >> 1)) // d
    elif n:
        heard = min(heard + n, cap)
        mean += ((acc << eq.frac) - n * mean + (cap >> 1)) >> eq.shift
    return mean, heard


def _offset(mean: np.ndarray, eq: LevelEq) -> np.ndarray:
    return ((mean + (1 << eq.frac >> 1)) >> eq.frac) - eq.ref


def equalize(level: np.ndarray, st: EqState, eq: LevelEq, floor: int, learn: bool = True
             ) -> tuple[np.ndarray, EqState]:
    """Move ``level`` (C, steps) int32 in place by the running offsets; returns it and the new
    state (module docstring). ``learn`` False: the offsets stay as they are and the speech
    steps are only summed (``acc``, ``n``: what :func:`learned` may take in later)."""
    if not learn:
        s_, k_ = speech_sum(level, floor, eq.gate)
        level -= st.offset.astype(level.dtype)[:, None]
        if st.n + k_ > MAX_LEARN:                      # an utterance of hours: its first
            return level, st                           # MAX_LEARN speech steps are enough
        return level, st._replace(acc=st.acc + s_, n=st.n + k_)
    T = level.shape[1]
    mean, offset, pos, acc, n = st.mean.copy(), st.offset, st.pos, st.acc.copy(), st.n
    heard = st.heard
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
            mean, heard = _moved(mean, heard, acc, n, eq)
            offset = _offset(mean, eq)
            acc[:], n, pos = 0, 0, 0
    return level, EqState(mean, offset, pos, acc, n, heard)


def learned(st: EqState, eq: LevelEq, acc, n: int) -> EqState:
    """The state after the running level took in ``n`` speech steps whose levels sum to
    ``acc`` (C,) (what an utterance heard without learning summed: a word a person taught), as
    one block. The sums are held to 0..4095 x ``n`` (a model's front-end may reach levels
    past 4095), so the running level stays in the range a flash image may hold."""
    a = np.asarray(acc)
    C = eq.ref.size
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_LEARN:
        raise InputError(f"the speech steps to learn must be an integer in 0..{MAX_LEARN}")
    if a.shape != (C,) or a.dtype.kind not in "iu":
        raise InputError(f"the speech levels to learn must be {C} integers")
    a = np.clip(a.astype(np.int64), 0, 4095 * int(n))
    mean, heard = _moved(st.mean.copy(), st.heard, a, int(n), eq)
    return st._replace(mean=mean, offset=_offset(mean, eq), heard=heard)


def restored_state(eq: LevelEq, mean, heard: int = 0) -> EqState:
    """The state of a running level ``mean`` (C,) that heard ``heard`` speech steps, checked (a
    flash image may hold anything)."""
    m = np.asarray(mean)
    C = eq.ref.size
    if m.shape != (C,) or m.dtype.kind not in "iu" or (m.size and (
            int(m.min()) < 0 or int(m.max()) >= 4096 << eq.frac)):
        raise InputError(f"a running level must be {C} integers in 0..{(4096 << eq.frac) - 1}")
    if isinstance(heard, bool) or not isinstance(heard, int) or not 0 <= heard <= 1 << eq.shift:
        raise InputError(f"the speech steps a running level heard must be an integer in "
                         f"0..{1 << eq.shift}")
    m = m.astype(np.int64)
    return eq_initial(eq)._replace(mean=m, offset=_offset(m, eq), heard=heard)
