"""The integer Mosaic chip emulator: streaming inference and one-shot enrollment (numpy only).

This docstring owns the chip's arithmetic; MODEL_FORMAT.md names the constants, the trainer's
integer mode (:mod:`tessera.trainer.learning.intmode`) re-implements it in torch, and ``tessera parity``
checks the two bit for bit. All values are integers; ``>>`` is an arithmetic (flooring) shift and
``sat_b(v)`` clips v to the signed b-bit range.

Input
    1 ms spike frames of the front-end's channels (``channels_total`` columns, or just the
    model's ``inputs`` columns); the model reads channels ``channels[c]``. Frames are summed into
    bins of ``bin_ms`` ms: ``x[t, c] = min(255, count)``. A window (one utterance) is ``steps``
    bins from :meth:`Chip.reset`; bins past the window are dropped (counted).

Core, one step per bin (n neurons on rows x cols tiles of ``tile`` neurons)::

    I[t]  = x[t] W_in + bias                  W_in[:, j] = R_in[:, j] << (shift_in[tile(j)] - GF)
    v     = sat_MB(((v * leak_mult) >> 16) + I[t] + sum_{i: z_i} W_rec[i] - threshold * z)
    z     = v >= threshold
    r     = sat_TB(((r * trace_mult) >> 16) + (z << RB))
    (leak_mult and trace_mult: one value for every neuron, or one per neuron)
    acc[seg(t)] = sat_AB(acc[seg(t)] + r)     seg(t) = t * segments // steps
    (core.segment_mode "own": segments of the utterance's own length, up to its last input
    bin, instead of the window's: :mod:`tessera.runtime.segments`)

``R`` are the integers the RRAM arrays read (:mod:`tessera.runtime.rram`: ``q << GF`` when
ideal); W_rec exists only on the routing table's tile pairs, block (a, b) scaled by its own shift.
The recurrent sum is event-driven: only the rows of neurons that spiked are read. These steps
are :func:`tessera.runtime.core.core_steps` (a pure function) for a stream, and
:func:`~tessera.runtime.core.batch_steps` for batches (the same integers held in float64, the
spikes' rows added with exact float products of the table's non-zero bands).

Readout features, at the end of the window::

    f[s, j] = S[s, j] // max(len(s), 1);  phi = (f << PB) // max(isqrt(sum f^2), 1)  (normalize "l2")
    (S = acc; for "own", the fold of every step's traces over the utterance's own segments)

flattened segment-major (index s * n + j), as the trainer's features.

Readout: a prototype per enrolled word (the device rule; K enrolled classes, W_k the read
levels of column k, CQ = cos_frac)::

    cos_k   = (phi . W_k << CQ) // max(isqrt(phi . phi) * isqrt(W_k . W_k), 1)
    best    = argmax_k cos_k (ties: the first label in sorted order, whatever the order of
              enrollment); c1, c2 = the largest and second cosines (c2 = 0 when K = 1)
    z       = ((a * c1 + m * (c1 - c2)) >> CQ) + b        (a, m, b = calib; logit units 2^-LQ)
    p       = sigmoid(z) = softmax over [z, 0], via e = EXP2[f] >> i with
              -(d * LOG2E) >> 16 = i * 2^LQ + f, p = (e << PQ) // sum e
    accept  = inputs(window) >= min_inputs  and  c1 >= none_threshold  and  p >= min_confidence
              else the answer: none (inputs: the input events x summed over the window's bins:
              silence has none; none_threshold and min_confidence are this device's registers,
              the model file's threshold and 0 until set)
    confidence = p if accepted else 2^PQ - p   (calibrated: the probability the answer is right)

The readout's arithmetic is :mod:`tessera.runtime.readout`, the model check
:mod:`tessera.runtime.tables`. This one rule answers ``infer``, the windows of continuous detection and the demo alike.

Enrollment of label k with N new shots phi_i (k's registers: n shots so far, column scale e)::

    S      = sum_i phi_i + n * (L_k << e)            (L_k: the column's programmed levels)
    mean   = (S + (n+N) // 2) // (n+N);   e = smallest e >= 0 with round(max|mean| / 2^e) <= Q
    L_k    = (mean + 2^e / 2) >> e,  n = n + N       written to the readout's RRAM column k only

Only column k changes, so enrollments of different words commute (any order gives the same
readout), more shots can be added to a word later, and ``forget`` clears one column. From one
shot this is the one high-learning-rate step of the meta-learned rule: the query's cosine with the
shot (the trainer's ``meta.rule = "prototype"``).
"""

