"""The model bundle (trainer/learning/bundle.py): one versioned file for weights, config,
calibration and level equalization; read without unpickling, every member checked against its
listing before it is read; the export that reads its own bytes back (issue 36 item 4)."""

import io
import json
import zipfile

import numpy as np
import pytest
from helpers import DEFAULT_MODEL, assert_clean_error, tessera

from tessera.runtime.errors import InputError
from tessera.trainer.learning.bundle import BUNDLE_FORMAT, bundle_bytes, read_bundle

torch = pytest.importorskip("torch")


def _doc():
    return dict(config={"data": {}}, core={"kind": "lif"}, iteration=3, level_eq=None,
                calibration={"none_threshold": 0.5, "min_inputs": 0, "calib": [1, 0, 0]},
                extra={})


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=True)
    return b.getvalue()


def _listing(**over) -> bytes:
    d = dict(format=BUNDLE_FORMAT, arrays={}, **_doc())
    d.update(over)
    return json.dumps(d).encode()


def test_the_default_bundle_holds_the_model_and_its_calibration():
    from tessera.trainer.learning.storage import load_model

    m = load_model(str(DEFAULT_MODEL))
    assert m.calibration["none_threshold"] == pytest.approx(0.5918)     # fitted on the choose
    assert "validation speakers" in m.calibration["fitted_on"]           # people, carried inside
    doc, arrays = read_bundle(str(DEFAULT_MODEL))
    assert doc["format"] == BUNDLE_FORMAT and "params/w_rec" in arrays
    assert set(zipfile.ZipFile(DEFAULT_MODEL).namelist()) == \
        {"bundle.json"} | {f"{n}.npy" for n in arrays}


def test_a_bundle_round_trips_bit_for_bit(tmp_path):
    from tessera.trainer.learning.storage import model_state, save_bundle

    st = model_state(str(DEFAULT_MODEL))
    out = tmp_path / "again.tsb"
    save_bundle(str(out), st, calibration=None)
    back = model_state(str(out))
    assert back["calibration"] is None and back["config"] == st["config"]
    for g in ("params", "masks", "log_lr"):
        assert all(torch.equal(st[g][k], back[g][k]) for k in st[g])
    assert back["log_lr"]["w_out"].dim() == 0                     # a scalar stays a scalar


def test_the_default_bundle_is_the_earlier_model_pt_bit_for_bit():
    """models/default/model.tsb was made by `tessera bundle` from session 3's model.pt and
    calibration.json: the arrays of the checkpoint as they were (0-d rates stay 0-d)."""
    from tessera.trainer.learning.storage import model_state

    st = model_state(str(DEFAULT_MODEL))
    assert all(v.dim() == 0 for v in st["log_lr"].values())
    assert st["params"]["w_rec"].shape == (256, 256) and st["iteration"] >= 0


@pytest.mark.parametrize("members, says", [
    ({"bundle.json": _listing(format="tessera-model/9")}, "format"),
    ({"bundle.json": b"{not json"}, "not JSON"),
    ({"bundle.json": json.dumps([1]).encode()}, "format"),
    ({"x.npy": _npy(np.zeros(3))}, "no bundle.json"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [3]}})},
     "members and listing differ"),
    ({"bundle.json": _listing(arrays={}), "params/w.npy": _npy(np.zeros(3, np.float32))},
     "members and listing differ"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [1 << 40]}}),
      "params/w.npy": _npy(np.zeros(3, np.float32))}, "shape"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "|O", "shape": [2]}}),
      "params/w.npy": _npy(np.array([{}, []], dtype=object))}, "dtype"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [4]}}),
      "params/w.npy": _npy(np.zeros(3, np.float32))}, "listed"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [3]}}),
      "params/w.npy": _npy(np.zeros(300_000, np.float32))}, "bytes for"),
    ({"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [3]}}),
      "params/w.npy": b"\x93NUMPY junk"}, "unreadable"),
    ({"bundle.json": _listing(iteration="three")}, "iteration"),
    ({"bundle.json": _listing(calibration=[1, 2])}, "calibration"),
])
def test_a_hostile_bundle_is_refused_by_name(members, says):
    with pytest.raises(InputError, match=says):
        read_bundle(_zip(members), "hostile.tsb")


def test_a_pickled_array_is_refused_even_when_listed_as_numbers():
    members = {"bundle.json": _listing(arrays={"params/w": {"dtype": "<f4", "shape": [2]}}),
               "params/w.npy": _npy(np.array([{}, []], dtype=object))}
    with pytest.raises(InputError, match="unreadable|listed"):
        read_bundle(_zip(members), "hostile.tsb")


def test_the_cli_names_a_bad_bundle(tmp_path):
    bad = tmp_path / "bad.tsb"
    bad.write_bytes(_zip({"bundle.json": _listing(format="tessera-model/9")}))
    assert_clean_error(tessera("export", bad, "--out", tmp_path / "x.tsr"), "format")
    (tmp_path / "junk.tsb").write_bytes(b"PK\x03\x04 not a zip")
    assert_clean_error(tessera("eval", tmp_path / "junk.tsb"), "not a readable tessera model")


def test_bundle_bytes_refuses_an_array_it_could_not_read_back():
    with pytest.raises(InputError, match="dtype"):
        bundle_bytes(_doc(), {"params/w": np.array(["a"])})


def test_export_reads_its_bytes_back_and_writes_nothing_when_they_differ(tmp_path, monkeypatch):
    from tessera.trainer.exchange.export import ExportConfig, export_model
    from tessera.trainer.learning import intmode
    from tessera.trainer.learning.storage import load_model

    m = load_model(str(DEFAULT_MODEL))
    ok = export_model(m, str(tmp_path / "ok.tsr"), ExportConfig(weight_bits=4), parity=3)
    assert ok["parity"]["bit_exact"] and ok["parity"]["windows"] == 3
    forward = intmode.IntCore.forward

    def off_by_one(self, x):                       # the trainer's integer mode disagrees
        ras, phi = forward(self, x)
        return ras, phi + 1

    monkeypatch.setattr(intmode.IntCore, "forward", off_by_one)
    with pytest.raises(InputError, match="differs from the trainer's integer mode"):
        export_model(m, str(tmp_path / "bad.tsr"), ExportConfig(weight_bits=4), parity=2)
    assert not (tmp_path / "bad.tsr").exists()


def test_calibrate_writes_a_new_file_only(tmp_path):
    r = tessera("calibrate", DEFAULT_MODEL, "--data", tmp_path / "none.h5")
    assert_clean_error(r, "--out")
    r = tessera("bundle", DEFAULT_MODEL, "--out", DEFAULT_MODEL)
    assert_clean_error(r, "must not be the model")


def test_bundle_folds_an_earlier_model_pt_and_its_calibration(tmp_path):
    from tessera.trainer.learning.storage import load_model

    old = DEFAULT_MODEL.parents[1] / "v5"
    out = tmp_path / "v5.tsb"
    r = tessera("bundle", old / "model.pt", "--calibration", old / "calibration.json",
                "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["calibrated"] is True
    a, b = load_model(str(old / "model.pt")), load_model(str(out))
    assert a.calibration is None                                   # nothing found by folder
    assert b.calibration == json.loads((old / "calibration.json").read_text())
    assert all(torch.equal(a.core.params[k], b.core.params[k]) for k in a.core.params)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert_clean_error(tessera("bundle", old / "model.pt", "--calibration", bad, "--out",
                               tmp_path / "x.tsb"), "JSON map")
