import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tessera.trainer.learning.meta import inner_adapt, readout_loss  # noqa: E402
from tessera.trainer.learning.model import Core, CoreConfig, core_features, fast_sigmoid, spike  # noqa: E402


def test_surrogate_first_and_second_derivatives():
    u = torch.tensor([-0.3, -0.01, 0.02, 0.5], dtype=torch.float64, requires_grad=True)
    z = spike(u, 10.0)
    assert z.tolist() == [0.0, 0.0, 1.0, 1.0]
    g, = torch.autograd.grad(z.sum(), u, create_graph=True)
    assert torch.allclose(g, 1 / (10 * u.abs() + 1) ** 2)
    h, = torch.autograd.grad(g.sum(), u)
    assert torch.allclose(h, -20 * torch.sign(u) / (10 * u.abs() + 1) ** 3)
    assert torch.autograd.gradcheck(lambda v: fast_sigmoid(v, 10.0), (u,))
    assert torch.autograd.gradgradcheck(lambda v: fast_sigmoid(v, 10.0), (u,))


def tiny(smooth=False):
    cfg = CoreConfig(inputs=6, rows=2, cols=2, tile=3, classes=3, dt_ms=10.0, smooth=smooth)
    core = Core(cfg, seed=3)
    with torch.no_grad():
        core.params["w_in"].mul_(4.0)
    x = (torch.rand(9, 12, 6, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    p = {k: v.detach().double().requires_grad_(True) for k, v in core.params.items()}
    return cfg, core, x, p


def test_maml_second_order_gradient_matches_finite_differences():
    """d(query loss after one inner step of the whole core)/d(w_rec), MAML second order.

    Finite differences need a smooth network: the same core with the fast sigmoid in place of the
    spike checks that torch.func's inner gradients are differentiated correctly."""
    cfg, core, x, p = tiny(smooth=True)
    y = torch.tensor([0, 1, 2] * 3)
    masks = {k: v.double() for k, v in core.masks.items()}

    def outer(params):
        def inner_loss(fast):
            phi, _ = core_features(x[:6], fast, cfg, masks)
            return readout_loss(fast, phi, y[:6])

        fast = inner_adapt(dict(params), inner_loss, {k: 0.5 for k in params}, steps=1)
        phi_q, _ = core_features(x[6:], fast, cfg, masks)
        return readout_loss(fast, phi_q, y[6:])

    with torch.no_grad():
        p["w_out"].normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    loss = outer(p)
    g_auto, = torch.autograd.grad(loss, p["w_rec"])
    # central finite differences on a few entries that carry a connection
    idx = [tuple(i) for i in np.argwhere(core.masks["w_rec"].numpy() > 0)[:5]]
    eps = 1e-6
    for i in idx:
        plus = {k: v.detach().clone() for k, v in p.items()}
        minus = {k: v.detach().clone() for k, v in p.items()}
        plus["w_rec"][i] += eps
        minus["w_rec"][i] -= eps
        fd = (outer(plus) - outer(minus)) / (2 * eps)
        assert abs(float(fd) - float(g_auto[i])) < 1e-5 * max(1.0, abs(float(fd))), (i, fd, g_auto[i])
    # with spikes, the first-order gradient differs: the second-order term is really there
    cfg, core, x, p = tiny(smooth=False)
    masks = {k: v.double() for k, v in core.masks.items()}
    with torch.no_grad():
        p["w_out"].normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    g_auto, = torch.autograd.grad(outer(p), p["w_rec"])
    def outer_fo(params):
        def inner_loss(fast):
            phi, _ = core_features(x[:6], fast, cfg, masks)
            return readout_loss(fast, phi, y[:6])
        fast = inner_adapt(dict(params), inner_loss, {k: 0.5 for k in params}, 1, first_order=True)
        phi_q, _ = core_features(x[6:], fast, cfg, masks)
        return readout_loss(fast, phi_q, y[6:])
    g_fo, = torch.autograd.grad(outer_fo(p), p["w_rec"])
    assert not torch.allclose(g_fo, g_auto)


def test_one_readout_step_from_zero_is_a_centred_prototype_classifier():
    phi = torch.randn(10, 7, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    init = {"w_out": torch.zeros(7, 5, dtype=torch.float64), "b_out": torch.zeros(5, dtype=torch.float64)}
    fast = inner_adapt(init, lambda f: readout_loss(f, phi, y), {"w_out": 3.0, "b_out": 3.0}, 1)
    means = torch.stack([phi[y == k].mean(0) for k in range(5)])
    expected = 3.0 / 5 * (means - means.mean(0)).T        # lr / K * (c_k - mean of c)
    assert torch.allclose(fast["w_out"], expected)
    assert torch.allclose(fast["b_out"], torch.zeros(5, dtype=torch.float64))


def test_layout_masks_and_hop_budget():
    cfg = CoreConfig(max_hops=1)
    m = cfg.rec_mask()
    hops = cfg.layout.neuron_hops()
    assert not m[hops > 1].any() and m[hops == 1].all() and not np.diag(m).any()
    dense = CoreConfig(dense=True).rec_mask()
    assert dense.sum() == 256 * 255
    border = CoreConfig(border_inputs=True, inputs=40).in_mask()
    assert border[:, 64:].sum() == 0 and border.sum(axis=1).tolist() == [16] * 40


def test_fused_bptt_matches_autograd():
    cfg = CoreConfig(inputs=20, rows=2, cols=2, tile=8, classes=3)
    core = Core(cfg, seed=5)
    with torch.no_grad():
        core.params["w_in"].mul_(6.0)
    x = (torch.rand(7, 30, 20, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    grads = []
    for fused in (False, True):
        for p in core.params.values():
            p.grad = None
        phi, rate = core.features(x, fused=fused, bptt=20)
        ((phi ** 2).sum() + 3 * rate.sum()).backward()
        grads.append((phi.detach(), rate.detach(), core.params["w_rec"].grad.clone(),
                      core.params["w_in"].grad.clone(), core.params["b"].grad.clone()))
    assert float(grads[0][1].mean()) > 0.02                     # the neurons do spike
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(tau_learn=True, tau_spread=8.0), dict(adapt=0.4),
                                dict(adapt=0.4, tau_learn=True, tau_spread=4.0)])
def test_fused_scan_matches_autograd_with_learned_taus_and_adaptation(kw):
    """The hand-written backward's gradients for per-neuron decays and the adaptation trace."""
    cfg = CoreConfig(inputs=20, rows=2, cols=2, tile=8, classes=3, segments=4, **kw)
    core = Core(cfg, seed=5)
    with torch.no_grad():
        core.params["w_in"].mul_(6.0)
    x = (torch.rand(7, 30, 20, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    w = torch.randn(7, cfg.neurons * cfg.segments, generator=torch.Generator().manual_seed(4))
    grads = []
    for fused in (False, True):
        for p in core.params.values():
            p.grad = None
        phi, rate = core.features(x, fused=fused, bptt=20)
        ((phi * w).sum() + 3 * rate.sum()).backward()
        grads.append([phi.detach(), rate.detach()] + [core.params[k].grad.clone() for k in
                                                       sorted(core.params) if k[0] in "wab"
                                                       and core.params[k].grad is not None])
    assert len(grads[0]) == len(grads[1]) == 2 + 3 + 2 * cfg.tau_learn
    assert float(grads[0][1].mean()) > 0.02
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    if cfg.tau_learn:                    # the decays are spread as asked and really do move phi
        alpha = torch.sigmoid(core.params["a_mem"]).detach()
        assert float(alpha.min()) < cfg.alpha + 0.05 and float(alpha.max()) > cfg.alpha + 0.1
        assert float(core.params["a_mem"].grad.abs().max()) > 0


def test_adaptation_lowers_the_firing_rate():
    cfg = CoreConfig(inputs=20, rows=2, cols=2, tile=8, classes=3)
    x = (torch.rand(4, 60, 20, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    rates = []
    for adapt in (0.0, 0.5):
        core = Core(dataclasses.replace(cfg, adapt=adapt), seed=5)
        with torch.no_grad():
            core.params["w_in"].mul_(6.0)
            rates.append(float(core.features(x)[1].mean()))
    assert rates[1] < 0.8 * rates[0]


def test_dtw_matches_a_plain_dynamic_programme():
    from tessera.trainer.evaluation.baselines import dtw_distances

    def plain(a, b):
        T, U = len(a), len(b)
        D = np.full((T + 1, U + 1), np.inf)
        D[0, 0] = 0
        for i in range(1, T + 1):
            for j in range(1, U + 1):
                D[i, j] = np.linalg.norm(a[i - 1] - b[j - 1]) + min(D[i - 1, j], D[i, j - 1],
                                                                   D[i - 1, j - 1])
        return D[T, U] / (T + U)

    rng = np.random.default_rng(0)
    a, b = rng.random((3, 12, 5)), rng.random((2, 9, 5))
    expected = np.array([[plain(x, y) for y in b] for x in a])
    assert np.allclose(dtw_distances(a, b), expected)
    # a time-warped copy is closer than another random sequence
    warped = np.repeat(a[:1], 2, axis=1)[:, ::1][:, :20]
    d = dtw_distances(warped, np.concatenate([a[:1], a[1:2]]))
    assert d[0, 0] < d[0, 1]


def test_onnx_one_step_export_matches_the_trainer(tmp_path):
    """`tessera export --format onnx`: one bin as a graph (state in, state out), checked by
    onnx.checker; run with onnxruntime over a window it gives the trainer's spikes and, averaged
    per segment, its features."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import json
    from pathlib import Path

    import numpy as np
    from helpers import tessera

    from tessera.trainer.learning.model import core_features
    from tessera.trainer.learning.storage import load_model

    model_pt = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tsb"
    out = tmp_path / "step.onnx"
    r = tessera("export", model_pt, "--format", "onnx", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] == out.stat().st_size
    m = load_model(str(model_pt))
    cfg = m.core.cfg
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    steps, n = 100, cfg.neurons
    x = ((rng.random((2, steps, cfg.inputs)) < 0.06) * rng.integers(1, 4, (2, steps, cfg.inputs))
         ).astype(np.float32)
    v = z = rr = np.zeros((2, n), np.float32)
    acc = np.zeros((cfg.segments, 2, n))
    for t in range(steps):
        z, v, rr = sess.run(None, {"x": x[:, t], "v": v, "z": z, "r": rr})
        acc[t * cfg.segments // steps] += rr
    lens = np.bincount(np.arange(steps) * cfg.segments // steps)
    phi = (acc / lens[:, None, None]).transpose(1, 0, 2).reshape(2, -1)
    if cfg.normalize == "l2":
        phi = phi / (np.linalg.norm(phi, axis=1, keepdims=True) + 1e-6)
    with torch.no_grad():
        ref, _ = core_features(torch.from_numpy(x), m.core.params, cfg, m.core.masks)
    assert np.abs(phi - ref.numpy()).max() < 1e-4 and acc.sum() > 0
