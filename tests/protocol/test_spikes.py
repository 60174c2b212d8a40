"""Spike frames on the wire: the events and bitmap encodings round-trip."""


import numpy as np
import pytest

from tessera.protocol.spikes import (SpikeDecodeError, decode_spikes, encode_spikes)


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
