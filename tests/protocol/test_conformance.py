"""The protocol's conformance suite (what any board must answer) run against the simulator."""


from tessera.firmware_sim.device import Firmware
from tessera.tools import protocol_bench as pb


def test_conformance_suite_passes_against_the_simulator(model4, tmp_path):
    from tessera.protocol.conformance import run_conformance

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    url, _ = pb.start_socket_sim(fw)
    r = run_conformance(url, model4)
    failed = [c for c in r["checks"] if not c["ok"]]
    assert not failed, failed
    assert r["passed"] >= 25
