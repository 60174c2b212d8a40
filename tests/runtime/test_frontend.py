import numpy as np
import pytest
from helpers import log_sweep, tone

from tessera.runtime.audio import load_audio
from tessera.runtime.errors import InputError
from tessera.runtime.frontend import (
    PIECE, Cochlea, FrontendSpec, design, filter_poles, filterbank, frontend_step, initial_state)


@pytest.fixture(scope="module")
def fe700():
    return Cochlea(FrontendSpec())


def speechlike(seconds=1.0, seed=0):
    from tessera.tools.bench import speechlike_signal

    return speechlike_signal(seconds, seed)


def test_output_shape_and_type(fe700):
    s = fe700.encode(speechlike(0.5))
    assert s.shape == (500, 700) and s.dtype == np.uint8
    assert s.max() == 1                       # at most one spike per channel per 1 ms step
    assert s.sum() > 1000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_chunking_gives_identical_spikes(fe700, seed):
    rng = np.random.default_rng(seed)
    pcm = speechlike(0.6, seed)
    ref = fe700.encode(pcm)
    fe700.reset()
    parts, i = [], 0
    while i < pcm.size:
        n = int(rng.choice([1, 7, 15, 16, 17, 63, 64, 65, 200, 1000, 3000]))
        parts.append(fe700.process(pcm[i:i + n]))
        i += n
    parts.append(fe700.flush())
    assert np.array_equal(np.vstack(parts), ref)


def test_chunking_across_internal_pieces():
    fe = Cochlea(FrontendSpec(channels=64))
    pcm = speechlike(1.3, 5)                   # > 4096 samples: crosses internal pieces
    ref = fe.encode(pcm)
    fe.reset()
    cut = [0, PIECE - 5, PIECE + 3, 3 * PIECE + 1, pcm.size]
    got = np.vstack([fe.process(pcm[a:b]) for a, b in zip(cut[:-1], cut[1:])] + [fe.flush()])
    assert np.array_equal(got, ref)


def test_state_carries_between_calls_but_reset_clears_it():
    fe = Cochlea(FrontendSpec(channels=32))
    a = fe.encode(tone(500, 0.3))
    fe.reset()
    fe.process(tone(2000, 0.3))
    b = fe.process(tone(500, 0.3))
    assert not np.array_equal(a[:b.shape[0]], b)    # adaptation remembers the previous sound
    fe.reset()
    assert np.array_equal(fe.encode(tone(500, 0.3)), a)


def test_silence_gives_no_spikes(fe700):
    assert fe700.encode(np.zeros(16000, np.int16)).sum() == 0


def test_tone_sweep_lights_low_channels_first(fe700):
    pcm = log_sweep(100, 6000, 2.0)
    s = fe700.encode(pcm).astype(float)
    ch = np.arange(700)
    centres = []
    for a in range(100, 1900, 200):               # the spike-weighted mean channel per 200 ms
        w = s[a:a + 200].sum(axis=0)
        centres.append((w * ch).sum() / w.sum())
    assert np.all(np.diff(centres) > 20), centres
    assert centres[0] < 150 and centres[-1] > 550


@pytest.mark.parametrize("freq", [200.0, 1000.0, 4000.0])
def test_pure_tone_peaks_at_its_channel(fe700, freq):
    s = fe700.encode(tone(freq, 0.5, amp=0.05))
    counts = s[100:].sum(axis=0)
    expected = int(np.argmin(np.abs(fe700.tables.fc - freq)))
    centre = (counts * np.arange(700)).sum() / counts.sum()
    assert abs(centre - expected) < 25, (centre, expected)


def test_fixed_point_bank_matches_float_recursion():
    """The exact block form equals the sample-by-sample modal recursion up to quantization."""
    spec = FrontendSpec(channels=24)
    tab = design(spec)
    pcm = speechlike(0.25, 3)
    fixed = filterbank(pcm, tab) / 2.0 ** spec.env_bits           # input LSB units
    _, pole, r = filter_poles(spec)
    state = np.zeros_like(pole)
    ref = []
    for n, x in enumerate(pcm.astype(np.float64)):
        state = pole * state + r * x
        if (n + 1) % spec.hop == 0:
            ref.append(state.sum(axis=1))
    ref = np.array(ref)
    err = np.abs(fixed - ref)
    assert err.max() < 2.0                                       # a couple of LSB, worst case
    assert err.mean() < 0.25
    assert np.abs(ref).max() > 1000                              # and the signal is not tiny


def test_tables_are_integers_and_within_exact_range():
    tab = design(FrontendSpec())
    scale = 2.0 ** (tab.spec.coef_bits - tab.spec.state_bits)
    mats = (tab.state_mat, *tab.mid_mats)
    assert [m.shape[0] for m in mats] == [64, 16, 32, 48]        # Wq_j: the first j*H samples
    for a in (tab.trans, *(m * scale for m in mats)):
        f = np.asarray(a).view(np.float64) if np.iscomplexobj(a) else a
        assert np.array_equal(f, np.round(f))
    worst_input = max(np.abs(m).sum(axis=0).max() for m in mats) * 32768
    assert worst_input < 2.0 ** 53


