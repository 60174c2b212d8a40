"""The board's parameters (``set_param``/``get_param``), validated from one table, and the
decision registers they set on the chip: the cosine threshold (the model file's, a fixed one, or
fitted to this person) and the confidence gate."""

from __future__ import annotations

import numpy as np

from ..protocol.messages import ProtocolError

__all__ = ["DEFAULT_PARAMS", "ALIASES", "PARAM_RULES", "PERSON_MARGIN", "PERSON_CAP",
           "MAX_NEGATIVES", "check_param", "untaught_scores", "person_threshold", "apply_threshold"]

#: ``set_param`` names and defaults. threshold: the "none of these" cosine (None: the model's;
#: "person": fitted to this person at every enroll, forget and untaught, see
#: :func:`person_threshold`); min_confidence: the calibrated probability an answer needs (0: the
#: threshold alone). Both are the chip's one decision rule, for ``infer`` and detection alike.
#: Detection (firmware_sim/detect.py) opens a window of the model's length at each sound onset
#: (``trigger`` "onset": at least ``onset_events`` input events in a ms after 100 ms of quiet)
#: or every ``hop_ms`` (``trigger`` "hop"), drops windows whose sound lasts longer than
#: ``max_word_ms`` (noise that fills the window), keeps the best of the accepted windows within
#: ``nms_ms`` of each other, and does not report a word again within ``refractory_ms``.
#: autosave: a loaded model, an enroll, a forget and an untaught are written to flash (if any)
#: before they are answered.
DEFAULT_PARAMS = {"detect": False, "min_confidence": 0.0, "write_noise": 0.0,
                  "threshold": None, "hop_ms": 250, "refractory_ms": 1000, "trigger": "onset",
                  "onset_events": 2, "nms_ms": 500, "max_word_ms": 800, "autosave": True}
ALIASES = {"detect_confidence": "min_confidence"}     # the name before one rule served both
PERSON_MARGIN = 0.02    # threshold "person": this much (a cosine) above every untaught score,
PERSON_CAP = 0.95       # and never above this
MAX_NEGATIVES = 16      # untaught recordings kept (``untaught``), the oldest dropped

#: ``set_param`` rules, one per parameter: ("bool",), ("number", low, high), ("choice", values);
#: "threshold" is a cosine in [-1, 1], "model" (stored as None) or "person"
PARAM_RULES = {
    "detect": ("bool",), "autosave": ("bool",),
    "min_confidence": ("number", 0.0, 1.0), "write_noise": ("number", 0.0, 1.0),
    "threshold": ("number", -1.0, 1.0),
    "hop_ms": ("number", 0, 60_000), "refractory_ms": ("number", 0, 60_000),
    "nms_ms": ("number", 0, 10_000), "max_word_ms": ("number", 0, 10_000),
    "onset_events": ("number", 1, 10_000),
    "trigger": ("choice", ("onset", "hop")),
}


def check_param(name, value) -> tuple[str, object]:
    """(the parameter's name, its value) if ``value`` is valid for it, else ProtocolError
    (UNKNOWN_PARAM, BAD_FIELD): the one check of a ``set_param`` and of parameters restored from
    flash."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in PARAM_RULES:
        raise ProtocolError("UNKNOWN_PARAM", f"no parameter {name!r} (have "
                                             f"{sorted(PARAM_RULES)})")
    rule = PARAM_RULES[name]
    if name == "threshold" and value in ("model", None):        # the model file's threshold
        return name, None
    if name == "threshold" and value == "person":                # fitted at every enroll
        return name, value
    if rule[0] == "bool":
        if not isinstance(value, bool):
            raise ProtocolError("BAD_FIELD", f"{name} takes true or false")
    elif rule[0] == "choice":
        if value not in rule[1]:
            raise ProtocolError("BAD_FIELD", f"{name} is one of {', '.join(map(repr, rule[1]))}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not rule[1] <= value <= rule[2]:
            what = "a cosine in [-1, 1], 'model' or 'person'" if name == "threshold" \
                else f"a number in [{rule[1]}, {rule[2]}]"
            raise ProtocolError("BAD_FIELD", f"{name} takes {what}")
    return name, value


def untaught_scores(chip, negatives: list[np.ndarray]) -> list[int]:
    """What this person's untaught words score against the taught ones: each enrolled word
    against the others (leave-one-out), and the untaught recordings the host gave."""
    out: list[int] = []
    if len(chip.classes()) > 1:
        c = chip.readout.column_cosines()
        np.fill_diagonal(c, np.iinfo(np.int64).min)
        out += c.max(axis=1).tolist()
    if negatives and chip.classes():
        out += chip.scores_q(np.stack(negatives)).max(axis=1).tolist()
    return out


def person_threshold(chip, negatives: list[np.ndarray]) -> int:
    """``threshold`` "person": the highest of what this person's untaught words score
    (:func:`untaught_scores`) plus ``PERSON_MARGIN``, never below the model file's threshold nor
    above ``PERSON_CAP`` (a threshold no taught word could pass)."""
    tab = chip.tab
    scores = untaught_scores(chip, negatives)
    if not scores:
        return tab.none_threshold
    t = max(scores) + tab.cos_to_q(PERSON_MARGIN)
    return int(min(max(tab.none_threshold, t), tab.cos_to_q(PERSON_CAP)))


def apply_threshold(chip, params: dict, negatives: list[np.ndarray]) -> None:
    """The chip's decision registers from the parameters."""
    if chip is None:
        return
    t = params["threshold"]
    tab = chip.tab
    chip.readout.none_threshold = tab.none_threshold if t is None \
        else person_threshold(chip, negatives) if t == "person" \
        else tab.cos_to_q(t)
    chip.readout.min_confidence = int(round(float(params["min_confidence"])
                                            * (1 << tab.softmax_frac)))
