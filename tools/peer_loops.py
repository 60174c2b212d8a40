"""Other ways to run the same recurrent spiking core, for ``tessera bench runtime``: each is a
callable that runs one utterance's bins (``x``, (steps, inputs)) through the float model's core
at batch 1, as its own library would. None of them is bit-exact with the chip (they are float);
they are the same work: the input product, the leaky membranes with subtractive reset, the
recurrent product, the readout traces and their segment sums.

- ``torch (lean)``: the step written straight in torch (in-place ops, no autograd, one matrix
  product for all the inputs), the least a torch user would write;
- ``onnxruntime (one-step graph)``: ``tessera export --format onnx``'s one-bin graph
  (:mod:`tessera.trainer.exchange.onnx_export`) run once per bin, the state fed back;
- ``snntorch``: ``snntorch.RLeaky`` (all-to-all recurrent leaky neurons, subtractive reset)
  with the model's weights;
- ``rockpool XyloSim``: only where rockpool installs (it is not in this environment's index).

Each loader returns the reason instead of a loop when its library is missing."""

from __future__ import annotations

import os
import tempfile

import numpy as np

__all__ = ["peer_loops"]


def _weights(model):
    """The float core as the ONNX one-step graph holds it (masked weights, per-neuron decays):
    (w_in, w_rec, b, alpha, kappa, cfg)."""
    from ..trainer.exchange.onnx_export import OnnxStep

    step = OnnxStep(model)
    return step.w_in, step.w_rec, step.b, step.alpha, step.kappa, step.cfg


def _segments(cfg, steps: int) -> list[int]:
    """The readout segment of each step, seg(t) = t * segments // steps."""
    return [t * cfg.segments // steps for t in range(steps)]


def _lean_torch(model, x):
    import torch

    w_in, w_rec, b, alpha, kappa, cfg = _weights(model)
    xb = torch.from_numpy(x.astype(np.float32))
    n, steps, theta = cfg.neurons, x.shape[0], float(cfg.theta)
    seg = _segments(cfg, steps)

    def loop():
        with torch.no_grad():
            drive = torch.addmm(b, xb, w_in)
            v, z, r = torch.zeros(n), torch.zeros(n), torch.zeros(n)
            acc = torch.zeros(cfg.segments, n)
            for t in range(steps):
                v.mul_(alpha).add_(drive[t]).add_(z @ w_rec).sub_(z, alpha=theta)
                z = (v >= theta).float()
                r.mul_(kappa).add_(z)
                acc[seg[t]].add_(r)
        return acc

    return loop


def _onnx_step(model, x):
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    from ..trainer.exchange.onnx_export import export_onnx

    path = os.path.join(tempfile.mkdtemp(prefix="tessera-peer-"), "step.onnx")
    export_onnx(model, path, check=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    cfg = model.core.cfg
    n, steps = cfg.neurons, x.shape[0]
    xs = x.astype(np.float32)[:, None, :]
    seg = _segments(cfg, steps)

    def loop():
        v = z = r = np.zeros((1, n), np.float32)
        acc = np.zeros((cfg.segments, n), np.float32)
        for t in range(steps):
            z, v, r = sess.run(None, {"x": xs[t], "v": v, "z": z, "r": r})
            acc[seg[t]] += r[0]
        return acc

    return loop


def _snntorch(model, x):
    try:
        import snntorch as snn
    except ImportError:
        return "snntorch is not installed"
    import torch

    w_in, w_rec, b, alpha, kappa, cfg = _weights(model)
    n, steps = cfg.neurons, x.shape[0]
    cell = snn.RLeaky(beta=alpha, threshold=float(cfg.theta), linear_features=n,
                      all_to_all=True, reset_mechanism="subtract")
    with torch.no_grad():
        cell.recurrent.weight.copy_(w_rec.T)
        cell.recurrent.bias.zero_()
    xb = torch.from_numpy(x.astype(np.float32))
    seg = _segments(cfg, steps)

    def loop():
        with torch.no_grad():
            drive = torch.addmm(b, xb, w_in)
            spk, mem = cell.init_rleaky()
            r = torch.zeros(n)
            acc = torch.zeros(cfg.segments, n)
            for t in range(steps):
                spk, mem = cell(drive[t][None], spk, mem)
                r = kappa * r + spk[0]
                acc[seg[t]] += r
        return acc

    return loop


def _xylosim(model, x):
    try:
        import rockpool  # noqa: F401
    except ImportError:
        return "rockpool is not installed (not in this environment's package index)"
    return "rockpool is installed but its XyloSim needs a Xylo-shaped network (not built here)"


PEERS = (("torch (lean)", _lean_torch), ("onnxruntime (one-step graph)", _onnx_step),
         ("snntorch RLeaky", _snntorch), ("rockpool XyloSim", _xylosim))


def peer_loops(model, x: np.ndarray) -> tuple[dict, dict]:
    """({name: loop} of the peers that run here, {name: why not} of those that do not), on
    the bins ``x`` (steps, inputs) of the float ``model`` (its core must be the spiking one)."""
    import torch

    torch.set_num_threads(1)
    loops, missing = {}, {}
    for name, make in PEERS:
        try:
            got = make(model, x)
        except Exception as exc:                     # noqa: BLE001 - a peer that fails is named
            got = f"failed: {type(exc).__name__}: {exc}"
        if callable(got):
            got()                                    # warm-up
            loops[name] = got
        else:
            missing[name] = got
    return loops, missing
