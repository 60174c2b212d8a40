"""tessera.runtime: the device side, numpy only (msgpack for the model file).

The integer cochlea front-end (:mod:`.frontend`, :mod:`.audio`), the Mosaic chip emulator
(:mod:`.chip`: streaming inference and one-shot enrollment; its docstring owns the arithmetic),
the core's pure step function (:mod:`.core`), the tile layout (:mod:`.mosaic`), RRAM models
(:mod:`.rram`), the ``.tsr`` file
(:mod:`.model_format`, MODEL_FORMAT.md) and the one exception family (:mod:`.errors`).
"""

from .errors import InputError, TesseraError
from .frontend import Cochlea, FrontendSpec, design

__all__ = ["Cochlea", "FrontendSpec", "design", "InputError", "TesseraError"]
