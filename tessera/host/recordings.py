"""A folder of a person's recordings, as every host command reads it.

Two layouts: one sub-folder per word (``yes/1.wav``, ``yes/2.flac``: the word is the folder's
name), or the files in the folder itself, each file's word its name up to the first ``_``,
``-`` or digit (FSDD's ``3_george_12.wav`` is the word ``3``; ``lamp2.wav``, ``lamp-b.wav``
are ``lamp``). A sub-folder named ``_other`` holds words that are never taught; other names
starting with ``_`` or ``.`` are skipped. A word's recordings are in name order (numbers as
numbers), so its first is the one a host teaches.
"""

from __future__ import annotations

import os
import re

from ..runtime.errors import InputError

__all__ = ["OTHER_FOLDER", "AUDIO_SUFFIXES", "folder_recordings", "word_of_file"]

OTHER_FOLDER = "_other"        # a sub-folder of words that are never taught
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_LAYOUT = ("expected WORD/NAME.wav (one sub-folder per word) or WORD_SPEAKER_N.wav, and "
           "optionally _other/NAME.wav")
_FSDD = re.compile(r"^(?P<word>[^_]+)_[^_]+_\d+\.", re.IGNORECASE)
_STEM = re.compile(r"^(?P<word>[^_\-\d.]+|\d+(?=_))")


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _audio(folder: str) -> list[str]:
    return sorted((f for f in os.listdir(folder) if f.lower().endswith(AUDIO_SUFFIXES)
                   and os.path.isfile(os.path.join(folder, f))), key=_natural)


def word_of_file(name: str) -> str | None:
    """The word a file's name says (the module's rule), or None when it says none."""
    m = _FSDD.match(name) or _STEM.match(name)
    return m["word"].strip() if m and m["word"].strip() else None


def folder_recordings(folder: str) -> list[tuple[str, str | None]]:
    """(path, word) of every recording in ``folder`` by the module's rule; word None for the
    recordings of ``_other/``. Refuses, naming the file or folder, what it cannot place."""
    if not os.path.isdir(folder):
        raise InputError(f"not a folder of recordings ({_LAYOUT})", source=folder)
    items: list[tuple[str, str | None]] = []
    for name in _audio(folder):
        word = word_of_file(name)
        if word is None:
            raise InputError(f"cannot tell the word from this file's name ({_LAYOUT})",
                             source=os.path.join(folder, name))
        items.append((os.path.join(folder, name), word))
    subs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    for d in subs:
        if d.startswith((".", "_")) and d != OTHER_FOLDER:
            continue
        full = os.path.join(folder, d)
        items += [(os.path.join(full, f), None if d == OTHER_FOLDER else d) for f in _audio(full)]
    words = {}
    for p, w in items:                          # a word's recordings together, in name order
        words.setdefault(w, []).append(p)
    items = [(p, w) for w, ps in words.items() if w is not None for p in ps] + \
        [(p, None) for p in words.get(None, [])]                # the untaught words last
    if not any(w is not None for _, w in items):
        raise InputError(f"no recordings of a word found ({_LAYOUT})", source=folder)
    return items
