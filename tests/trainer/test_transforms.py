import numpy as np

from tessera.trainer.data.transforms import (
    Bin, ChannelJitter, ChannelSubsets, TimeShift, bin_spikes, dense_dataset)


def sample(n=500, channels=700, seed=0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0, 1.2, n)).astype(np.float32), rng.integers(0, channels, n)


def test_binning_counts_every_spike_in_range():
    t, u = sample()
    b = bin_spikes(t, u, 100, 1.4, 700)
    assert b.shape == (100, 700) and b.sum() == t.size
    t2 = np.append(t, [1.4, 1.5])
    u2 = np.append(u, [0, 1])
    assert bin_spikes(t2, u2, 100, 1.4, 700).sum() == t.size       # at/after duration dropped
    assert bin_spikes(np.zeros(300), np.zeros(300, int), 10, 1.0, 2)[0, 0] == 255


def test_channel_subsets_partition_the_spikes():
    t, u = sample()
    parts = ChannelSubsets(3)((t, u), channels=700)
    assert len(parts) == 3
    kept = sum(p[0].size for p in parts)
    assert kept == np.sum(u < 699)                                  # 700 // 3 * 3 = 699
    for i, (_, pu) in enumerate(parts):
        assert pu.max() < 233
        assert np.array_equal(np.sort(pu * 3 + i), np.sort(u[(u % 3 == i) & (u < 699)]))


def test_augmentations_are_seeded_and_bounded():
    t, u = sample()
    shift = TimeShift(0.1)
    a = shift((t, u), np.random.default_rng(1))
    b = shift((t, u), np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and a[0].min() >= 0
    jit = ChannelJitter(700, max_jitter=2, max_global=5)
    ja = jit((t, u), np.random.default_rng(2))
    assert np.array_equal(ja[1], jit((t, u), np.random.default_rng(2))[1])
    assert ja[1].min() >= 0 and ja[1].max() < 700
    assert not np.array_equal(ja[1], jit((t, u), np.random.default_rng(3))[1])


def test_dense_dataset(small_corpus):
    from tessera.trainer.data.readers import read_spike_h5

    data = read_spike_h5(small_corpus).subset(np.arange(10))
    x, y = dense_dataset(data, steps=100, duration=1.4, k=3)
    assert x.shape == (10, 3, 100, 233) and np.array_equal(y, data.labels)
    assert x.sum() > 0
    x1, _ = dense_dataset(data, k=3, subsets="first")
    assert np.array_equal(x1[:, 0], x[:, 0])
    full = Bin(100, 1.4, 700)(data.sample(0))
    assert full.sum() >= x[0].sum()
