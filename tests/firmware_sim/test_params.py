"""The board's parameters from one table (firmware_sim/params.py)."""

import numpy as np
import pytest

from tessera.firmware_sim.params import (DEFAULT_PARAMS, PARAM_RULES, PERSON_CAP, PERSON_MARGIN,
                                         check_param, held_out_scores, person_fit,
                                         person_threshold)
from tessera.protocol.messages import ProtocolError
from tessera.runtime.readout import column_norms, cosines


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


def _chip_with_words(model4, words: int = 3):
    from tessera.runtime.chip import Chip

    chip = Chip.load(model4)
    rng = np.random.default_rng(0)
    for k in range(words):
        chip.enroll(f"w{k}", [rng.integers(0, 200, chip.tab.features)])
    return chip


def test_person_threshold_stays_the_models_without_a_held_out_shot(model4):
    chip = _chip_with_words(model4)
    model = chip.tab.none_threshold
    assert person_threshold(chip, [], []) == model                      # nothing to check
    fit = person_fit(chip, [], [])
    assert fit["threshold"] == model and "held-out shot" in fit["limited_by"]
    assert fit["untaught"] == 3                  # each word against the others: known, not used


def test_person_threshold_rises_above_untaught_words_but_never_past_their_own(model4):
    chip = _chip_with_words(model4)
    tab, one = chip.tab, 1 << chip.tab.cos_frac
    model, margin = tab.none_threshold, round(PERSON_MARGIN * one)
    c = chip.readout.column_cosines()
    np.fill_diagonal(c, -one)
    top = int(c.max())                                                  # the untaught words' best
    # own held-out shots well above: the threshold clears every untaught score
    high = [("w0", min(top + 4 * margin, one))]
    t = person_threshold(chip, [], high)
    assert t == max(model, min(top + margin, round(PERSON_CAP * one)))
    # one held-out shot below the untaught words: the threshold stays under it
    low = high + [("w1", max(top - margin, model + 3 * margin))]
    fit = person_fit(chip, [], low)
    assert fit["threshold"] <= low[-1][1] - margin or fit["threshold"] == model
    assert fit["own_kept"] == fit["own"] == 2                           # it costs no own shot
    assert fit["threshold"] >= model
    # own shots below the model's threshold: never below the model's
    fit = person_fit(chip, [], [("w0", model - 10 * margin)])
    assert fit["threshold"] == model and fit["limited_by"].startswith("the model's")


def test_held_out_scores_are_the_shots_the_column_has_not_learned(model4):
    from tessera.runtime.chip import Chip

    chip = Chip.load(model4)
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 200, chip.tab.features) for _ in range(3))
    assert held_out_scores(chip, "x", [a]) == []                        # one shot: nothing
    two = held_out_scores(chip, "x", [a, b])                            # leave-one-out
    def cos(x, y):
        return int(cosines(x, y[:, None], column_norms(y[:, None]), chip.tab.cos_frac)[0])
    assert two == [cos(a, b), cos(b, a)]                                # each against the other
    chip.enroll("x", [a])
    again = held_out_scores(chip, "x", [c])                             # against the column
    assert again == chip.scores_q(c[None], np.array([chip.readout.names.index("x")]))[0].tolist()
