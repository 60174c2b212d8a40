"""What the board keeps in flash: power cycles, checked images, failing writes refused as a
whole (issue 35)."""

import pytest

from helpers import ask, log_sweep

from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import (
    FrameDecoder, encode_frame)
from tessera.protocol.messages import decode, encode


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
    assert ask(fw, {"v": 4, "t": "reboot", "id": 7})["t"] == "ack"  # answered, then boots
    assert ask(fw, {"v": 4, "t": "ping", "id": 8})["t"] == "pong"
    # a write that fails leaves no temporary file and the old image
    fw.install(open(model4, "rb").read())

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flash.os, "replace", broken)
    r = ask(fw, {"v": 4, "t": "save", "id": 9})
    assert r["name"] == "STORAGE" and not (tmp_path / "f.img.tmp").exists()
    assert img.read_bytes() == bytes(blob)


def test_a_flash_path_that_is_not_a_regular_file_or_too_large_is_refused_unread(tmp_path):
    import os

    import pytest

    from tessera.firmware_sim import flash
    from tessera.runtime.errors import InputError

    with pytest.raises(InputError, match="not a regular file"):
        flash.load("/dev/zero")                       # read without bound, it never ends
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)      # a writer, so opening it does not block
    try:
        with pytest.raises(InputError, match="not a regular file"):
            flash.load(str(fifo))
    finally:
        os.close(fd)
    big = tmp_path / "big.img"
    with open(big, "wb") as fh:
        fh.truncate(flash.MAX_IMAGE + 10)              # sparse: no disk used
    with pytest.raises(InputError, match="larger than any valid"):
        flash.load(str(big))


def test_one_flash_file_under_two_names_serves_one_simulator(model4, tmp_path):
    """A symbolic link and a hard link to a held image are refused (the lock follows the file,
    not the name), and so is a device given as the image."""
    import os

    import pytest

    from tessera.firmware_sim import sim
    from tessera.runtime.errors import InputError

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    held = sim._lock_flash(str(img))
    try:
        (tmp_path / "sym.img").symlink_to(img)
        os.link(img, tmp_path / "hard.img")
        for other in ("sym.img", "hard.img"):
            with pytest.raises(InputError, match="in use by another simulator"):
                sim._lock_flash(str(tmp_path / other))
        with pytest.raises(InputError, match="regular file"):
            sim._lock_flash("/dev/zero")
    finally:
        for f in held:
            f.close()
    for f in sim._lock_flash(str(tmp_path / "hard.img")):   # free again once released
        f.close()


def test_a_retry_is_answered_from_the_store_only_for_the_same_body(model4, tmp_path):
    """Retries are matched on the whole body (a BLAKE2b digest), not id + CRC-32; a field no
    handler reads is refused, so nothing can be hidden in one to forge a match."""
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    dec = FrameDecoder()

    def req(msg):
        return [decode(b) for b in dec.feed(fw.receive(encode_frame(encode(msg))))][-1]

    first = {"t": "set_param", "id": 7, "name": "threshold", "value": 0.5}
    assert req(first)["t"] == "ack" and fw.params["threshold"] == 0.5
    dups = fw.stats["duplicates"]
    assert req(first)["t"] == "ack" and fw.stats["duplicates"] == dups + 1     # a true retry
    other = dict(first, value=0.6)                        # the same id, another body
    assert req(other)["t"] == "ack" and fw.params["threshold"] == 0.6
    assert fw.stats["duplicates"] == dups + 1
    padded = dict(first, id=8, pad=b"\x00\x01\x02\x03")   # an extra field: refused, not ignored
    r = req(padded)
    assert r["t"] == "error" and r["name"] == "BAD_FIELD" and "unknown field" in r["message"]
    # the store in flash keeps digests; answers an old image kept by CRC-32 are not restored
    fw.do("save", {})
    image = flash.load(str(img))
    kept = encode_frame(encode({"t": "ack", "id": 13}))
    image["answers"] = [[9, 123456, b"\x01\x02"], [10, None, b"\x01"], [11, b"\x00" * 16, b""],
                        [12, b"\x00" * 16, b"\x05" * 100_000], [13, b"\x07" * 16, kept]]
    flash.save(str(img), image)
    again = Firmware(str(img))
    assert again.chip is not None and dict(again.persisted) == {13: (b"\x07" * 16, kept)}


@pytest.mark.parametrize("bad", [["x" * 3000], ["a", "a"], ["none"], [7], ["tab\there"]])
def test_labels_from_flash_go_through_the_wires_rule(model4, tmp_path, bad):
    """A flash image with a valid CRC is not believed: its labels meet the one label rule (the
    wire's), and one that fails boots the board without the image, saying why."""
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    image = flash.load(str(img))
    image["classes"] = bad + image["classes"][len(bad):]
    flash.save(str(img), image)
    again = Firmware(str(img))
    assert again.chip is None and "label" in (again.boot_error or "")


@pytest.mark.parametrize("generation", [2**64 - 1, -1, "7", True])
def test_a_flash_generation_out_of_range_is_refused_and_never_overflows(model4, tmp_path,
                                                                        generation):
    from tessera.firmware_sim import flash, persist

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    image = flash.load(str(img))
    image["generation"] = generation
    flash.save(str(img), image)
    again = Firmware(str(img))
    assert again.chip is None and "generation" in (again.boot_error or "")
    # the largest count a restore takes: the next save keeps it there instead of overflowing
    image["generation"] = persist.MAX_GENERATION - 1
    flash.save(str(img), image)
    top = Firmware(str(img))
    assert top.chip is not None and top.do("save", {})["t"] == "ack"
    assert flash.load(str(img))["generation"] == persist.MAX_GENERATION - 1