from __future__ import annotations

import time

import numpy as np

from .activity import activity_report
from .errors import InputError
from .readout import normalize_features, softmax_q
from .streamcore import StreamingCore, StreamState
from .tables import ChipTables, tables_of

__all__ = ["Chip", "ChipTables", "StreamState", "tables_of", "softmax_q", "normalize_features"]


class Chip(StreamingCore):
    """One Mosaic chip running one exported model (see the module docstring): its streaming
    core (:class:`~tessera.runtime.streamcore.StreamingCore`: the RRAM arrays, the window's
    state, the front-end) and, here, the words it knows (enroll, predict, forget on the
    readout :attr:`readout`) and batches (:mod:`tessera.runtime.batch`).

    >>> chip = Chip.load("model.tsr")                            # doctest: +SKIP
    >>> chip.feed_audio(pcm, 16000); chip.enroll("lights")       # doctest: +SKIP
    >>> chip.reset(); chip.feed_audio(pcm2, 16000); chip.predict()["label"]   # doctest: +SKIP
    """

    # ------------------------------------------------------------------ readout
    def enrolled(self) -> np.ndarray:
        """The readout columns of the enrolled words, in label order."""
        return self.readout.enrolled()

    def classes(self) -> list[str]:
        return self.readout.classes()

    def scores_q(self, phi: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of phi (..., D) with the readout columns ``rows`` (default: the enrolled
        classes), in units of 2^-cos_frac (see the module docstring)."""
        return self.readout.scores(phi, rows)

    def predict(self) -> dict:
        """The window's answer: ``label`` (None: "none of these"), ``confidence`` (calibrated:
        the probability that the answer is right), ``best`` (the nearest enrolled word even when
        rejected), ``scores`` (cosine per enrolled word)."""
        t0 = time.perf_counter()
        phi = self.end_utterance()
        rows = self.readout.enrolled()
        if not rows.size:
            raise InputError("no classes enrolled: enroll a word first")
        cq = self.readout.scores(phi, rows)
        best, accepted, p = self.readout.decide(cq, self.state.inputs)
        names = [self.readout.names[i] for i in rows]
        return dict(label=names[best] if accepted else None, best=names[best],
                    scores={nm: float(self.tab.cos_from_q(int(x))) for nm, x in zip(names, cq)},
                    confidence=float(p) / (1 << self.tab.softmax_frac),
                    spikes=int(self.state.spikes), inputs=int(self.state.inputs),
                    latency_us=round((time.perf_counter() - t0) * 1e6, 1))

    def enroll(self, label: str, shots: list[np.ndarray] | None = None) -> dict:
        """Teach ``label`` from ``shots`` (feature vectors from :meth:`features`; default: the
        current utterance, whose speech the front-end's running level then learns: see
        :mod:`~tessera.runtime.leveleq`). A new label takes a free column; an enrolled one adds
        the shots to its prototype. Only this label's column is written: order-invariant."""
        if shots is None:
            shots = [self.end_utterance()]
            if self.frontend is not None:
                self.frontend.learn_heard()
        shots = list(shots)
        return self.enroll_many({label: shots})

    def enroll_many(self, shots_by_label: dict[str, list[np.ndarray]]) -> dict:
        """Several labels at once: the same per-label update as :meth:`enroll` (one column
        each), so any order of single enrollments gives the same columns as this."""
        t0 = time.perf_counter()
        plan, written = self.readout.enroll(shots_by_label)
        self.counters.enrollments += 1
        self.counters.weight_writes += written
        ro = self.readout
        return dict(classes=ro.classes(), shots=sum(k for _, k in plan), written=written,
                    ms=round((time.perf_counter() - t0) * 1e3, 3),
                    shots_per_class={ro.names[c]: int(ro.shots[c]) for c, _ in plan})

    def forget(self, label: str) -> None:
        """Remove one word: its column is cleared, no other column is touched."""
        self.counters.weight_writes += self.readout.forget(label)

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """The counters, sparsities and memory footprint."""
        return activity_report(self.tab, self.counters, self.W_rec, self.classes())

    # ------------------------------------------------------------------ batched
    def run_batch(self, frames: np.ndarray, rasters: bool = False):
        """Many utterances at once (B, ms, channels) from rest, each a full window: returns the
        features phi (B, D) (and the spike rasters (B, steps, n) with ``rasters``); identical
        results to one stream at a time (:func:`tessera.runtime.batch.run_batch`). Does not
        touch the streaming state or the counters."""
        from .batch import run_batch
        return run_batch(self, frames, rasters)
