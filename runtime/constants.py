"""Numbers that the front-end, the chip, the protocol and the trainer share, defined once.

The model file carries the ones a model may choose (its bin width ``core.bin_ms``, the front-end's
``spec``); these are fixed by the system: audio enters at ``SAMPLE_RATE``, and the front-end emits
one spike frame every ``FRAME_MS`` millisecond (``FRAME_SAMPLES`` samples), the unit in which the
protocol streams spikes and the chip sums its bins.
"""

SAMPLE_RATE = 16000                      # Hz: audio everywhere (resample other rates first)
FRAME_MS = 1                             # one front-end spike frame per millisecond
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000    # 16 samples per frame

__all__ = ["SAMPLE_RATE", "FRAME_MS", "FRAME_SAMPLES"]
