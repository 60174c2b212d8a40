"""test_model_format"""

from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


def test_model_header_flags_must_be_zero(model4):
    import struct

    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import decode_model

    blob = bytearray(open(model4, "rb").read())
    decode_model(bytes(blob))
    struct.pack_into("<H", blob, 6, 1)
    with pytest.raises(InputError, match="header flags"):
        decode_model(bytes(blob))
