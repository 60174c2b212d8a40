"""What a board answered, scored against what was said: one rule for every caller.

Answers to single recordings (``ask``) go into :func:`confusion`: accuracy per taught word,
untaught words accepted, the confusion matrix. Events of a stream (continuous detection) go into
:func:`match_events`: an event finds a taught word when it names that word and its window
overlaps the word's span, widened by ``tolerance_ms`` on each side; each word is found at most
once (by its earliest matching event) and each event finds at most one word; an event that finds
no word is a false detection.
"""

from __future__ import annotations

__all__ = ["NONE", "OTHER", "match_events", "score_events", "confusion"]

NONE = "none"                  # the board's "none of these"
OTHER = "(other word)"         # the truth of a recording of a word that was not taught


def match_events(events: list[dict], spans: list[tuple[int, int, str]],
                 tolerance_ms: int = 0) -> dict[int, int]:
    """{span index: event index} of the taught words found by ``events`` (dicts with ``label``,
    ``start_ms``, ``end_ms``) in ``spans`` (start ms, end ms, label), by the module's rule."""
    order = sorted(range(len(events)), key=lambda i: (events[i]["start_ms"], i))
    found: dict[int, int] = {}
    for i in order:
        e = events[i]
        for j, (a, b, label) in enumerate(spans):
            if (j not in found and e["label"] == label
                    and e["start_ms"] < b + tolerance_ms and e["end_ms"] > a - tolerance_ms):
                found[j] = i
                break
    return found


def score_events(events: list[dict], spans: list[tuple[int, int, str]],
                 tolerance_ms: int = 0) -> tuple[int, int]:
    """(taught words found, false detections) of a stream's events (:func:`match_events`)."""
    found = match_events(events, spans, tolerance_ms)
    return len(found), len(events) - len(found)


def confusion(rows: list[tuple[str, str | None]], taught: list[str]) -> dict:
    """Answers to recordings: ``rows`` of (truth, answer), truth a taught word or anything else
    (an untaught word), answer a taught word or None / ``"none"``. Returns accuracy over taught
    words (and its right / asked), per word (right, wrong word, none), untaught words asked and
    accepted as a word, and the confusion matrix (rows: the taught words said, then OTHER;
    columns: the taught words, then NONE)."""
    words = sorted(taught)
    cols = words + [NONE]
    said = [(t if t in words else OTHER, a if a in words else NONE) for t, a in rows]
    truths = [w for w in words if any(t == w for t, _ in said)] + (
        [OTHER] if any(t == OTHER for t, _ in said) else [])
    matrix = [[sum(1 for t, a in said if t == r and a == c) for c in cols] for r in truths]
    per_word = {}
    for w in words:
        answers = [a for t, a in said if t == w]
        if answers:
            per_word[w] = dict(asked=len(answers), right=answers.count(w),
                               wrong=sum(a not in (w, NONE) for a in answers),
                               none=answers.count(NONE),
                               accuracy=round(answers.count(w) / len(answers), 4))
    asked = sum(v["asked"] for v in per_word.values())
    right = sum(v["right"] for v in per_word.values())
    others = [a for t, a in said if t == OTHER]
    return dict(accuracy=round(right / asked, 4) if asked else None, asked=asked, right=right,
                per_word=per_word, not_taught_asked=len(others),
                not_taught_accepted=sum(a != NONE for a in others),
                false_accepts=round(sum(a != NONE for a in others) / len(others), 4)
                if others else None,
                rows=truths, cols=cols, matrix=matrix)

