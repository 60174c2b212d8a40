"""NeuroBench metrics of the float model, computed by the ``neurobench`` package, and the chip's
own counters checked against them (`tessera bench neurobench`).

NeuroBench measures a ``torch.nn.Module``: its connection layers (``nn.Linear``) and activation
layers. :class:`NeuroBenchCore` is the trainer's float core written that way, the same
arithmetic as :func:`~tessera.trainer.learning.model.core_features` (input and recurrent weights as two
``nn.Linear``, the threshold as an activation module), so that NeuroBench's hooks see every
synaptic event. Static metrics: footprint, connection sparsity, parameter count; workload
metrics: activation sparsity and synaptic operations per sample (effective MACs where the
inputs are counts above 1, ACs where they are spikes, and the dense count).

The check: NeuroBench counts one operation per non-zero input per non-zero weight (an input bin
holding 3 spikes is one MAC); that rule applied to the float model's own inputs and spikes must
give NeuroBench's figure exactly. The chip counts every input event (3 ACs for that bin) and
every spike per non-zero recurrent weight of its column (runtime/chip.py ``Counters``); the
chip's rule on the float model, and the integer chip itself on the same utterances, are
reported beside it (the chip's weights are 4-bit levels, some rounded to zero, and its spikes
are not exactly the float model's).
"""

from __future__ import annotations

import os

import numpy as np

from ...runtime.errors import InputError

__all__ = ["NeuroBenchCore", "neurobench_report"]


def _need_neurobench():
    try:
        import neurobench  # noqa: F401
        import snntorch  # noqa: F401
    except ImportError as exc:
        raise InputError(f"the NeuroBench metrics need the neurobench package ({exc.name} is "
                         f"missing): pip install --no-deps neurobench==2.3.0 && pip install "
                         f"snntorch (README: NeuroBench)") from None


def _modules():
    import torch

    from ..learning.model import readout_features

    class Threshold(torch.nn.Module):
        """The LIF firing rule, v - theta >= 0, as NeuroBench's activation layer."""

        def forward(self, u):
            return (u >= 0).to(u.dtype)

    class NeuroBenchCore(torch.nn.Module):
        """The float core over binned inputs (batch, steps, inputs) -> its features."""

        def __init__(self, model):
            super().__init__()
            from ..learning.model import decays

            core = model.core
            cfg = self.cfg = core.cfg
            if cfg.kind != "lif" or cfg.adapt:
                raise InputError("NeuroBench: only a LIF core without adaptation",
                                 source=getattr(model, "path", None))
            p, m = core.params, core.masks
            n = cfg.neurons
            self.fc_in = torch.nn.Linear(cfg.inputs, n)
            self.fc_rec = torch.nn.Linear(n, n, bias=False)
            self.spike = Threshold()
            with torch.no_grad():
                self.fc_in.weight.copy_((p["w_in"] * m["w_in"]).t())
                self.fc_in.bias.copy_(p["b"])
                self.fc_rec.weight.copy_((p["w_rec"] * m["w_rec"]).t())
                alpha, kappa = decays(p, cfg)
                self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32)
                                     .detach().expand(n).clone())
                self.register_buffer("kappa", torch.as_tensor(kappa, dtype=torch.float32)
                                     .detach().expand(n).clone())
            self.spikes = None                   # (batch, steps, n) of the last forward

        def forward(self, x):
            cfg = self.cfg
            b, steps, _ = x.shape
            n = cfg.neurons
            v = z = r = x.new_zeros(b, n)
            acc = x.new_zeros(cfg.segments, b, n)
            zs = []
            for t in range(steps):
                v = self.alpha * v + self.fc_in(x[:, t]) + self.fc_rec(z) - cfg.theta * z
                z = self.spike(v - cfg.theta)
                r = self.kappa * r + z
                acc[t * cfg.segments // steps] += r
                zs.append(z)
            self.spikes = torch.stack(zs, 1)
            return readout_features(acc, steps, cfg.normalize)

    return Threshold, NeuroBenchCore


def NeuroBenchCore(model):                                  # noqa: N802 (a class, built lazily)
    return _modules()[1](model)


def _chip_counters(chip, frames) -> dict:
    """The chip's counters over the utterances ``frames``, each from rest."""
    chip.reset_counters()
    for f in frames:
        chip.reset()
        chip.run(f)
        chip.features()
    return chip.stats()


def _run_neurobench(model, x, labels):
    """NeuroBench's benchmark of the float core on the binned inputs ``x``; returns its results
    and the wrapped network (holding the spikes of a second pass on ``x``)."""
    import torch
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    Threshold, Core = _modules()
    net = Core(model)
    nb = TorchModel(net)
    nb.add_activation_module(Threshold)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64))),
        batch_size=32)
    bench = Benchmark(nb, loader, [], [], [[Footprint, ConnectionSparsity, ParameterCount],
                                           [ActivationSparsity, SynapticOperations]])
    with torch.no_grad():
        res = bench.run(quiet=True)
        net(x)                                               # its spikes, for the same rule
    return res, net


