"""NIR (the Neuromorphic Intermediate Representation, the ``nir`` package): export of the float
core, import of a compatible graph into the trainer, and a small reference runner.

The exported graph::

    input (inputs) -> w_in: Affine (W_in, bias) -> lif: LIF (n) <-> w_rec: Linear (W_rec)
                                                   lif -> trace: LI (n) -> output (n)

with NIR's continuous-time parameters for the trainer's discrete step ``dt`` (forward Euler,
snnTorch's convention): the membrane decay alpha = 1 - dt / tau, ``r = tau / dt`` (so that one
step adds the input current unscaled), ``v_leak = 0``, ``v_threshold = theta``; the readout
trace r(t) = kappa r(t-1) + z(t) is the LI node (kappa = 1 - dt / tau). Graph metadata:
``dt`` (seconds) and ``tessera`` (the core config, the reset rule, the readout).

What NIR cannot hold, and stays in the ``.tsr`` format (MODEL_FORMAT.md) and the checkpoint:

* the reset. NIR's LIF sets v to ``v_reset`` when it spikes; tessera's neuron subtracts the
  threshold on the next step (v(t) = alpha v(t-1) + I(t) - theta z(t-1)). The LIF node carries
  ``v_reset = 0`` and the metadata ``reset: subtract``; :func:`run_nir` honours it (and runs
  NIR's own reset when asked, to measure the difference);
* the integer tables (4-bit weight levels, shifts, fixed-point decays, saturating registers)
  and the front-end's fixed-point poles: NIR holds float parameters only;
* the tile layout and its routes (which tile pairs are connected, and at how many hops): NIR
  has one dense recurrent weight matrix, zeros where the hop budget pruned;
* the readout's features (the trace averaged over time segments, normalised) and the device's
  one-shot prototype rule: the graph ends at the traces.

Import (:func:`from_nir`) takes a flat graph of that shape (one level of nested subgraphs, as
snnTorch writes a recurrent layer, is flattened): an Affine or Linear input edge, one LIF or
CubaLIF population (a CubaLIF only when its synaptic time constant is at most one step, where it
passes its input through), an optional recurrent Linear or Affine, an optional LI; per-neuron
thresholds, resistances and leak voltages are folded into the weights and the bias.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ...runtime.errors import InputError

__all__ = ["to_nir", "write_nir", "read_nir", "run_nir", "from_nir", "core_spikes"]


def _nir():
    try:
        import nir
    except ImportError:
        raise InputError("NIR needs the nir package: pip install -e '.[interop]'") from None
    return nir


def to_nir(model):
    """The float core of a trained :class:`~tessera.trainer.learning.storage.Model` as a NIRGraph."""
    nir = _nir()
    import torch

    from ..learning.model import decays

    core = model.core
    cfg = core.cfg
    if cfg.kind != "lif":
        raise InputError(f"NIR export: a {cfg.kind} core is not a spiking network (lif only)",
                         source=getattr(model, "path", None))
    if cfg.adapt:
        raise InputError("NIR export: spike-frequency adaptation has no NIR node",
                         source=getattr(model, "path", None))
    p, m = core.params, core.masks
    n, dt = cfg.neurons, cfg.dt_ms / 1000.0
    with torch.no_grad():
        w_in = (p["w_in"] * m["w_in"]).double().numpy()
        w_rec = (p["w_rec"] * m["w_rec"]).double().numpy()
        bias = p["b"].double().numpy()
        alpha, kappa = decays(p, cfg)
        alpha = np.broadcast_to(np.asarray(alpha.detach() if torch.is_tensor(alpha) else alpha,
                                           np.float64), (n,))
        kappa = np.broadcast_to(np.asarray(kappa.detach() if torch.is_tensor(kappa) else kappa,
                                           np.float64), (n,))
    tau_mem, tau_out = dt / (1.0 - alpha), dt / (1.0 - kappa)
    meta = {"tessera": json.dumps({
        "core": dataclasses.asdict(cfg), "reset": "subtract",
        "readout": {"segments": cfg.segments, "normalize": cfg.normalize,
                    "rule": "prototype (cosine to the mean of each word's shots)"},
        "source": str(getattr(model, "path", ""))}), "dt": dt}
    nodes = {
        "input": nir.Input(input_type={"input": np.array([cfg.inputs])}),
        "w_in": nir.Affine(weight=w_in.T.copy(), bias=bias.copy()),
        "lif": nir.LIF(tau=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n),
                       v_threshold=np.full(n, float(cfg.theta)), v_reset=np.zeros(n),
                       metadata={"reset": "subtract"}),
        "w_rec": nir.Linear(weight=w_rec.T.copy()),
        "trace": nir.LI(tau=tau_out, r=tau_out / dt, v_leak=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
             ("lif", "trace"), ("trace", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(model, path: str) -> dict:
    nir = _nir()
    g = to_nir(model)
    nir.write(path, g)
    return {"nodes": ["input", "w_in", "lif", "w_rec", "trace", "output"], "edges": len(g.edges),
            "neurons": int(g.nodes["lif"].tau.size),
            "recurrent_connections": int(np.count_nonzero(g.nodes["w_rec"].weight))}


def read_nir(path: str):
    nir = _nir()
    try:
        return nir.read(path)
    except FileNotFoundError:
        raise InputError("no such NIR file", source=path) from None
    except Exception as exc:                                  # noqa: BLE001 (h5py raises many)
        raise InputError(f"not a readable NIR file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})",
                         source=path) from None


# ---------------------------------------------------------------------------- graph structure
def _flatten(graph):
    """Nodes and edges with one level of nested NIRGraph nodes inlined (``sub.node`` names; an
    edge into the subgraph goes to what its Input feeds, one out of it from what feeds its
    Output)."""
    nir = _nir()
    nodes, edges = {}, []
    inner_in, inner_out = {}, {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            for k, v in node.nodes.items():
                if isinstance(v, nir.NIRGraph):
                    raise InputError(f"NIR import: subgraph {name}.{k} nests another graph")
                if not isinstance(v, (nir.Input, nir.Output)):
                    nodes[f"{name}.{k}"] = v
            ins = {k for k, v in node.nodes.items() if isinstance(v, nir.Input)}
            outs = {k for k, v in node.nodes.items() if isinstance(v, nir.Output)}
            inner_in[name] = [f"{name}.{b}" for a, b in node.edges if a in ins]
            inner_out[name] = [f"{name}.{a}" for a, b in node.edges if b in outs]
            edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in node.edges
                      if a not in ins and b not in outs]
        else:
            nodes[name] = node
    for a, b in graph.edges:
        for src in inner_out.get(a, [a]):
            for dst in inner_in.get(b, [b]):
                edges.append((src, dst))
    return nodes, edges


def _structure(graph) -> dict:
    """The supported shape of ``graph``: names of input, w_in, lif, w_rec (or None), trace (or
    None); a named error for anything else."""
    nir = _nir()
    nodes, edges = _flatten(graph)
    kinds = {k: type(v).__name__ for k, v in nodes.items()}
    succ = {k: [b for a, b in edges if a == k] for k in nodes}
    pred = {k: [a for a, b in edges if b == k] for k in nodes}
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    lifs = [k for k, v in nodes.items() if isinstance(v, (nir.LIF, nir.CubaLIF))]
    if len(inputs) != 1 or len(lifs) != 1:
        raise InputError(f"NIR import: needs one Input and one LIF or CubaLIF population, the "
                         f"graph has {kinds}")
    inp, lif = inputs[0], lifs[0]
    if len(succ[inp]) != 1 or kinds.get(succ[inp][0]) not in ("Affine", "Linear") \
            or succ[succ[inp][0]] != [lif]:
        raise InputError("NIR import: the Input must feed one Affine or Linear that feeds the "
                         "LIF population")
    w_in = succ[inp][0]
    rec = [k for k in pred[lif] if k != w_in]
    if len(rec) > 1 or (rec and (kinds[rec[0]] not in ("Affine", "Linear")
                                 or pred[rec[0]] != [lif])):
        raise InputError(f"NIR import: the LIF population's inputs besides {w_in} must be one "
                         f"recurrent Affine or Linear from itself, got {rec}")
    after = [k for k in succ[lif] if k not in rec]
    trace = None
    known = {inp, w_in, lif, *rec}
    if after and kinds[after[0]] == "LI" and len(after) == 1:
        trace = after[0]
        known.add(trace)
        after = succ[trace]
    if not all(kinds[k] == "Output" for k in after):
        raise InputError(f"NIR import: after the population only an LI and an Output are "
                         f"supported, got {[kinds[k] for k in after]}")
    known |= set(after)
    extra = set(nodes) - known
    if extra:
        raise InputError(f"NIR import: nodes not part of a recurrent LIF layer: {sorted(extra)}")
    return dict(nodes=nodes, input=inp, w_in=w_in, lif=lif, w_rec=rec[0] if rec else None,
                trace=trace)


def _vec(v, n: int, what: str) -> np.ndarray:
    a = np.asarray(v, np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, float(a[0]))
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise InputError(f"NIR import: {what} must be {n} finite values, got shape "
                         f"{np.shape(v)}")
    return a


def _population(s: dict, dt: float) -> dict:
    """Discrete-step parameters of the graph's population: weights (W_in (inputs, n), bias,
    W_rec (n, n)) scaled so that the threshold is 1 and one step adds r dt / tau of the
    current; alpha, kappa; the reset rule."""
    nir = _nir()
    nodes = s["nodes"]
    lif = nodes[s["lif"]]
    win = nodes[s["w_in"]]
    weight = np.asarray(win.weight, np.float64)
    if weight.ndim != 2:
        raise InputError(f"NIR import: {s['w_in']} weight of shape {weight.shape} (2-D only)")
    for name in (s["w_in"], s["w_rec"]):
        node = nodes.get(name) if name else None
        for field in ("weight", "bias"):
            v = getattr(node, field, None) if node is not None else None
            if v is not None and not np.all(np.isfinite(np.asarray(v, np.float64))):
                raise InputError(f"NIR import: {name}.{field} holds NaN or infinite values")
    n = weight.shape[0]
    tau = _vec(lif.tau_mem if isinstance(lif, nir.CubaLIF) else lif.tau, n, "tau")
    if isinstance(lif, nir.CubaLIF):
        tau_syn = _vec(lif.tau_syn, n, "tau_syn")
        if np.any(tau_syn > dt * 1.0001):
            raise InputError(f"NIR import: a CubaLIF with synaptic time constants up to "
                             f"{tau_syn.max() * 1e3:.1f} ms filters its input; tessera's neurons "
                             f"have no synaptic current (at most one step, {dt * 1e3:g} ms, "
                             f"passes through)")
        w_syn = _vec(lif.w_in, n, "w_in")
    else:
        w_syn = np.ones(n)
    if np.any(tau <= dt):
        raise InputError(f"NIR import: membrane time constants must exceed the step "
                         f"({dt * 1e3:g} ms); the smallest is {tau.min() * 1e3:.2f} ms")
    r = _vec(lif.r, n, "r")
    v_leak = _vec(lif.v_leak, n, "v_leak")
    thr = _vec(lif.v_threshold, n, "v_threshold")
    if np.any(thr <= 0):
        raise InputError("NIR import: thresholds must be positive")
    alpha = 1.0 - dt / tau
    gain = (dt / tau) * r * w_syn / thr                 # current -> threshold units per step
    bias = np.asarray(getattr(win, "bias", np.zeros(n)), np.float64).reshape(-1)
    bias = np.broadcast_to(bias, (n,)) if bias.size in (1, n) else None
    if bias is None:
        raise InputError(f"NIR import: {s['w_in']} bias does not have {n} values")
    out = dict(n=n, inputs=weight.shape[1], alpha=alpha,
               w_in=(weight * gain[:, None]).T,
               bias=bias * gain + (1.0 - alpha) * v_leak / thr,
               reset=(lif.metadata or {}).get("reset", "zero"),
               v_reset=_vec(lif.v_reset if lif.v_reset is not None else 0.0, n, "v_reset") / thr)
    if s["w_rec"]:
        rec = nodes[s["w_rec"]]
        wr = np.asarray(rec.weight, np.float64)
        if wr.shape != (n, n):
            raise InputError(f"NIR import: recurrent weight of shape {wr.shape}, needs {(n, n)}")
        out["w_rec"] = (wr * gain[:, None]).T
        rb = np.asarray(getattr(rec, "bias", 0.0), np.float64).reshape(-1)
        out["bias"] = out["bias"] + np.broadcast_to(rb, (n,)) * gain
    else:
        out["w_rec"] = np.zeros((n, n))
    if s["trace"]:
        li = nodes[s["trace"]]
        tau_o = _vec(li.tau, n, "LI tau")
        if np.any(tau_o <= dt):
            raise InputError("NIR import: LI time constants must exceed the step")
        out["kappa"] = 1.0 - dt / tau_o
    return out


def run_nir(graph, x: np.ndarray, reset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run a graph of the supported shape over ``x`` (steps, inputs), forward Euler at the
    graph's ``dt``: (spikes (steps, n), LI traces (steps, n), zeros without an LI).
    ``reset``: ``subtract`` (tessera's neuron), ``zero`` (NIR's: v := v_reset on a spike), or
    None: the LIF node's metadata, else NIR's."""
    s = _structure(graph)
    dt = float(np.asarray(graph.metadata.get("dt", 0.001)))
    q = _population(s, dt)
    reset = reset or q["reset"]
    n = q["n"]
    v, z, r = np.zeros(n), np.zeros(n), np.zeros(n)
    kappa = q.get("kappa", np.zeros(n))
    spikes, traces = np.zeros((len(x), n)), np.zeros((len(x), n))
    for t in range(len(x)):
        v = q["alpha"] * v + x[t] @ q["w_in"] + q["bias"] + z @ q["w_rec"]
        if reset == "subtract":
            v = v - z
        z = (v >= 1.0).astype(np.float64)
        if reset != "subtract":
            v = np.where(z > 0, q["v_reset"], v)
        r = kappa * r + z
        spikes[t], traces[t] = z, r
    return spikes, traces


