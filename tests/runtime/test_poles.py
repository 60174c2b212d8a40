"""Format 4: the front-end's poles derived exactly instead of carried (runtime/poles.py), and the
model in 32 KiB."""

import numpy as np
import pytest

from tessera.runtime.chip import Chip
from tessera.runtime.errors import InputError
from tessera.runtime.filterdesign import POLE_BITS, FrontendSpec, filter_poles, fixed_poles
from tessera.runtime.model_format import (ModelFile, decode_model, encode_model, pack_ints,
                                          read_model, unpack_ints)
from tessera.runtime.poles import POLE_BITS as EXACT_BITS
from tessera.runtime.poles import carried, exact_poles


@pytest.mark.parametrize("spec", [FrontendSpec(), FrontendSpec(channels=96, order=2),
                                  FrontendSpec(channels=40, order=3, bw_scale=1.5, f_lo=80.0,
                                               f_hi=5000.0),
                                  FrontendSpec(channels=1), FrontendSpec(channels=64, order=5)])
def test_exact_poles_are_float64s_rounded_values(spec):
    """Every Q1.31 value and centre frequency the decimal derivation gives is the one float64
    rounds to (the default bank: all 11,200 values)."""
    assert EXACT_BITS == POLE_BITS
    fc, pole, r = filter_poles(spec)
    fc_mhz, fixed = exact_poles(spec, np.arange(spec.channels))
    assert fixed.dtype == np.int32 and fixed.shape == (spec.channels, spec.order, 4)
    assert np.array_equal(fixed, fixed_poles(pole, r))
    assert fc_mhz == [int(round(f * 1000)) for f in fc]


def test_exact_poles_refuse_channels_outside_the_bank():
    with pytest.raises(InputError, match="outside the front-end's 10 channels"):
        exact_poles(FrontendSpec(channels=10), [3, 10])
    with pytest.raises(InputError, match="outside"):
        exact_poles(FrontendSpec(channels=10), [-1])


def test_the_factory_model_fits_128_kib_and_derives_its_poles(model4):
    """The default model at 4 bits is at most 128 KiB (issue 34's bound; issue 26's 32 KiB held
    for models/v4, whose recurrent weights were hop-pruned): no poles in the file, the large
    arrays deflated; with the poles carried (a version-3 file) the chip is the same."""
    from tessera.firmware_sim import factory_model

    for path in (model4, factory_model()):
        blob = open(path, "rb").read()
        assert len(blob) <= 128 * 1024, path
        m = read_model(path)
        assert "poles" not in m.frontend and "fc_mhz" not in m.frontend
        assert m.core["w_in"].get("deflate") is True
    m = read_model(model4)
    chip = Chip(m)
    spec = FrontendSpec.from_dict(m.frontend["spec"])
    chans = chip.tab.channels
    fc_mhz, fixed = exact_poles(spec, chans)
    v3 = ModelFile(**vars(m))
    v3.frontend = carried(m.frontend, chans)
    assert np.array_equal(unpack_ints(v3.frontend["poles"], "p"), fixed)
    blob = bytearray(encode_model(v3))
    blob[4:6] = (3).to_bytes(2, "little")             # what version 3 wrote
    old = Chip(decode_model(bytes(blob)))
    a, b = chip.frontend.tables, old.frontend.tables
    for x, y in zip([a.trans, a.state_mat, a.fc, *a.mid_mats], [b.trans, b.state_mat, b.fc,
                                                               *b.mid_mats]):
        assert np.array_equal(x, y)
    pcm = (4000 * np.sin(np.arange(8000) * 0.3)).astype(np.int16)
    assert np.array_equal(chip.frontend.encode(pcm), old.frontend.encode(pcm))
    # carried poles win over derived ones (a model trained where float64 rounded otherwise)
    moved = fixed.copy()
    moved[0, 0, 0] -= 1 << 12
    v3.frontend = dict(m.frontend, fc_mhz=fc_mhz, poles=pack_ints(moved, 32))
    other = Chip(v3).frontend.tables
    assert not np.array_equal(other.trans, a.trans)
    # poles without centre frequencies (or the other way) is a named error
    for half in (dict(m.frontend, poles=pack_ints(fixed, 32)), dict(m.frontend, fc_mhz=fc_mhz)):
        v3.frontend = half
        with pytest.raises(InputError, match="come together"):
            Chip(v3)
    v3.frontend = dict(m.frontend, spec=dict(m.frontend["spec"], channels=600))
    with pytest.raises(InputError, match="channels_total|outside"):
        Chip(v3)
