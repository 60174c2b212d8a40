"""`tessera sim`: one host at a time on a socket or a pseudo-terminal, link faults, floods,
the flash lock."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tessera.firmware_sim.boot import pty_sim
from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import (
    encode_frame)
from tessera.protocol.messages import decode, encode
from tessera.tools import protocol_bench as pb



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


def test_a_host_that_connects_while_the_board_works_is_refused_at_once(model4):
    """Issue 35: while the board works on the first host's request (a commit takes up to 2 s),
    a second host is told LINK_BUSY at once, not left unanswered until the work ends."""
    import socket
    import threading
    import time

    from tessera.protocol.framing import FrameDecoder

    fw = pb.loaded_firmware(model4)
    receive, started = fw.receive, threading.Event()

    def slow(data):                             # a request that takes 1.5 s
        started.set()
        time.sleep(1.5)
        return receive(data)

    fw.receive = slow
    url, _ = pb.start_socket_sim(fw)
    host, port = url[len("socket://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as a:
        a.sendall(encode_frame(encode({"t": "ping", "id": 5})))
        assert started.wait(5)
        t0 = time.monotonic()
        with socket.create_connection((host, int(port))) as b:
            b.settimeout(5)
            (body,) = FrameDecoder().feed(b.recv(4096))
            waited = time.monotonic() - t0
        assert decode(body)["name"] == "LINK_BUSY" and waited < 1.0, waited
        a.settimeout(5)
        (body,) = FrameDecoder().feed(a.recv(4096))             # the first host's answer
        assert decode(body)["t"] == "pong"


def test_sim_refuses_non_loopback_without_flag():
    from tessera.firmware_sim.sim import parse_listen
    from tessera.runtime.errors import InputError

    assert parse_listen("socket://127.0.0.1:7000") == ("127.0.0.1", 7000)
    with pytest.raises(InputError, match="bind_any"):
        parse_listen("socket://0.0.0.0:7000")
    with pytest.raises(InputError, match="socket://"):
        parse_listen("tcp://127.0.0.1:7000")


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
        # c sends only whole frames that are bad (a flipped byte) every 0.3 s: they are
        # answered, but never extend its hold: let go within ~1 s
        bad = bytearray(encode_frame(msgpack.packb({"v": 4, "t": "ping", "id": 4})))
        bad[len(bad) // 2] ^= 0xFF
        t0, released = time.monotonic(), None
        for _ in range(20):
            try:
                c.sendall(bytes(bad))
                time.sleep(0.3)
                while _readable(c):
                    if c.recv(4096) == b"":
                        raise OSError("closed")
            except OSError:
                released = time.monotonic() - t0
                break
        c.close()
        assert released is not None and 0.8 < released < 3, released
        d = socket.create_connection((host, int(port)))
        assert ping(d, 5)["t"] == "pong"
        d.close()
    finally:
        p.kill()
        p.communicate()


def _readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])