def core_spikes(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trainer's own float core over ``x`` (steps, inputs): (spikes, traces), for checks."""
    import torch

    from ..learning.model import LIFState, decays, lif_step

    core = model.core
    p, m, cfg = core.params, core.masks, core.cfg
    with torch.no_grad():
        w_in, w_rec = (p["w_in"] * m["w_in"]).double(), (p["w_rec"] * m["w_rec"]).double()
        alpha, kappa = decays({k: v.double() for k, v in p.items()}, cfg)
        xt = torch.from_numpy(np.asarray(x, np.float64))
        drive = xt @ w_in + p["b"].double()
        zero = torch.zeros(1, cfg.neurons, dtype=torch.float64)
        state = LIFState(zero, zero, zero)
        zs, rs = [], []
        for t in range(len(x)):
            z, state = lif_step(drive[t:t + 1], state, w_rec, cfg, alpha, kappa)
            zs.append(z[0].numpy())
            rs.append(state.r[0].numpy())
    return np.array(zs), np.array(rs)


def from_nir(graph, like, layout: tuple[int, int, int] | None = None,
             dt_ms: float | None = None) -> tuple[object, dict, dict]:
    """A compatible graph as the trainer's core: (CoreConfig, params, report). ``like``: a
    trained Model whose config (data pipeline, readout) the imported core takes; ``layout``:
    (rows, cols, tile), by default 16-neuron tiles in the squarest grid (else one tile). The
    hop budget of the layout applies: recurrent weights it does not allow are dropped (counted
    in the report)."""
    import torch

    s = _structure(graph)
    dt = float(np.asarray(graph.metadata.get("dt", (dt_ms or like.core.cfg.dt_ms) / 1000.0)))
    if dt_ms is not None and abs(dt * 1000.0 - dt_ms) > 1e-6 and "dt" in graph.metadata:
        raise InputError(f"NIR import: the graph's dt is {dt * 1e3:g} ms, not {dt_ms:g}")
    q = _population(s, dt)
    n = q["n"]
    base = like.core.cfg
    if q["inputs"] != base.inputs:
        raise InputError(f"NIR import: the graph reads {q['inputs']} inputs; the model it joins "
                         f"({getattr(like, 'path', '')}) reads {base.inputs} (its data pipeline)")
    if q["reset"] != "subtract":
        resets = "NIR's reset to v_reset, imported as tessera's reset by subtraction"
    else:
        resets = "subtract (tessera's)"
    if layout is None:
        tiles = n // 16 if n % 16 == 0 else 0
        rows = max((d for d in range(1, int(tiles ** 0.5) + 1) if tiles % d == 0), default=0)
        layout = (rows, tiles // rows, 16) if rows else (1, 1, n)
    rows, cols, tile = layout
    if rows * cols * tile != n:
        raise InputError(f"NIR import: layout {rows}x{cols}x{tile} holds {rows * cols * tile} "
                         f"neurons, the graph has {n}")
    alpha, kappa = q["alpha"], q.get("kappa", np.full(n, base.kappa))
    per_neuron = bool(np.ptp(alpha) > 1e-9 or np.ptp(kappa) > 1e-9)
    cfg = dataclasses.replace(
        base, rows=rows, cols=cols, tile=tile, theta=1.0, dense=False, kind="lif",
        tau_mem_ms=float(-dt * 1000.0 / np.log(alpha.mean())),
        tau_out_ms=float(-dt * 1000.0 / np.log(kappa.mean())), dt_ms=dt * 1000.0,
        tau_learn=per_neuron, adapt=0.0)
    rec_mask = cfg.rec_mask()
    in_mask = cfg.in_mask()
    dropped = int(np.count_nonzero(q["w_rec"] * ~rec_mask))
    params = {"w_in": torch.tensor(q["w_in"] * in_mask, dtype=torch.float32),
              "w_rec": torch.tensor(q["w_rec"] * rec_mask, dtype=torch.float32),
              "b": torch.tensor(q["bias"], dtype=torch.float32),
              "w_out": torch.zeros(n * cfg.segments, cfg.classes),
              "b_out": torch.zeros(cfg.classes)}
    if per_neuron:
        params["a_mem"] = torch.tensor(np.log(alpha / (1 - alpha)), dtype=torch.float32)
        params["a_out"] = torch.tensor(np.log(kappa / (1 - kappa)), dtype=torch.float32)
    masks = {"w_in": torch.from_numpy(in_mask).float(),
             "w_rec": torch.from_numpy(rec_mask).float()}
    report = dict(neurons=n, inputs=q["inputs"], layout=f"{rows}x{cols}x{tile}",
                  dt_ms=dt * 1000.0, reset=resets, per_neuron_decays=per_neuron,
                  recurrent_connections=int(np.count_nonzero(params["w_rec"])),
                  dropped_by_hop_budget=dropped, trace=bool(s["trace"]))
    return cfg, {"params": params, "masks": masks}, report


def check_roundtrip(model, path: str, samples: np.ndarray) -> dict:
    """Read ``path`` back with ``nir.read`` and run it (:func:`run_nir`) against the trainer's
    own core on ``samples`` (count, steps, inputs): spike decisions that differ and the largest
    trace difference with tessera's reset, and the share of spike decisions that NIR's own
    reset keeps."""
    g = read_nir(path)
    differ, worst, same, total = 0, 0.0, 0, 0
    for x in samples:
        z_ref, r_ref = core_spikes(model, x)
        z, r = run_nir(g, x)
        differ += int((z != z_ref).sum())
        worst = max(worst, float(np.abs(r - r_ref).max()))
        z0, _ = run_nir(g, x, reset="zero")
        same += int((z0 == z_ref).sum())
        total += z_ref.size
    return {"samples": len(samples), "spike_decisions": total, "spikes_differing": differ,
            "max_trace_difference": worst, "nir_reset_agreement": round(same / max(total, 1), 4)}


def import_nir(path: str, like_path: str, out: str,
               layout: tuple[int, int, int] | None = None) -> dict:
    """A NIR file as a model bundle (``out``, a model.tsb) that ``tessera export``, ``eval`` and
    ``train --init`` take; the config (data pipeline, readout, meta-learned rates) comes from
    the trained model at ``like_path``."""
    import os

    from ..learning.storage import load_model, save_bundle

    like = load_model(like_path)
    cfg, tensors, report = from_nir(read_nir(path), like, layout)
    base = like.state
    config = dict(base["config"], core=dataclasses.asdict(cfg))
    state = dict(config=config, core=dataclasses.asdict(cfg), iteration=0,
                 params=tensors["params"], masks=tensors["masks"],
                 log_lr={k: v.clone() for k, v in base["log_lr"].items()},
                 extra={"imported_from": os.path.abspath(path), "nir": report},
                 level_eq=base["level_eq"])
    save_bundle(out, state)
    load_model(out)                                      # it must load as a model
    return dict(report, out=out, like=like_path)
