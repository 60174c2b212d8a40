"""Messages: bounded and versioned, every error code documented in PROTOCOL.md, every deliberate
error a tessera error."""

import os
from pathlib import Path

import pytest

from tessera.protocol.messages import CODES, ERRORS, decode, encode

ROOT = Path(__file__).resolve().parents[2]


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


def test_error_codes_are_documented():
    text = (ROOT / "PROTOCOL.md").read_text()
    for code, (name, _) in ERRORS.items():
        assert f"| {code} | `{name}` |" in text
    assert CODES["BAD_FRAME"] == 1
    assert os.path.exists(ROOT / "PROTOCOL.md")


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
