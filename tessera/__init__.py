"""tessera: few-shot spoken-word learning on a Mosaic-style small-world spiking chip.

Subpackages (each a top-level folder of the repository):

- ``tessera.runtime``: the device side, numpy only: cochlea front-end, (later) the integer chip.
- ``tessera.protocol``, ``tessera.firmware_sim``: host-device messages and the simulated board.
- ``tessera.trainer``: offline: speech corpus, data loading, few-shot episodes, meta-training.
- ``tessera.tools``: benchmarks and plots.
"""

__version__ = "0.1.0"
