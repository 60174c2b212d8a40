"""The chip's NeuroBench-style activity counters and its report (spikes, synaptic operations,
routing events per hop, sparsities, memory)."""

from __future__ import annotations

import numpy as np

from .tables import ChipTables

__all__ = ["Counters", "activity_report", "memory_bytes"]


def memory_bytes(tab: ChipTables) -> dict:
    """The chip's memory for a model, from its tables alone (nothing allocated): weights, the
    readout's columns, the state (membranes, traces, spikes, the segment accumulators, or every
    step's traces for segment_mode "own", and a bin of inputs) and their total, in bytes."""
    n = tab.neurons
    acc = tab.steps * n * tab.trace_bits if tab.segment_mode == "own" \
        else tab.segments * n * tab.acc_bits
    mem = dict(weights=((tab.w_in.size + tab.w_rec.size) * tab.weight_bits + 7) // 8,
               readout=(tab.features * tab.max_classes * tab.readout_bits + 7) // 8,
               state=(n * (tab.membrane_bits + tab.trace_bits + 1)
                      + acc + tab.inputs * 8 + 7) // 8)
    mem["total"] = sum(mem.values())
    return mem


class Counters:
    """NeuroBench-style activity counters since the last :meth:`Chip.reset_counters`."""

    def __init__(self, tab: ChipTables, max_hop: int):
        self.steps = 0
        self.dropped_bins = 0
        self.input_events = 0
        self.synops_input = 0
        self.synops_recurrent = 0
        self.spikes = np.zeros(tab.neurons, np.int64)
        self.routing = np.zeros(max_hop + 1, np.int64)
        self.enrollments = 0
        self.weight_writes = 0


def activity_report(tab: ChipTables, c: Counters, w_rec: np.ndarray, classes: list[str]) -> dict:
    """The counters ``c``, the sparsities and the memory footprint of a chip running ``tab``
    with recurrent weights ``w_rec`` (n, n) as read."""
    n = tab.neurons
    per_tile = c.spikes.reshape(tab.rows * tab.cols, tab.tile).sum(axis=1)
    total_spikes = int(c.spikes.sum())
    nnz = int((w_rec != 0).sum())
    mem = memory_bytes(tab)
    return dict(steps=c.steps, dropped_bins=c.dropped_bins, input_events=c.input_events,
                synops=c.synops_input + c.synops_recurrent, synops_input=c.synops_input,
                synops_recurrent=c.synops_recurrent, spikes=total_spikes,
                spikes_per_tile=per_tile.tolist(),
                routing_events_per_hop={str(h): int(v) for h, v in enumerate(c.routing)},
                activation_sparsity=round(1 - total_spikes / max(n * c.steps, 1), 5),
                connection_sparsity=round(1 - nnz / (n * (n - 1)), 5),
                memory_bytes=mem, enrollments=c.enrollments, weight_writes=c.weight_writes,
                classes=classes)
