"""The host client: exactly-once enrollment over lossy links and across a reboot, pyserial URLs,
streams that arrive whole."""


import pytest
from helpers import PowerCutPort

from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import (
    FrameDecoder, encode_frame)
from tessera.protocol.messages import decode, encode
from tessera.tools import protocol_bench as pb


def test_retried_enroll_lands_once_over_a_lossy_link(model4):
    r = pb.lossy_enroll(model4, words=1, drop=0.005, corrupt=0.005, seed=3)
    assert r["exactly_once"] and r["retries"] > 0 and r["bad_frames"] > 0


def test_loop_url_round_trips_frames():
    """pyserial's loop:// carries our frames unchanged in any chunking (a transport check)."""
    import serial

    port = serial.serial_for_url("loop://", timeout=0.1)
    frames = [encode_frame(encode({"t": "ping", "id": i, "payload": bytes([i]) * i}))
              for i in range(1, 40)]
    port.write(b"".join(frames))
    dec = FrameDecoder()
    got = []
    while len(got) < len(frames):
        got += [decode(b) for b in dec.feed(port.read(97))]
    assert [g["id"] for g in got] == list(range(1, 40))


@pytest.mark.parametrize("applied", [False, True])
def test_enrollment_is_exactly_once_across_a_reboot_between_request_and_retry(
        model4, tmp_path, applied):
    from tessera.protocol.client import Device
    from tessera.tools.bench import speechlike_signal

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})                                          # a deployed board: model in flash
    dev = Device(PowerCutPort(fw, applied), timeout=0.2)
    shot = speechlike_signal(0.6, 3)
    r = dev.enroll("lamp", shot)
    assert r["t"] == "ack" and r["shots"] == 1 and r.get("saved") is True
    assert fw.boots == 2 and dev.retried >= 1               # the cut happened, the host retried
    assert fw.chip.classes() == ["lamp"] and fw.chip.readout.shots_of("lamp") == 1
    fw.boot()                                               # and it is in flash, once
    assert fw.chip.classes() == ["lamp"] and fw.chip.readout.shots_of("lamp") == 1


def test_stream_over_a_lossy_link_arrives_whole(model4):
    """1 % of the bytes dropped or damaged both ways: the pipelined stream gets through with
    the same answer as over a clean link (the timing is `tessera bench protocol --parts
    lossy-stream`)."""
    from tessera.firmware_sim.sim import LinkFaults
    from tessera.protocol.client import Device
    from tessera.tools.bench import speechlike_signal

    shot, query = speechlike_signal(0.4, 1), speechlike_signal(0.4, 2)
    got = []
    for faults, version in ((LinkFaults(), 4), (LinkFaults(drop=0.005, corrupt=0.005, seed=3), 4),
                            (LinkFaults(drop=0.005, corrupt=0.005, seed=4), 3)):
        url, _ = pb.start_socket_sim(pb.loaded_firmware(model4), faults)
        dev = Device.open(url, timeout=0.05, retries=1000)
        assert dev.version == 4
        dev.version = version                  # a version-3 host on the same device
        dev.enroll("shot", shot)
        dev.request({"t": "reset_state"})
        dev.stream_pcm(query)
        got.append(dev.request({"t": "end_of_utterance"})["scores"])
        dev.close()
    assert got[0] == got[1] == got[2] and dev.retried > 10 and 0.003 < dev.link.byte_error_rate() < 0.05


