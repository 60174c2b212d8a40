"""`rename`: a taught word under another label, its shots kept, saved like forget."""

import pytest
from helpers import ask

from tessera.firmware_sim.device import Firmware
from tessera.tools.bench import speechlike_signal


def _taught(model4, tmp_path) -> Firmware:
    """A board with a flash image and two words, w1 and w2, taught over the protocol."""
    from tessera.tools.model_fuzz import LoopbackBoard

    fw = Firmware(flash_path=str(tmp_path / "f.img"))
    fw.install(open(model4, "rb").read())
    lb = LoopbackBoard.around(fw)
    for k in (1, 2):
        lb.request({"t": "reset_state"})
        lb.request({"t": "p", "o": 0, "d": speechlike_signal(0.5, k).astype("<i2").tobytes()})
        lb.request({"t": "end_of_utterance", "shot": True})
        assert lb.request({"t": "enroll", "label": f"w{k}"})["t"] == "ack"
    return fw


def test_rename_keeps_the_column_and_survives_a_reboot(model4, tmp_path):
    fw = _taught(model4, tmp_path)
    ro = fw.chip.readout
    col = ro.names.index("w1")
    levels, shots = ro.arr.levels[:, col].copy(), int(ro.shots[col])
    r = ask(fw, {"v": 4, "t": "rename", "id": 11, "label": "w1", "to": "lamp"})
    assert r["t"] == "ack" and sorted(r["classes"]) == ["lamp", "w2"] and r.get("saved")
    ro = fw.chip.readout
    assert ro.names.index("lamp") == col and int(ro.shots[col]) == shots
    assert (ro.arr.levels[:, col] == levels).all()                   # nothing written
    fw.boot()                                                         # saved before answered
    assert sorted(fw.chip.classes()) == ["lamp", "w2"]


@pytest.mark.parametrize("msg, name", [
    ({"label": "nope", "to": "x"}, "UNKNOWN_CLASS"),
    ({"label": "w1", "to": "none"}, "BAD_FIELD"),
    ({"label": "w1", "to": "  "}, "BAD_FIELD"),
    ({"label": "w1", "to": "w2"}, "BAD_FIELD"),
    ({"label": "w1"}, "BAD_FIELD"),
    ({"label": "w1", "to": 3}, "BAD_FIELD"),
])
def test_rename_refuses_by_name_and_changes_nothing(model4, tmp_path, msg, name):
    fw = _taught(model4, tmp_path)
    r = ask(fw, {"v": 4, "t": "rename", "id": 21, **msg})
    assert r["t"] == "error" and r["name"] == name
    assert sorted(fw.chip.classes()) == ["w1", "w2"]
    fw.boot()
    assert sorted(fw.chip.classes()) == ["w1", "w2"]
