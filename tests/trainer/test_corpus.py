import hashlib

import h5py
import numpy as np
import pytest

from tessera.runtime.errors import InputError
from tessera.trainer.data.corpus import SHD_WORDS, CorpusConfig, build_corpus, parse_words


def digest(path):
    h = hashlib.sha256()
    with h5py.File(path) as f:
        for key in ("spikes/times", "spikes/units"):
            for a in f[key][:]:
                h.update(np.asarray(a).tobytes())
        for key in ("labels", "extra/speaker", "extra/tessera/gain_db"):
            h.update(f[key][:].tobytes())
    return h.hexdigest()


def test_shd_label_order():
    assert [w for _, w in SHD_WORDS[:3]] == ["zero", "one", "two"]
    assert SHD_WORDS[10] == ("de", "null") and SHD_WORDS[19] == ("de", "neun")


def test_layout(small_corpus):
    with h5py.File(small_corpus) as f:
        for key in ("spikes/times", "spikes/units", "labels", "extra/speaker", "extra/keys",
                    "extra/tessera/split", "extra/tessera/speaker_names", "audio/pcm"):
            assert key in f, key
        n = len(f["labels"])
        assert n == 320 == len(f["spikes/times"]) == len(f["extra/speaker"])
        assert sorted(set(f["labels"][:].tolist())) == list(range(20))
        times = f["spikes/times"][5]
        assert times.dtype == np.float32 and times.max() < 3.0 and times.min() >= 0
        assert f["spikes/units"][5].max() < 700
        # speaker splits are disjoint and recorded per speaker too
        spk_split = f["extra/tessera/speaker_split"][:]
        assert np.array_equal(f["extra/tessera/split"][:], spk_split[f["extra/speaker"][:]])
        assert f["audio/pcm"].attrs["sample_rate"] == 16000


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path):
    cfg = CorpusConfig(speakers=3, repeats=1, words=SHD_WORDS[:2] + (("en", "lights"),), seed=4)
    a = build_corpus(tmp_path / "a.h5", cfg, workers=1, progress=False)
    b = build_corpus(tmp_path / "b.h5", cfg, workers=2, progress=False)
    assert a["utterances"] == b["utterances"] == 9
    assert digest(tmp_path / "a.h5") == digest(tmp_path / "b.h5")
    c = CorpusConfig(speakers=3, repeats=1, words=SHD_WORDS[:2] + (("en", "lights"),), seed=5)
    build_corpus(tmp_path / "c.h5", c, workers=1, progress=False)
    assert digest(tmp_path / "c.h5") != digest(tmp_path / "a.h5")


def test_extra_words():
    assert parse_words("en:lights, music;de:licht") == (("en", "lights"), ("en", "music"),
                                                         ("de", "licht"))
    with pytest.raises(InputError, match="LANG:word"):
        parse_words("lights")
    with pytest.raises(InputError, match="unsupported language"):
        parse_words("xx:foo")


def test_config_validation():
    with pytest.raises(InputError, match="at least 3 speakers"):
        CorpusConfig(speakers=2)
    with pytest.raises(InputError, match="sum to 1"):
        CorpusConfig(split=(0.5, 0.5, 0.5))


def test_vocab_corpus_reuses_the_train_voices(tmp_path, small_corpus):
    """A meta-training vocabulary built like the main corpus has exactly its train-split voices."""
    from tessera.trainer.data.corpus import META_VOCAB, PRESETS
    from tessera.trainer.data.readers import read_spike_h5
    from tessera.trainer.data.dense import load_dense, with_training_extras
    from tessera.trainer.learning.episodes import FewShotTasks

    assert not {w for _, w in META_VOCAB} & {w for _, w in SHD_WORDS}
    cfg = CorpusConfig(**dict(PRESETS["small"], words=META_VOCAB[:3], speaker_splits=("train",)))
    build_corpus(tmp_path / "vocab.h5", cfg, progress=False)
    main, vocab = read_spike_h5(small_corpus), read_spike_h5(tmp_path / "vocab.h5")
    train_voices = {main.speaker_names[s] for s in np.unique(main.speakers[main.split == 0])}
    assert {vocab.speaker_names[s] for s in np.unique(vocab.speakers)} == train_voices
    assert (vocab.split == 0).all() and len(vocab) == 3 * len(train_voices)
    both = with_training_extras(load_dense(small_corpus, cache=False),
                                [load_dense(tmp_path / "vocab.h5", cache=False)])
    assert len(both) == 320 + len(vocab) and both.labels.max() == 22
    tasks = FewShotTasks(both.labels, both.speakers, both.split)
    _, train_classes = tasks.pool("train")
    assert {20, 21, 22} <= set(train_classes.tolist())
    idx, _ = tasks.pool("unseen")
    assert both.labels[idx].max() < 20
