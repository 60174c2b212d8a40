"""Export, the model file's checks, the chip emulator, enrollment, RRAM, and parity."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tessera.runtime.chip import Chip
from tessera.runtime.spikes import events_to_frames
from tessera.runtime.errors import InputError
from tessera.runtime.model_format import (
    HEADER, VERSION, ModelFile, decode_model, encode_model, pack_ints, read_model, unpack_ints)
from tessera.runtime.rram import GF, RRAMArray, RRAMConfig

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tsb"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The committed default model exported at 8 and 4 bits (and with room for 2 classes)."""
    pytest.importorskip("torch")
    from tessera.trainer.exchange.export import ExportConfig, export_model
    from tessera.trainer.learning.train import load_model

    d = tmp_path_factory.mktemp("tsr")
    m = load_model(str(DEFAULT))
    out = {}
    for name, cfg in (("8", ExportConfig()), ("4", ExportConfig(weight_bits=4)),
                      ("cap2", ExportConfig(max_classes=2))):
        out[name] = d / f"{name}.tsr"
        export_model(m, str(out[name]), cfg)
    return out


def _utterances(corpus, count=6, seed=0):
    from tessera.trainer.data.readers import read_spike_h5

    data = read_spike_h5(corpus)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data.labels), size=count, replace=False)
    return data, [events_to_frames(*data.sample(int(i)), data.channels) for i in idx], idx


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8, 16, 32])
def test_pack_roundtrip(bits):
    rng = np.random.default_rng(bits)
    for signed in (True, False):
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        a = rng.integers(lo, hi, size=(3, 5, 7), endpoint=True)
        assert np.array_equal(unpack_ints(pack_ints(a, bits, signed), "a"), a)
    with pytest.raises(ValueError):
        pack_ints(np.array([1 << bits]), bits, signed=False)
    a[rng.random(a.shape) < 0.8] = 0                     # mostly zeros: stored sparse
    for sparse in (None, True, False):
        d = pack_ints(a, bits, False, sparse=sparse, deflate=False)
        assert ("mask" in d) == (sparse is True or (sparse is None and bits > 1))
        assert np.array_equal(unpack_ints(d, "a"), a)
        for deflate in (None, True):                     # version 4: zlib streams
            z = pack_ints(a, bits, False, sparse=sparse, deflate=deflate)
            assert np.array_equal(unpack_ints(z, "a"), a)
            assert z.get("deflate", False) == (deflate is True or len(z["data"]) < len(d["data"]))


def test_deflated_arrays_are_checked():
    """A deflated array must inflate to exactly the bytes its shape needs: a damaged stream, a
    short or long one, bytes after its end, or a shape too large to inflate are named errors,
    and no stream can make the reader produce more than it needs."""
    import zlib

    a = np.tile(np.array([0, 3, 0, -2, 5, 0, 0, 1]), 64).reshape(16, 32)
    d = pack_ints(a, 4, sparse=True, deflate=True)
    raw = pack_ints(a, 4, sparse=True, deflate=False)
    assert d["deflate"] and np.array_equal(unpack_ints(d, "w"), a)
    bomb = zlib.compress(bytes(64 << 20), 9)             # 64 MiB of zeros in ~64 KB
    for bad, msg in ((dict(d, data=d["data"][:-3]), "not hold exactly|not a valid deflate"),
                     (dict(d, data=b"\x00" + d["data"]), "not a valid deflate"),
                     (dict(d, data=d["data"] + b"xx"), "not hold exactly"),
                     (dict(d, data=zlib.compress(raw["data"] + b"\x00")), "not hold exactly"),
                     (dict(d, mask=zlib.compress(raw["mask"][:-1])), "deflated mask does not"),
                     (dict(d, data=bomb), "not hold exactly"),
                     (dict(d, mask=raw["mask"]), "not a valid deflate"),
                     (dict(d, deflate=1), "deflate must be true or false"),
                     (dict(d, shape=[1 << 16, 1 << 13], mask=bomb), "at most")):
        with pytest.raises(InputError, match=msg):
            unpack_ints(bad, "w")


