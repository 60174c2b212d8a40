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

import os
import time
from typing import NamedTuple

import numpy as np

from .constants import SAMPLE_RATE
from .activity import Counters, activity_report
from .compiled import NORMALIZE, steps
from .core import (CoreState, bin_dtype, bins_of, core_state, core_steps, core_tables,
                   input_current, trace_bound)
from .errors import InputError
from .model_format import ModelFile, read_model
from .readout import Readout, normalize_features, softmax_q
from .rram import GF, RRAMArray, RRAMConfig
from .segments import acc_rows, fold, last_input_bin, segment_of
from .tables import ChipTables, frontend_of, tables_of

__all__ = ["Chip", "ChipTables", "StreamState", "tables_of", "softmax_q", "normalize_features"]


class StreamState(NamedTuple):
    """One window's streaming state: what :meth:`Chip.snapshot` keeps and :meth:`Chip.restore`
    swaps back (the front-end's is its own)."""

    core: CoreState              # membranes, traces and the last spikes
    acc: np.ndarray              # (segments, n) int64 trace sums per segment (updated in place;
                                 # (steps, n), one per step, for segment_mode "own")
    t: int                       # bins of the window run so far
    pending: np.ndarray          # (inputs,) int64 counts of the partial bin
    pending_ms: int              # frames in the partial bin
    inputs: int                  # input events of the window
    spikes: int                  # core spikes of the window
    phi: np.ndarray | None       # the features, once the window ended
    last: int = 0                # bins up to and including the last with an input event


