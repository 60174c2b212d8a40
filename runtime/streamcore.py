"""The chip's arrays and its streaming core: the RRAM arrays read into integer weights, one
window's state (:class:`StreamState`), spike frames and audio streamed through the core, the
window closed into its features (:class:`StreamingCore`). The arithmetic is
:mod:`tessera.runtime.chip`'s docstring; :class:`~tessera.runtime.chip.Chip` adds the words
(enroll, predict, forget) and batches on top of this core.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .activity import Counters
from .compiled import NORMALIZE, steps
from .constants import SAMPLE_RATE
from .core import (CoreState, bin_dtype, bins_of, core_state, core_steps, core_tables,
                   input_current, trace_bound)
from .errors import InputError
from .model_format import ModelFile, read_model
from .readout import Readout, normalize_features
from .rram import GF, RRAMArray, RRAMConfig
from .segments import acc_rows, fold, last_input_bin, segment_of
from .tables import frontend_of, tables_of

__all__ = ["StreamState", "StreamingCore"]


class StreamState(NamedTuple):
    """One window's streaming state: what :meth:`StreamingCore.snapshot` keeps and :meth:`StreamingCore.restore`
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


class StreamingCore:
    """One model's RRAM arrays and streaming core (see :mod:`tessera.runtime.chip`): the
    arrays, the window's state (:attr:`state`, one :class:`StreamState`), the front-end
    (:attr:`frontend`, None for a spikes-only model), the readout's array (:attr:`readout`,
    which :class:`~tessera.runtime.chip.Chip` reads and writes) and the counters."""

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
    def load(cls, path: str | os.PathLike, rram: RRAMConfig | None = None):
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


def _run_compiled(chip: StreamingCore, f: np.ndarray, bin_ms: int, pending: np.ndarray,
                  pending_ms: int, keep_pending: bool = True) -> np.ndarray:
    """:meth:`StreamingCore.run` (``bin_ms`` of the model) or :meth:`StreamingCore.run_bins` (1) with the
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