def test_sparse_arrays_and_version_2_files(exported):
    """Format 3 stores an array with few non-zero values as a bitmap and those values; a bad
    mask is a named error; a version-2 file (every array dense) still loads, to the same chip."""
    d = pack_ints(np.array([[0, 3, 0], [0, 0, -2]]), 4, sparse=True)
    assert len(d["mask"]) == 1 and len(d["data"]) == 1
    for bad, msg in ((dict(d, mask=b"\x0a\x00"), "a mask of 2 bytes for 6 values"),
                     (dict(d, mask=b"\x4a"), "mask bits set beyond"),
                     (dict(d, mask=b"\x0b"), "1 bytes of data for 3 stored values"),
                     (dict(d, mask=5), "bad array header")):
        with pytest.raises(InputError, match=msg):
            unpack_ints(bad, "w")
    m = read_model(exported["4"])
    assert "mask" in m.core["w_rec"]                      # the hop-pruned blocks
    dense = ModelFile(**vars(m))
    dense.core = {k: (pack_ints(unpack_ints(v, k), v["bits"], v["signed"], sparse=False,
                                deflate=False)
                      if isinstance(v, dict) else v) for k, v in m.core.items()}
    blob = bytearray(encode_model(dense))
    blob[4:6] = struct.pack("<H", 2)
    assert len(blob) > exported["4"].stat().st_size + 3000
    a, b = Chip(decode_model(bytes(blob))), Chip.load(exported["4"])
    assert np.array_equal(a.core.w_rec_reset, b.core.w_rec_reset) and a.core.w_rec_reset.any()


def test_bad_model_files_get_clear_errors(exported, tmp_path):
    blob = exported["4"].read_bytes()
    assert len(blob) <= 64 * 1024                         # the 4-bit default fits 64 KiB
    cases = {
        "magic": b"XXXX" + blob[4:],
        "version": blob[:4] + struct.pack("<H", 9) + blob[6:],
        "CRC": blob[:-1] + bytes([blob[-1] ^ 1]),
        "truncated": blob[:-100],
        "short": blob[:7],
    }
    expect = {"magic": "not a tessera model file", "version": "version 9 is not supported",
              "CRC": "CRC mismatch", "truncated": "truncated or padded", "short": "too short"}
    for name, bad in cases.items():
        p = tmp_path / f"{name}.tsr"
        p.write_bytes(bad)
        with pytest.raises(InputError, match=expect[name]) as e:
            Chip.load(p)
        assert str(p) in str(e.value)                     # the error names the file
    # well-formed files with one field changed (None: removed), each refused by name: shapes
    # that do not fit the geometry, missing, unknown and mistyped fields, broken design rules
    cases = [
        # an array whose declared shape the geometry does not need: refused before inflating
        ("core", "rows", 3, r"core.leak_mult declares shape \[256\], the model's dimensions "
                            r"need \[192\]"),
        ("core", "w_rec", pack_ints(np.zeros((2, 16, 16), np.int64), 4),
         r"core.w_rec declares shape \[2, 16, 16\], the model's dimensions need \[%d, 16, 16\]"
         % read_model(exported["4"]).core["routes"]["shape"][0]),
        ("readout", "none_threshold", None, "readout.none_threshold is missing"),
        ("core", "leak_mult", pack_ints(np.full(7, 50000), 16, False),
         r"core.leak_mult declares shape \[7\], the model's dimensions need \[256\]"),
        ("core", "leak_mult", 70000, r"core.leak_mult must be a decay in \[0, 65536\)"),
        ("core", "leak", 3, "model field core.leak is not known"),
        ("readout", "calib", "0,0,0", "readout.calib must be a list"),
        ("core", "refractory", 2, "core.refractory must be 0"),
        ("core", "w_in", 5, "core.w_in must be a packed array"),
    ]
    for section, key, value, expect in cases:
        m = read_model(exported["4"])
        if value is None:
            del getattr(m, section)[key]
        else:
            getattr(m, section)[key] = value
        with pytest.raises(InputError, match=expect):
            Chip(decode_model(encode_model(m)))
    # a payload that is msgpack but not a map of ours, with a correct CRC
    junk = b"\x93\x01\x02\x03"
    with pytest.raises(InputError, match="not a tessera-model map"):
        decode_model(HEADER.pack(b"TSRM", VERSION, 0, len(junk), zlib.crc32(junk)) + junk)


