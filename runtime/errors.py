"""The one small exception family of tessera.

Every error that a user can cause with bad input (a wav, an h5 file, a model file, a frame, a
command-line argument) is a :class:`TesseraError`. The CLI prints such an error as one line and
exits non-zero; anything else is a bug and keeps its traceback. The family::

    TesseraError
    +-- InputError (also a ValueError)      bad data, files and arguments   runtime/errors.py
    +-- FrameError (also a ValueError)      a frame that does not decode    protocol/framing.py
    +-- SpikeDecodeError (also ValueError)  spike frames that do not decode protocol/spikes.py
    +-- ProtocolError                       a request answered with error   protocol/messages.py
    +-- DeviceError, LinkError              the host's view of the device   protocol/messages.py
    +-- TTSUnavailable                      no speech synthesizer           trainer/data/tts.py
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base class of every error tessera raises on purpose."""


class InputError(TesseraError, ValueError):
    """Input data (file, array, argument) is missing, malformed or out of range.

    The message names the input (a path where there is one) and the problem; ``param`` names
    the library parameter at fault, for a front-end (the CLI) to name its own option.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 param: str | None = None) -> None:
        self.source, self.param = source, param
        super().__init__(f"{source}: {message}" if source else message)
