"""One boot path for every simulator (firmware_sim/boot.py)."""

import pytest

from tessera.firmware_sim.boot import boot_firmware, pty_sim
from tessera.runtime.errors import InputError


def test_flash_with_a_model_wins_over_the_model_named(model4, tmp_path):
    flash = str(tmp_path / "f.img")
    fw, source = boot_firmware(model4, flash)
    assert source == model4 and fw.chip is not None
    fw.do("save", {})
    again, source = boot_firmware("/no/such/model.tsr", flash)     # not read: flash wins
    assert source == f"flash:{flash}" and again.chip is not None


def test_no_flash_and_no_model_boots_empty(tmp_path):
    fw, source = boot_firmware(None, "")
    assert fw.chip is None and source is None and fw.flash_path is None


def test_a_missing_or_refused_model_is_a_named_error(tmp_path):
    with pytest.raises(InputError, match="cannot read the model"):
        boot_firmware(str(tmp_path / "none.tsr"))
    bad = tmp_path / "bad.tsr"
    bad.write_bytes(b"TSRM" + bytes(40))
    with pytest.raises(InputError, match="model rejected"):
        boot_firmware(str(bad))


def test_pty_sim_serves_a_board_in_its_own_process():
    from tessera.protocol.client import Device

    with pty_sim("", process=True) as (path, proc):
        assert proc.poll() is None
        with Device.open(path, timeout=5.0) as dev:
            assert dev.info()["firmware"].startswith("tessera-sim")
    assert proc.poll() is not None                       # killed when the block ends


def test_pty_sim_starts_from_a_folder_holding_a_folder_named_tessera(tmp_path, monkeypatch):
    """Issue 36: `tessera demo` from such a folder failed ("did not start"): the child
    `python -m tessera.cli` imported the folder instead of the installed package."""
    from tessera.protocol.client import Device

    (tmp_path / "tessera").mkdir()
    (tmp_path / "tessera" / "__init__.py").write_text("raise ImportError('the wrong tessera')\n")
    monkeypatch.chdir(tmp_path)
    with pty_sim("") as path:
        with Device.open(path, timeout=5.0) as dev:
            assert dev.info()["firmware"].startswith("tessera-sim")


def test_a_simulator_that_cannot_start_says_why(tmp_path):
    with pytest.raises(InputError, match="did not start.*must be a file, not a folder"):
        with pty_sim(str(tmp_path)):                     # a folder is no flash image
            pass
