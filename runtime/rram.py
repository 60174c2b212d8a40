"""RRAM crossbar model of the chip (numpy): integer weight levels held as differential pairs of
analog conductances, read back as integers.

A weight level q in [-Q, Q] is programmed as a pair (G+, G-) = (max(q, 0), max(-q, 0)) in units of
one level step. Every programming adds write noise N(0, write_noise * Q) to each device of the
pair; drift multiplies each device's conductance by (t / t0)^-nu (one nu per device, drawn once
at programming, N(drift_nu, drift_nu_std)); read noise N(0, read_noise * Q) is drawn per device
at each :meth:`RRAMArray.sample_read` (the chip draws it at reset: once per utterance); stuck-at
devices keep G = 0 (stuck off) or G = Q (stuck on) whatever is written.

Drift compensation (on by default): each array also holds ``REF_CELLS`` reference devices
programmed at G = Q (with their own write noise and drift exponents); reads are scaled by
Q / mean(G_ref), a digital gain per array that cancels the common part of the drift. An ideal
array reads exactly 1.0 as its gain.

The arithmetic reads ``round((G+ - G-) * 2^GF)``: an integer with ``GF`` fraction bits below the
level step, so that without noise or drift the read value is exactly ``q << GF`` and the chip is
bit-exact with the trainer's integer mode. Every random draw comes from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GF", "RRAMConfig", "RRAMArray"]

GF = 4          # fraction bits of a read conductance below one level step
REF_CELLS = 64  # reference devices per array for drift compensation


@dataclass(frozen=True)
class RRAMConfig:
    """The chip's RRAM emulation, in level units: noise stds as fractions of the level range Q,
    drift exponents, stuck fractions. Training's device model is a different class with physical
    units (:class:`tessera.trainer.learning.rram.RRAMTrainConfig`)."""

    write_noise: float = 0.0       # std of each device's programmed conductance, fraction of Q
    read_noise: float = 0.0        # std of each read, fraction of Q (drawn per utterance)
    drift_nu: float = 0.04         # drift exponent mean (G(t) = G0 (t / t0)^-nu for t > t0)
    drift_nu_std: float = 0.01
    drift_t0: float = 38.6         # seconds
    stuck_off: float = 0.0         # fraction of devices stuck at G = 0
    stuck_on: float = 0.0          # fraction of devices stuck at G = Q
    drift_compensation: bool = True  # scale reads by the reference cells' drift
    seed: int = 0

    @property
    def ideal(self) -> bool:
        return not (self.write_noise or self.read_noise or self.stuck_off or self.stuck_on)


class RRAMArray:
    """One crossbar's weights (any shape) as differential device pairs."""

    def __init__(self, levels: np.ndarray, qmax: int, cfg: RRAMConfig, rng: np.random.Generator):
        self.qmax, self.cfg, self.rng = int(qmax), cfg, rng
        self.levels = np.zeros(np.shape(levels), np.int64)
        shape = (2,) + self.levels.shape
        self.g = np.zeros(shape)                                  # analog conductances
        self.nu = np.maximum(rng.normal(cfg.drift_nu, cfg.drift_nu_std, shape), 0.0) \
            if cfg.drift_nu_std else np.full(shape, cfg.drift_nu)
        self.stuck = np.zeros(shape, np.int8)                     # 0 free, -1 off, +1 on
        if cfg.stuck_off or cfg.stuck_on:
            u = rng.random(shape)
            self.stuck[u < cfg.stuck_off] = -1
            self.stuck[(u >= cfg.stuck_off) & (u < cfg.stuck_off + cfg.stuck_on)] = 1
        self.age_s = 0.0
        self.writes = 0
        self._read_noise = None
        self.ref_nu = np.maximum(rng.normal(cfg.drift_nu, cfg.drift_nu_std, REF_CELLS), 0.0) \
            if cfg.drift_nu_std else np.full(REF_CELLS, cfg.drift_nu)
        self.ref_g = np.full(REF_CELLS, float(self.qmax))
        if cfg.write_noise:
            self.ref_g += rng.normal(0.0, cfg.write_noise * self.qmax, REF_CELLS)
        self.program(np.asarray(levels), None)

    def program(self, levels: np.ndarray, where: np.ndarray | None = None) -> int:
        """Write ``levels`` (clipped to +-Q) to the devices selected by ``where`` (all if None);
        returns the number of weights written. Written devices restart their drift clock only
        in the sense that their new conductance is the programmed one (ageing applies from
        the array's present age on)."""
        levels = np.clip(np.asarray(levels, np.int64), -self.qmax, self.qmax)
        sel = np.ones(self.levels.shape, bool) if where is None else np.asarray(where, bool)
        idx = np.nonzero(sel)
        return self._write(idx, levels[idx] if levels.shape == sel.shape else levels)

    def program_columns(self, cols: np.ndarray, levels: np.ndarray) -> int:
        """Write ``levels`` (rows, len(cols)) into columns ``cols``; only the weights whose level
        changes are programmed (the others keep their conductance). Returns the count written."""
        cols = np.asarray(cols, np.int64)
        new = np.clip(np.asarray(levels, np.int64), -self.qmax, self.qmax)
        changed = new != self.levels[:, cols]
        r, c = np.nonzero(changed)
        return self._write((r, cols[c]), new[changed])

    def _write(self, idx: tuple, q: np.ndarray) -> int:
        """Program levels ``q`` at ``idx``: each device of the pair gets its target conductance
        plus write noise; stuck devices keep theirs."""
        n = int(q.size)
        if not n:
            return 0
        self.levels[idx] = q
        target = np.stack([np.maximum(q, 0), np.maximum(-q, 0)]).astype(float)
        if self.cfg.write_noise:
            target += self.rng.normal(0.0, self.cfg.write_noise * self.qmax, target.shape)
        g = np.clip(target, 0.0, None)
        pair = (slice(None),) + tuple(idx)
        st = self.stuck[pair]
        g[st == -1] = 0.0
        g[st == 1] = self.qmax
        self.g[pair] = g
        self.writes += n
        return n

    def read_columns(self, cols: np.ndarray) -> np.ndarray:
        g = self.g[:, :, cols]
        if self._read_noise is not None:
            g = g + self._read_noise[:, :, cols]
        return np.rint((g[0] - g[1]) * (self.gain * (1 << GF))).astype(np.int64)

    def age(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass: conductance drift from the present age."""
        if seconds < 0:
            raise ValueError("age: seconds must be >= 0")
        t0, t1 = self.cfg.drift_t0, self.age_s + seconds
        a0, a1 = max(self.age_s, t0), max(t1, t0)
        if a1 > a0:
            self.g *= (a1 / a0) ** (-self.nu)
            self.g[self.stuck == 1] = self.qmax
            self.ref_g *= (a1 / a0) ** (-self.ref_nu)
        self.age_s = t1

    @property
    def gain(self) -> float:
        """The read gain: Q / mean(G_ref) with compensation (exactly 1.0 while ideal), else 1."""
        if not self.cfg.drift_compensation:
            return 1.0
        return self.qmax / float(self.ref_g.mean())

    def sample_read(self) -> None:
        """Draw fresh read noise (kept until the next call)."""
        if self.cfg.read_noise:
            self._read_noise = self.rng.normal(0.0, self.cfg.read_noise * self.qmax, self.g.shape)

    def read(self) -> np.ndarray:
        """The integer weights the arithmetic uses: round((G+ - G-) * 2^GF)."""
        g = self.g if self._read_noise is None else self.g + self._read_noise
        return np.rint((g[0] - g[1]) * (self.gain * (1 << GF))).astype(np.int64)
