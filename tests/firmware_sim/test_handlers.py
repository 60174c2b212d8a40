"""The request handlers: version 4's compact chunks equal the long ones, every answer fits a frame."""


import numpy as np

from helpers import ask, body_of

from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import (
    FrameDecoder, encode_frame)
from tessera.protocol.messages import decode, encode
from tessera.protocol.spikes import (encode_bitmap, encode_events)
from tessera.tools import protocol_bench as pb


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


def test_every_answer_fits_a_frame_by_construction(model4):
    from tessera.firmware_sim.handlers import MAX_PING
    from tessera.protocol.framing import MAX_BODY

    from tessera.runtime.model_format import decode_model, encode_model

    m = decode_model(open(model4, "rb").read())
    m.readout["max_classes"] = 64                    # room for more words than answers hold
    fw = Firmware(None)
    fw.install(encode_model(m))
    r = ask(fw, {"v": 4, "t": "ping", "id": 3, "payload": b"x" * (MAX_PING + 1)})
    assert r["name"] == "BAD_FIELD" and "pong must fit" in r["message"]
    assert ask(fw, {"v": 4, "t": "ping", "id": 4, "payload": b"x" * MAX_PING})["t"] == "pong"
    # long four-byte labels: the device refuses the one whose answers would not fit
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(6400) * 3000).astype("<i2").tobytes()
    refused = None
    for i in range(fw.chip.tab.max_classes):
        ask(fw, {"v": 4, "t": "reset_state", "id": 100 + 3 * i})
        ask(fw, {"v": 4, "t": "stream_audio", "id": 101 + 3 * i, "rate": 16000, "pcm": pcm})
        r = ask(fw, {"v": 4, "t": "enroll", "id": 102 + 3 * i, "label": "\U0001F600" * 62 + f"{i:02d}"})
        if r["t"] == "error":
            refused = r
            break
    assert refused is not None and refused["name"] == "CAPACITY", refused
    n = len(fw.chip.classes())
    assert 0 < n < fw.chip.tab.max_classes
    for msg in ({"t": "hello", "versions": [4]}, {"t": "list_classes"}, {"t": "end_of_utterance"}):
        ask(fw, {"v": 4, "t": "stream_audio", "id": 900, "rate": 16000, "pcm": pcm})
        body = body_of(fw.handle_body(encode({**msg, "id": 901 + len(msg)})))
        assert len(body) <= MAX_BODY and decode(body)["t"] != "error", decode(body)
    # what hello promises: a full readout of labels of label_bytes bytes each is kept
    room = ask(fw, {"v": 4, "t": "hello", "versions": [4], "id": 5})["model"]["label_bytes"]
    assert 200 < room < 4 * 62 + 2                   # less than the labels refused above
    fw = Firmware(None)
    fw.install(encode_model(m))
    for i in range(fw.chip.tab.max_classes):
        ask(fw, {"v": 4, "t": "stream_audio", "id": 2001 + 2 * i, "rate": 16000, "pcm": pcm})
        rest = (room - 4) % 4                       # room bytes in at most 64 characters
        label = "\U0001F600" * ((room - 4) // 4) + "\u00e9" * (rest // 2) + "x" * (rest % 2) \
            + f"{i:04d}"
        assert len(label.encode()) == room
        r = ask(fw, {"v": 4, "t": "enroll", "id": 2002 + 2 * i, "label": label})
        assert r["t"] == "ack", r
    assert len(fw.chip.classes()) == fw.chip.tab.max_classes


