"""The flash image: a SIGKILL during a save or a crash between the temporary file and the rename
keeps the old image."""

import subprocess
import sys


from tessera.firmware_sim.device import Firmware
from tessera.tools import protocol_bench as pb


def test_flash_survives_sigkill_during_save(model4):
    r = pb.kill_during_save(model4, kills=8, seed=2)
    assert r["corrupt"] == 0 and r["images_loaded"] == 8


def test_crash_between_temp_and_rename_keeps_the_old_image(model4, tmp_path):
    """--crash-during-save: the process dies after writing the new image, before the rename."""
    flash = tmp_path / "flash.img"
    code = f"""
import zlib
from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import encode_frame
from tessera.protocol.messages import encode
fw = Firmware(flash_path={str(flash)!r})
fw.install(open({model4!r}, "rb").read())
fw.receive(encode_frame(encode({{"t": "save", "id": 1}})))
fw.crash_during_save = True
fw.chip.readout.names[0] = "new"
fw.receive(encode_frame(encode({{"t": "save", "id": 2}})))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == 86
    fw = Firmware(flash_path=str(flash))
    assert fw.chip is not None and fw.chip.classes() == [] and fw.flash_generation == 1
