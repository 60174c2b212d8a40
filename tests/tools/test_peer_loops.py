"""The peers of `bench runtime` (tools/peer_loops.py) do the chip's work: their trace sums give
the trainer's own features on the same bins."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_peers_compute_the_trainers_features():
    from helpers import REPO
    from tessera.tools.peer_loops import peer_loops
    from tessera.trainer.learning.model import core_features, readout_features
    from tessera.trainer.learning.storage import load_model

    model = load_model(str(REPO / "models" / "default" / "model.tsb"))
    cfg = model.core.cfg
    rng = np.random.default_rng(0)
    x = ((rng.random((100, cfg.inputs)) < 0.3) * rng.integers(1, 3, (100, 1))).astype(np.float32)
    with torch.no_grad():
        ref, _ = core_features(torch.from_numpy(x)[None], model.core.params, cfg,
                               model.core.masks)
    loops, missing = peer_loops(model, x)
    assert "torch (lean)" in loops and set(loops) | set(missing) >= {"rockpool XyloSim"}
    for name, loop in loops.items():
        acc = torch.as_tensor(np.asarray(loop()))[:, None, :]
        phi = readout_features(acc.float(), 100, cfg.normalize)
        assert torch.allclose(phi, ref, atol=1e-4), name
    assert all(isinstance(why, str) and why for why in missing.values())
