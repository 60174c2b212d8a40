"""The chip's readout: a prototype column per enrolled word, scored by integer cosine and decided
by one calibrated rule (the arithmetic is written in :mod:`tessera.runtime.chip`'s docstring).

The arithmetic is pure functions (:func:`normalize_features`, :func:`cosines`, :func:`decide`,
:func:`prototype`); :class:`Readout` holds what a device keeps of it: the RRAM columns and the
per-class registers (label, shots, column scale) and the two decision registers."""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .labels import label_problem
from .rram import RRAMArray, RRAMConfig
from .tables import ChipTables

__all__ = ["Readout", "normalize_features", "softmax_q", "cosines", "decide", "prototype",
           "isqrt_rows", "column_norms", "exp2_table"]


def exp2_table(frac: int) -> np.ndarray:
    """The readout's ``exp2`` table (MODEL_FORMAT.md): 2^(30 - f / 2^frac) for f < 2^frac."""
    f = np.arange(1 << frac)
    return np.rint(2.0 ** (30 - f / (1 << frac))).astype(np.int64)


def isqrt_rows(x: np.ndarray) -> np.ndarray:
    """Exact integer square roots of the non-negative integers ``x`` (any shape), int64."""
    x = np.asarray(x)
    return np.array([math.isqrt(int(v)) for v in x.reshape(-1)], np.int64).reshape(x.shape)


def column_norms(w: np.ndarray) -> np.ndarray:
    """The integer norm isqrt(W_k . W_k) of every column of ``w`` (D, K)."""
    return isqrt_rows(np.einsum("dk,dk->k", w, w))