def neurobench_report(model, tsr_path: str, data_path: str, count: int = 64,
                      progress: bool = False) -> dict:
    """NeuroBench's static and workload metrics of the float ``model`` on ``count`` test
    utterances of ``data_path``, and the chip (``tsr_path``) counters on the same ones."""
    _need_neurobench()
    import torch

    from ..data.chipdata import chip_and_data, frames_of, held_out_indices
    from ..learning.intmode import IntCore

    chip, data = chip_and_data(tsr_path, data_path, progress)
    tab = chip.tab
    idx = held_out_indices(data)[:count]
    frames = frames_of(data, idx, tab.steps * tab.bin_ms, data.channels)
    x = IntCore(tab).bins(torch.from_numpy(frames)).float()        # what the chip's core reads
    if x.shape[-1] != model.core.cfg.inputs:
        raise InputError(f"the chip's model reads {x.shape[-1]} inputs, the float model "
                         f"{model.core.cfg.inputs}: not the same model", source=tsr_path)

    res, net = _run_neurobench(model, x, data.labels[idx])
    syn = res["SynapticOperations"]
    z = net.spikes.numpy()
    w_in = net.fc_in.weight.detach().numpy().T                     # (inputs, n)
    w_rec = net.fc_rec.weight.detach().numpy().T                   # (n, n) source -> target
    xs = x.numpy()
    fanin, fanout = (w_in != 0).sum(axis=1), (w_rec != 0).sum(axis=1)
    # NeuroBench counts one operation per non-zero input per weight (a count of 3 input
    # spikes in a bin is one MAC) and the spikes that reach the recurrent layer (all but the
    # last step's); the chip counts every input event (3 ACs) and routes every spike
    rule = (float(((xs != 0).sum(axis=1) @ fanin).sum())
            + float((z[:, :-1].sum(axis=1) @ fanout).sum())) / len(idx)
    events = (float((xs.sum(axis=1) @ fanin).sum())
              + float((z.sum(axis=1) @ fanout).sum())) / len(idx)

    st = _chip_counters(chip, frames)
    per = len(idx)
    chip_synops = st["synops"] / per
    nb_synops = syn["Effective_MACs"] + syn["Effective_ACs"]
    return {
        "utterances": per, "data": data_path, "model": getattr(model, "path", None),
        "chip_model": tsr_path,
        "neurobench": {"footprint_bytes": int(res["Footprint"]),
                       "connection_sparsity": round(float(res["ConnectionSparsity"]), 4),
                       "parameter_count": int(res["ParameterCount"]),
                       "activation_sparsity": round(float(res["ActivationSparsity"]), 4),
                       "synops_effective_macs": round(float(syn["Effective_MACs"]), 1),
                       "synops_effective_acs": round(float(syn["Effective_ACs"]), 1),
                       "synops_dense": round(float(syn["Dense"]), 1)},
        "float_synops_neurobench_rule": round(rule, 1),
        "rule_equals_neurobench": abs(rule - nb_synops) <= 1e-6 * max(rule, 1.0),
        "float_synops_chip_rule": round(events, 1),
        "chip": {"synops": round(chip_synops, 1),
                 "synops_input": round(st["synops_input"] / per, 1),
                 "synops_recurrent": round(st["synops_recurrent"] / per, 1),
                 "activation_sparsity": st["activation_sparsity"],
                 "connection_sparsity_w_rec": st["connection_sparsity"],
                 "model_file_bytes": int(os.path.getsize(tsr_path))},
        "chip_vs_float": {
            "synops_ratio_same_rule": round(chip_synops / max(events, 1e-9), 4),
            "synops_ratio_to_neurobench": round(chip_synops / max(nb_synops, 1e-9), 4),
            "activation_sparsity_difference": round(
                st["activation_sparsity"] - float(res["ActivationSparsity"]), 4)},
    }