@pytest.mark.parametrize("key,value", [("shots", -1), ("shots", 2**40), ("exps", 99),
                                       ("exps", "1")])
def test_readout_registers_from_flash_are_bounded(model4, tmp_path, key, value):
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    image = flash.load(str(img))
    image[key] = [value] + image[key][1:]
    flash.save(str(img), image)
    again = Firmware(str(img))
    assert again.chip is None and key in (again.boot_error or "")


@pytest.mark.parametrize("key", ["levels", "voice_level"])
def test_a_packed_array_in_flash_is_sized_by_the_model_before_it_is_inflated(tmp_path, key):
    """A flash image written by the valid writer whose readout levels (or running level) are a
    deflate bomb: 16 KiB that inflate to 2^24 values (128 MiB as integers). Refused by its declared shape, in
    well under a second and without the memory the shape asks for (no torch needed)."""
    import time
    import tracemalloc
    import zlib

    import numpy as np

    from tessera.firmware_sim import factory_model, flash
    from tessera.runtime.model_format import pack_ints

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(factory_model(), "rb").read())
    fw.do("save", {})
    image = flash.load(str(img))
    z, zero = zlib.compressobj(9), bytes(1 << 20)
    data = b"".join(z.compress(zero) for _ in range(16)) + z.flush()
    bomb = dict(pack_ints(np.zeros(4, np.int64), 8, deflate=True, sparse=False),
                shape=[1 << 12, 1 << 12], data=data)      # 2^24 values (the inflate cap) in 16 KiB
    image[key] = bomb
    flash.save(str(img), image)
    tracemalloc.start()
    t0 = time.perf_counter()
    again = Firmware(str(img))
    took, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert again.chip is None and key in (again.boot_error or "")
    assert took < 2.0 and peak < 64 << 20


def test_an_enroll_whose_flash_write_fails_is_refused_whole_and_runs_once_on_retry(
        model4, tmp_path, monkeypatch):
    """A failed write must not leave the word in RAM (a later save would store it without its
    answer, and a retry after a reboot would enroll it twice): the request is refused with
    STORAGE, not stored under its id, and the same request later enrolls exactly once."""
    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    pcm = log_sweep(300, 3000, 0.6).tobytes()

    def shot(rid):
        assert ask(fw, {"v": 4, "t": "reset_state", "id": rid})["t"] == "ack"
        for k in range(0, len(pcm), 8000):
            ask(fw, {"v": 4, "t": "stream_audio", "rate": 16000, "pcm": pcm[k:k + 8000],
                     "id": rid + 1 + k})

    shot(100)
    real_replace = flash.os.replace

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flash.os, "replace", broken)
    before = fw.chip.readout.state()
    r = ask(fw, {"v": 4, "t": "enroll", "label": "alpha", "id": 7})
    assert r["t"] == "error" and r["name"] == "STORAGE"
    after = fw.chip.readout.state()
    assert after["classes"] == before["classes"] and (after["levels"] == before["levels"]).all()
    monkeypatch.setattr(flash.os, "replace", real_replace)
    shot(200)
    assert ask(fw, {"v": 4, "t": "enroll", "label": "beta", "id": 8})["saved"] is True
    fw.boot()                                          # power cycle: flash holds beta only
    assert fw.chip.readout.classes() == ["beta"]
    shot(300)
    r = ask(fw, {"v": 4, "t": "enroll", "label": "alpha", "id": 7})   # the host's retry
    assert r["t"] == "ack" and r["saved"] is True and r["shots"] == 1
    assert ask(fw, {"v": 4, "t": "enroll", "label": "alpha", "id": 7})["shots"] == 1
    assert fw.chip.readout.shots_of("alpha") == 1


def test_a_load_commit_whose_flash_write_fails_keeps_the_old_model_whole(model4, tmp_path,
                                                                         monkeypatch):
    """The model a refused commit would have installed is not left running: the old one and
    its label capacity come back, and flash still holds the old one."""
    import zlib

    from tessera.firmware_sim import flash

    img = tmp_path / "f.img"
    fw = Firmware(str(img))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})
    old_chip, old_labels = fw.chip, fw.label_bytes
    blob = open(model4, "rb").read()

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    assert ask(fw, {"v": 4, "t": "load_begin", "size": len(blob), "crc": zlib.crc32(blob),
                    "id": 20})["t"] == "ack"
    for k, off in enumerate(range(0, len(blob), 8192)):
        part = blob[off:off + 8192]
        assert ask(fw, {"v": 4, "t": "load_chunk", "offset": off, "data": part,
                        "crc": zlib.crc32(part), "id": 21 + k})["t"] == "ack"
    monkeypatch.setattr(flash.os, "replace", broken)
    r = ask(fw, {"v": 4, "t": "load_commit", "id": 99})
    assert r["name"] == "STORAGE"
    assert fw.chip is old_chip and fw.label_bytes == old_labels
    assert ask(fw, {"v": 4, "t": "load_commit", "id": 99})["name"] in ("LOAD_SEQUENCE", "STORAGE")
