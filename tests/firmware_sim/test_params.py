"""The board's parameters from one table (firmware_sim/params.py)."""

import numpy as np
import pytest

from tessera.firmware_sim.params import (DEFAULT_PARAMS, PARAM_RULES, PERSON_CAP, check_param,
                                         person_threshold)
from tessera.protocol.messages import ProtocolError


def test_every_parameter_has_a_rule_and_its_default_passes_it():
    assert set(DEFAULT_PARAMS) == set(PARAM_RULES)
    for name, value in DEFAULT_PARAMS.items():
        assert check_param(name, value) == (name, value)


@pytest.mark.parametrize("name,value,error", [
    ("detect", 1, "BAD_FIELD"), ("hop_ms", -1, "BAD_FIELD"), ("hop_ms", True, "BAD_FIELD"),
    ("min_confidence", 1.5, "BAD_FIELD"), ("trigger", "clap", "BAD_FIELD"),
    ("threshold", "someone", "BAD_FIELD"), ("volume", 3, "UNKNOWN_PARAM"),
    ("", 3, "UNKNOWN_PARAM")])
def test_a_value_outside_its_rule_is_refused_by_name(name, value, error):
    with pytest.raises(ProtocolError) as exc:
        check_param(name, value)
    assert exc.value.name == error


def test_aliases_and_the_threshold_words():
    assert check_param("detect_confidence", 0.5) == ("min_confidence", 0.5)
    assert check_param("threshold", "model") == ("threshold", None)
    assert check_param("threshold", "person") == ("threshold", "person")


def test_person_threshold_sits_above_untaught_scores_within_its_bounds(model4):
    from tessera.runtime.chip import Chip

    chip = Chip.load(model4)
    one = 1 << chip.tab.cos_frac
    assert person_threshold(chip, []) == chip.tab.none_threshold      # nothing to fit
    rng = np.random.default_rng(0)
    for k in range(3):
        chip.enroll(f"w{k}", [rng.integers(0, 200, chip.tab.features)])
    t = person_threshold(chip, [])
    c = chip.readout.column_cosines()
    np.fill_diagonal(c, -one)
    assert t >= min(c.max() + round(0.02 * one), round(PERSON_CAP * one))
    assert chip.tab.none_threshold <= t <= round(PERSON_CAP * one)
