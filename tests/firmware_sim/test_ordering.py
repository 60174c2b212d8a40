"""Stream chunks that arrive out of order: held within a count and a byte budget, run in stream
order."""


import numpy as np

from tessera.protocol.framing import (
    FrameDecoder, encode_frame)
from tessera.protocol.messages import decode, encode
from tessera.tools import protocol_bench as pb


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
