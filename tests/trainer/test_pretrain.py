"""The classifier stage on real voices (issue 34): the spike loop's gradients, the hear set's
episodes and file checks, and a pretrained model that the trainer's own loader reads back with
the same features."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tessera.runtime.errors import InputError  # noqa: E402
from tessera.trainer.data.hearset import HearSet, load_hear_set  # noqa: E402
from tessera.trainer.evaluation.hear import (episode_accuracy, model_embeddings,  # noqa: E402
                                             score_embeddings)
from tessera.trainer.learning.model import lif_spikes, own_segments, spike  # noqa: E402
from tessera.trainer.learning.pretrain import (Net, Recipe, embed_all,  # noqa: E402
                                               recipe_from_factors, save_model,
                                               train_classifier)
from tessera.trainer.learning.storage import load_model  # noqa: E402


def test_lif_spikes_match_the_autograd_loop_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    b, T, n = 3, 9, 5
    d = torch.randn(b, T, n, generator=g, dtype=torch.float64).requires_grad_()
    W = (0.5 * torch.randn(n, n, generator=g, dtype=torch.float64)).requires_grad_()
    al = torch.rand(n, generator=g, dtype=torch.float64).requires_grad_()
    ka = torch.rand(n, generator=g, dtype=torch.float64).requires_grad_()
    gz, gr = torch.randn(b, T, n, generator=g, dtype=torch.float64), \
        torch.randn(b, T, n, generator=g, dtype=torch.float64)
    z, r = lif_spikes(d, W, al, ka)
    mine = torch.autograd.grad((z * gz + r * gr).sum(), (d, W, al, ka))
    v = zz = rr = torch.zeros(b, n, dtype=torch.float64)
    zs, rs = [], []
    for t in range(T):
        v = al * v + d[:, t] + zz @ W - zz
        zz = spike(v - 1.0, 10.0)
        rr = ka * rr + zz
        zs.append(zz)
        rs.append(rr)
    Z, R = torch.stack(zs, 1), torch.stack(rs, 1)
    assert torch.equal(Z.detach(), z.detach()) and torch.allclose(R, r)
    ref = torch.autograd.grad((Z * gz + R * gr).sum(), (d, W, al, ka))
    for a, e in zip(mine, ref):
        assert torch.allclose(a, e, atol=1e-12)


def test_own_segments_average_each_utterance_over_its_own_length():
    z = torch.arange(2 * 6 * 1, dtype=torch.float64).reshape(2, 6, 1)
    f = own_segments(z, torch.tensor([6, 2]), 2)
    assert f[0].tolist() == [1.0, 4.0]            # steps 0-2 and 3-5
    assert f[1].tolist() == [6.0, 7.0]            # steps 0 and 1 of the second; padding unread


def test_own_segments_are_the_chips_fold_and_end_at_the_last_input_bin():
    """The trainer's own-length segments (float) cut each utterance where the chip's
    segment_mode "own" does (runtime/segments.fold), for every length and segment count."""
    from types import SimpleNamespace

    from tessera.runtime.segments import fold
    from tessera.trainer.learning.model import input_lengths
    steps, n = 23, 3
    rng = np.random.default_rng(0)
    acc = rng.integers(0, 1000, (steps, steps, n))             # (rows = steps, B = steps, n)
    for S in (1, 4, 8, 23):
        tab = SimpleNamespace(segment_mode="own", segments=S, steps=steps)
        L = np.arange(1, steps + 1)
        sums, lens = fold(acc, tab, L, None)
        f = own_segments(torch.from_numpy(acc.transpose(1, 0, 2)).double(), torch.from_numpy(L), S)
        assert np.allclose(f.numpy().reshape(steps, S, n),
                           (sums / lens[:, :, None]).transpose(1, 0, 2))
    x = torch.zeros(3, 10, 2)
    x[0, 3, 1], x[1, 9, 0] = 1, 2
    assert input_lengths(x, 10).tolist() == [4, 10, 1]          # silence: 1
    assert input_lengths(x, 8).tolist() == [4, 1, 1]            # past the window: unread


def _toy_hear_set(seed=0, people=7, words=6, takes=5, steps=30, inputs=12):
    """Words as distinct channel patterns, people as a gain: a learnable toy hear set."""
    rng = np.random.default_rng(seed)
    pat = rng.random((words, inputs)) < 0.4
    xs, corpus, word, spk, split = [], [], [], [], []
    for corp in ("dsp", "asc"):
        for p in range(people):
            for w in range(words):
                for _ in range(takes):
                    T = int(rng.integers(steps // 2, steps))
                    x = (rng.random((T, inputs)) < 0.15 + 0.5 * pat[w] * (0.7 + 0.1 * p))
                    xs.append(x.astype(np.uint8) * 2)
                    corpus.append(corp)
                    word.append(f"{w:02d}")
                    spk.append(f"{corp}{p}")
                    split.append("train" if p < 4 else "choose" if p < 6 else "report")
    return HearSet(xs, *(np.array(a) for a in (corpus, word, spk, split)))


def test_episodes_score_separable_embeddings_perfectly_and_random_ones_at_chance():
    rng = np.random.default_rng(1)
    word = np.repeat(np.arange(8), 20).astype(str)
    spk = np.tile(np.repeat(["a", "b"], 10), 8)
    E = np.eye(8)[word.astype(int)] + 0.01 * rng.standard_normal((160, 8))
    for mode in ("within", "across"):
        assert episode_accuracy(E, word, spk, mode, 1, episodes=50) == 1.0
    noise = rng.standard_normal((160, 8))
    assert 0.1 < episode_accuracy(noise, word, spk, "across", 1, episodes=200) < 0.32


@pytest.mark.parametrize("seg_mode", ["window", "own"])
def test_a_pretrained_model_reads_back_with_the_same_features(tmp_path, seg_mode):
    hs = _toy_hear_set()
    r = Recipe(rows=1, cols=2, tile=4, window=30, segments=3, epochs=2, batch=16,
               seg_mode=seg_mode)
    net, s = train_classifier(hs, r, str(tmp_path), progress=False)
    assert s["epochs"] == 2 and (tmp_path / "checkpoint.pt").exists()
    save_model(net, str(tmp_path / "model.pt"), s)
    m = load_model(str(tmp_path / "model.pt"))
    idx = hs.where(split=["choose", "report"])
    a = model_embeddings(m, hs, idx)
    b = embed_all(net, hs, idx)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-6)
    assert np.allclose(a, b, atol=1e-5)
    E = np.zeros((len(hs), a.shape[1]), np.float32)
    E[idx] = a
    scores = score_embeddings(E, hs, episodes=20, splits=("choose", "report"))
    # 5 takes a word: no 5-shot within one person; one report person: no across there
    assert set(scores) == {"choose_within_1", "choose_across_1", "choose_across_5",
                           "report_within_1"}
    assert scores["choose_within_1"] > 40           # 5-way chance is 20


def test_resume_continues_from_the_checkpoint_and_refuses_another_recipe(tmp_path):
    hs = _toy_hear_set()
    r = Recipe(rows=1, cols=2, tile=4, window=30, segments=3, epochs=2, batch=16)
    whole, _ = train_classifier(hs, r, str(tmp_path / "a"))
    train_classifier(hs, Recipe(**{**r.__dict__, "epochs": 1}), str(tmp_path / "b"))
    with pytest.raises(InputError, match="another recipe"):
        train_classifier(hs, Recipe(**{**r.__dict__, "lr": 1e-3}), str(tmp_path / "b"),
                         resume=True)
    again, s = train_classifier(hs, r, str(tmp_path / "b"), resume=True)   # 1 more epoch
    assert s["epochs"] == 2 and [e["epoch"] for e in s["log"]] == [1, 2]
    for k in ("w_in", "w_rec", "a_mem", "w_cls"):
        assert torch.equal(whole.p[k], again.p[k])


def test_only_chip_ready_recipes_save_and_bad_factors_are_named(tmp_path):
    hs = _toy_hear_set()
    net = Net(Recipe(input="ln", seg_mode="own", rows=1, cols=2, tile=4), 12, 6)
    with pytest.raises(InputError, match="chip-ready"):
        save_model(net, str(tmp_path / "m.pt"), {})
    with pytest.raises(InputError, match="seg_mode"):
        Recipe(seg_mode="sometimes")
    assert len(hs) > 0


def test_a_bad_hear_set_file_is_named(tmp_path):
    with pytest.raises(InputError, match="no such hear set"):
        load_hear_set(str(tmp_path / "none.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 4), np.uint8), lens=np.array([5]))
    with pytest.raises(InputError, match="not a hear set"):
        load_hear_set(str(bad))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a hear set"):
        load_hear_set(str(tmp_path / "junk.npz"))


def test_people_are_split_by_name_and_never_overlap():
    from tessera.trainer.data.real import HOLDOUT
    from tessera.trainer.data.hearset import ASC_CHOOSE, ASC_REPORT, DSP_REPORT, split_of
    assert {split_of("dsp", s) for s in HOLDOUT} == {"choose"}
    assert {split_of("dsp", s) for s in DSP_REPORT} == {"report"}
    assert {split_of("asc", s) for s in ASC_CHOOSE} == {"choose"}
    assert {split_of("asc", s) for s in ASC_REPORT} == {"report"}
    assert not set(HOLDOUT) & set(DSP_REPORT) and not set(ASC_CHOOSE) & set(ASC_REPORT)
    assert split_of("dsp", "15307110252") == "train" and split_of("fsdd", "george") == "fsdd"


def test_unseen_words_stay_out_of_training_when_asked(tmp_path):
    hs = _toy_hear_set()
    r = Recipe(rows=1, cols=2, tile=4, window=30, segments=3, epochs=1, batch=16, unseen=True)
    _, s = train_classifier(hs, r)
    assert s["classes"] == 12 - 3                   # dsp words 00, 03 and 04 left out


def test_the_peer_needs_the_recordings_a_hear_set_names():
    from tessera.trainer.evaluation.hear import peer_embeddings
    pytest.importorskip("onnxruntime")
    hs = _toy_hear_set()
    with pytest.raises(InputError, match="names none"):
        peer_embeddings(hs, np.array([0]))


def test_a_tts_corpus_held_out_voices_are_scored_never_trained(small_corpus):
    """bench hear --tts: a corpus's validation and test voices join as tts-val / tts-test
    (scored on the chip's bins), its train voices as train, never the other way round."""
    from tessera.trainer.data.hearset import merge_hear_sets, tts_hear_set
    train, held = tts_hear_set(str(small_corpus)), tts_hear_set(str(small_corpus), held_out=True)
    assert set(train.split) == {"train"} and set(held.split) <= {"tts-val", "tts-test"}
    assert not set(train.speaker) & set(held.speaker)            # no voice on both sides
    hs = merge_hear_sets(_toy_hear_set(), held)
    rng = np.random.default_rng(0)
    E = rng.standard_normal((len(hs), 8)).astype(np.float32)
    scores = score_embeddings(E, hs, episodes=10, splits=("tts-val", "tts-test"))
    assert scores and all(k.startswith("tts-") for k in scores)


def test_augment_masks_and_tilts_a_copy_and_keeps_silence_silent():
    from tessera.trainer.learning.objectives import augment
    g = torch.Generator().manual_seed(0)
    X = torch.ones(4, 40, 30)
    X[:, 30:] = 0                                   # trailing silence
    Y = augment(X, torch.full((4,), 30), 2, 0.0, g)
    assert torch.equal(X[:, :30], torch.ones(4, 30, 30))          # the input is not changed
    assert (Y == 0).any() and (Y[:, 30:] == 0).all() and set(Y.unique().tolist()) <= {0.0, 1.0}
    Z = augment(X, torch.full((4,), 30), 0, 1.0, g)
    assert (Z[:, 30:] == 0).all() and (Z[:, :30] > 0).all()
    ratio = Z[:, 0, -1] / Z[:, 0, 0]                # a slope across channels, one per utterance
    assert ratio.min() < ratio.max() and float(ratio.max()) <= float(np.exp(2.0)) + 1e-4


def test_the_margin_lowers_only_the_true_words_logit():
    from tessera.trainer.learning.objectives import MARGIN_SCALE, margin_logits
    E, W = torch.randn(5, 8), torch.randn(8, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    d = margin_logits(E, W, y, 0.0) - margin_logits(E, W, y, 0.25)
    assert torch.allclose(d, 0.25 * MARGIN_SCALE * torch.nn.functional.one_hot(y, 3).float())


def test_the_teacher_loss_skips_recordings_it_never_heard_and_is_zero_when_matched():
    from tessera.trainer.learning.objectives import teacher_loss
    E, head = torch.randn(4, 6), torch.randn(6, 96)
    T = E @ head
    T[2] = 0
    assert float(teacher_loss(E, head, T)) < 1e-6
    assert float(teacher_loss(E, head, torch.zeros(4, 96))) == 0.0


@pytest.mark.parametrize("factors", [dict(mask=2, tilt=0.5), dict(margin=0.2)])
def test_the_ladders_training_factors_train_and_save_a_chip_model(tmp_path, factors):
    hs = _toy_hear_set()
    r = Recipe(rows=1, cols=2, tile=4, window=30, segments=3, epochs=2, batch=16, **factors)
    net, s = train_classifier(hs, r, str(tmp_path), progress=False)
    assert s["epochs"] == 2 and np.isfinite(s["log"][-1]["loss"])
    save_model(net, str(tmp_path / "model.pt"), s)
    assert load_model(str(tmp_path / "model.pt")) is not None


def test_the_training_factors_out_of_range_are_named():
    for bad in (["mask=-1"], ["margin=1.5"], ["teacher=-2"], ["tilt=-0.1"]):
        with pytest.raises(InputError, match="margin in"):
            recipe_from_factors(bad)
