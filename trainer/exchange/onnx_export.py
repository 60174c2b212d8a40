"""ONNX export of the float model as one time step (``tessera export --format onnx``).

The graph is one bin of the network of :mod:`tessera.trainer.learning.model` (its docstring owns the
equations): inputs ``x`` (batch, inputs) and the state ``v``, ``z``, ``r`` (batch, neurons);
outputs ``z_out``, ``v_out``, ``r_out``. A host runs it once per bin, feeding the state back,
and averages ``r`` over the window's segments for the readout's features (as
:func:`~tessera.trainer.learning.model.core_features`). What ONNX does not hold: the integer tables, the
RRAM arrays and the tile layout (the masked weights are exported dense, zeros included); the
chip's own format (``.tsr``, MODEL_FORMAT.md) keeps those.
"""

from __future__ import annotations

import os

import torch

from ...runtime.errors import InputError
from ..learning.model import LIFState, decays, lif_step

__all__ = ["export_onnx", "OnnxStep"]


class OnnxStep(torch.nn.Module):
    """One bin of the spiking core, state in and state out (float, no gradients)."""

    def __init__(self, model):
        super().__init__()
        core = model.core
        cfg = core.cfg
        if cfg.kind != "lif":
            raise InputError(f"ONNX export covers the spiking core; this model's core is a "
                             f"{cfg.kind}")
        if cfg.adapt:
            raise InputError("ONNX export: spike-frequency adaptation (core.adapt) is not "
                             "exported")
        p, masks = core.params, core.masks
        w_in, w_rec = p["w_in"], p["w_rec"]
        if masks is not None:
            w_in, w_rec = w_in * masks["w_in"], w_rec * masks["w_rec"]
        alpha, kappa = decays(p, cfg)
        n = cfg.neurons
        self.cfg = cfg
        self.register_buffer("w_in", w_in.detach().clone())
        self.register_buffer("w_rec", w_rec.detach().clone())
        self.register_buffer("b", p["b"].detach().clone())
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).detach()
                             .expand(n).clone())
        self.register_buffer("kappa", torch.as_tensor(kappa, dtype=torch.float32).detach()
                             .expand(n).clone())

    def forward(self, x, v, z, r):
        drive = x @ self.w_in + self.b
        z_new, st = lif_step(drive, LIFState(v, z, r), self.w_rec, self.cfg, self.alpha,
                             self.kappa)
        return z_new, st.v, st.r


def export_onnx(model, path: str, check: bool = True) -> dict:
    """Write the one-step graph to ``path`` (opset 17), checked with ``onnx.checker``."""
    try:
        import onnx
    except ImportError:
        raise InputError("--format onnx needs the onnx package: pip install -e '.[interop]'") \
            from None
    step = OnnxStep(model).eval()
    cfg = model.core.cfg
    n = cfg.neurons
    args = (torch.zeros(1, cfg.inputs), torch.zeros(1, n), torch.zeros(1, n), torch.zeros(1, n))
    names = ["x", "v", "z", "r"]
    outs = ["z_out", "v_out", "r_out"]
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with torch.no_grad():
        torch.onnx.export(step, args, tmp, input_names=names, output_names=outs,
                          dynamic_axes={k: {0: "batch"} for k in names + outs}, opset_version=17,
                          dynamo=False)
    if check:
        onnx.checker.check_model(onnx.load(tmp))
    os.replace(tmp, path)
    return dict(out=os.fspath(path), bytes=os.path.getsize(path), inputs=cfg.inputs, neurons=n,
                opset=17, graph="one bin: (x, v, z, r) -> (z_out, v_out, r_out)")
