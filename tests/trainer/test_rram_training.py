import pytest

torch = pytest.importorskip("torch")

from tessera.trainer.learning.rram import (  # noqa: E402
    RRAMTrainConfig, device_weight, error_triggered, quantize, quantize_update, stuck_map,
    threshold_update)


def test_quantize_levels_and_straight_through():
    x = torch.linspace(-1, 1, 101, requires_grad=True)
    q = quantize(x, 0.25)
    assert set(torch.unique(q.detach()).tolist()) <= {-1, -.75, -.5, -.25, 0, .25, .5, .75, 1}
    g, = torch.autograd.grad(q.sum(), x)
    assert torch.all(g == 1)


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = torch.full((20000,), 0.3)
    a = quantize(x, 1.0, True, torch.Generator().manual_seed(0))
    b = quantize(x, 1.0, True, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and abs(float(a.mean()) - 0.3) < 0.01
    assert set(torch.unique(a).tolist()) == {0.0, 1.0}


def test_device_weight_levels_noise_drift_and_absent_connections():
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    w[0] = 0
    w.requires_grad_(True)
    ideal = RRAMTrainConfig(enabled=True, weight_bits=4, write_noise=(0, 0))
    d = device_weight(w, ideal)
    assert torch.unique(d.detach()).numel() <= 15              # 4 bits: -7..7 levels
    assert torch.all(d.detach()[0] == 0)                       # a missing connection stays missing
    g, = torch.autograd.grad(d.sum(), w)
    assert torch.all(g == 1)
    noisy = device_weight(w, RRAMTrainConfig(enabled=True), torch.Generator().manual_seed(2))
    err = (noisy - w).detach()[1:]
    assert 0.01 < float(err.std() / w.detach()[1:].std()) < 0.5
    drifted = device_weight(w, RRAMTrainConfig(enabled=True, write_noise=(0, 0), drift_seconds=3600 * 24))
    assert float(drifted.detach().abs().sum()) < float(device_weight(w, ideal.__class__(enabled=True, write_noise=(0, 0))).detach().abs().sum())
    assert device_weight(w, RRAMTrainConfig()) is w                 # disabled: untouched


def test_stuck_faults():
    w = torch.ones(100, 100)
    stuck = stuck_map(w.shape, 0.1, torch.Generator().manual_seed(0))
    assert 0.07 < float((stuck > 0).float().mean()) < 0.13
    d = device_weight(w, RRAMTrainConfig(enabled=True, write_noise=(0, 0), w_max_std=1e9), stuck=stuck)
    assert torch.all(d[stuck == 3] == 0)


def test_update_transforms():
    delta = torch.tensor([0.001, -0.5, 0.2, 0.04])
    assert torch.equal(threshold_update(delta, 0.1), torch.tensor([0.0, -0.5, 0.2, 0.0]))
    q = quantize_update(delta, 2)                               # 2 bits: -1, 0, 1 times max
    assert set(q.tolist()) <= {-0.5, 0.0, 0.5}
    p = torch.tensor([[0.7, 0.2, 0.1]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.allclose(error_triggered(p, y, 0.15), torch.tensor([[-0.3, 0.2, 0.0]]))
