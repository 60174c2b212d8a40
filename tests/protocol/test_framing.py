"""COBS framing: edge cases, the vectorised coder against the block-by-block one, a decoder that
resynchronises and counts every bad frame."""


import numpy as np
import pytest

from tessera.protocol.framing import (
    MAX_BODY, MAX_WIRE, FrameDecoder, cobs_decode, cobs_encode, encode_frame)


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