def test_tone_envelope_has_unit_gain_at_centre():
    spec = FrontendSpec(channels=40)
    tab = design(spec)
    c = 20
    env = np.abs(filterbank(tone(tab.fc[c], 0.3, amp=0.5), tab)[-50:, c]) / 2 ** spec.env_bits
    assert np.allclose(env, 0.5 * 32767 / 2, rtol=0.02)


def test_spec_validation():
    with pytest.raises(InputError, match="unknown field"):
        FrontendSpec.from_dict({"chanels": 700})
    with pytest.raises(InputError, match="sample_rate"):
        FrontendSpec(sample_rate=8000)
    with pytest.raises(InputError, match="power of two"):
        FrontendSpec(adapt_steps=30)
    assert FrontendSpec.from_dict(FrontendSpec().to_dict()) == FrontendSpec()
    assert FrontendSpec().digest() != FrontendSpec(channels=64).digest()


def test_bad_chunks_are_rejected():
    fe = Cochlea(FrontendSpec(channels=8))
    with pytest.raises(InputError, match="NaN"):
        fe.process(np.array([0.0, np.nan]))
    with pytest.raises(InputError, match="1-D"):
        fe.process(np.zeros((2, 2), np.int16))
    with pytest.raises(InputError, match="int16 range"):
        fe.process(np.array([40000]))
    float_pcm = tone(440, 0.1).astype(np.float32) / 32768
    assert np.array_equal(Cochlea(FrontendSpec(channels=8)).encode(float_pcm),
                          Cochlea(FrontendSpec(channels=8)).encode(tone(440, 0.1)))


def test_pure_step_function_matches_class():
    spec = FrontendSpec(channels=16)
    tab = design(spec)
    pcm = speechlike(0.2, 9)
    a, state = frontend_step(pcm[:1000], initial_state(spec), tab)
    b, _ = frontend_step(pcm[1000:], state, tab)
    fe = Cochlea(spec, tab)
    assert np.array_equal(np.vstack([a, b]), fe.process(pcm))


def test_real_speech_looks_like_shd(fsdd, fe700):
    """FSDD recordings: spike counts and rates of the same order as SHD's cochlea output."""
    counts, peak_rates = [], []
    for name in ["0_george_0", "3_jackson_10", "7_lucas_5", "9_george_20", "5_jackson_2"]:
        s = fe700.encode(load_audio(fsdd / f"{name}.wav"))
        counts.append(s.sum())
        rate = s.sum(axis=0) / (s.shape[0] / 1000)
        peak_rates.append(rate.max())
        active = rate > 0
        assert 0.2 < active.mean() <= 1.0
    assert 1000 < np.mean(counts) < 20000
    assert 20 < np.mean(peak_rates) <= 1000


def _random_tables(rng):
    """Tables of a random spec inside the exactness bound (design refuses the others)."""
    while True:
        try:
            return design(_random_spec(rng))
        except InputError:
            continue


def _random_spec(rng) -> FrontendSpec:
    return FrontendSpec(channels=int(rng.integers(1, 40)), order=int(rng.integers(1, 6)),
                        superblock=int(rng.integers(1, 7)), hop=int(rng.choice([8, 16, 20])),
                        adapt_steps=int(rng.choice([4, 16, 32])),
                        adapt_num=int(rng.integers(0, 5)), theta_bits=int(rng.integers(6, 12)),
                        env_bits=int(rng.integers(2, 6)), level_bits=int(rng.integers(2, 6)))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_front_end_gives_numpys_spikes_and_state(seed):
    """The compiled front-end (runtime/compiled.py's fe_levels and fe_spikes) against the numpy
    reference: random specs, loud, quiet and clipped audio, any chunking, with and without level
    equalization: every spike, and the whole state after each chunk."""
    pytest.importorskip("numba")
    from tessera.runtime import compiled
    from tessera.runtime.leveleq import LevelEq

    rng = np.random.default_rng(seed)
    tab = _random_tables(rng) if seed else design(FrontendSpec(channels=70))
    spec = tab.spec
    if seed % 2:
        tab = tab._replace(eq=LevelEq(rng.integers(tab.floor_level, tab.floor_level + 200,
                                                   spec.channels), block=int(rng.integers(1, 9)),
                                      shift=4, gate=20).check(spec.channels))
    pcm = np.concatenate([speechlike(0.3, seed), np.zeros(900, np.int16),
                          np.full(700, 32767, np.int16), (speechlike(0.2, seed) // 64)])
    cuts = np.sort(rng.integers(0, pcm.size + 1, size=9))
    runs = {}
    for name in ("numpy", "numba"):
        with compiled.use(name):
            assert compiled.backend() == name
            fe, got = Cochlea(tables=tab), []
            for part in np.split(pcm, cuts):
                got.append((fe.process(part), fe.state))
            runs[name] = got
    spiked = 0
    for (a, sa), (b, sb) in zip(runs["numpy"], runs["numba"]):
        assert np.array_equal(a, b) and a.dtype == b.dtype == np.uint8
        spiked += int(a.sum())
        for field in ("modes", "pending", "history", "voltage"):
            x, y = getattr(sa, field), getattr(sb, field)
            assert np.array_equal(x, y) and x.dtype == y.dtype, field
        assert sa.emitted == sb.emitted
        if sa.eq is not None:
            assert all(np.array_equal(x, y) for x, y in zip(sa.eq, sb.eq))
    assert spiked > 0
