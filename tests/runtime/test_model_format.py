"""The .tsr model file: header flags, packed arrays that round-trip, and mutants refused with
errors that name the field."""


import numpy as np
import pytest


def test_model_header_flags_must_be_zero(model4):
    import struct

    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import decode_model

    blob = bytearray(open(model4, "rb").read())
    decode_model(bytes(blob))
    struct.pack_into("<H", blob, 6, 1)
    with pytest.raises(InputError, match="header flags"):
        decode_model(bytes(blob))


def test_packed_arrays_round_trip_and_mutants_get_named_errors():
    """Property-based, structure-aware: any integer array packs and unpacks to itself in every
    storage (dense, sparse, deflated), and a packed array with one field mutated (bytes of its
    data or mask flipped, cut or extended, its shape, width or flags changed, a deflated stream
    given raw bytes or the other way) either unpacks to an array of its declared shape or is
    refused with an InputError naming the field: nothing else escapes."""
    import zlib

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tessera.runtime.errors import InputError
    from tessera.runtime.model_format import pack_ints, unpack_ints

    @st.composite
    def packed(draw):
        bits = draw(st.integers(1, 32))
        signed = draw(st.booleans())
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        zero = draw(st.floats(0, 1))
        vals = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
        a = np.array(vals, np.int64).reshape(shape)
        a[np.random.default_rng(n).random(a.shape) < zero] = 0
        return a, bits, signed, draw(st.sampled_from([None, True, False])), \
            draw(st.sampled_from([None, True, False]))

    def mutate(d, data):
        d = dict(d)
        key = data.draw(st.sampled_from(sorted(d)))
        v = d[key]
        if isinstance(v, bytes):
            kind = data.draw(st.sampled_from(["flip", "cut", "extend", "raw", "deflate"]))
            b = bytearray(v)
            if kind == "flip" and b:
                i = data.draw(st.integers(0, len(b) - 1))
                b[i] ^= 1 << data.draw(st.integers(0, 7))
            elif kind == "cut":
                b = b[: data.draw(st.integers(0, len(b)))]
            elif kind == "extend":
                b += data.draw(st.binary(min_size=1, max_size=8))
            elif kind == "deflate":
                b = bytearray(zlib.compress(bytes(b)))
            else:
                b = bytearray(data.draw(st.binary(max_size=40)))
            d[key] = bytes(b)
        elif key == "shape":
            d[key] = data.draw(st.lists(st.integers(0, 12), max_size=3))
        elif key == "bits":
            d[key] = data.draw(st.integers(0, 40))
        else:                                              # signed, deflate
            d[key] = data.draw(st.sampled_from([True, False, 0, 1, None]))
        return d

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(packed(), st.data())
    def check(spec, data):
        a, bits, signed, sparse, deflate = spec
        d = pack_ints(a, bits, signed, sparse=sparse, deflate=deflate)
        assert np.array_equal(unpack_ints(d, "w"), a)
        bad = mutate(d, data)
        try:
            got = unpack_ints(bad, "w")
        except InputError as exc:
            assert "'w'" in str(exc)
        else:
            assert list(got.shape) == list(bad["shape"])

    check()


def test_the_cosine_fixed_point_has_one_rule_that_round_trips():
    from tessera.runtime.tables import cos_from_q, cos_to_q

    for frac in (4, 12, 16):
        for c in (-1.0, -0.3, 0.0, 0.602, 0.746, 1.0):
            q = cos_to_q(c, frac)
            assert isinstance(q, int) and abs(cos_from_q(q, frac) - c) <= 0.5 / (1 << frac)
    assert cos_to_q(0.5, 12) == 2048 and cos_from_q(2048, 12) == 0.5
