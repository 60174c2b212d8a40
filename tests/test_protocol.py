"""Framing, messages, encodings, the firmware simulator, the host client and the conformance suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.firmware_sim.boot import pty_sim
from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import (
    MAX_BODY, MAX_WIRE, FrameDecoder, cobs_decode, cobs_encode, encode_frame)
from tessera.protocol.messages import CODES, ERRORS, decode, encode
from tessera.protocol.spikes import (SpikeDecodeError, decode_spikes, encode_bitmap, encode_events,
                                     encode_spikes)
from tessera.tools import protocol_bench as pb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model4(tmp_path_factory):
    pytest.importorskip("torch")
    from tessera.trainer.exchange.export import ExportConfig, export_model
    from tessera.trainer.learning.train import load_model

    path = tmp_path_factory.mktemp("m") / "m4.tsr"
    export_model(load_model(str(ROOT / "models" / "default" / "model.pt")), str(path),
                 ExportConfig(weight_bits=4))
    return str(path)


def test_cobs_roundtrip_edges():
    rng = np.random.default_rng(0)
    for n in [0, 1, 253, 254, 255, 508, 509, 1000]:
        for zeros in (0.0, 0.05, 1.0):
            d = bytes(np.where(rng.random(n) < zeros, 0, rng.integers(1, 256, n)).astype(np.uint8))
            e = cobs_encode(d)
            assert 0 not in e and cobs_decode(e) == d


def test_vectorized_cobs_matches_the_block_by_block_code():
    """cobs_encode/decode (numpy) give the bytes and the errors of the reference loops."""
    from tessera.protocol.framing import FrameError, _cobs_decode_blocks, _cobs_encode_runs

    rng = np.random.default_rng(5)
    for t in range(2000):
        n = int(rng.integers(0, 700))
        d = (rng.integers(1, 256, n) * (rng.random(n) > rng.random())).astype(np.uint8)
        assert cobs_encode(d.tobytes()) == _cobs_encode_runs(d.tobytes())
        e = bytes(rng.integers(0 if t % 2 else 1, 256 if t % 3 else 4, int(rng.integers(1, 40)),
                               dtype=np.uint8))
        got = []
        for f in (cobs_decode, _cobs_decode_blocks):
            try:
                got.append(f(e))
            except FrameError as exc:
                got.append(str(exc))
        assert got[0] == got[1]


def test_decoder_resyncs_and_counts_every_bad_frame():
    errors = []
    d = FrameDecoder(on_error=errors.append)
    good = encode_frame(b"\x81\xa1t\xa4ping")
    bad_crc = bytearray(good)
    bad_crc[3] ^= 0x10
    stream = (b"\x05garbage" + b"\x00" + good + bytes(bad_crc) + good[:4] + b"\x00"
              + b"\x01" * (MAX_WIRE + 5) + b"\x00" + good)
    bodies = []
    for i in range(0, len(stream), 7):                   # any chunking
        bodies += d.feed(stream[i:i + 7])
    assert bodies == [b"\x81\xa1t\xa4ping"] * 2
    assert d.errors["oversize"] == 1 and d.errors["crc"] + d.errors["cobs"] + d.errors["short"] == 3
    assert len(errors) == 4
    with pytest.raises(ValueError):
        encode_frame(b"x" * (MAX_BODY + 1))


@pytest.mark.parametrize("density", [0.0, 0.002, 0.05, 0.5])
def test_spike_encodings_roundtrip(density):
    rng = np.random.default_rng(1)
    f = (rng.random((37, 700)) < density).astype(np.uint8)
    f[3, 5] = 3                                           # counts above 1 survive in "events"
    enc, data = encode_spikes(f)
    back = decode_spikes(enc, data, 37, 700)
    assert np.array_equal(back, f if enc == "events" else np.minimum(f, 1))
    assert enc == ("bitmap" if density >= 0.2 else "events")      # the smaller one
    with pytest.raises(SpikeDecodeError):
        decode_spikes(enc, data[:-1], 37, 700)
    with pytest.raises(SpikeDecodeError):
        decode_spikes(enc, data, 38, 700)


def test_messages_bounded_and_versioned():
    from tessera.protocol.messages import VERSION

    assert decode(encode({"t": "ping", "id": 1}))["v"] == VERSION == 4
    assert decode(encode({"t": "ping", "id": 1}, 2))["v"] == 2      # version-2 hosts still spoken
    from tessera.protocol.messages import ProtocolError

    for body, name in ((b"\xc1", "BAD_MESSAGE"), (encode({"t": 5, "id": 1}), "BAD_MESSAGE"),
                       (encode({"t": "ping", "id": -1}), "BAD_MESSAGE"),
                       (b"\x83\xa1v\x09\xa1t\xa4ping\xa2id\x01", "UNSUPPORTED_VERSION")):
        with pytest.raises(ProtocolError) as e:
            decode(body)
        assert e.value.name == name
    assert len({v[0] for v in ERRORS.values()}) == len(ERRORS)   # names are unique


def test_fuzzed_frames_never_crash_or_go_unanswered(model4):
    r = pb.fuzz(model4, frames=3000, seed=1)
    assert r["crashes"] == 0 and r["internal_errors"] == 0 and r["hangs"] == 0
    assert r["unanswered"] == 0 and r["mutated"] > 1000 and r["bad_frames"] > 500


def test_mutated_model_files_are_refused_by_name_and_the_old_model_keeps_serving(model4):
    from tessera.tools.model_fuzz import fuzz_models

    r = fuzz_models(model4, count=150, seed=4)
    assert r["chip_crashes"] == r["chip_hangs"] == 0, r["crash_examples"]
    assert r["board_crashes"] == r["board_hangs"] == r["board_lost_model"] == 0, \
        r["crash_examples"]
    assert r["chip_rejected"] > 50 and r["chip_loaded"] > 10 and r["board_rejected"] > 50
    assert r["baseline_answer"] == "probe"


@pytest.mark.parametrize("section,key,value,needle", [
    # each of these crashed the chip or left the board without a working model (the front-end
    # was checked only at the first audio), found by tools/model_fuzz.py
    ("frontend", ("spec", "hop"), float("inf"), "hop must be an integer"),
    ("frontend", ("spec", "adapt_num"), 2.5, "adapt_num must be an integer"),
    ("frontend", ("spec", "env_bits"), [1], "env_bits must be an integer"),
    ("frontend", ("poles", "bits"), True, "bad array header"),
    ("core", ("membrane_bits",), 0, "membrane_bits and trace_bits must be 2..48"),
    ("core", ("trace_bits",), -16, "membrane_bits and trace_bits must be 2..48"),
    ("core", ("steps",), 2 ** 31, "larger than any chip"),
])
def test_model_fields_that_once_crashed_are_named(model4, section, key, value, needle):
    from tessera.runtime.chip import Chip
    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import decode_model, encode_model

    m = decode_model(open(model4, "rb").read())
    d = getattr(m, section)
    for k in key[:-1]:
        d = d[k]
    d[key[-1]] = value
    blob = encode_model(m)
    with pytest.raises(InputError, match=needle):
        Chip(decode_model(blob))
    fw = pb.loaded_firmware(model4)
    old = fw.chip
    with pytest.raises(Exception, match=needle):
        fw.install(blob)
    assert fw.chip is old                                  # still serving the model it had


def test_an_unstable_front_end_filter_is_refused(model4):
    """Mutated poles outside the unit circle ran, overflowing to inf (found by the fuzzer)."""
    from tessera.runtime.chip import Chip
    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import (
        decode_model, encode_model, pack_ints, unpack_ints)

    m = decode_model(open(model4, "rb").read())
    poles = unpack_ints(m.frontend["poles"], "poles")
    poles[3, 1, :2] = 2 ** 31 - 1                          # Re p = Im p = 1: |p| = 1.41
    m.frontend["poles"] = pack_ints(poles, m.frontend["poles"]["bits"])
    with pytest.raises(InputError, match="unstable filter"):
        Chip(decode_model(encode_model(m)))


def test_a_second_host_is_refused_cleanly_never_interleaved(model4):
    import tessera.firmware_sim  # noqa: F401
    from tessera.protocol.client import Device, DeviceError
    from tessera.runtime.errors import InputError

    url, _ = pb.start_socket_sim(pb.loaded_firmware(model4))
    with Device.open(url) as a:
        with pytest.raises(DeviceError, match="LINK_BUSY"):
            Device.open(url)
        assert a.classes() == []                            # the first host is unaffected
    with Device.open(url) as b:                             # free again once it closed
        assert b.classes() == []
    with pty_sim("") as port:
        with Device.open(port) as a:
            with pytest.raises(InputError, match="in use by another program"):
                Device.open(port)
            assert a.info()["firmware"]


def test_conformance_suite_passes_against_the_simulator(model4, tmp_path):
    from tessera.protocol.conformance import run_conformance

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    url, _ = pb.start_socket_sim(fw)
    r = run_conformance(url, model4)
    failed = [c for c in r["checks"] if not c["ok"]]
    assert not failed, failed
    assert r["passed"] >= 25


def test_retried_enroll_lands_once_over_a_lossy_link(model4):
    r = pb.lossy_enroll(model4, words=1, drop=0.005, corrupt=0.005, seed=3)
    assert r["exactly_once"] and r["retries"] > 0 and r["bad_frames"] > 0


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


def test_cli_sim_pty_and_device_enroll(model4, tmp_path, fsdd):
    """`tessera device enroll --port PTY --label lights a.wav` is all a user needs."""
    from test_cli import tessera

    p = subprocess.Popen([sys.executable, "-m", "tessera.cli", "sim", "--pty", "--flash",
                          str(tmp_path / "flash.img"), "--model", model4],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = p.stdout.readline().strip()
        assert port.startswith("/dev/"), p.stderr.read() if p.poll() is not None else port
        wavs = sorted(fsdd.glob("*.wav"))
        one = [w for w in wavs if w.name.startswith("1_jackson")][:2]
        two = [w for w in wavs if w.name.startswith("2_jackson")][:2]
        r = tessera("device", "enroll", "--port", port, "--label", "one", one[0], "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["classes"] == ["one"]
        r = tessera("device", "enroll", "--port", port, "--label", "two", two[0], "--save")
        assert r.returncode == 0, r.stderr
        r = tessera("device", "infer", "--port", port, one[1], "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["label"] in ("one", "two")
        r = tessera("device", "classes", "--port", port, "--json")
        assert json.loads(r.stdout)["classes"] == ["one", "two"]
        r = tessera("device", "forget", "--port", port, "--label", "three")
        assert r.returncode == 2 and "UNKNOWN_CLASS" in r.stderr
    finally:
        p.kill()
        p.wait()
    r = tessera("device", "info", "--port", "socket://127.0.0.1:1", "--timeout", "0.2")
    assert r.returncode == 2 and "cannot open the device link" in r.stderr


def test_sim_refuses_non_loopback_without_flag():
    from tessera.firmware_sim.sim import parse_listen
    from tessera.runtime.errors import InputError

    assert parse_listen("socket://127.0.0.1:7000") == ("127.0.0.1", 7000)
    with pytest.raises(InputError, match="bind_any"):
        parse_listen("socket://0.0.0.0:7000")
    with pytest.raises(InputError, match="socket://"):
        parse_listen("tcp://127.0.0.1:7000")


def test_error_codes_are_documented():
    text = (ROOT / "PROTOCOL.md").read_text()
    for code, (name, _) in ERRORS.items():
        assert f"| {code} | `{name}` |" in text
    assert CODES["BAD_FRAME"] == 1
    assert os.path.exists(ROOT / "PROTOCOL.md")


def test_reboot_after_n_requests_keeps_the_flash(model4, tmp_path):
    """Fault injection: a power cycle after every 3rd request; saved words survive it."""
    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    fw.install(open(model4, "rb").read())
    fw.chip.readout.names[0] = "kept"
    dec = FrameDecoder()

    def req(i, t):
        return [decode(b) for b in dec.feed(fw.receive(encode_frame(encode({"t": t, "id": i}))))]

    assert req(1, "save")[0]["t"] == "ack"
    fw.reboot_after = 3
    boots = fw.boots
    for i in range(2, 8):
        assert req(i, "list_classes")[0]["classes"] == ["kept"]
    assert fw.boots == boots + 2


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


def test_device_cli_over_sim_url_and_mic_error(model4, fsdd):
    from test_cli import assert_clean_error, tessera

    wav = sorted(fsdd.glob("3_*.wav"))[0]
    url = f"sim://?model={model4}"
    r = tessera("device", "stream", "--port", url, wav, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"] == []           # nothing enrolled: no keyword
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert_clean_error(tessera("device", "stream", "--port", url, "--mic"), "mic extra")


def test_every_deliberate_error_is_a_tessera_error():
    """One family: whatever tessera raises on purpose is caught by `except TesseraError`."""
    from tessera.protocol.client import DeviceError, LinkError
    from tessera.protocol.framing import FrameError, cobs_decode
    from tessera.protocol.messages import ProtocolError
    from tessera.protocol.spikes import SpikeDecodeError, decode_spikes
    from tessera.runtime.errors import InputError, TesseraError

    for cls in (InputError, FrameError, SpikeDecodeError, ProtocolError, DeviceError, LinkError):
        assert issubclass(cls, TesseraError), cls
    with pytest.raises(TesseraError):
        cobs_decode(b"\x05\x01")                      # the block runs past the end
    with pytest.raises(TesseraError):
        decode_spikes("events", b"\xff\xff\xff\xff\xff", 10, 700)


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


def test_a_flood_of_garbage_is_not_answered_frame_by_frame():
    """5 MB of random bytes: every bad frame counted, only a few answered (a token bucket), the
    next answer says how many were not, and a valid request right after gets its answer."""
    import time

    from tessera.protocol.framing import FrameDecoder, encode_frame

    fw = Firmware(flash_path=None)
    junk = np.random.default_rng(0).integers(0, 256, 5_000_000, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    out = b"".join(fw.receive(junk[i:i + 4096]) for i in range(0, len(junk), 4096))
    assert time.perf_counter() - t0 < 30                        # generous: ~0.1 s here
    assert fw.stats["bad_frames"] > 15_000
    assert fw.stats["bad_frames_unanswered"] >= fw.stats["bad_frames"] - 40
    assert len(out) < 5_000                                     # not ~1.9 MB of BAD_FRAMEs
    time.sleep(0.3)                                             # one token back
    reply = FrameDecoder().feed(fw.receive(b"\x00" + encode_frame(encode({"t": "ping", "id": 9}))))
    msgs = [decode(b) for b in reply]
    assert msgs[-1]["t"] == "pong" and msgs[-1]["id"] == 9
    text = " ".join(m.get("message", "") for m in msgs if m.get("t") == "error")
    assert "earlier bad frames not answered" in text


class _PowerCutPort:
    """An in-process link to ``fw`` that cuts the device's power once, at the first enroll
    frame: before the device reads it (``applied`` False) or after it executed it, losing its
    answer (``applied`` True)."""

    def __init__(self, fw, applied: bool):
        self.fw, self.applied, self.cut, self.buf = fw, applied, False, bytearray()

    def write(self, data: bytes) -> int:
        if not self.cut and b"enroll" in data:
            self.cut = True
            if self.applied:
                self.fw.receive(data)                   # executed; the answer never arrives
            self.fw.boot()                              # power cut: RAM gone, flash kept
            return len(data)
        self.buf += self.fw.receive(data)
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def read(self, n: int = 1) -> bytes:
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("applied", [False, True])
def test_enrollment_is_exactly_once_across_a_reboot_between_request_and_retry(
        model4, tmp_path, applied):
    from tessera.protocol.client import Device
    from tessera.tools.bench import speechlike_signal

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})                                          # a deployed board: model in flash
    dev = Device(_PowerCutPort(fw, applied), timeout=0.2)
    shot = speechlike_signal(0.6, 3)
    r = dev.enroll("lamp", shot)
    assert r["t"] == "ack" and r["shots"] == 1 and r.get("saved") is True
    assert fw.boots == 2 and dev.retried >= 1               # the cut happened, the host retried
    assert fw.chip.classes() == ["lamp"] and fw.chip.readout.shots_of("lamp") == 1
    fw.boot()                                               # and it is in flash, once
    assert fw.chip.classes() == ["lamp"] and fw.chip.readout.shots_of("lamp") == 1


def test_chunks_ahead_of_the_stream_wait_within_a_count_and_a_byte_budget(model4):
    """Chunks that start ahead of the stream wait (BUSY past SEQ_WINDOW chunks or SEQ_BYTES of
    payload); the missing one lets them all run, in order."""
    from tessera.firmware_sim import ordering as D

    fw = pb.loaded_firmware(model4)
    dec = FrameDecoder()

    def ask(msg):
        return [decode(x) for x in dec.feed(fw.receive(encode_frame(encode(msg))))][-1]

    n = 4096                                          # samples a chunk: 8 KiB
    for k in range(1, D.SEQ_BYTES // (2 * n) + 1):    # 32 chunks fill the byte budget
        r = ask({"t": "p", "o": k * n, "d": bytes(2 * n), "id": 100 + k})
        assert r["t"] == "a" and r["n"] == 0
    r = ask({"t": "p", "o": 999 * n, "d": bytes(2 * n), "id": 99})
    assert r["t"] == "error" and r["name"] == "BUSY" and "bytes" in r["message"]
    assert fw.order.bytes == D.SEQ_BYTES
    r = ask({"t": "p", "o": 0, "d": bytes(2 * n), "id": 98})
    assert r["n"] == (D.SEQ_BYTES // (2 * n) + 1) * n and fw.order.bytes == 0
    small = [ask({"t": "p", "o": 10 ** 6 + 2 * k, "d": bytes(2), "id": 2000 + k})
             for k in range(1, D.SEQ_WINDOW + 2)]
    assert small[-2]["t"] == "a" and small[-1]["name"] == "BUSY"


def test_a_shared_id_with_another_body_is_a_new_request(model4, tmp_path):
    """Two hosts whose ids happen to meet: the second request is executed, not answered with
    the first one's answer; a retry (same id, same body) is answered from the store, also
    after a reboot."""
    from tessera.tools.bench import speechlike_signal

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    fw.install(open(model4, "rb").read())
    dec = FrameDecoder()

    def ask(msg):
        return [decode(x) for x in dec.feed(fw.receive(encode_frame(encode(msg))))][-1]

    pcm = speechlike_signal(0.6, 3).tobytes()

    def stream(rid):
        for k in range(0, len(pcm), 8000):
            ask({"t": "stream_audio", "rate": 16000, "pcm": pcm[k:k + 8000], "id": rid + k})

    stream(1000)
    first = ask({"t": "enroll", "label": "lamp", "id": 71})
    assert first["t"] == "ack" and fw.chip.classes() == ["lamp"]
    assert ask({"t": "enroll", "label": "lamp", "id": 71}) == first      # a retry
    assert fw.chip.readout.shots_of("lamp") == 1
    ping = ask({"t": "ping", "id": 71, "payload": b"other host"})           # the same id, reused
    assert ping["t"] == "pong" and ping["id"] == 71
    stream(2000)
    fan = ask({"t": "enroll", "label": "fan", "id": 73})
    fw.boot()                                                             # power cycle
    dec = FrameDecoder()
    assert ask({"t": "enroll", "label": "fan", "id": 73}) == fan          # retried after reboot
    again = ask({"t": "enroll", "label": "door", "id": 73})               # another body
    assert again["t"] == "error" and again["name"] == "NO_UTTERANCE"
    assert sorted(fw.chip.classes()) == ["fan", "lamp"]


def test_long_stream_keeps_memory_and_answers(model4):
    """Two minutes of repeated blocks through the chip and tessera sim --pty (the hour-long
    run is `tessera bench protocol --parts stream`)."""
    from tessera.tools.long_stream import long_stream

    r = long_stream(model4, minutes=2.0, block_s=30.0)
    c, b = r["chip"], r["board"]
    assert r["blocks"] == 4 and c["answers_identical_every_block"] and c["right_per_block"] > 0
    assert b["no_drift"] and b["right_per_block_first_quarter"] > 0 and b["errors"] == 0
    assert c["rss_end_mb"] < c["rss_start_mb"] + 50 and b["rss_end_mb"] < b["rss_start_mb"] + 50


def test_version_3_chunks_run_in_stream_order_whatever_order_they_arrive(model4):
    """Offsets: chunks ahead wait, repeats are acknowledged again, an overlapping resend adds
    only its new part; the chip sees the same stream as when it came in order. A version-2
    host is still served, in version 2."""
    from tessera.tools.bench import speechlike_signal

    pcm = speechlike_signal(0.5, 9)
    pieces = [(0, 1000), (2500, 4000), (1000, 2500), (500, 1800), (4000, 8000), (2500, 4000)]

    def run(order, version=3):
        fw = pb.loaded_firmware(model4)
        dec = FrameDecoder()
        answers = []
        for k, (a, b) in enumerate(order):
            msg = {"t": "stream_audio", "rate": 16000, "pcm": pcm[a:b].tobytes(), "id": k + 1}
            if version >= 3:
                msg["offset"] = a
            answers += [decode(x) for x in dec.feed(fw.receive(encode_frame(encode(msg,
                                                                                 version))))]
        return fw, answers

    ref, _ = run([(0, 8000)], version=2)
    fw, answers = run(pieces)
    assert [r.get("next") for r in answers] == [1000, 1000, 4000, 4000, 8000, 8000]
    assert answers[1]["buffered"] and answers[3]["duplicate"] and answers[5]["duplicate"]
    assert all(r["v"] == 3 for r in answers)
    assert np.array_equal(fw.chip.end_utterance(), ref.chip.end_utterance())
    _, old = run([(0, 4000), (4000, 8000)], version=2)
    assert all(r["v"] == 2 and r["t"] == "ack" for r in old)


def test_version_4_compact_chunks_match_the_long_ones(model4):
    """``p`` and ``s`` are ``stream_audio`` and ``stream_spikes`` with one-letter keys, run in
    stream order the same way; their answer ``a`` carries only ``n``, the stream's position.
    A version-3 message of those types is unknown; a bad encoding code is a named error."""
    from tessera.tools.bench import speechlike_signal

    pcm = speechlike_signal(0.5, 9)
    pieces = [(0, 1000), (2500, 4000), (1000, 2500), (500, 1800), (4000, 8000), (2500, 4000)]
    ref = pb.loaded_firmware(model4)
    ref.receive(encode_frame(encode({"t": "stream_audio", "rate": 16000, "pcm": pcm.tobytes(),
                                     "id": 1}, 2)))
    fw, dec, answers = pb.loaded_firmware(model4), FrameDecoder(), []
    for k, (a, b) in enumerate(pieces):
        msg = {"t": "p", "o": a, "d": pcm[a:b].tobytes(), "id": k + 1}
        answers += [decode(x) for x in dec.feed(fw.receive(encode_frame(encode(msg, 4))))]
    assert [(r["t"], r["n"], r["v"]) for r in answers] == [
        ("a", n, 4) for n in (1000, 1000, 4000, 4000, 8000, 8000)]
    assert len(encode_frame(encode(answers[0]))) < 30
    assert np.array_equal(fw.chip.end_utterance(), ref.chip.end_utterance())

    frames = (np.random.default_rng(0).random((40, fw.chip.tab.channels_total)) < 0.02)
    frames = frames.astype(np.uint8)
    outs = []
    for e, data in ((0, encode_events(frames)), (1, encode_bitmap(frames))):
        fw.receive(encode_frame(encode({"t": "reset_state", "id": 10 + e})))
        for a in (20, 0):                                # out of order
            part = frames[a:a + 20]
            body = encode_events(part) if e == 0 else encode_bitmap(part)
            r = decode(dec.feed(fw.receive(encode_frame(encode(
                {"t": "s", "o": a, "n": 20, "e": e, "d": body, "id": 20 + 2 * e + a // 20}))))[-1])
            assert r["t"] == "a"
        assert r["n"] == 40 and len(data) > 0
        outs.append(fw.chip.end_utterance())
    assert np.array_equal(outs[0], outs[1])
    for msg, version, name in (({"t": "s", "o": 0, "n": 1, "e": 7, "d": b"\x00"}, 4, "BAD_FIELD"),
                               ({"t": "p", "o": 0, "d": b"\x00\x00"}, 3, "UNKNOWN_TYPE")):
        r = decode(dec.feed(fw.receive(encode_frame(encode(dict(msg, id=99 + version),
                                                           version))))[-1])
        assert r["t"] == "error" and r["name"] == name, r


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


# ---------------------------------------------------------------- issue 24: no host can break it
def _ask(fw, msg: dict) -> dict:
    import msgpack

    from tessera.protocol.framing import FrameDecoder
    out = FrameDecoder().feed(fw.receive(encode_frame(msgpack.packb(msg, use_bin_type=True))))
    return decode(out[-1])


def test_a_value_nested_deep_is_a_bad_message_not_an_exit(model4):
    fw = pb.loaded_firmware(model4)
    body = b"\x83\xa1t\xa4ping\xa2id\x01\xa1v" + b"\x91" * 1000 + b"\x01"   # 1,015 bytes
    reply = decode(_body(fw.handle_body(body)))
    assert reply["name"] == "BAD_MESSAGE" and "nested" in reply["message"]
    assert _ask(fw, {"v": 4, "t": "ping", "id": 2})["t"] == "pong"          # still serving


def test_every_answer_fits_a_frame_by_construction(model4):
    from tessera.firmware_sim.handlers import MAX_PING
    from tessera.protocol.framing import MAX_BODY

    from tessera.runtime.model_format import decode_model, encode_model

    m = decode_model(open(model4, "rb").read())
    m.readout["max_classes"] = 64                    # room for more words than answers hold
    fw = Firmware(None)
    fw.install(encode_model(m))
    r = _ask(fw, {"v": 4, "t": "ping", "id": 3, "payload": b"x" * (MAX_PING + 1)})
    assert r["name"] == "BAD_FIELD" and "pong must fit" in r["message"]
    assert _ask(fw, {"v": 4, "t": "ping", "id": 4, "payload": b"x" * MAX_PING})["t"] == "pong"
    # long four-byte labels: the device refuses the one whose answers would not fit
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(6400) * 3000).astype("<i2").tobytes()
    refused = None
    for i in range(fw.chip.tab.max_classes):
        _ask(fw, {"v": 4, "t": "reset_state", "id": 100 + 3 * i})
        _ask(fw, {"v": 4, "t": "stream_audio", "id": 101 + 3 * i, "rate": 16000, "pcm": pcm})
        r = _ask(fw, {"v": 4, "t": "enroll", "id": 102 + 3 * i, "label": "\U0001F600" * 62 + f"{i:02d}"})
        if r["t"] == "error":
            refused = r
            break
    assert refused is not None and refused["name"] == "CAPACITY", refused
    n = len(fw.chip.classes())
    assert 0 < n < fw.chip.tab.max_classes
    for msg in ({"t": "hello", "versions": [4]}, {"t": "list_classes"}, {"t": "end_of_utterance"}):
        _ask(fw, {"v": 4, "t": "stream_audio", "id": 900, "rate": 16000, "pcm": pcm})
        body = _body(fw.handle_body(encode({**msg, "id": 901 + len(msg)})))
        assert len(body) <= MAX_BODY and decode(body)["t"] != "error", decode(body)
    # what hello promises: a full readout of labels of label_bytes bytes each is kept
    room = _ask(fw, {"v": 4, "t": "hello", "versions": [4], "id": 5})["model"]["label_bytes"]
    assert 200 < room < 4 * 62 + 2                   # less than the labels refused above
    fw = Firmware(None)
    fw.install(encode_model(m))
    for i in range(fw.chip.tab.max_classes):
        _ask(fw, {"v": 4, "t": "stream_audio", "id": 2001 + 2 * i, "rate": 16000, "pcm": pcm})
        rest = (room - 4) % 4                       # room bytes in at most 64 characters
        label = "\U0001F600" * ((room - 4) // 4) + "\u00e9" * (rest // 2) + "x" * (rest % 2) \
            + f"{i:04d}"
        assert len(label.encode()) == room
        r = _ask(fw, {"v": 4, "t": "enroll", "id": 2002 + 2 * i, "label": label})
        assert r["t"] == "ack", r
    assert len(fw.chip.classes()) == fw.chip.tab.max_classes


def _body(frame: bytes) -> bytes:
    from tessera.protocol.framing import FrameDecoder
    (body,) = FrameDecoder().feed(frame)
    return body


def test_a_model_that_loads_but_cannot_run_is_refused(model4):
    from tessera.runtime.model_format import decode_model, encode_model

    m = decode_model(open(model4, "rb").read())
    m.readout["calib"] = [553, 2 ** 64 - 1, -569]
    blob = encode_model(m)
    fw = pb.loaded_firmware(model4)
    old = fw.chip
    with pytest.raises(Exception, match="MODEL_REJECTED|does not run|calib"):
        fw.install(blob)
    assert fw.chip is old


def test_parameters_restored_from_flash_are_checked_like_the_wire(model4, tmp_path):
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("set_param", {"name": "hop_ms", "value": 100})
    fw.do("save", {})
    image = flash.load(str(img))
    image["params"]["hop_ms"] = "x"
    flash.save(str(img), image)
    fw = Firmware(str(img))
    assert fw.chip is None and "hop_ms" in fw.boot_error          # boots empty, says why
    image["params"]["hop_ms"] = 120
    image["params"]["an_older_firmwares_param"] = 3               # not ours: ignored
    flash.save(str(img), image)
    fw = Firmware(str(img))
    assert fw.chip is not None and fw.params["hop_ms"] == 120 and fw.boot_error is None


def test_a_damaged_flash_image_boots_empty_and_says_why(model4, tmp_path, monkeypatch):
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    blob = bytearray(img.read_bytes())
    blob[len(blob) // 2] ^= 0x10                                   # one flipped bit
    img.write_bytes(bytes(blob))
    fw = Firmware(str(img))
    assert fw.chip is None and "corrupt" in fw.boot_error
    assert _ask(fw, {"v": 4, "t": "reboot", "id": 7})["t"] == "ack"  # answered, then boots
    assert _ask(fw, {"v": 4, "t": "ping", "id": 8})["t"] == "pong"
    # a write that fails leaves no temporary file and the old image
    fw.install(open(model4, "rb").read())

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flash.os, "replace", broken)
    r = _ask(fw, {"v": 4, "t": "save", "id": 9})
    assert r["name"] == "STORAGE" and not (tmp_path / "f.img.tmp").exists()
    assert img.read_bytes() == bytes(blob)


def test_sim_says_which_model_it_serves(model4, tmp_path):
    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    p = subprocess.Popen([sys.executable, "-m", "tessera", "sim", "--pty", "--json", "--flash",
                          str(img), "--model", model4], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        ann = json.loads(p.stdout.readline())
        assert ann["model"] == f"flash:{img}"
    finally:
        p.kill()
        _, err = p.communicate()
    assert "serving it (not" in err


def test_an_idle_or_trickling_host_is_let_go_and_the_next_is_served(model4, tmp_path):
    import socket
    import time

    import msgpack

    from tessera.protocol.framing import FrameDecoder

    p = subprocess.Popen([sys.executable, "-m", "tessera", "sim", "--listen",
                          "socket://127.0.0.1:0", "--json", "--flash", "", "--model", model4,
                          "--idle-timeout", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        host, port = json.loads(p.stdout.readline())["port"][len("socket://"):].split(":")

        def ping(sock, rid):
            sock.sendall(encode_frame(msgpack.packb({"v": 4, "t": "ping", "id": rid})))
            dec, t0 = FrameDecoder(), time.monotonic()
            while time.monotonic() - t0 < 5:
                got = dec.feed(sock.recv(4096))
                if got:
                    return decode(got[0])
            raise AssertionError("no answer")

        # a host that sends half a frame and leaves: the next host's first request is answered
        a = socket.create_connection((host, int(port)))
        a.sendall(encode_frame(msgpack.packb({"v": 4, "t": "ping", "id": 1}))[:5])
        a.close()
        b = socket.create_connection((host, int(port)))
        assert ping(b, 2)["t"] == "pong"
        # b trickles a byte every 0.3 s and never completes a frame: let go within ~1 s
        t0, released = time.monotonic(), None
        for _ in range(20):
            try:
                b.sendall(b"\x05")
                gone = _readable(b) and b.recv(1) == b""
            except OSError:
                gone = True
            if gone:
                released = time.monotonic() - t0
                break
            time.sleep(0.3)
        b.close()
        assert released is not None and 0.8 < released < 3, released
        c = socket.create_connection((host, int(port)))
        assert ping(c, 3)["t"] == "pong"                  # the next host is served
        c.close()
    finally:
        p.kill()
        p.communicate()


def _readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def test_model_header_flags_must_be_zero(model4):
    import struct

    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import decode_model

    blob = bytearray(open(model4, "rb").read())
    decode_model(bytes(blob))
    struct.pack_into("<H", blob, 6, 1)
    with pytest.raises(InputError, match="header flags"):
        decode_model(bytes(blob))


def test_structure_aware_fuzzing_never_breaks_the_board(model4):
    """Hypothesis draws every request type with valid, wrong, missing and extra fields, msgpack
    values of every type and depth, and bodies nested far deeper than any request: one answer
    that decodes and fits, and a ping still answered, every time."""
    from tessera.tools.structured_fuzz import fuzz_structured

    r = fuzz_structured(model4, examples=300, seed=2)
    assert r["failures"] == [] and r["examples"] == 300, r["failures"]
    assert r["answers"].get("BAD_FIELD", 0) > 5 and r["answers"].get("BAD_MESSAGE", 0) > 5
    assert sum(v for k, v in r["answers"].items() if not k.isupper()) > 10   # handlers reached
    assert len(r["rss_mb"]) == 11 and max(r["rss_mb"]) < r["rss_mb"][0] + 200     # measured


def test_mutated_flash_images_boot_and_answer(model4):
    from tessera.tools.structured_fuzz import fuzz_flash_images

    r = fuzz_flash_images(model4, examples=60, seed=3)
    assert r["failures"] == [] and r["examples"] == 60, r["failures"]
    assert r["booted_empty"] > 0 and r["booted_with_model"] > 0


def test_memory_for_any_one_frame_is_bounded(model4):
    """At most 4 MB above the idle process for the heaviest frames a host can send: 1,000 steps
    of spikes (more in one message is BAD_FIELD), dense events or a bitmap, and a frame of
    audio."""
    import tracemalloc

    import msgpack

    from tessera.firmware_sim.handlers import MAX_STEPS
    from tessera.protocol.framing import MAX_BODY

    fw = pb.loaded_firmware(model4)
    rng = np.random.default_rng(0)
    frames = (rng.random((MAX_STEPS, 700)) < 0.004).astype(np.uint8)
    events = encode_events(frames)
    bitmap = encode_bitmap(frames[:180])
    pcm = (rng.standard_normal((MAX_BODY - 100) // 2) * 3000).astype("<i2").tobytes()
    heavy = [{"t": "stream_spikes", "encoding": "events", "steps": MAX_STEPS, "data": events},
             {"t": "stream_spikes", "encoding": "bitmap", "steps": 180, "data": bitmap},
             {"t": "stream_audio", "rate": 16000, "pcm": pcm}]
    for i, msg in enumerate(heavy * 2):                       # the second round is measured
        body = msgpack.packb({"v": 4, "id": 50 + i, **msg}, use_bin_type=True)
        assert len(body) <= MAX_BODY
        tracemalloc.start()
        reply = decode(_body(fw.handle_body(body)))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert reply["t"] == "ack", reply
        if i >= len(heavy):
            assert peak < 4e6, (msg["t"], peak)
    too_long = {"v": 4, "id": 99, "t": "stream_spikes", "encoding": "events",
                "steps": MAX_STEPS + 1, "data": encode_events(np.zeros((MAX_STEPS + 1, 700),
                                                                       np.uint8))}
    assert decode(_body(fw.handle_body(msgpack.packb(too_long))))["name"] == "BAD_FIELD"
