import numpy as np
import pytest

from tessera.runtime.errors import InputError
from tessera.trainer.learning.episodes import DEFAULT_UNSEEN, FewShotTasks


def toy(n_speakers=10, reps=3):
    labels = np.repeat(np.arange(20), n_speakers * reps)
    speakers = np.tile(np.repeat(np.arange(n_speakers), reps), 20)
    split = np.select([speakers < 6, speakers < 7], [0, 1], 2).astype(np.int8)
    return labels, speakers, split


def test_no_unseen_class_or_foreign_speaker_leaks_into_meta_training():
    labels, speakers, split = toy()
    tasks = FewShotTasks(labels, speakers, split, seed=3)
    s = tasks.sampler("train", ways=5, shots=5, queries=3)
    train_speakers = set(np.unique(speakers[split == 0]).tolist())
    for i in range(300):
        ep = s.episode(i)
        used = np.concatenate([ep.support, ep.query])
        assert not set(labels[used].tolist()) & set(DEFAULT_UNSEEN)
        assert set(speakers[used].tolist()) <= train_speakers
        assert not ep.query_unseen.any()


def test_meta_test_uses_unseen_classes_and_test_speakers():
    labels, speakers, split = toy()
    tasks = FewShotTasks(labels, speakers, split, seed=3)
    ep = tasks.sampler("unseen", ways=5, shots=1, queries=2).episode(0)
    assert sorted(ep.classes.tolist()) == sorted(DEFAULT_UNSEEN)
    used = np.concatenate([ep.support, ep.query])
    assert set(split[used].tolist()) == {2}
    assert ep.query_unseen.all()


def test_episode_structure_and_determinism():
    labels, speakers, split = toy()
    tasks = FewShotTasks(labels, speakers, split, seed=7)
    s = tasks.sampler("all", ways=5, shots=2, queries=3)
    a, b = s.episode(12), tasks.sampler("all", ways=5, shots=2, queries=3).episode(12)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert not np.array_equal(s.episode(13).query, a.query)
    assert a.support.size == 10 and a.query.size == 15
    assert not set(a.support.tolist()) & set(a.query.tolist())
    assert np.array_equal(labels[a.support], a.classes[a.support_y])
    assert np.array_equal(labels[a.query], a.classes[a.query_y])
    assert np.array_equal(a.query_unseen, np.isin(labels[a.query], DEFAULT_UNSEEN))
    assert FewShotTasks(labels, speakers, split, seed=8).sampler("all", 5, 2, 3).episode(12) \
        .support.tolist() != a.support.tolist()


def test_same_speaker_episodes():
    labels, speakers, split = toy(reps=4)
    tasks = FewShotTasks(labels, speakers, split)
    ep = tasks.sampler("unseen", ways=5, shots=1, queries=3, same_speaker=True).episode(4)
    for c in range(5):
        idx = np.concatenate([ep.support[ep.support_y == c], ep.query[ep.query_y == c]])
        assert np.unique(speakers[idx]).size == 1


def test_unassigned_splits_are_split_by_speaker():
    labels, speakers, _ = toy()
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, -1, np.int8), seed=1)
    assert set(tasks.split.tolist()) == {0, 1, 2}
    for s in np.unique(speakers):
        assert np.unique(tasks.split[speakers == s]).size == 1


def test_errors():
    labels, speakers, split = toy(reps=1)
    tasks = FewShotTasks(labels, speakers, split)
    with pytest.raises(InputError, match="classes have 6 utterances"):
        tasks.sampler("unseen", ways=5, shots=5, queries=1)
    with pytest.raises(InputError, match="do not occur"):
        FewShotTasks(labels, speakers, split, unseen=(0, 42))
    with pytest.raises(InputError, match="unknown phase"):
        tasks.sampler("bogus")


def test_on_the_corpus_speakers_stay_in_their_split(small_corpus):
    from tessera.trainer.data.readers import read_spike_h5

    d = read_spike_h5(small_corpus)
    tasks = FewShotTasks(d.labels, d.speakers, d.split)
    test_spk = set(np.unique(d.speakers[d.split == 2]).tolist())
    s = tasks.sampler("unseen", ways=5, shots=1, queries=2)
    for i in range(50):
        ep = s.episode(i)
        assert set(d.speakers[np.concatenate([ep.support, ep.query])].tolist()) <= test_spk


def test_cross_speaker_episodes():
    labels, speakers, split = toy(reps=4)
    tasks = FewShotTasks(labels, speakers, split)
    ep = tasks.sampler("unseen", ways=5, shots=2, queries=3, cross_speaker=True).episode(1)
    for c in range(5):
        sup = speakers[ep.support[ep.support_y == c]]
        qry = speakers[ep.query[ep.query_y == c]]
        assert np.unique(sup).size == 1 and sup[0] not in set(qry.tolist())
    with pytest.raises(InputError, match="exclude"):
        tasks.sampler("unseen", same_speaker=True, cross_speaker=True)


def test_all_test_for_foreign_data():
    labels, speakers, _ = toy()
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, -1, np.int8),
                         unseen=tuple(range(20)), all_test=True)
    assert (tasks.split == 2).all()
    assert tasks.sampler("unseen", 5, 1, 2).episode(0).query_unseen.all()
