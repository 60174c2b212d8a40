"""NIR export and import, NeuroBench metrics, and meta-training across processes with
torch.distributed."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nir = pytest.importorskip("nir")

from helpers import DEFAULT_MODEL, tessera  # noqa: E402

from tessera.runtime.errors import InputError  # noqa: E402
from tessera.trainer.exchange.nir_io import (core_spikes, from_nir, read_nir, run_nir,  # noqa: E402
                                    to_nir)
from tessera.trainer.learning.storage import load_model  # noqa: E402


def _spikes(steps, inputs, seed=0, p=0.06):
    return (np.random.default_rng(seed).random((steps, inputs)) < p).astype(np.float64)


def test_nir_export_reads_back_and_runs_as_the_trainer(tmp_path):
    """`tessera export --format nir`: nir.read gives the graph back; run with tessera's reset
    it makes the trainer's spikes exactly; NIR's own reset (to v_reset) is a different network,
    which the check measures; the imported file is the same core again."""
    out = tmp_path / "core.nir"
    r = tessera("export", DEFAULT_MODEL, "--format", "nir", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["bytes"] == out.stat().st_size and s["check"]["spikes_differing"] == 0
    assert 0.5 < s["check"]["nir_reset_agreement"] < 1.0       # NIR's reset differs
    g = nir.read(str(out))
    assert isinstance(g.nodes["lif"], nir.LIF) and isinstance(g.nodes["trace"], nir.LI)
    assert isinstance(g.nodes["w_in"], nir.Affine) and isinstance(g.nodes["w_rec"], nir.Linear)
    assert g.nodes["lif"].metadata["reset"] == "subtract"
    m = load_model(str(DEFAULT_MODEL))
    x = _spikes(100, m.core.cfg.inputs, 3)
    z_ref, r_ref = core_spikes(m, x)
    z, tr = run_nir(g, x)
    assert z_ref.sum() > 100 and np.array_equal(z, z_ref) and np.abs(tr - r_ref).max() < 1e-3

    pt = tmp_path / "imported" / "model.tsb"
    r = tessera("import-nir", out, "--like", DEFAULT_MODEL, "--out", pt, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["layout"] == "4x4x16" and rep["dropped_by_hop_budget"] == 0
    b = load_model(str(pt))
    xx = torch.from_numpy(np.stack([x, _spikes(100, m.core.cfg.inputs, 4)]).astype(np.float32))
    with torch.no_grad():
        fa, _ = m.core.features(xx)
        fb, _ = b.core.features(xx)
    assert float((fa - fb).abs().max()) < 1e-4


def _foreign_graph(n=32, inputs=233, nested=True, tau_syn=0.01, seed=0):
    """A recurrent LIF layer as another NIR tool might write it: a CubaLIF whose synaptic
    current passes straight through (tau_syn = dt), per-neuron thresholds, resistances and
    leak voltages, the recurrent part as a nested subgraph (snnTorch's RLeaky style)."""
    rng = np.random.default_rng(seed)
    dt = 0.01
    tau = rng.uniform(0.03, 0.2, n)
    lif = nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=tau, r=rng.uniform(2, 8, n),
                      v_leak=rng.uniform(-0.05, 0.05, n), v_threshold=rng.uniform(0.5, 2, n),
                      v_reset=np.zeros(n), w_in=np.ones(n), metadata={"reset": "subtract"})
    w_rec = rng.normal(0, 0.3, (n, n)) * (rng.random((n, n)) < 0.3)
    np.fill_diagonal(w_rec, 0.0)
    w_in = nir.Affine(weight=rng.normal(0, 0.4, (n, inputs)), bias=rng.normal(0, 0.01, n))
    inner = {"input": nir.Input(input_type={"input": np.array([n])}), "lif": lif,
             "w_rec": nir.Linear(weight=w_rec), "output": nir.Output(output_type={"output": np.array([n])})}
    nodes = {"input": nir.Input(input_type={"input": np.array([inputs])}), "fc": w_in,
             "li": nir.LI(tau=np.full(n, 0.06), r=np.full(n, 6.0), v_leak=np.zeros(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    if nested:
        nodes["rlif"] = nir.NIRGraph(nodes=inner, edges=[("input", "lif"), ("lif", "w_rec"),
                                                         ("w_rec", "lif"), ("lif", "output")])
        edges = [("input", "fc"), ("fc", "rlif"), ("rlif", "li"), ("li", "output")]
    else:
        nodes.update(lif=lif, w_rec=inner["w_rec"])
        edges = [("input", "fc"), ("fc", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                 ("lif", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt})


def test_nir_import_of_a_foreign_graph_runs_the_same_network(tmp_path):
    """A graph from another tool, written and read with nir: the imported core (thresholds,
    resistances and leaks folded into weights and bias, per-neuron decays) spikes exactly as
    the graph does; the hop budget of a one-tile layout drops nothing, and a layout of 2x2
    tiles with a small hop budget drops what it must and says how many."""
    like = load_model(str(DEFAULT_MODEL))
    path = tmp_path / "foreign.nir"
    nir.write(str(path), _foreign_graph())
    g = read_nir(str(path))
    cfg, tensors, rep = from_nir(g, like, layout=(1, 1, 32))
    assert cfg.tau_learn and rep["dropped_by_hop_budget"] == 0 and rep["trace"]
    core = type(like.core)(cfg)
    with torch.no_grad():
        for k, v in tensors["params"].items():
            core.params[k].copy_(v)
        for k, v in tensors["masks"].items():
            core.masks[k].copy_(v)
    model = type("M", (), {"core": core})()
    x = _spikes(120, 233, 5, 0.1)
    z, traces = run_nir(g, x)
    z_core, r_core = core_spikes(model, x)
    assert z.sum() > 50 and np.array_equal(z, z_core)
    assert np.abs(traces - r_core).max() < 1e-3
    flat = _foreign_graph(nested=False)
    assert np.array_equal(run_nir(flat, x)[0], z)                   # nesting changes nothing
    like.core.cfg = dataclasses.replace(like.core.cfg, max_hops=2)      # a tight hop budget
    cfg2, t2, rep2 = from_nir(flat, like, layout=(4, 4, 2))
    w = flat.nodes["w_rec"].weight.T
    kept = int(np.count_nonzero(w * cfg2.rec_mask()))
    assert rep2["layout"] == "4x4x2" and rep2["recurrent_connections"] == kept
    assert rep2["dropped_by_hop_budget"] == int(np.count_nonzero(w)) - kept > 0


@pytest.mark.parametrize("change, message", [
    (lambda g: g.nodes["rlif"].nodes["lif"].__setattr__("tau_syn", np.full(32, 0.05)),
     "synaptic time constants up to 50.0 ms"),
    (lambda g: g.nodes.__setitem__("fc", nir.Affine(weight=np.ones((32, 10)),
                                                     bias=np.zeros(32))), "reads 10 inputs"),
    (lambda g: (g.nodes.__setitem__("extra", nir.Linear(weight=np.eye(32))),
                g.edges.append(("li", "extra"))), "only an LI and an Output"),
    (lambda g: g.nodes["fc"].weight.__setitem__((0, 0), np.nan), "fc.weight holds NaN"),
])
def test_nir_import_refuses_what_it_cannot_hold(change, message):
    g = _foreign_graph()
    change(g)
    with pytest.raises(InputError, match=message):
        from_nir(g, load_model(str(DEFAULT_MODEL)), layout=(1, 1, 32))


def test_nir_file_errors_are_named(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    r = tessera("import-nir", bad, "--out", tmp_path / "m.pt")
    assert r.returncode != 0 and "not a readable NIR file" in r.stderr and "bad.nir" in r.stderr
    r = tessera("import-nir", tmp_path / "none.nir", "--out", tmp_path / "m.pt")
    assert r.returncode != 0 and "no such NIR file" in r.stderr
    gru = load_model(str(DEFAULT_MODEL))
    gru.core.cfg = dataclasses.replace(gru.core.cfg, kind="gru", segment_mode="window")
    with pytest.raises(InputError, match="a gru core is not a spiking network"):
        to_nir(gru)


TINY = ["--set", "train.iterations=4", "--set", "train.eval_every=100", "--set",
        "train.eval_episodes=20", "--set", "meta.tasks_per_batch=4", "--set", "data.queries=2",
        "--set", "data.shots=[1]", "--threads", "1", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_same_model_as_one(small_corpus, tmp_path):
    """torchrun with 2 processes (gloo): each runs half of every meta-batch's tasks, gradients
    averaged; the model equals one process's for the same seed (to float rounding), and a run
    can start from an imported NIR core (--init)."""
    one, two = tmp_path / "one", tmp_path / "two"
    r = tessera("train", "--data", small_corpus, "--out", one, *TINY)
    assert r.returncode == 0, r.stderr
    # faulthandler: a rank that aborts prints its Python stack (one did about 1 run in 20 under
    # load, SIGABRT "terminate called without an active exception", until the ranks waited for
    # each other before tearing the process group down: tessera/cli/learn.py)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        "-m", "tessera", "train", "--data", str(small_corpus), "--out", str(two),
                        "--json", *TINY], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, "\n".join(  # without the launcher's timestamped log lines
        line for line in r.stderr.splitlines()
        if not (line[:1] in ("W", "E") and line[1:5].isdigit())
    )[-6000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])                 # rank 0 reports alone
    assert s["processes"] == 2 and s["iterations"] == 4
    a = load_model(str(one / "model.tsb")).core.params
    b = load_model(str(two / "model.tsb")).core.params
    start = load_model(str(one / "model.tsb"))
    for k in ("w_in", "w_rec", "b"):
        assert torch.allclose(a[k], b[k], atol=2e-5), (k, float((a[k] - b[k]).abs().max()))
    assert start.iteration == 4

    nir_file, init = tmp_path / "core.nir", tmp_path / "init" / "model.tsb"
    assert tessera("export", one / "model.tsb", "--format", "nir", "--out", nir_file).returncode == 0
    r = tessera("import-nir", nir_file, "--like", one / "model.tsb", "--out", init)
    assert r.returncode == 0, r.stderr
    r = tessera("train", "--data", small_corpus, "--out", tmp_path / "ft", "--init", init,
                "--json", *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["init"] == str(init)
    r = tessera("export", tmp_path / "ft" / "model.tsb", "--bits", "4", "--out", tmp_path / "ft.tsr")
    assert r.returncode == 0, r.stderr                   # and on to the chip


def test_neurobench_metrics_of_the_float_model_and_the_chip_counters(small_corpus, tmp_path):
    """`tessera bench neurobench`: the neurobench package's footprint, sparsities and synaptic
    operations of the float model; NeuroBench's counting rule applied to the model's own spikes
    gives its figure exactly; the chip's counters on the same utterances are near it."""
    pytest.importorskip("neurobench")
    r = tessera("bench", "neurobench", "--data", small_corpus, "--count", "16", "--json",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    x = json.loads(r.stdout)
    nb, chip = x["neurobench"], x["chip"]
    assert x["rule_equals_neurobench"] and x["utterances"] == 16
    assert nb["parameter_count"] == 233 * 256 + 256 + 256 * 256      # W_in, bias, W_rec
    assert nb["footprint_bytes"] >= 4 * nb["parameter_count"]
    assert 0.5 < nb["activation_sparsity"] < 1 and abs(
        chip["activation_sparsity"] - nb["activation_sparsity"]) < 0.02
    assert 0.7 < x["chip_vs_float"]["synops_ratio_same_rule"] < 1.1
    assert nb["synops_effective_macs"] + nb["synops_effective_acs"] < nb["synops_dense"]
