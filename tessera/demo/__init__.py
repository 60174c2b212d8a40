"""The main job, ``tessera demo``, in its own room: what it teaches and asks
(:mod:`~tessera.demo.sets`), the run over the board's port through the host session
(:mod:`~tessera.demo.run`), the figures on a local chip (:mod:`~tessera.demo.figures`) and the
HTML report (:mod:`~tessera.demo.report`)."""

from .run import demo_table, run_demo
from .sets import (DEMO_OTHERS, DEMO_WORDS, NONE, OTHER, DemoSet, Utterance, folder_set, mic_set,
                   synthesized_set)

__all__ = ["DemoSet", "Utterance", "synthesized_set", "folder_set", "mic_set", "run_demo",
           "demo_table", "DEMO_WORDS", "DEMO_OTHERS", "OTHER", "NONE"]
