"""Models a valid writer built and then made hostile in their content (issue 35): every one is
refused quickly, in little memory, before anything is inflated or allocated from its numbers."""

import time
import tracemalloc
import zlib

import pytest

from tessera.firmware_sim.device import Firmware
from tessera.protocol.messages import ProtocolError
from tessera.runtime.model_format import encode_model, read_model


def _bomb(values: int) -> dict:
    """A packed array declaring ``values`` 1-bit values whose data inflate to 16 MiB of zeros."""
    return {"shape": [values], "bits": 1, "signed": False, "deflate": True,
            "data": zlib.compress(bytes(min(values // 8, 16 << 20)), 9)}


def _refused(fw: Firmware, blob: bytes, match: str) -> tuple[float, float]:
    """Install ``blob``; it must be refused naming ``match``. Returns (seconds, peak MiB)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError, match=match):
        fw.install(blob)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


@pytest.mark.parametrize("field", ["channels", "w_in", "bias", "w_rec", "leak_mult"])
def test_a_deflate_bomb_in_any_core_array_is_refused_before_it_is_inflated(model4, field):
    m = read_model(model4)
    m.core[field] = _bomb(16 << 23)
    fw = Firmware(flash_path=None)
    seconds, peak = _refused(fw, encode_model(m), "declares shape")
    assert seconds < 2 and peak < 64, (seconds, peak)


def test_a_bomb_of_the_right_shape_inflates_no_more_than_the_shape_needs(model4):
    m = read_model(model4)
    inputs = m.core["inputs"]
    m.core["channels"] = {"shape": [inputs], "bits": 1, "signed": False, "deflate": True,
                          "data": zlib.compress(bytes(16 << 20), 9)}
    fw = Firmware(flash_path=None)
    seconds, peak = _refused(fw, encode_model(m), "channels")
    assert seconds < 2 and peak < 64, (seconds, peak)


@pytest.mark.parametrize("steps,bin_ms", [(10_000, 100), (2_000, 10)])
def test_a_legal_model_with_a_huge_window_is_refused_before_the_window_is_allocated(
        model4, steps, bin_ms):
    m = read_model(model4)
    m.core["steps"], m.core["bin_ms"] = steps, bin_ms
    fw = Firmware(flash_path=None)
    seconds, peak = _refused(fw, encode_model(m), "window")
    assert seconds < 2 and peak < 64, (seconds, peak)
    fw.install(open(model4, "rb").read())            # and the board still takes a good model
    assert fw.chip is not None


def test_a_bomb_in_the_front_ends_poles_or_level_reference_is_refused_unread(model4):
    m = read_model(model4)
    m.frontend["poles"] = _bomb(16 << 23)
    m.frontend["fc_mhz"] = [1000] * m.core["inputs"]
    fw = Firmware(flash_path=None)
    seconds, peak = _refused(fw, encode_model(m), "frontend.poles declares shape")
    assert seconds < 2 and peak < 64, (seconds, peak)
    m = read_model(model4)                           # a level equalization (the factory
    eq = m.frontend.get("eq") or dict(gate=40, block=16, shift=15, frac=16, prior=2048)
    m.frontend["eq"] = dict(eq, ref=_bomb(16 << 23))  # model has none since issue 34)
    seconds, peak = _refused(fw, encode_model(m), "frontend.eq.ref declares shape")
    assert seconds < 2 and peak < 64, (seconds, peak)
