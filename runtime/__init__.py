"""tessera.runtime: the device side. Imports numpy only (msgpack and pyserial where noted)."""

from .errors import InputError, TesseraError
from .frontend import Cochlea, FrontendSpec, design

__all__ = ["Cochlea", "FrontendSpec", "design", "InputError", "TesseraError"]
