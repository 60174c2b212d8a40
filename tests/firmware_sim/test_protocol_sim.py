"""The sim:// pyserial URL handler: the simulator as a serial port, registered by the firmware
package."""

import subprocess
import sys

import pytest

from tessera.tools import protocol_bench as pb


def test_sim_url_handler_is_a_serial_port(model4, tmp_path):
    """sim:// (a pyserial URL handler) runs the firmware in-process: the conformance suite
    passes over it, a lossy sim:// link still enrolls exactly once, and bad URLs say why."""
    from tessera.protocol.client import Device
    from tessera.protocol.conformance import run_conformance
    from tessera.runtime.errors import InputError

    r = run_conformance(f"sim://?flash={tmp_path / 'f.img'}", model4, timeout=0.2)
    assert r["ok"], [c for c in r["checks"] if not c["ok"]]
    dev = Device.open(f"sim://?model={model4}&drop=0.003&corrupt=0.003&seed=4", timeout=0.02,
                      retries=300)
    frames = pb.synthetic_frames(700, 1000, 8, 0)
    for k in range(2):
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames, chunk_ms=5)
        dev.request({"t": "enroll", "label": f"w{k}"})
    assert dev.port.fw.chip.counters.enrollments == 2 and dev.retried > 0
    with pytest.raises(InputError, match="unknown parameter 'colour'"):
        Device.open("sim://?colour=red")
    with pytest.raises(InputError, match="cannot open the device link"):
        Device.open("nosuchscheme://x")


def test_sim_urls_come_from_the_firmware_package():
    """The protocol package knows nothing of the simulator: sim:// works once
    tessera.firmware_sim is imported, and before that the error says what to do."""
    code = ("from tessera.protocol.client import Device\n"
            "from tessera.runtime.errors import InputError\n"
            "try:\n    Device.open('sim://')\nexcept InputError as e:\n    print('ERR', e)\n"
            "import tessera.firmware_sim\n"
            "with Device.open('sim://') as d:\n    print('OK', d.info()['firmware'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    err, ok = r.stdout.strip().splitlines()
    assert err.startswith("ERR sim://: cannot open the device link") and \
        "import tessera.firmware_sim" in err
    assert ok.startswith("OK tessera-sim")