def test_streaming_is_chunking_invariant_and_matches_batch(exported, small_corpus):
    chip = Chip.load(exported["8"])
    _, frames, _ = _utterances(small_corpus, 3)
    rng = np.random.default_rng(1)
    whole, feats = [], []
    for f in frames:
        chip.reset()
        ran = chip.run(f)
        feats.append(chip.features())
        whole.append(np.vstack([ran, chip.tail]))          # the window's silent rest too
        for _ in range(3):
            chip.reset()
            cuts = np.sort(rng.integers(0, f.shape[0] + 1, size=rng.integers(1, 40)))
            parts = [chip.run(c) for c in np.split(f, cuts)]
            assert np.array_equal(np.vstack(parts), ran)
            assert np.array_equal(chip.features(), feats[-1])
    phi, ras = chip.run_batch(np.stack(frames), rasters=True)
    assert np.array_equal(phi, np.stack(feats))
    assert np.array_equal(ras, np.stack(whole))
    assert all(r.sum() > 0 for r in whole)                 # the core is not silent
    chip.reset_counters()                                  # counters add up until reset
    chip.reset()
    chip.run(frames[-1])
    chip.end_utterance()
    s = chip.stats()
    assert s["spikes"] == int(whole[-1].sum())
    assert sum(s["spikes_per_tile"]) == s["spikes"]
    assert s["routing_events_per_hop"]["0"] > 0 and s["synops"] > s["spikes"]
    assert 0 < s["activation_sparsity"] < 1 and 0.5 < s["connection_sparsity"] < 1


def test_bad_frames_and_used_utterance(exported):
    chip = Chip.load(exported["8"])
    with pytest.raises(InputError, match="spike frames must be"):
        chip.run(np.zeros((10, 5), np.uint8))
    with pytest.raises(InputError, match="integer counts"):
        chip.run(np.zeros((10, 700), np.float32))
    with pytest.raises(InputError, match="no classes enrolled"):
        chip.predict()
    with pytest.raises(InputError, match="call reset"):
        chip.run(np.zeros((10, 700), np.uint8))


def test_enroll_predict_forget_capacity(exported, small_corpus):
    data, frames, idx = _utterances(small_corpus, 40, seed=3)
    chip = Chip.load(exported["cap2"])
    by_label = {}
    for f, i in zip(frames, idx):
        by_label.setdefault(data.label_names[data.labels[i]], []).append(f)
    words = [w for w, fs in by_label.items() if len(fs) >= 2][:3]
    assert len(words) == 3
    for w in words[:2]:
        chip.reset()
        chip.run(by_label[w][0])
        r = chip.enroll(w)
        assert r["shots"] == 1 and r["written"] > 0
    assert chip.classes() == words[:2]
    chip.reset()
    chip.run(by_label[words[2]][0])
    with pytest.raises(InputError, match="readout full: 2 classes"):
        chip.enroll(words[2])
    # each enrolled word is recognised on its own enrollment utterance
    for w in words[:2]:
        chip.reset()
        chip.run(by_label[w][0])
        p = chip.predict()
        assert p["label"] == w and 0 < p["confidence"] <= 1 and set(p["scores"]) == set(words[:2])
    chip.forget(words[0])
    assert chip.classes() == [words[1]]
    assert not chip.readout.W[:, 0].any()
    with pytest.raises(InputError, match="is not enrolled"):
        chip.forget(words[0])
    chip.reset()
    chip.run(by_label[words[2]][0])
    chip.enroll(words[2])                                # the freed row takes the new word
    assert sorted(chip.classes()) == sorted(words[1:])


