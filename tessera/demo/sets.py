"""What the demo teaches and asks (:class:`DemoSet`), from three sources: speech synthesized on
the spot (:func:`synthesized_set`, Spanish words the model never saw, by a voice of the corpus's
test split it never heard), your recordings (:func:`folder_set`: the host's folder rule,
:func:`tessera.host.folder_recordings`) and the microphone (:func:`mic_set`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..host.scoring import NONE, OTHER
from ..runtime.errors import InputError

__all__ = ["DemoSet", "Utterance", "synthesized_set", "folder_set", "mic_set", "DEMO_WORDS",
           "DEMO_OTHERS", "OTHER", "NONE"]

#: Words of a language meta-training never had (the corpus's ``lang`` words): five to enroll and
#: three that stay unknown (the device should answer "none of these").
DEMO_WORDS = ("perro", "gato", "luna", "flor", "ventana")
DEMO_OTHERS = ("playa", "libro", "manzana")


@dataclass
class Utterance:
    word: str                  # what was said
    pcm: np.ndarray            # 16 kHz int16
    voice: str                 # who said it (a TTS voice, "you", a file's folder)
    enrolled: bool = True      # False: a word that is never taught
    same_voice: bool = True    # the voice of the word's enrollment shot
    source: str = ""           # a file path, or how it was made


@dataclass
class DemoSet:
    """What the demo teaches and asks: one shot per word, the test utterances (held out from the
    shots), and a larger pool per enrolled word for accuracy against shots (may be empty)."""

    shots: dict[str, Utterance]
    tests: list[Utterance]
    pool: dict[str, list[Utterance]] = field(default_factory=dict)
    sentence: list[Utterance] = field(default_factory=list)
    description: str = ""

    def check(self) -> None:
        if len(self.shots) < 2:
            raise InputError(f"the demo needs at least 2 words to enroll, got {len(self.shots)}")
        if not self.tests:
            raise InputError("the demo has no held-out utterances to ask about: give at least "
                             "two recordings of a word (the first is the shot)")


# ---------------------------------------------------------------------- sources
def synthesized_set(folder: str, seed: int = 0, words=DEMO_WORDS, others=DEMO_OTHERS,
                    other_voices: int = 1, progress: bool = False) -> DemoSet:
    """Spanish words, spoken by espeak-ng voices of the default corpus's test split (the same
    100 voices and seed the committed model was trained with, so none of these voices was
    heard in training, and the words are not in its vocabulary). The user's voice (picked by
    ``seed``) says each word four times (tempo, level, noise and onset vary): the first is the
    shot, the other three are asked, with two of each word that is not taught;
    ``other_voices`` more unheard voices say every taught word once (a second person asking
    the device the first one taught)."""
    import h5py

    from ..trainer.data.corpus import CorpusConfig, build_corpus

    words, others = tuple(words), tuple(others)
    path = os.path.join(folder, "demo-words.h5")
    cfg = CorpusConfig(speakers=100, repeats=4, seed=0, keep_audio=True,
                       words=tuple(("es", w) for w in words + others), speaker_splits=("test",))
    built = build_corpus(path, cfg, progress=progress, preset="demo")
    with h5py.File(path, "r") as h5:
        labels = h5["labels"][:]
        spk = h5["extra/speaker"][:]
        names = [s.decode() if isinstance(s, bytes) else s
                 for s in h5["extra/tessera/speaker_names"][:]]
        pcm = [np.asarray(p, np.int16) for p in h5["audio/pcm"][:]]
    os.remove(path)                                   # 40 MB of audio the report does not need
    voices = sorted(set(spk.tolist()))
    rng = np.random.default_rng(seed)
    order = [voices[i] for i in rng.permutation(len(voices))]
    user, rest = order[0], order[1:1 + other_voices]
    vocab = words + others

    def utts(w: int, v: int) -> list[int]:
        return [int(i) for i in np.flatnonzero((labels == w) & (spk == v))]

    def utt(i: int, **kw) -> Utterance:
        w = vocab[labels[i]]
        return Utterance(w, pcm[i], f"{names[spk[i]]}", enrolled=w in words,
                         source=f"espeak-ng, es, test voice {spk[i]}", **kw)

    shots, tests, pool, sentence = {}, [], {}, []
    for w, word in enumerate(words):
        mine = utts(w, user)
        shots[word] = utt(mine[0])
        tests += [utt(i) for i in mine[1:]]
        tests += [utt(utts(w, v)[0], same_voice=False) for v in rest]
        pool[word] = [utt(i, same_voice=spk[i] == user) for i in np.flatnonzero(labels == w)]
    for w, word in enumerate(others, start=len(words)):
        tests += [utt(i) for i in utts(w, user)[:2]]
    for w in (0, len(words), 1, 2):                   # a known word, an unknown one, two known
        sentence.append(utt(utts(w, user)[3 if w < len(words) else 2]))
    rng.shuffle(tests)
    return DemoSet(shots, tests, pool, sentence,
                   description=f"{len(words)} Spanish words the model never saw, taught from one "
                               f"utterance each of the voice {names[user]} (a test voice it never "
                               f"heard), then {len(tests)} held-out utterances asked: that voice "
                               f"again, {len(rest)} other unheard voice(s), and {len(others)} "
                               f"words that are not taught (synthesized in {built['seconds']} s)")


def folder_set(folder: str) -> DemoSet:
    """Your recordings, by the host's folder rule (:func:`tessera.host.folder_recordings`: one
    sub-folder per word or FSDD names, ``_other/`` for words that are not taught): a word's
    first recording is its shot, the others are asked."""
    from ..host.recordings import folder_recordings
    from ..host.session import load_recording

    shots, tests, pool = {}, [], {}
    for path, word in folder_recordings(folder):
        if word is None:
            tests.append(Utterance(OTHER, load_recording(path), "you", enrolled=False,
                                   source=path))
            continue
        u = Utterance(word, load_recording(path), "you", source=path)
        pool.setdefault(word, []).append(u)
        if word in shots:
            tests.append(u)
        else:
            shots[word] = u
    if not shots:
        raise InputError("no recordings of a word to teach (only _other/)", source=folder)
    # the sentence: one asked recording of each of up to three words, then an untaught one
    taught = [next(t for t in tests if t.word == w) for w in sorted(shots)
              if any(t.word == w for t in tests)][:3]
    sentence = taught[:1] + [t for t in tests if not t.enrolled][:1] + taught[1:]
    out = DemoSet(shots, tests, pool, sentence,
                  description=f"{len(shots)} words from {folder}, one recording each taught, "
                              f"{len(tests)} other recordings asked")
    out.check()
    return out


def mic_set(words, seconds: float = 1.5, repeats: int = 2, prompt=print, record=None) -> DemoSet:
    """Record each word once (the shot), then each ``repeats`` more times in a shuffled order,
    plus ``repeats`` words of your choice that are not taught. ``record()`` returns one clip
    (default: the microphone)."""
    if record is None:
        from ..host.microphone import recorder

        record = recorder(seconds)
    words = list(words)
    shots, tests = {}, []
    for w in words:
        prompt(f"say '{w}' now ({seconds:g} s)")
        shots[w] = Utterance(w, record(), "you", source="microphone")
    asks = [(w, True) for w in words for _ in range(repeats)] + [(OTHER, False)] * repeats
    rng = np.random.default_rng()
    for i in rng.permutation(len(asks)):
        w, enrolled = asks[i]
        prompt(f"say '{w}' now" if enrolled else "say any other word now")
        tests.append(Utterance(w, record(), "you", enrolled=enrolled, source="microphone"))
    return DemoSet(shots, tests, {w: [shots[w]] + [t for t in tests if t.word == w]
                                  for w in words}, tests[:4],
                   description=f"{len(words)} words recorded from the microphone")
