"""The one rule for a word's label, wherever a label comes from (the wire, a flash image, the
readout's own enrollment): 1..MAX_LABEL characters, not only spaces, no control characters, and
not "none" (the answer for no enrolled word, in any case).

    >>> label_problem("lights") is None
    True
    >>> label_problem("None")
    "'none' is the answer for no enrolled word; choose another label"
"""

from __future__ import annotations

__all__ = ["MAX_LABEL", "label_problem"]

#: The longest word label a device keeps (characters).
MAX_LABEL = 64


def label_problem(label) -> str | None:
    """What is wrong with ``label`` as a word's label, or None when nothing is."""
    if not isinstance(label, str):
        return f"the label is a {type(label).__name__}, not a string"
    if not label.strip():
        return "the label is empty or only spaces"
    if len(label) > MAX_LABEL:
        return f"the label has {len(label)} characters (at most {MAX_LABEL})"
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        return "the label holds a control character"
    if label.strip().lower() == "none":
        return "'none' is the answer for no enrolled word; choose another label"
    return None
