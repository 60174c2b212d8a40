"""The docstring examples run, so they cannot drift from the code."""

import doctest
import importlib

import pytest

MODULES = ["tessera.runtime.frontend", "tessera.runtime.audio", "tessera.trainer.data.transforms",
           "tessera.trainer.learning.episodes", "tessera.trainer.data.tts", "tessera.runtime.mosaic",
           "tessera.protocol.framing", "tessera.protocol.spikes", "tessera.protocol.messages",
           "tessera.runtime.chip", "tessera.protocol.client"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
