"""Few-shot episodes: N-way K-shot with Q queries, over seen/unseen classes and speaker splits.

Classes are split into *seen* (meta-training) and *unseen* (held out for meta-test); the default
unseen set is SHD labels 0, 3, 4, 11, 12, as in the Mosaic few-shot work. Speakers are split too
(train / val / test, from the data set): meta-training draws only seen classes from train
speakers, meta-test draws from test speakers.

Episode ``i`` of a sampler depends only on ``(seed, i)``: episodes are reproducible and can be
drawn in any order. Support and query sets never share an utterance.

    >>> import numpy as np
    >>> labels = np.repeat(np.arange(20), 6); speakers = np.tile(np.arange(6), 20)
    >>> split = np.where(speakers < 4, 0, 2)
    >>> tasks = FewShotTasks(labels, speakers, split, seed=1)
    >>> ep = tasks.sampler("train", ways=5, shots=1, queries=2).episode(0)
    >>> sorted(set(ep.classes.tolist()) & {0, 3, 4, 11, 12})
    []
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...runtime.errors import InputError

__all__ = ["Episode", "EpisodeSampler", "FewShotTasks", "DEFAULT_UNSEEN"]

DEFAULT_UNSEEN = (0, 3, 4, 11, 12)


@dataclass(frozen=True)
class Episode:
    classes: np.ndarray         # (ways,) original labels; position = episode label
    support: np.ndarray         # (ways * shots,) utterance indices, class-major
    support_y: np.ndarray       # (ways * shots,) episode labels 0..ways-1
    query: np.ndarray           # (ways * queries,)
    query_y: np.ndarray
    query_unseen: np.ndarray    # (ways * queries,) bool: the query's class is unseen


class EpisodeSampler:
    """Draws episodes from a fixed pool of utterances and classes.

    ``same_speaker``: every class of an episode takes its shots and queries from one speaker
    (enroll and test within a speaker). ``cross_speaker``: the shots from one speaker, the queries
    from the others. Otherwise shots and queries come from any speakers of the pool.
    """

    def __init__(self, labels: np.ndarray, speakers: np.ndarray, pool: np.ndarray,
                 classes: np.ndarray, unseen: np.ndarray, ways: int, shots: int, queries: int,
                 seed: int = 0, same_speaker: bool = False, name: str = "",
                 cross_speaker: bool = False) -> None:
        if same_speaker and cross_speaker:
            raise InputError("episodes: same_speaker and cross_speaker exclude each other")
        self.cross_speaker = cross_speaker
        self.labels, self.speakers = np.asarray(labels), np.asarray(speakers)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.seed, self.same_speaker, self.name = seed, same_speaker, name
        self.unseen = np.asarray(unseen)
        need = shots + queries
        by_class = {}
        for c in np.asarray(classes):
            idx = pool[self.labels[pool] == c]
            if same_speaker:
                groups = [idx[self.speakers[idx] == s] for s in np.unique(self.speakers[idx])]
                groups = [g for g in groups if g.size >= need]
                if groups:
                    by_class[int(c)] = groups
            elif cross_speaker:
                groups = [idx[self.speakers[idx] == s] for s in np.unique(self.speakers[idx])]
                groups = [g for g in groups if g.size >= shots and idx.size - g.size >= queries]
                if groups:
                    by_class[int(c)] = [(g, np.setdiff1d(idx, g)) for g in groups]
            elif idx.size >= need:
                by_class[int(c)] = [idx]
        if len(by_class) < ways:
            raise InputError(
                f"episodes {name!r}: only {len(by_class)} classes have {need} utterances "
                f"({shots} shots + {queries} queries{' from one speaker' if same_speaker else ''}); "
                f"{ways}-way needs {ways}")
        self.classes = np.array(sorted(by_class))
        self._by_class = by_class

    def episode(self, i: int) -> Episode:
        rng = np.random.default_rng([self.seed, i])
        classes = rng.choice(self.classes, size=self.ways, replace=False)
        sup, qry = [], []
        for c in classes:
            groups = self._by_class[int(c)]
            g = groups[rng.integers(len(groups))]
            if self.cross_speaker:
                own, others = g
                sup.append(rng.choice(own, size=self.shots, replace=False))
                qry.append(rng.choice(others, size=self.queries, replace=False))
                continue
            pick = rng.choice(g, size=self.shots + self.queries, replace=False)
            sup.append(pick[: self.shots])
            qry.append(pick[self.shots:])
        ways = np.arange(self.ways)
        query_classes = np.repeat(classes, self.queries)
        return Episode(classes, np.concatenate(sup), np.repeat(ways, self.shots),
                       np.concatenate(qry), np.repeat(ways, self.queries),
                       np.isin(query_classes, self.unseen))

    def __iter__(self):
        i = 0
        while True:
            yield self.episode(i)
            i += 1


class FewShotTasks:
    """Seen/unseen class split plus speaker split -> episode samplers for each phase.

    Phases:
      - ``"train"``: seen classes, train speakers (meta-training)
      - ``"val"``: seen classes, val speakers
      - ``"unseen"``: unseen classes, test speakers (the headline few-shot number)
      - ``"seen"``: seen classes, test speakers
      - ``"all"``: any classes, test speakers; each query says whether its class is unseen

    Utterances without a split (``split == -1``) are assigned by speaker: a seeded shuffle puts
    ``speaker_split`` fractions of the speakers into train / val / test; with ``all_test`` they
    all become test data (data a model never trained on, such as real recordings).
    """

    def __init__(self, labels: np.ndarray, speakers: np.ndarray, split: np.ndarray,
                 unseen: tuple[int, ...] = DEFAULT_UNSEEN, seed: int = 0,
                 speaker_split: tuple[float, float, float] = (0.6, 0.1, 0.3),
                 all_test: bool = False) -> None:
        self.labels = np.asarray(labels, np.int64)
        self.speakers = np.asarray(speakers, np.int64)
        split = np.asarray(split, np.int8).copy()
        if all_test:
            split[split < 0] = 2
        if np.any(split < 0):
            split = _assign_by_speaker(self.speakers, split, speaker_split, seed)
        self.split = split
        self.seed = seed
        all_classes = np.unique(self.labels)
        self.unseen = np.array(sorted(set(unseen) & set(all_classes.tolist())), np.int64)
        if self.unseen.size != len(set(unseen)):
            missing = sorted(set(unseen) - set(all_classes.tolist()))
            raise InputError(f"unseen classes {missing} do not occur in the data")
        self.seen = np.setdiff1d(all_classes, self.unseen)

    def pool(self, phase: str) -> tuple[np.ndarray, np.ndarray]:
        """(utterance indices, classes) of a phase."""
        sp = {"train": 0, "val": 1, "unseen": 2, "seen": 2, "all": 2}
        if phase not in sp:
            raise InputError(f"unknown phase {phase!r} (one of {sorted(sp)})")
        classes = {"train": self.seen, "val": self.seen, "seen": self.seen,
                   "unseen": self.unseen, "all": np.union1d(self.seen, self.unseen)}[phase]
        idx = np.nonzero((self.split == sp[phase]) & np.isin(self.labels, classes))[0]
        return idx, classes

    def sampler(self, phase: str, ways: int = 5, shots: int = 1, queries: int = 5,
                same_speaker: bool = False, seed: int | None = None,
                cross_speaker: bool = False) -> EpisodeSampler:
        idx, classes = self.pool(phase)
        phase_seed = [self.seed if seed is None else seed, ["train", "val", "unseen", "seen",
                                                             "all"].index(phase)]
        return EpisodeSampler(self.labels, self.speakers, idx, classes, self.unseen, ways, shots,
                              queries, seed=int(np.random.default_rng(phase_seed).integers(2**31)),
                              same_speaker=same_speaker, name=phase, cross_speaker=cross_speaker)


def _assign_by_speaker(speakers: np.ndarray, split: np.ndarray,
                       fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    missing = split < 0
    spk = np.unique(speakers[missing])
    order = np.random.default_rng([seed, 0x5B]).permutation(spk)
    n = spk.size
    n_train = max(1, int(round(fractions[0] * n)))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_train = min(n_train, n - 1 - (1 if n_val else 0))
    sid = {s: (0 if i < n_train else 1 if i < n_train + n_val else 2) for i, s in enumerate(order)}
    out = split.copy()
    out[missing] = [sid[s] for s in speakers[missing]]
    return out


def evaluation_tasks(data, unseen: tuple, seed: int) -> FewShotTasks:
    """The one episode definition of every evaluation (``tessera eval``, ``chip-eval``): the
    same data set (labels, speakers, split, label names) and seed give the same episodes. Data
    that records no split (a WAV folder such as FSDD), or only test voices speaking other words
    than SHD's 20 (a 'lang' or 'novel' corpus), never met the model: all test, every class
    unseen. Test voices speaking SHD's words keep the model's ``unseen`` classes."""
    from ..data.corpus import SHD_WORDS

    shd = list(data.label_names[:len(SHD_WORDS)]) == [f"{lang}:{w}" for lang, w in SHD_WORDS]
    split = np.asarray(data.split)
    if (split < 0).all() or ((split == 2).all() and not shd):
        return FewShotTasks(data.labels, data.speakers, data.split,
                            unseen=tuple(np.unique(data.labels).tolist()), seed=seed,
                            all_test=True)
    return FewShotTasks(data.labels, data.speakers, data.split, unseen=tuple(unseen), seed=seed)