class Chip:
    """One Mosaic chip running one exported model (see the module docstring): the RRAM arrays,
    the streaming core (:attr:`state`, one :class:`StreamState`), the front-end
    (:attr:`frontend`, None for a spikes-only model) and the readout (:attr:`readout`).

    >>> chip = Chip.load("model.tsr")                            # doctest: +SKIP
    >>> chip.feed_audio(pcm, 16000); chip.enroll("lights")       # doctest: +SKIP
    >>> chip.reset(); chip.feed_audio(pcm2, 16000); chip.predict()["label"]   # doctest: +SKIP
    """

    def __init__(self, model: ModelFile, rram: RRAMConfig | None = None, source: str = "<model>"):
        self.model, self.source = model, source
        self.tab = tab = tables_of(model)
        self.rram_cfg = rram or RRAMConfig()
        self.rng = np.random.default_rng([self.rram_cfg.seed, 0x7E55])
        self.labels_all = list(model.labels)
        self.hops = tab.routes[:, 2].astype(np.int64)
        self.max_hop = int(self.hops.max(initial=0))
        self.in_arr = RRAMArray(tab.w_in, tab.qmax, self.rram_cfg, self.rng)
        self.rec_arr = RRAMArray(tab.w_rec, tab.qmax, self.rram_cfg, self.rng)
        self.readout = Readout(tab, self.rram_cfg, self.rng)
        self.seg_of = segment_of(tab)                    # the accumulator row of each step
        # the accumulators provably never saturate when steps x (the trace's bound) fits
        hi = (1 << (tab.acc_bits - 1)) - 1
        self.acc_hi = hi if tab.steps * min((1 << (tab.trace_bits - 1)) - 1,
                                            trace_bound(tab)) > hi else None
        self.refresh_weights()
        self.counters = Counters(tab, self.max_hop)
        # checked now, not at the first audio: a model that loads is a model that runs
        self.frontend = frontend_of(tab, source)
        self.tail = np.zeros((0, tab.neurons), np.uint8)
        self.reset()

    # ------------------------------------------------------------------ set-up
    @classmethod
    def load(cls, path: str | os.PathLike, rram: RRAMConfig | None = None) -> Chip:
        return cls(read_model(path), rram, os.fspath(path))

    def refresh_weights(self) -> None:
        """Re-read the RRAM arrays into the integer weights the arithmetic uses."""
        tab, n, t = self.tab, self.tab.neurons, self.tab.tile
        tile_of = np.arange(n) // t
        self.W_in = self.in_arr.read() << (tab.shift_in[tile_of] - GF)[None, :]
        rec = self.rec_arr.read() << (tab.shift_rec - GF)[:, None, None]
        W = np.zeros((n, n), np.int64)
        fan = np.zeros((n, self.max_hop + 1), np.int64)
        for (a, b, h), block in zip(tab.routes, rec):
            W[a * t:(a + 1) * t, b * t:(b + 1) * t] += block
            fan[a * t:(a + 1) * t, h] += (block != 0).any(axis=1)
        self.W_rec = W
        self.core = core_tables(tab, self.W_in, W)       # what core_steps reads
        self.fanout_hops = fan                           # routing events per spike, per hop
        self.fanout = (W != 0).sum(axis=1)               # recurrent synapses per spike
        self.fanin_input = (self.W_in != 0).sum(axis=1)  # synapses per input event
        self.readout.refresh()

    def age(self, seconds: float) -> None:
        """Simulated time passes: conductance drift of every array (then re-read)."""
        for a in (self.in_arr, self.rec_arr, self.readout.arr):
            a.age(seconds)
        self.refresh_weights()

    @property
    def cochlea(self):
        """The model's front-end (an error naming the problem when the model has none)."""
        if self.frontend is None:
            raise InputError("this model has no front-end section: it reads spike frames "
                             "only (stream spikes, not audio)", source=self.source)
        return self.frontend

    # ------------------------------------------------------------------ streaming
    def reset(self, frontend: bool = True) -> None:
        """Start a new utterance (window): neuron state, bins and (``frontend``) the front-end
        from rest."""
        tab = self.tab
        if self.rram_cfg.read_noise:
            for a in (self.in_arr, self.rec_arr, self.readout.arr):
                a.sample_read()
            self.refresh_weights()
        self.state = StreamState(core_state(self.core), np.zeros((acc_rows(tab), tab.neurons),
                                                                 np.int64),
                                 0, np.zeros(tab.inputs, np.int64), 0, 0, 0, None, 0)
        if frontend and self.frontend is not None:
            self.frontend.reset()

    def snapshot(self) -> StreamState:
        """The streaming state of the current window (not the front-end's): a device that
        slides overlapping windows keeps one per window and swaps them in (:meth:`restore`)."""
        return self.state._replace(acc=self.state.acc.copy())

    def restore(self, snap: StreamState) -> None:
        self.state = snap._replace(acc=snap.acc.copy())

    def reset_counters(self) -> None:
        self.counters = Counters(self.tab, self.max_hop)

    def frames(self, frames: np.ndarray, batch: bool = False) -> np.ndarray:
        """Checked spike frames (ms, inputs) (``batch``: (utterances, ms, inputs)), the model's
        columns only, in their own integer type."""
        f = np.asarray(frames)
        tab = self.tab
        lead = "(utterances, ms, " if batch else "(ms, "
        if f.ndim != 2 + batch or f.shape[-1] not in (tab.channels_total, tab.inputs):
            raise InputError(f"spike frames must be {lead}{tab.channels_total}) or {lead}"
                             f"{tab.inputs}), got shape {f.shape}")
        if f.dtype.kind not in "biu":
            raise InputError(f"spike frames must be integer counts, got {f.dtype}")
        if f.dtype.kind == "i" and f.size and f.min() < 0:
            raise InputError("spike frames hold negative counts")
        if f.shape[-1] == tab.channels_total and tab.channels_total != tab.inputs:
            f = f[..., tab.channels]
        return f

    def input_counts(self, frames: np.ndarray) -> np.ndarray:
        """The input events the model reads in each 1 ms frame (ms,), int64: what onset
        detection and word boundaries listen to."""
        return self.frames(frames).sum(axis=1, dtype=np.int64)

    def run(self, frames: np.ndarray) -> np.ndarray:
        """Stream 1 ms spike frames; returns the core's spikes (bins completed, n) as uint8.
        Any chunking of the same frames gives identical results."""
        st = self.state
        if st.phi is not None:
            raise InputError("the utterance has ended (predict/enroll read it): call reset()")
        f = self.frames(frames)
        if steps() is not None:                           # the same arithmetic, compiled
            return _run_compiled(self, f, self.tab.bin_ms, st.pending.copy(), st.pending_ms)
        bins, pending, pending_ms = bins_of(f, st.pending, st.pending_ms, self.tab.bin_ms)
        self.state = st._replace(pending=pending, pending_ms=pending_ms)
        return self.run_bins(bins)

    def run_bins(self, bins: np.ndarray) -> np.ndarray:
        """Complete bins (k, inputs) through the core (past the window's end: dropped and
        counted); returns the spikes (k, n) uint8."""
        if steps() is not None:                           # a bin is a frame of a 1 ms bin
            return _run_compiled(self, bins, 1, np.zeros(self.tab.inputs, np.int64), 0,
                                 keep_pending=False)
        tab, c, st, n = self.tab, self.counters, self.state, self.tab.neurons
        room = tab.steps - st.t
        if bins.shape[0] > room:
            c.dropped_bins += bins.shape[0] - room
            bins = bins[:room]
        x = bins if bins.dtype == np.uint8 else np.minimum(bins, 255)   # uint8: clipped
        k = x.shape[0]
        if not k:
            return np.zeros((0, n), np.uint8)
        current = input_current(x, self.core)
        per_input = x.sum(axis=0, dtype=np.int64)
        events = int(per_input.sum())
        c.input_events += events
        c.synops_input += int(per_input @ self.fanin_input)
        last = last_input_bin(x, st.t) or st.last
        rows = list(st.acc)                                # each step's traces go straight
        spiked, core = core_steps(current, st.core, self.core, rows,    # into its segment
                                  self.seg_of[st.t:st.t + k].tolist(), self.acc_hi)
        raster = spiked.view(np.uint8)
        per_neuron = raster.sum(axis=0, dtype=np.int64)
        spikes = int(per_neuron.sum())
        self.state = st._replace(core=core, t=st.t + k, inputs=st.inputs + events,
                                 spikes=st.spikes + spikes, last=last)
        c.spikes += per_neuron
        c.synops_recurrent += int(per_neuron @ self.fanout)
        c.routing += per_neuron @ self.fanout_hops
        c.steps += k
        return raster

    def feed_audio(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Stream audio through the model's integer front-end; returns the core's spikes.

        ``pcm``: int16 samples, or float samples in [-1, 1], at ``sample_rate`` Hz; other rates
        are resampled to 16 kHz exactly as :func:`~tessera.runtime.audio.load_audio` does with a
        file (so both give the same spikes). Resampling is per call: stream whole utterances, or
        16 kHz audio in chunks."""
        from .audio import TARGET_RATE, resample, to_int16

        pcm = np.asarray(pcm)
        if pcm.ndim != 1 or pcm.dtype.kind not in "iuf":
            raise InputError(f"audio must be a 1-D array of samples, got {pcm.dtype} {pcm.shape}")
        if sample_rate != TARGET_RATE:
            x = pcm.astype(np.float64) / 32768.0 if pcm.dtype.kind in "iu" else pcm
            pcm = resample(x, int(sample_rate), TARGET_RATE)
        return self.run(self.cochlea.process(to_int16(pcm)))

    def end_utterance(self, flush_frontend: bool = True, word_bins: int | None = None
                      ) -> np.ndarray:
        """Close the window: flush the front-end (``flush_frontend``) and the partial bin, run
        silent bins to the window's end (their spikes: ``self.tail``); returns (and keeps) the
        features phi. ``word_bins``: where the word ends (bins from the window's start, as a
        detector found it), for segment_mode "own": the segments stop there when that is before
        the last input bin (a stream's next word does not stretch this one)."""
        if self.state.phi is not None:
            return self.state.phi
        tail = []
        if flush_frontend and self.frontend is not None and self.frontend.pending():
            tail.append(self.run(self.frontend.flush()))
        st = self.state
        if st.pending_ms and st.t < self.tab.steps:
            tail.append(self.run_bins(st.pending[None].copy()))
        self.state = self.state._replace(pending=np.zeros(self.tab.inputs, np.int64),
                                         pending_ms=0)
        rest = self.tab.steps - self.state.t
        if rest > 0:
            tail.append(self.run_bins(np.zeros((rest, self.tab.inputs), np.int64)))
        self.tail = np.vstack(tail) if tail else np.zeros((0, self.tab.neurons), np.uint8)
        kern = steps()
        last = self.state.last if word_bins is None else min(self.state.last, max(word_bins, 1))
        sums, lens = fold(self.state.acc, self.tab, last, self.acc_hi)
        phi = kern and kern.features(sums, lens, self.tab.feature_bits,
                                     NORMALIZE[self.tab.normalize])
        if phi is None:
            phi = normalize_features((sums // lens[:, None]).reshape(-1), self.tab)
        self.state = self.state._replace(phi=phi)
        return phi

    def features(self) -> np.ndarray:
        return self.end_utterance().copy()

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
        current utterance). A new label takes a free column; an enrolled one adds the shots to
        its prototype. Only this label's column is written: order-invariant."""
        shots = [self.end_utterance()] if shots is None else list(shots)
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


def _run_compiled(chip: Chip, f: np.ndarray, bin_ms: int, pending: np.ndarray,
                  pending_ms: int, keep_pending: bool = True) -> np.ndarray:
    """:meth:`Chip.run` (``bin_ms`` of the model) or :meth:`Chip.run_bins` (1) with the
    compiled kernels (:mod:`tessera.runtime.compiled`): the bins, the input product (one float
    matrix product), the steps."""
    st, t, hi, kern, c = chip.state, chip.core, chip.acc_hi, steps(), chip.counters
    nb = (pending_ms + f.shape[0]) // bin_ms
    k = min(nb, chip.tab.steps - st.t)
    x = np.empty((k, chip.tab.inputs), t.w_in.dtype)
    pending_ms, events, synops = kern.bins(
        f, pending, pending_ms, bin_ms, chip.fanin_input,
        np.empty(chip.tab.inputs, bin_dtype(f.dtype, bin_ms)), x)
    vr, z = st.core.vr.copy(), st.core.z.copy()
    raster, spikes, rec_synops = kern.core(
        x @ t.w_in, t.in_shift, t.bias, vr, z, t.w_rec_n, t.rec_shift, t.decay,
        t.threshold, t.v_lo, t.v_hi, t.spike, t.r_hi, t.trace_can_overflow,
        chip.seg_of[st.t:], st.acc, hi if hi is not None else 0, hi is not None,
        c.spikes, chip.fanout, chip.fanout_hops, c.routing)
    c.input_events += events
    c.synops_input += synops
    c.synops_recurrent += rec_synops
    c.steps += k
    c.dropped_bins += nb - k
    if not keep_pending:
        pending, pending_ms = st.pending, st.pending_ms
    chip.state = StreamState(CoreState(vr, z), st.acc, st.t + k, pending, pending_ms,
                             st.inputs + events, st.spikes + spikes, None,
                             last_input_bin(x, st.t) or st.last)
    return raster
