"""The board's parameters (``set_param``/``get_param``), validated from one table, and the
decision registers they set on the chip: the cosine threshold (the model file's, a fixed one, or
fitted to this person) and the confidence gate."""

from __future__ import annotations

import numpy as np

from ..protocol.messages import ProtocolError
from ..runtime.readout import column_norms, cosines

__all__ = ["DEFAULT_PARAMS", "ALIASES", "PARAM_RULES", "PERSON_MARGIN", "PERSON_CAP",
           "MAX_NEGATIVES", "MAX_POSITIVES", "check_param", "untaught_scores", "held_out_scores",
           "person_fit", "person_threshold", "apply_threshold"]

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
PERSON_MARGIN = 0.02    # threshold "person": this much (a cosine) above every untaught score and
PERSON_CAP = 0.95       # below every held-out score of a taught word, and never above this
MAX_NEGATIVES = 16      # untaught recordings kept (``untaught``), the oldest dropped
MAX_POSITIVES = 64      # held-out scores of taught words kept (``enroll``), the oldest dropped

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


def held_out_scores(chip, label: str, shots: list[np.ndarray]) -> list[int]:
    """What this person's own utterances of ``label`` score where the board has not learned
    them yet: each shot against the word's column before this enroll writes it (a word taught
    before), and each of two or more shots against the mean of the others (leave-one-out, in the
    readout's integer arithmetic)."""
    tab = chip.tab
    out: list[int] = []
    if label in chip.classes():
        col = np.array([chip.readout.names.index(label)], np.int64)
        out += chip.scores_q(np.stack(shots), col)[:, 0].tolist()
    if len(shots) >= 2:
        phi = np.stack(shots).astype(np.int64)
        total = phi.sum(axis=0)
        for k in range(len(shots)):
            rest = ((total - phi[k]) // (len(shots) - 1))[:, None]
            out.append(int(cosines(phi[k], rest, column_norms(rest), tab.cos_frac)[0]))
    one = 1 << tab.cos_frac        # integer square roots can put a cosine a few units past 1
    return [min(max(int(x), -one), one) for x in out]


def person_fit(chip, negatives: list[np.ndarray], positives: list[tuple[str, int]]) -> dict:
    """``threshold`` "person" and what it trades. It rises above what this person's untaught
    words score (:func:`untaught_scores`, plus ``PERSON_MARGIN``) only as far as their own
    held-out shots allow (``PERSON_MARGIN`` below the lowest of ``positives``: a threshold that
    never refuses a taught word's utterance the board has checked), never below the model file's
    threshold nor above ``PERSON_CAP``. Without a held-out shot (every word taught once) nothing
    can check a raise, and the model's threshold stays (measured on held-out people:
    BENCHMARKS.md, issue 36 session 5)."""
    tab = chip.tab
    model = int(tab.none_threshold)
    untaught = untaught_scores(chip, negatives)
    own = [s for _, s in positives]
    margin = tab.cos_to_q(PERSON_MARGIN)
    if not own:
        t, why = model, "no held-out shot of a taught word to check a raise against (teach a " \
                        "word with two or more recordings)"
    elif not untaught:
        t, why = model, "no untaught word known (teach two words, or give untaught recordings)"
    else:
        t = want = max(untaught) + margin
        why = "above every untaught score"
        if t > min(own) - margin:
            t, why = min(own) - margin, "kept below every held-out shot of a taught word"
        if t > tab.cos_to_q(PERSON_CAP):
            t, why = tab.cos_to_q(PERSON_CAP), "at the cap"
        if t < model:
            t, why = model, ("the model's: its own words allow no raise" if want > model
                             else "the model's: no untaught word scores above it")
    t = int(t)
    return dict(threshold=t, limited_by=why, untaught=len(untaught),
                untaught_refused=sum(s < t for s in untaught),
                untaught_refused_by_model=sum(s < model for s in untaught),
                own=len(own), own_kept=sum(s >= t for s in own),
                own_kept_by_model=sum(s >= model for s in own))


def person_threshold(chip, negatives: list[np.ndarray],
                     positives: list[tuple[str, int]]) -> int:
    """``threshold`` "person" (:func:`person_fit`), in 2^-cos_frac."""
    return person_fit(chip, negatives, positives)["threshold"]


def apply_threshold(fw) -> None:
    """The chip's decision registers from the board's parameters (and, for "person", its
    untaught recordings and held-out shots)."""
    chip, params = fw.chip, fw.params
    if chip is None:
        return
    t = params["threshold"]
    tab = chip.tab
    chip.readout.none_threshold = tab.none_threshold if t is None \
        else person_threshold(chip, fw.negatives, fw.positives) if t == "person" \
        else tab.cos_to_q(t)
    chip.readout.min_confidence = int(round(float(params["min_confidence"])
                                            * (1 << tab.softmax_frac)))
