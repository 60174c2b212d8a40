"""Hostile-but-valid models and flash images (issue 35 item 6): each attack of the catalogue,
written by the project's own valid writers, against a board; no torch needed."""

import copy

import numpy as np
import pytest

from tessera.firmware_sim import factory_model
from tessera.runtime.model_format import decode_model
from tessera.tools.hostile import (MODEL_ATTACKS, hostile_model, run_hostile_images,
                                   run_hostile_models)


def test_every_model_attack_writes_a_valid_file():
    """The writer's own CRC and structure: every hostile model decodes; only its content is
    hostile."""
    m = decode_model(open(factory_model(), "rb").read())
    rng = np.random.default_rng(3)
    for name, attack in MODEL_ATTACKS.items():
        d = copy.deepcopy({k: getattr(m, k) for k in ("meta", "frontend", "core", "readout",
                                                         "labels")})
        assert attack(d, rng)
    from tessera.runtime.errors import InputError
    for _ in range(20):
        blob, what = hostile_model(m, rng)
        try:
            decode_model(blob)                          # the writer's file: the CRC holds
        except InputError as exc:                       # only what it says may be refused
            assert "labels" in str(exc) or "meta" in str(exc), exc
        assert what


@pytest.mark.slow
def test_hostile_models_and_images_leave_a_board_that_answers_and_teaches():
    models = run_hostile_models(factory_model(), count=40, seed=5)
    images = run_hostile_images(factory_model(), count=30, seed=5)
    for r in (models, images):
        assert r["failures"] == 0, r["examples"]
        assert r["worst_ms"] < 2000 and r["peak_mb"] < 256
    assert models["rejected"] > 0 and models["accepted"] > 0
    assert images["booted_without"] > 0 and images["silent_empty"] == 0