def normalize_features(f: np.ndarray, tab: ChipTables) -> np.ndarray:
    """phi from the per-segment means f (..., D), integer (see the module docstring)."""
    f = np.asarray(f, np.int64)
    if tab.normalize == "none":
        return f.copy()
    flat = f.reshape(-1, f.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        if tab.normalize == "l2":
            norm = math.isqrt(int(np.dot(row, row)))
        else:
            norm = int(row.sum())
        out[i] = (row << tab.feature_bits) // max(norm, 1)
    return out.reshape(f.shape)


def softmax_q(logit_q: np.ndarray, tab: ChipTables) -> np.ndarray:
    """Integer softmax over the last axis with a zero "none" logit appended: (..., K+1) in units
    of 2^-PQ."""
    lq = np.asarray(logit_q, np.int64)
    full = np.concatenate([lq, np.zeros(lq.shape[:-1] + (1,), np.int64)], axis=-1)
    d = full - full.max(axis=-1, keepdims=True)                       # <= 0
    e2 = -((d * tab.log2e) >> 16)                                     # >= 0, LQ fraction bits
    ip = np.minimum(e2 >> tab.logit_frac, 62)
    e = tab.exp2[e2 & ((1 << tab.logit_frac) - 1)] >> ip
    return (e << tab.softmax_frac) // e.sum(axis=-1, keepdims=True)


def cosines(phi: np.ndarray, w: np.ndarray, norms: np.ndarray, cos_frac: int) -> np.ndarray:
    """Cosine of phi (..., D) with the columns ``w`` (D, K) whose integer norms are ``norms``
    (K,), in units of 2^-cos_frac."""
    phi = np.asarray(phi, np.int64)
    dot = phi @ w
    nphi = isqrt_rows(np.einsum("...d,...d->...", phi, phi))[..., None]
    return (dot << cos_frac) // np.maximum(nphi * norms, 1)


def decide(cos_q: np.ndarray, inputs: int, tab: ChipTables, none_threshold: int,
           min_confidence: int) -> tuple[int, bool, int]:
    """(index of the best class, accepted, confidence in 2^-softmax_frac) from the cosines of one
    window, its input event count and the device's two registers."""
    order = np.argsort(-cos_q, kind="stable")
    best = int(order[0])
    c1 = int(cos_q[best])
    c2 = int(cos_q[order[1]]) if cos_q.size > 1 else 0
    a, m, b = tab.calib
    z = ((a * c1 + m * (c1 - c2)) >> tab.cos_frac) + b
    p = int(softmax_q(np.array([z], np.int64), tab)[0])        # sigmoid(z)
    accepted = inputs >= tab.min_inputs and c1 >= none_threshold and p >= min_confidence
    return best, accepted, p if accepted else (1 << tab.softmax_frac) - p


def prototype(shots: np.ndarray, levels: np.ndarray, n_old: int, exp_old: int, qmax: int
              ) -> tuple[np.ndarray, int, int]:
    """One enrollment of a column: the new levels, shots and scale from its ``n_old`` shots so
    far (programmed ``levels`` at scale ``exp_old``) and the new ``shots`` (N, D)."""
    total = shots.sum(axis=0)
    if n_old:                                      # the column's prototype, from its levels
        total = total + n_old * (levels << int(exp_old))
    n = n_old + shots.shape[0]
    mean = (total + n // 2) // n
    exp = 0
    while ((int(np.abs(mean).max(initial=0)) + (1 << exp >> 1)) >> exp) > qmax:
        exp += 1
    return (mean + (1 << exp >> 1)) >> exp, n, exp


class Readout:
    """The readout's RRAM columns and registers: ``names`` (a label per column, None when free),
    ``shots`` and ``exps`` (shots so far and column scale per column), ``W`` (the levels as read)
    and the decision registers ``none_threshold`` (a cosine, 2^-cos_frac) and ``min_confidence``
    (2^-softmax_frac)."""

    def __init__(self, tab: ChipTables, rram: RRAMConfig, rng: np.random.Generator):
        self.tab = tab
        self.arr = RRAMArray(np.zeros((tab.features, tab.max_classes), np.int64),
                             tab.readout_qmax, rram, rng)
        self.names: list[str | None] = [None] * tab.max_classes
        self.shots = np.zeros(tab.max_classes, np.int64)
        self.exps = np.zeros(tab.max_classes, np.int64)
        self.none_threshold = tab.none_threshold          # per device: set_threshold
        self.min_confidence = 0                           # per device
        self.refresh()

    def refresh(self) -> None:
        """Re-read the columns (after a write, drift or a read-noise draw)."""
        self.W = self.arr.read()
        self.norms = column_norms(self.W)

    def enrolled(self) -> np.ndarray:
        """Columns of the enrolled words in label order (ties go to the first label whatever the
        order of enrollment)."""
        named = sorted((c, i) for i, c in enumerate(self.names) if c is not None)
        return np.array([i for _, i in named], np.int64)

    def classes(self) -> list[str]:
        return [c for c in self.names if c is not None]

    def shots_of(self, label: str) -> int:
        return int(self.shots[self.names.index(label)]) if label in self.names else 0

    def scores(self, phi: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosines of phi (..., D) with the columns ``rows`` (default: the enrolled words)."""
        rows = self.enrolled() if rows is None else rows
        return cosines(phi, self.W[:, rows], self.norms[rows], self.tab.cos_frac)

    def column_cosines(self) -> np.ndarray:
        """(K, K) cosines between the enrolled words' columns, in 2^-cos_frac, in the order of
        :meth:`enrolled`; the diagonal is 1. Leave-one-out among the enrolled words: column k
        against the others is what an untaught word of the same person scores."""
        rows = self.enrolled()
        w = self.W[:, rows]
        den = np.maximum(np.outer(self.norms[rows], self.norms[rows]), 1)
        return ((w.T @ w) << self.tab.cos_frac) // den

    def decide(self, cos_q: np.ndarray, inputs: int) -> tuple[int, bool, int]:
        return decide(cos_q, inputs, self.tab, self.none_threshold, self.min_confidence)

    def enroll(self, shots_by_label: dict[str, list[np.ndarray]]) -> tuple[list, int]:
        """Add shots to labels (a free column for a new one); every label and shot is checked
        before anything is written. Returns ([(column, shots)], RRAM cells written)."""
        tab = self.tab
        names = list(self.names)
        plan = []
        for label, shots in shots_by_label.items():
            problem = label_problem(label)
            if problem:
                raise InputError(problem)
            if not shots:
                raise InputError(f"no shots for {label!r}")
            P = []
            for phi in shots:
                phi = np.asarray(phi, np.int64)
                if phi.shape != (tab.features,):
                    raise InputError(f"a shot must be a feature vector of {tab.features}, got "
                                     f"{phi.shape}")
                P.append(phi)
            if label not in names:
                if None not in names:
                    raise InputError(f"readout full: {tab.max_classes} classes enrolled (forget "
                                     f"one first)")
                names[names.index(None)] = label
            plan.append((names.index(label), np.stack(P)))
        written = 0
        for col, P in plan:                     # checked above: nothing is written on an error
            levels, n, exp = prototype(P, self.arr.levels[:, col], int(self.shots[col]),
                                       int(self.exps[col]), tab.readout_qmax)
            written += self.arr.program_columns(np.array([col]), levels[:, None])
            self.shots[col], self.exps[col] = n, exp
        self.names = names
        self.refresh()
        return [(col, P.shape[0]) for col, P in plan], written

    def forget(self, label: str) -> int:
        """Clear one word's column (no other is touched); returns the cells written."""
        if label not in self.names:
            raise InputError(f"{label!r} is not enrolled (enrolled: {self.classes()})")
        i = np.array([self.names.index(label)])
        written = self.arr.program_columns(i, np.zeros((self.tab.features, 1), np.int64))
        self.names[int(i[0])] = None
        self.shots[i], self.exps[i] = 0, 0
        self.W[:, i] = self.arr.read_columns(i)
        self.norms[i] = column_norms(self.W[:, i])              # only this column changed
        return written

    def rename(self, label: str, to: str) -> None:
        """The word ``label`` is called ``to`` from now on: its column, shots and scale kept
        (nothing is written to the array)."""
        if label not in self.names:
            raise InputError(f"{label!r} is not enrolled (enrolled: {self.classes()})")
        if to in self.names:
            raise InputError(f"{to!r} is enrolled already: forget it first, or teach its "
                             f"recordings to {label!r}")
        self.names[self.names.index(label)] = to

    def state(self) -> dict:
        """What a device keeps across power cycles besides the model: columns and registers."""
        return dict(levels=self.arr.levels.copy(), classes=list(self.names),
                    shots=self.shots.tolist(), exps=self.exps.tolist())

    def restore(self, state: dict) -> None:
        levels = np.asarray(state["levels"], np.int64)
        k = self.tab.max_classes
        if levels.shape != (self.tab.features, k) or len(state["classes"]) != k \
                or len(state["shots"]) != k or len(state["exps"]) != k:
            raise InputError("stored readout does not fit the model")
        names = list(state["classes"])
        for name in names:              # the wire's rule for every stored label
            problem = None if name is None else label_problem(name)
            if problem:
                raise InputError(f"stored label {str(name)[:32]!r}: {problem}")
        taken = [n for n in names if n is not None]
        if len(set(taken)) != len(taken):
            raise InputError("stored labels: one label in two columns")
        for key, hi in (("shots", 1 << 31), ("exps", 63)):   # registers: bounded counts
            vals = state[key]
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < hi
                       for v in vals):
                raise InputError(f"stored readout: {key} outside 0..{hi - 1}")
        self.arr.program_columns(np.arange(k), levels)
        self.names = names
        self.shots = np.asarray(state["shots"], np.int64)
        self.exps = np.asarray(state["exps"], np.int64)
        self.refresh()