def test_enroll_is_deterministic_for_a_seed_with_noise(exported, small_corpus):
    _, frames, _ = _utterances(small_corpus, 2)
    outs = []
    for seed in (5, 5, 6):
        chip = Chip.load(exported["8"], RRAMConfig(write_noise=0.02, seed=seed))
        chip.run(frames[0])
        chip.enroll("a")
        outs.append(chip.readout.W[:, 0].copy())
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_rram_levels_noise_drift_stuck():
    rng = np.random.default_rng(0)
    q = rng.integers(-7, 8, size=(20, 30))
    ideal = RRAMArray(q, 7, RRAMConfig(), np.random.default_rng(1))
    assert np.array_equal(ideal.read(), q << GF)
    noisy = RRAMArray(q, 7, RRAMConfig(write_noise=0.05), np.random.default_rng(1))
    err = noisy.read() / (1 << GF) - q
    assert 0.2 < err.std() < 0.7                          # ~ sqrt(2) * 0.05 * 7 per pair
    raw = RRAMArray(q, 7, RRAMConfig(drift_compensation=False), np.random.default_rng(1))
    for a in (ideal, raw):
        a.age(3600)
    shrink = np.abs(raw.read()).sum() / np.abs(q << GF).sum()
    assert 0.75 < shrink < 0.95                           # (3600 / 38.6)^-0.04 ~ 0.83
    kept = np.abs(ideal.read()).sum() / np.abs(q << GF).sum()
    assert 0.97 < kept < 1.03 and not np.array_equal(ideal.read(), q << GF)  # gain, spread
    stuck = RRAMArray(np.zeros((50, 50), np.int64), 7, RRAMConfig(stuck_on=0.1),
                      np.random.default_rng(2))
    frac = (stuck.read() != 0).mean()
    assert 0.1 < frac < 0.3                               # one of the pair stuck on
    stuck.program(np.zeros((50, 50), np.int64))
    assert (stuck.read() != 0).mean() == frac             # a stuck device ignores writes


def test_feed_audio_uses_the_files_frontend(exported):
    from tessera.runtime.frontend import Cochlea, FrontendSpec
    from tessera.tools.bench import speechlike_signal

    chip = Chip.load(exported["8"])
    pcm = speechlike_signal(0.5, 2)
    chip.cochlea.tables = chip.cochlea.tables._replace(eq=None)    # a level equalization, if
    #                                                      any, has its own tests (test_level_eq)
    a = chip.cochlea.encode(pcm)
    b = Cochlea(FrontendSpec()).encode(pcm)[:, chip.tab.channels]
    # Q1.31 poles vs the float64 design: the same spikes but for a rare rounding difference
    assert a.shape == b.shape and (a != b).mean() < 1e-3 and a.sum() > 100
    a = Chip.load(exported["8"]).cochlea.encode(pcm)     # with it, from the reference
    chip = Chip.load(exported["8"])
    r1 = chip.feed_audio(pcm[:1234])
    r2 = chip.feed_audio(pcm[1234:])
    phi = chip.features()
    chip.reset()
    chip.run(a)
    assert np.array_equal(chip.features(), phi) and r1.shape[0] + r2.shape[0] == 50
    chip.reset()
    chip.feed_audio(np.zeros(8000, np.float32), sample_rate=8000)  # resampled, silent
    assert chip.features().shape == (chip.tab.features,)


