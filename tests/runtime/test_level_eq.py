"""The front-end's long-term level equalization: the rule, streaming, the model file, the chip."""

from pathlib import Path

import numpy as np
import pytest

from helpers import log_sweep, tone
from tessera.runtime.errors import InputError
from tessera.runtime.frontend import Cochlea, FrontendSpec, design
from tessera.runtime.leveleq import LevelEq, eq_initial, equalize, speech_sum

SPEC = FrontendSpec(channels=48)
TAB = design(SPEC)
FLOOR = TAB.floor_level


def _eq(ref_level=300, **kw):
    return LevelEq(np.full(SPEC.channels, ref_level), **kw).check(SPEC.channels)


def _speech(seed=0, seconds=0.6, amp=0.3):
    """A sweep with a pause: speech steps and silent steps."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([log_sweep(200 + 50 * seed, 4000, seconds, amp), np.zeros(4000),
                        tone(700 + 10 * seed, 0.3, amp)]).astype(np.float64)
    return np.clip(np.round(x + rng.normal(0, 3, x.size)), -32768, 32767).astype(np.int16)


def test_any_chunking_gives_the_same_spikes_and_state():
    tab = TAB._replace(eq=_eq(block=7))
    pcm = np.concatenate([_speech(0), _speech(1)])
    whole = Cochlea(tables=tab)
    ref = np.vstack([whole.process(pcm), whole.flush()])
    rng = np.random.default_rng(3)
    for _ in range(3):
        c = Cochlea(tables=tab)
        cuts = np.sort(rng.choice(pcm.size, 9, replace=False))
        got = np.vstack([c.process(p) for p in np.split(pcm, cuts)] + [c.flush()])
        assert np.array_equal(got, ref)
        assert np.array_equal(c.state.eq.mean, whole.state.eq.mean)


def test_running_level_follows_the_speaker_and_survives_reset():
    tab = TAB._replace(eq=_eq(ref_level=200, shift=8))
    c = Cochlea(tables=tab)
    first = c.encode(_speech(0))
    moved = c.state.eq.offset.copy()
    assert (moved > 0).any(), "a louder voice than the reference moves the levels down"
    c.reset()                                             # a new utterance from rest
    assert np.array_equal(c.state.eq.offset, moved)
    for i in range(6):
        c.encode(_speech(0))
    later = c.encode(_speech(0))
    assert np.abs(c.state.eq.offset).mean() > np.abs(moved).mean()
    assert later.sum() != first.sum()                     # the same audio heard differently
    c.reset_levels()
    assert c.state.eq is None
    assert np.array_equal(c.encode(_speech(0)), first)    # back to the reference


def test_the_running_level_converges_to_the_speech_steps_mean():
    eq = _eq(ref_level=250, shift=6, block=4)
    level = np.repeat(np.random.default_rng(0).integers(FLOOR + 20, FLOOR + 200,
                                                        (SPEC.channels, 1)), 40, axis=1)
    level[:, 20:] = FLOOR - 5                             # silence: never counted
    target, steps = speech_sum(level, FLOOR, eq.gate)
    assert 0 < steps <= 20
    st = eq_initial(eq)
    for _ in range(200):
        _, st = equalize(level.astype(np.int32).copy(), st, eq, FLOOR)
    assert np.abs(st.mean / (1 << eq.frac) - target / steps).max() <= 0.5


def test_silence_leaves_the_level_alone():
    tab = TAB._replace(eq=_eq())
    c = Cochlea(tables=tab)
    silent = c.encode(np.zeros(16000, np.int16))
    assert not silent.any()
    assert np.array_equal(c.state.eq.mean, eq_initial(tab.eq).mean)


@pytest.mark.parametrize("bad, word", [
    (dict(ref=np.full(47, 10)), "ref must be 48"), (dict(ref=np.full(48, -1)), "0..4095"),
    (dict(block=0), "block"), (dict(shift=0), "shift"), (dict(gate=-1), "gate")])
def test_bad_equalizer_fields_are_named(bad, word):
    kw = dict(ref=np.full(48, 300)) | bad
    with pytest.raises(InputError, match=word):
        LevelEq(**kw).check(48)


# ------------------------------------------------------------------ the model file and the chip
DEFAULT = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tsb"


@pytest.fixture(scope="module")
def eq_model(tmp_path_factory):
    """The default model given a level equalization (a reference a little under speech), and
    its export."""
    pytest.importorskip("torch")
    from tessera.trainer.exchange.export import ExportConfig, export_model
    from tessera.trainer.learning.train import load_model

    m = load_model(str(DEFAULT))
    m.extra["level_eq"] = dict(ref=[FLOOR + 60] * 700, gate=40, block=16, shift=11, frac=16)
    out = tmp_path_factory.mktemp("eq") / "eq.tsr"
    export_model(m, str(out), ExportConfig(weight_bits=4))
    return m, out


def test_export_carries_the_equalizer_and_the_chip_runs_it(eq_model):
    from tessera.runtime.chip import Chip
    from tessera.runtime.model_format import read_model, unpack_ints

    m, path = eq_model
    fe = read_model(path).frontend
    assert set(fe["eq"]) == {"ref", "gate", "block", "shift", "frac", "prior"}
    assert np.array_equal(unpack_ints(fe["eq"]["ref"], "ref"), np.full(233, FLOOR + 60))
    chip = Chip.load(path)
    assert np.array_equal(chip.cochlea.level_offset(), np.zeros(233))
    pcm = _speech(2)
    chip.feed_audio(pcm)
    phi = chip.end_utterance().copy()
    assert not chip.cochlea.level_offset().any()          # hearing alone teaches it nothing
    sums, n = chip.cochlea.heard_speech()
    assert n > 0 and (sums > 0).any()
    chip.reset()
    chip.feed_audio(pcm)
    assert np.array_equal(chip.end_utterance(), phi)      # so the same sound, the same answer
    chip.enroll("two")                                    # taught: the level learns its voice
    off = chip.cochlea.level_offset()
    assert (off > 0).any() and chip.cochlea.heard_speech()[1] == 0   # taken in once
    chip.reset()                                          # kept across utterances
    assert np.array_equal(chip.cochlea.level_offset(), off)
    chip.cochlea.reset_levels()
    assert not chip.cochlea.level_offset().any()


def test_a_damaged_equalizer_is_a_named_model_error(eq_model, tmp_path):
    from tessera.runtime.chip import Chip
    from tessera.runtime.model_format import read_model, write_model

    _, path = eq_model
    for field, value in (("gate", "x"), ("block", 0), ("colour", 1), ("ref", [1, 2])):
        mf = read_model(path)
        mf.frontend["eq"] = dict(mf.frontend["eq"], **{field: value})
        bad = tmp_path / f"bad-{field}.tsr"
        write_model(str(bad), mf)
        with pytest.raises(InputError, match="front-end section is unusable"):
            Chip.load(bad)


def test_wav_folder_heard_through_the_models_equalizer(eq_model, tmp_path):
    """The trainer hears a WAV folder as the device would: per speaker, the level kept."""
    import wave

    from tessera.trainer.data.readers import read_wav_folder

    m, _ = eq_model
    for spk in ("ann", "bob"):
        for i in range(3):
            x = _speech(i, amp=0.5 if spk == "ann" else 0.05)
            with wave.open(str(tmp_path / f"{i}_{spk}_{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(x.tobytes())
    plain = read_wav_folder(tmp_path, cache_dir=tmp_path / "c", progress=False)
    heard = read_wav_folder(tmp_path, cache_dir=tmp_path / "c", progress=False,
                            level_eq=m.level_eq)
    again = read_wav_folder(tmp_path, cache_dir=tmp_path / "c", progress=False,
                            level_eq=m.level_eq)
    n = [plain.sample(i)[0].size for i in range(6)]
    e = [heard.sample(i)[0].size for i in range(6)]
    assert n != e
    assert all(np.array_equal(heard.sample(i)[1], again.sample(i)[1]) for i in range(6))


def _board(path, flash=None):
    """A simulated board with the model ``path`` and a function that asks it one request."""
    from tessera.firmware_sim.device import Firmware
    from tessera.protocol.framing import FrameDecoder, encode_frame
    from tessera.protocol.messages import decode, encode

    fw = Firmware(flash_path=None if flash is None else str(flash))
    fw.install(open(path, "rb").read())
    dec = FrameDecoder()

    def ask(msg):
        return [decode(x) for x in dec.feed(fw.receive(encode_frame(encode(msg))))][-1]

    return fw, ask


def _stream(ask, pcm: np.ndarray) -> None:
    data = pcm.tobytes()
    for k in range(0, len(data), 8000):
        ask({"t": "stream_audio", "rate": 16000, "pcm": data[k:k + 8000], "id": 10 + k})


def test_the_running_level_is_kept_in_flash_with_the_words(eq_model, tmp_path):
    fw, ask = _board(eq_model[1], tmp_path / "flash.img")
    _stream(ask, _speech(4))
    assert ask({"t": "enroll", "label": "lamp", "id": 9})["saved"] is True
    level, heard = fw.chip.cochlea.level_state()
    assert heard > 0 and fw.chip.cochlea.level_offset().any()
    fw.boot()                                             # power cycle
    assert fw.boot_error is None and fw.chip.classes() == ["lamp"]
    assert np.array_equal(fw.chip.cochlea.level_state()[0], level) and fw.chip.cochlea.level_state()[1] == heard
    with pytest.raises(InputError, match="running level"):
        fw.chip.cochlea.restore_level_state(np.full(5, 3))


def test_reset_state_voice_forgets_the_running_level(eq_model):
    _, ask = _board(eq_model[1])
    _stream(ask, _speech(5))
    ask({"t": "enroll", "label": "lamp", "id": 2})       # taught: the level learns the voice
    moved = ask({"t": "get_stats", "id": 3})["chip"]["voice_level_offset"]
    assert moved["max"] > 0
    ask({"t": "reset_state", "id": 4})
    assert ask({"t": "get_stats", "id": 5})["chip"]["voice_level_offset"] == moved
    ask({"t": "reset_state", "voice": True, "id": 6})
    assert ask({"t": "get_stats", "id": 7})["chip"]["voice_level_offset"] == dict(
        mean=0.0, min=0, max=0)


def test_level_eq_command_writes_a_new_bundle_and_never_the_model(small_corpus, tmp_path):
    import hashlib
    import json

    from helpers import tessera
    from tessera.trainer.learning.train import load_model

    pytest.importorskip("torch")

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    before = digest(DEFAULT)
    one, two, three = (tmp_path / f"{k}.tsb" for k in ("one", "two", "three"))
    r = tessera("level-eq", str(DEFAULT), "--out", one, "--reference", str(small_corpus),
                "--shift", "14", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["shift"] == 14 and out["reference"] == "small.h5"
    eq = load_model(str(one)).level_eq
    assert eq.shift == 14 and eq.ref.shape == (700,) and FLOOR < eq.ref.mean() < FLOOR + 400
    assert load_model(str(one)).calibration == load_model(str(DEFAULT)).calibration  # carried
    r = tessera("level-eq", str(one), "--out", two, "--gate", "30")   # the model's own reference
    assert r.returncode == 0 and load_model(str(two)).level_eq.gate == 30
    assert np.array_equal(load_model(str(two)).level_eq.ref, eq.ref)
    assert tessera("level-eq", str(two), "--out", three, "--remove").returncode == 0
    assert load_model(str(three)).level_eq is None and load_model(str(two)).level_eq is not None
    assert digest(DEFAULT) == before                               # nothing in place
    r = tessera("level-eq", str(one), "--out", one, "--gate", "20")  # never over itself
    assert r.returncode != 0 and "must not be the model" in r.stderr
    r = tessera("level-eq", str(DEFAULT.parents[1] / "v3" / "model.pt"), "--out",
                tmp_path / "v3.tsb")                               # trained without one:
    assert r.returncode != 0 and "--reference" in r.stderr and "Traceback" not in r.stderr
    r = tessera("level-eq", str(one), "--out", two, "--reference", str(tmp_path / "none.h5"))
    assert r.returncode != 0 and "no such corpus" in r.stderr


def test_with_a_prior_the_first_words_move_the_level_as_their_mean():
    """prior > 0: the running level is the mean of all heard with the reference as ``prior``
    steps, until 2^shift steps are heard; then 2^-shift a step."""
    eq = _eq(ref_level=250, shift=12, block=4, prior=40)
    level = np.repeat(np.random.default_rng(1).integers(FLOOR + 60, FLOOR + 200,
                                                        (SPEC.channels, 1)), 40, axis=1)
    total, steps = speech_sum(level, FLOOR, eq.gate)
    assert steps == 40
    _, st = equalize(level.astype(np.int32).copy(), eq_initial(eq), eq, FLOOR)
    want = (total + 40 * 250) / 80                        # half the reference, half the voice
    assert np.abs(st.mean / (1 << eq.frac) - want).max() <= 0.5 and st.heard == 40
    slow = _eq(ref_level=250, shift=12, block=4)          # prior 0: 40 steps of 2^-12 each
    _, st0 = equalize(level.astype(np.int32).copy(), eq_initial(slow), slow, FLOOR)
    assert np.abs(st0.mean / (1 << eq.frac) - 250).max() <= 2
    for _ in range(800):                                  # then 2^-shift: heard stays capped
        _, st = equalize(level.astype(np.int32).copy(), st, eq, FLOOR)
    assert st.heard == 1 << 12 and np.abs(st.mean / (1 << eq.frac) - total / 40).max() <= 0.5


def test_what_a_taught_word_teaches_the_level_stays_in_the_range_flash_holds():
    """learned(): levels past 4095 (a model's front-end may reach them) or below 0 are held to
    the range, so the running level can always be kept in flash and restored."""
    from tessera.runtime.leveleq import MAX_LEARN, learned, restored_state

    eq = _eq(ref_level=300, shift=15, prior=2048).check(SPEC.channels)
    st = eq_initial(eq)
    for sums in (np.full(SPEC.channels, 9000 * 500), np.full(SPEC.channels, -5)):
        out = learned(st, eq, sums, 500)
        restored_state(eq, out.mean, out.heard)                  # what a reboot checks
        assert out.heard == 500
    with pytest.raises(InputError, match="speech steps"):
        learned(st, eq, np.zeros(SPEC.channels, np.int64), MAX_LEARN + 1)
    with pytest.raises(InputError, match="integers"):
        learned(st, eq, np.zeros(3, np.int64), 5)
