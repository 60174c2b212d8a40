"""tessera: few-shot spoken-word learning on a Mosaic-style small-world spiking chip.

Data flows one way: audio -> cochlea front-end (700 channels of spikes) -> recurrent spiking core
on tiles -> prototype readout -> word. Subpackages (each a top-level folder of the repository):

- ``tessera.runtime``: the device side, numpy only: the integer cochlea front-end, the integer
  chip emulator (streaming inference, one-shot enrollment, RRAM models) and the ``.tsr`` model file.
- ``tessera.protocol``: host-device messages over a serial byte stream (PROTOCOL.md) and the
  host's ``Device`` client, for the simulator or a board.
- ``tessera.firmware_sim``: the simulated board behind that protocol (flash, faults, pty/socket).
- ``tessera.trainer``: offline, with torch: speech corpus (TTS), data loading, few-shot episodes,
  meta-training, evaluation, calibration and export to the chip.
- ``tessera.tools``: benchmarks and plots.
- ``tessera.models``: the committed default model, shipped as package data.

The ``tessera`` command (the ``tessera.cli`` package, one module per command group) drives all
of them.
"""

__version__ = "0.1.0"