def test_parity_cli_and_export_errors(exported, small_corpus, tmp_path):
    from helpers import assert_clean_error, tessera

    r = tessera("parity", exported["4"], "--data", small_corpus, "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["bit_exact_fraction"] == 1.0 and res["utterances"] > 10
    assert_clean_error(tessera("export", DEFAULT, "--out", tmp_path / "x.tsr", "--bits", "9"),
                       "weight bits must be 2..8")
    bad = tmp_path / "bad.tsr"
    bad.write_bytes(b"TSRM" + b"\0" * 40)
    assert_clean_error(tessera("parity", bad, "--data", small_corpus), "bad.tsr")
    assert not (tmp_path / "x.tsr").exists()


def test_model_file_is_self_describing(exported):
    m = read_model(exported["8"])
    assert isinstance(m, ModelFile)
    assert m.meta["config_sha256_16"] and "accuracy_at_export" in m.meta   # {} for pretrain
    assert m.core["weight_bits"] == 8 and m.readout["rule"] == "prototype"
    assert m.readout["none_threshold"] > 0 and len(m.readout["calib"]) == 3
    assert m.frontend["spec"]["channels"] == 700                # the bank; the channels read:
    assert unpack_ints(m.core["channels"], "channels").shape == (233,)
    assert "poles" not in m.frontend                             # derived (format 4)


def test_chip_eval_cli_rows(small_corpus):
    from helpers import tessera

    r = tessera("chip-eval", DEFAULT, "--data", small_corpus, "--episodes", "20", "--shots", "1",
                "--bits", "4", "8", "--drift", "3600", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    rows = [(x["weight_bits"], x["drift_s"], x["drift_compensation"]) for x in res["rows"]]
    assert rows == [(4, 0.0, None), (8, 0.0, None), (8, 3600, True), (8, 3600, False)]
    # words enrolled one at a time in random orders answer as one joint enrollment
    assert all(x["order_differ_1shot"] == 0.0 for x in res["rows"])
    assert 0.2 < res["float"]["1-shot"]["accuracy"] <= 1.0
    assert all(0.0 <= x["acc_1shot"] <= 1.0 for x in res["rows"])
    assert res["people"] == "test"


def test_chip_eval_can_ask_the_validation_voices():
    """`--people val`: the validation voices (the choose people of a `corpus hear --people`
    set) take the test voices' place in the one episode definition."""
    from tessera.trainer.evaluation.chipeval import people_split

    split = np.array([0, 1, 2, 2, 1, -1])
    assert people_split(split, "val").tolist() == [0, 2, 1, 1, 2, -1]
    assert people_split(split, "test").tolist() == split.tolist()


def random_model(seed: int, rows=2, cols=3, tile=8, inputs=40, bits=5, steps=30, segments=4,
                 normalize="l2", segment_mode="window") -> ModelFile:
    """A seeded random integer model inside the hardware's ranges (no trained weights)."""
    from tessera.runtime.mosaic import hop_matrix
    from tessera.runtime.readout import exp2_table
    from tessera.trainer.exchange.export import ExportConfig

    rng = np.random.default_rng(seed)
    q = (1 << (bits - 1)) - 1
    n, tiles = rows * cols * tile, rows * cols
    hops = hop_matrix(rows, cols)
    pairs = [(a, b, int(hops[a, b])) for a in range(tiles) for b in range(tiles)
             if hops[a, b] <= 1 or rng.random() < 0.2]
    cfg = ExportConfig()
    core = dict(rows=rows, cols=cols, tile=tile, inputs=inputs, channels_total=3 * inputs,
                channels=pack_ints(np.arange(inputs) * 3, 16, False), bin_ms=5, steps=steps,
                segments=segments, weight_bits=bits,
                w_in=pack_ints(rng.integers(-q, q + 1, (inputs, n)), bits),
                shift_in=pack_ints(rng.integers(9, 13, tiles), 8, False),
                routes=pack_ints(np.array(pairs), 8, False),
                w_rec=pack_ints(rng.integers(-q, q + 1, (len(pairs), tile, tile)), bits),
                shift_rec=pack_ints(rng.integers(9, 13, len(pairs)), 8, False),
                bias=pack_ints(rng.integers(-3000, 3000, n), 32), threshold=1 << 16,
                leak_mult=int(rng.integers(40000, 60000)), trace_mult=int(rng.integers(50000, 60000)),
                refractory=0, membrane_bits=int(rng.integers(20, 25)), trace_bits=16,
                trace_frac=12, acc_bits=int(rng.integers(20, 33)))
    if segment_mode != "window":
        core["segment_mode"] = segment_mode
    if seed % 2:                           # per-neuron decays (learned time constants)
        core["leak_mult"] = pack_ints(rng.integers(30000, 65536, n), 16, False)
        core["trace_mult"] = pack_ints(rng.integers(40000, 65536, n), 16, False)
    readout = dict(normalize=normalize, feature_bits=15, readout_bits=int(rng.integers(4, 9)),
                   max_classes=6, rule="prototype", cos_frac=12, none_threshold=3000,
                   min_inputs=0, calib=[1280, 64, -1000], logit_frac=cfg.logit_frac,
                   softmax_frac=15, log2e=94548,
                   exp2=pack_ints(exp2_table(cfg.logit_frac), 32, signed=False))
    return ModelFile(meta={}, frontend={}, core=core, readout=readout, labels=[])


@pytest.mark.parametrize("seed,normalize,mode", [(0, "l2", "window"), (1, "l1", "window"),
                                                 (2, "none", "window"), (3, "l2", "window"),
                                                 (4, "l2", "own"), (5, "l1", "own")])
def test_parity_on_random_integer_models(seed, normalize, mode, backend):
    """Chip (streaming, event-driven, random chunks) vs the trainer's integer mode (batched,
    dense torch) on seeded random models and inputs: every raster, feature, cosine and
    enrolled column; both segment modes (own: utterances of several lengths, one shorter than
    its segments, one silent)."""
    torch = pytest.importorskip("torch")
    from tessera.trainer.learning.intmode import IntCore

    m = random_model(seed, normalize=normalize, segment_mode=mode)
    chip = Chip(decode_model(encode_model(m)))
    ref = IntCore(chip.tab)
    rng = np.random.default_rng(100 + seed)
    ms = chip.tab.steps * chip.tab.bin_ms
    frames = (rng.random((6, ms - int(rng.integers(0, 7)), 120)) < 0.08).astype(np.uint8)
    frames[0, :, :5] = 40                                  # saturating bins (x = 255)
    if mode == "own":
        frames[1, ms // 3:] = 0                            # a third of the window
        frames[2, 2 * chip.tab.bin_ms + 1:] = 0            # 3 bins: fewer than the segments
        frames[3] = 0                                      # silence
    ras_ref, phi_ref = ref.forward(ref.bins(torch.from_numpy(frames)))
    saturated = 0
    for j, f in enumerate(frames):
        chip.reset()
        cuts = np.sort(rng.integers(0, f.shape[0] + 1, size=4))
        ras = np.vstack([chip.run(c) for c in np.split(f, cuts)])
        phi = chip.features()
        assert np.array_equal(np.vstack([ras, chip.tail]), ras_ref[j].numpy())
        assert np.array_equal(phi, phi_ref[j].numpy())
        lim = 1 << (chip.tab.membrane_bits - 1)
        v = chip.state.core.vr[:chip.tab.neurons]
        saturated += int(((v == lim - 1) | (v == -lim)).sum())
        if j < 3:                                        # enroll, then compare the columns
            chip.enroll(f"w{j}")
            col = chip.readout.names.index(f"w{j}")
            levels, exp = ref.prototype_column(phi_ref[j:j + 1])
            assert np.array_equal(levels.numpy(), chip.readout.arr.levels[:, col])
            assert exp == chip.readout.exps[col] and chip.readout.shots[col] == 1
    lq = ref.cosines(phi_ref, torch.from_numpy(chip.readout.W[:, chip.enrolled()]))
    assert np.array_equal(chip.scores_q(phi_ref.numpy()), lq.numpy())
    assert ras_ref.sum() > 0
    assert saturated > 0 or seed == 0                      # the saturation path is exercised
    phi_b, ras_b = chip.run_batch(frames, rasters=True)    # all streams at once, same steps
    assert np.array_equal(ras_b, ras_ref.numpy()) and np.array_equal(phi_b, phi_ref.numpy())


def test_core_step_is_pure_and_batches_like_single_streams():
    """core_step leaves its arguments alone (a state can be kept and stepped again), and a batch
    of streams steps exactly as each stream alone."""
    from tessera.runtime.core import core_state, core_step, input_current

    chip = Chip(decode_model(encode_model(random_model(1))))
    tables = chip.core
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, (3, 12, chip.tab.inputs))
    cur = input_current(x, tables)
    batch = core_state(tables, batch=3)
    singles = [core_state(tables) for _ in range(3)]
    spiked = 0
    for t in range(12):
        before = [a.copy() for a in batch]
        zb, new = core_step(cur[:, t], batch, tables)
        assert all(np.array_equal(a, b) for a, b in zip(before, batch))   # untouched
        again, _ = core_step(cur[:, t], batch, tables)
        assert np.array_equal(again, zb)                  # same state, same step
        batch = new
        for j in range(3):
            z, singles[j] = core_step(cur[j, t], singles[j], tables)
            assert np.array_equal(z, zb[j]) and np.array_equal(singles[j].vr, batch.vr[j])
        spiked += int(zb.sum())
    assert spiked > 0
    with pytest.raises(ValueError):
        tables.w_rec_reset[0, 0] = 1                       # the tables are read-only


@pytest.mark.parametrize("scale,mag,dtype", [(1, 1 << 12, np.float64), (4096, 1 << 12, np.float64),
                                             (64, 16, np.float32), (1, 16, np.float32)])
def test_input_current_is_exact_whichever_float_it_uses(scale, mag, dtype):
    """core_tables multiplies in float32 only where every partial sum provably stays below 2^24
    (else float64); either way the currents equal the int64 products."""
    from tessera.runtime.core import core_tables, input_current

    tab = Chip(decode_model(encode_model(random_model(1)))).tab
    rng = np.random.default_rng(scale)
    n = tab.neurons
    w_in = rng.integers(-mag, mag, (tab.inputs, n)) * scale
    w_in[:, 0] = ((1 << 24) // (255 * tab.inputs) - 1) * scale    # just under the float32 bound
    t = core_tables(tab, w_in, np.zeros((n, n), np.int64))
    x = rng.integers(0, 256, (7, tab.inputs))
    x[0] = 255
    assert np.array_equal(input_current(x, t), x @ w_in + tab.bias)
    assert t.in_shift == int(np.log2(scale))
    assert t.w_in.dtype == dtype


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_steps_match_numpy_when_every_register_saturates(seed):
    """Narrow membranes, traces and accumulators (each clip taken): the compiled steps and the
    numpy ones give the same rasters, features, state and counters, in any chunking."""
    pytest.importorskip("numba")
    from tessera.runtime import compiled

    m = random_model(seed)
    m.core.update(membrane_bits=18, trace_bits=14, trace_frac=12, acc_bits=14)
    out = {}
    for name in ("numpy", "numba"):
        with compiled.use(name):                              # this test picks the backend
            assert compiled.backend() == name
            chip = Chip(decode_model(encode_model(m)))
            assert chip.acc_hi is not None and chip.core.trace_can_overflow
            rng = np.random.default_rng(seed)
            ms = chip.tab.steps * chip.tab.bin_ms
            got = []
            for j in range(4):
                f = (rng.random((ms, 120)) < 0.2).astype(np.uint8) * (1 + 20 * (j == 0))
                chip.reset()
                cuts = np.sort(rng.integers(0, ms + 1, size=3))
                ras = np.vstack([chip.run(c) for c in np.split(f, cuts)])
                got.append((ras, chip.features(), chip.state.acc.copy(),
                            chip.state.core.vr.copy()))
            out[name] = (got, chip.stats()["spikes"])
    (a, sa), (b, sb) = out["numpy"], out["numba"]
    assert sa == sb and sa > 0
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert np.array_equal(u, v)
    acc = a[0][2]
    assert int(np.abs(acc).max()) == (1 << 13) - 1 or int(acc.min()) == -(1 << 13)


def test_recurrent_bands_give_the_dense_product_exactly():
    """The batch steps multiply the spikes with the recurrent table's non-zero bands only
    (runtime/core.rec_bands): the same floats as the dense product, whatever the pattern."""
    from tessera.runtime.core import rec_bands

    rng = np.random.default_rng(3)
    n = 256
    banded = np.zeros((n, n), np.float32)
    for i in range(n):                                    # neighbours within 40 neurons
        lo, hi = max(0, i - 40), min(n, i + 41)
        banded[i, lo:hi] = rng.integers(-8, 9, hi - lo) * 4096.0
    banded[:, 200:232] = 0                                # columns no row reaches
    z = (rng.random((64, n)) < 0.1).astype(np.float32)
    for w, several in ((banded, True), (rng.integers(-8, 9, (n, n)).astype(np.float32), False),
                       (np.zeros((n, n), np.float32), False)):
        bands = rec_bands(w)
        assert (len(bands) > 1) == several
        rec = np.zeros((64, n), np.float32)
        for c0, c1, r0, r1, block in bands:
            np.matmul(z[:, r0:r1], block, out=rec[:, c0:c1])
        assert np.array_equal(rec, z @ w)
    work = sum(b[4].size for b in rec_bands(banded))
    assert work < 0.6 * n * n                             # the point: less to multiply


def test_batches_outside_float64s_range_step_in_int64():
    """A model whose registers are too wide for float64 to hold exactly (a 45-bit membrane:
    its decay products reach 2^60) runs its batches on the int64 steps: the same features and
    spikes as one stream at a time; the default width takes the float64 steps."""
    m = random_model(5)
    assert Chip(decode_model(encode_model(m))).core.batch_float
    m.core["membrane_bits"] = 45
    chip = Chip(decode_model(encode_model(m)))
    assert not chip.core.batch_float
    rng = np.random.default_rng(9)
    frames = (rng.random((4, chip.tab.steps * chip.tab.bin_ms, 120)) < 0.1).astype(np.uint8)
    phi, ras = chip.run_batch(frames, rasters=True)
    short = frames.copy()
    for j in range(4):                                    # the frames past each short one: 0
        short[j, short.shape[1] - 3 - j:] = 0
    phi_short, ras_short = chip.run_batch(short, rasters=True)
    for j, f in enumerate(frames):
        chip.reset()
        r = chip.run(f[: -3 - j])                         # the window's end comes as silence
        assert np.array_equal(chip.features(), phi_short[j])
        assert np.array_equal(np.vstack([r, chip.tail]), ras_short[j])
        chip.reset()
        chip.run(f)
        assert np.array_equal(chip.features(), phi[j])
    assert ras.sum() > 0


def test_bins_are_summed_in_the_narrowest_type_that_holds_them():
    from tessera.runtime.core import bin_dtype

    assert bin_dtype(np.dtype(np.uint8), 10, largest=1) == np.uint8        # 0/1 spike frames
    assert bin_dtype(np.dtype(np.uint8), 10, largest=25) == np.uint8       # 250: no clip
    assert bin_dtype(np.dtype(np.uint8), 10, largest=26) == np.uint16      # 260 would wrap
    assert bin_dtype(np.dtype(np.uint8), 10) == np.uint16
    assert bin_dtype(np.dtype(np.uint8), 200, largest=1) == np.uint8
    assert bin_dtype(np.dtype(np.uint8), 300, largest=1) == np.int64      # 300 ms: wide sums
    assert bin_dtype(np.dtype(np.uint8), 300) == np.int64
    assert bin_dtype(np.dtype(np.int32), 10, largest=1) == np.int64


def test_a_partial_bin_of_large_counts_is_not_wrapped_by_narrow_bins(backend):
    """A bin begun by int64 frames with large counts and finished by 0/1 uint8 frames (summed
    in uint8) clips at 255 like any bin: the same spikes and features as all-int64 frames."""
    chip = Chip(decode_model(encode_model(random_model(2))))
    rng = np.random.default_rng(4)
    ms = chip.tab.steps * chip.tab.bin_ms
    f = (rng.random((ms, 120)) < 0.2).astype(np.int64)
    f[:3, :10] = 300                                        # a partial bin of 3 ms: 900 counts
    chip.reset()
    ref = np.vstack([chip.run(f[:3]), chip.run(f[3:])])
    phi = chip.features()
    chip.reset()
    got = np.vstack([chip.run(f[:3]), chip.run(f[3:].astype(np.uint8))])
    assert np.array_equal(got, ref) and np.array_equal(chip.features(), phi)


def test_own_segments_ignore_trailing_silence_and_a_bad_mode_is_named():
    """segment_mode "own": the same words followed by more or less silence give the same
    features, streamed or batched, in chunks or not, and they are not the window's features;
    an unknown mode is refused by the field's name."""
    rng = np.random.default_rng(7)
    own = Chip(decode_model(encode_model(random_model(1, segment_mode="own"))))
    win = Chip(decode_model(encode_model(random_model(1))))
    words = (rng.random((60, 120)) < 0.1).astype(np.uint8)          # 12 of the 30 bins
    quiet = [np.vstack([words, np.zeros((k, 120), np.uint8)]) for k in (0, 7, 40)]
    phis = []
    for f in quiet:
        own.reset()
        for chunk in np.array_split(f, 3):
            own.run(chunk)
        phis.append(own.features())
    assert all(np.array_equal(p, phis[0]) for p in phis)
    batch = own.run_batch(np.stack([np.vstack([f, np.zeros((150 - len(f), 120), np.uint8)])
                                    for f in quiet]))
    assert all(np.array_equal(b, phis[0]) for b in batch)
    win.reset()
    win.run(words)
    assert not np.array_equal(win.features(), phis[0])
    assert own.stats()["memory_bytes"]["state"] > win.stats()["memory_bytes"]["state"]
    m = random_model(1)
    for bad in ("sometimes", 3, None):
        m.core["segment_mode"] = bad
        with pytest.raises(InputError, match="core.segment_mode"):
            Chip(decode_model(encode_model(m)))
