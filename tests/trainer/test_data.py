import shutil

import h5py
import numpy as np
import pytest

from tessera.runtime.errors import InputError
from tessera.trainer.data.readers import SpikeSet, read_any, read_shd_folder, read_spike_h5, read_wav_folder


def write_shd_like(path, n=6, channels=700, seed=0, time_dtype=np.float16):
    """A file in the official SHD layout (as the Heidelberg files are written)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        t = h5.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(time_dtype))
        u = h5.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i in range(n):
            k = int(rng.integers(10, 50))
            t[i] = np.sort(rng.uniform(0, 1.0, k)).astype(time_dtype)
            u[i] = rng.integers(0, channels, k).astype(np.uint16)
        h5["labels"] = rng.integers(0, 20, n).astype(np.uint8)
        h5["extra/speaker"] = rng.integers(0, 12, n).astype(np.uint8)
        h5["extra/keys"] = np.array([f"word{i}" for i in range(20)], dtype=h5py.string_dtype())
        h5["extra/meta_info/gender"] = np.array([b"female"] * 12)
    return path


def test_official_layout(tmp_path):
    p = write_shd_like(tmp_path / "shd_test.h5")
    d = read_spike_h5(p, split="test")
    assert len(d) == 6 and d.channels == 700 and len(d.label_names) == 20
    assert (d.split == 2).all()
    t, u = d.sample(0)
    with h5py.File(p) as h5:
        assert np.allclose(t, h5["spikes/times"][0]) and np.array_equal(u, h5["spikes/units"][0])


def test_shd_folder_sets_splits_by_file(tmp_path):
    write_shd_like(tmp_path / "shd_train.h5", n=8, seed=1)
    write_shd_like(tmp_path / "shd_test.h5", n=4, seed=2)
    d = read_shd_folder(tmp_path)
    assert len(d) == 12 and (d.split == 0).sum() == 8 and (d.split == 2).sum() == 4
    assert read_any(tmp_path).labels.tolist() == d.labels.tolist()


def test_gz_only_folder_says_gunzip(tmp_path):
    (tmp_path / "shd_train.h5.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(InputError, match="gunzip"):
        read_shd_folder(tmp_path)


def test_corpus_file(small_corpus):
    d = read_spike_h5(small_corpus)
    assert len(d) == 320 and d.channels == 700
    assert d.label_names[:3] == ["en:zero", "en:one", "en:two"] and d.label_names[10] == "de:null"
    assert set(d.split.tolist()) == {0, 1, 2}
    for s in (0, 1, 2):                      # disjoint speaker groups
        others = set(d.speakers[d.split != s].tolist())
        assert not set(d.speakers[d.split == s].tolist()) & others
    assert d.meta["format"] == "tessera-corpus/1"
    sub = d.subset(np.array([3, 1]))
    assert np.array_equal(sub.sample(0)[1], d.sample(3)[1]) and sub.labels.tolist() == \
        d.labels[[3, 1]].tolist()


@pytest.mark.parametrize("make,msg", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_text("not hdf5"), "not a readable HDF5 file"),
    (lambda p: h5py.File(p, "w").create_dataset("labels", data=[1, 2]), "missing dataset 'spikes/times'"),
])
def test_bad_files(tmp_path, make, msg):
    p = tmp_path / "bad.h5"
    make(p)
    with pytest.raises(InputError, match=msg) as err:
        read_spike_h5(p)
    assert "bad.h5" in str(err.value)


def test_truncated_file(tmp_path):
    p = write_shd_like(tmp_path / "x.h5", n=50)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="x.h5"):
        read_spike_h5(p)


def test_inconsistent_and_out_of_range(tmp_path):
    p = write_shd_like(tmp_path / "x.h5")
    with h5py.File(p, "a") as h5:
        del h5["labels"]
        h5["labels"] = np.zeros(3, np.uint8)
    with pytest.raises(InputError, match="inconsistent lengths"):
        read_spike_h5(p)
    q = write_shd_like(tmp_path / "y.h5", channels=800)
    with pytest.raises(InputError, match="units outside 0..699"):
        read_spike_h5(q)


def test_wav_folder_fsdd_style_with_cache(tmp_path, fsdd, monkeypatch):
    folder = tmp_path / "wavs"
    folder.mkdir()
    names = ["0_george_0", "0_jackson_1", "1_george_2", "1_lucas_3"]
    for n in names:
        shutil.copy(fsdd / f"{n}.wav", folder / f"{n}.wav")
    cache = tmp_path / "cache"
    d = read_wav_folder(folder, cache_dir=cache, progress=False)
    assert len(d) == 4 and d.label_names == ["0", "1"]
    assert d.speaker_names == ["george", "jackson", "lucas"]
    assert d.spike_counts().min() > 500
    # second read comes from the cache: the front-end is not run again
    from tessera.runtime import frontend

    monkeypatch.setattr(frontend.Cochlea, "encode", lambda *a: pytest.fail("cache missed"))
    again = read_wav_folder(folder, cache_dir=cache, progress=False)
    assert np.array_equal(again.times, d.times) and np.array_equal(again.units, d.units)


def test_wav_folder_label_subfolders(tmp_path):
    from helpers import tone

    from tessera.runtime.audio import write_wav

    for label in ("yes", "no"):
        (tmp_path / label).mkdir()
        for spk in ("a1b2", "c3d4"):
            write_wav(tmp_path / label / f"{spk}_nohash_0.wav", tone(300 if label == "yes" else 900, 0.3), 16000)
    d = read_wav_folder(tmp_path, cache_dir=tmp_path / ".c", progress=False)
    assert sorted(d.label_names) == ["no", "yes"] and sorted(d.speaker_names) == ["a1b2", "c3d4"]


def test_speech_commands_official_lists_set_the_splits(tmp_path):
    """Speech Commands layout with validation_list.txt / testing_list.txt: those files are val and
    test, every other one train; _background_noise_ is not a word; a list naming no file of the
    folder is an error."""
    from helpers import tone

    from tessera.runtime.audio import write_wav

    sc = tmp_path / "sc"
    for label in ("yes", "no", "_background_noise_"):
        (sc / label).mkdir(parents=True)
        for spk in ("a1b2", "c3d4", "e5f6"):
            write_wav(sc / label / f"{spk}_nohash_0.wav", tone(300 if label == "yes" else 900,
                                                                0.2), 16000)
    (sc / "validation_list.txt").write_text("yes/c3d4_nohash_0.wav\nno/c3d4_nohash_0.wav\n")
    (sc / "testing_list.txt").write_text("yes/e5f6_nohash_0.wav\n")
    d = read_wav_folder(sc, cache_dir=tmp_path / ".c", progress=False)
    assert sorted(d.label_names) == ["no", "yes"]
    split = {(d.label_names[lab], d.speaker_names[spk]): int(sp)
             for lab, spk, sp in zip(d.labels, d.speakers, d.split)}
    assert split == {("no", "a1b2"): 0, ("no", "c3d4"): 1, ("no", "e5f6"): 0,
                     ("yes", "a1b2"): 0, ("yes", "c3d4"): 1, ("yes", "e5f6"): 2}
    (sc / "testing_list.txt").write_text("maybe/zz_nohash_0.wav\n")
    (sc / "validation_list.txt").unlink()
    with pytest.raises(InputError, match="none of the files the split lists name"):
        read_wav_folder(sc, cache_dir=tmp_path / ".c", progress=False)


def test_wav_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no WAV files"):
        read_wav_folder(tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "badname.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"\{label\}_\{speaker\}_\{i\}"):
        read_wav_folder(tmp_path, cache_dir=tmp_path / "c")


def test_concat_remaps_speakers(small_corpus):
    d = read_spike_h5(small_corpus)
    a, b = d.subset(np.arange(0, 40)), d.subset(np.arange(300, 320))
    c = SpikeSet.concat([a, b])
    assert len(c) == 60
    names = [c.speaker_names[s] for s in c.speakers]
    assert names == [d.speaker_names[s] for s in np.r_[d.speakers[:40], d.speakers[300:]]]


def test_tonic_reads_the_same_official_files_offline(tmp_path, monkeypatch):
    """tonic's SHD class finds local files (archive + extracted h5) without downloading."""
    tonic = pytest.importorskip("tonic")
    import socket

    def no_network(*a, **k):
        raise AssertionError("tonic tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    root = tmp_path / "SHD"
    root.mkdir()
    write_shd_like(root / "shd_test.h5", n=5, seed=3)
    (root / "shd_test.h5.zip").write_bytes(b"")      # tonic only checks that the archive exists
    ours = read_spike_h5(root / "shd_test.h5", split="test")
    ds = tonic.datasets.SHD(save_to=str(tmp_path), train=False)
    assert len(ds) == 5
    for i in range(5):
        events, target = ds[i]
        t, u = ours.sample(i)
        assert target == ours.labels[i]
        assert np.array_equal(events["x"], u)
        assert np.allclose(events["t"] / 1e6, t, atol=1e-3)


def test_tonic_dataset_and_transforms_interoperate(small_corpus):
    """Our corpus as a tonic dataset (offline); tonic's ToFrame and our Bin give the same
    frames; our TimeShift runs inside tonic.transforms.Compose."""
    tonic = pytest.importorskip("tonic")
    from tessera.trainer.data.readers import read_spike_h5
    from tessera.trainer.exchange.tonic_data import TesseraSpikes, as_tonic, from_events
    from tessera.trainer.data.transforms import Bin, TimeShift

    data = read_spike_h5(small_corpus)
    ds = TesseraSpikes(str(small_corpus), split="test")
    assert len(ds) == int((data.split == 2).sum()) and ds.sensor_size == (700, 1, 1)
    events, label = ds[0]
    k = int(np.flatnonzero(data.split == 2)[0])
    times, units = data.sample(k)
    assert label == data.labels[k] and events.size == times.size
    t, u = from_events(events)
    assert np.allclose(np.sort(t), np.sort(times), atol=1e-6)
    frames = tonic.transforms.ToFrame(sensor_size=ds.sensor_size, n_time_bins=1)(events)
    early = t < t.max()                   # tonic's bin ends before the last event's time
    ours = Bin(steps=1, duration=float(t.max()) + 1.0)((t[early], u[early]))
    assert frames.shape == (1, 1, 700) and np.array_equal(frames[0, 0], ours[0])
    shifted = tonic.transforms.Compose([as_tonic(TimeShift(0.05), np.random.default_rng(1))])
    moved = shifted(events)
    assert moved.size <= events.size and moved.dtype == events.dtype
    assert abs(np.median(moved["t"]) - np.median(events["t"])) > 0
