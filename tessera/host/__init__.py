"""The host's side of a board, in one place (issue 36 item 1).

:class:`~tessera.host.session.Session` teaches (one or more recordings, reboot-safe), asks,
streams with continuous detection, tells the board about untaught words and forgets, over one
link with one ``hello``; :mod:`~tessera.host.scoring` scores what a board answered against what
was said (one rule for ``tessera demo``, ``tessera device infer DIR``, ``bench stream`` and
``bench device``); :mod:`~tessera.host.recordings` reads a folder of a person's recordings (one
rule for the ``_other`` folder of untaught words). ``tessera device ...`` and ``tessera demo``
are thin callers of these.
"""

from .recordings import OTHER_FOLDER, folder_recordings
from .scoring import NONE, OTHER, confusion, match_events, score_events
from .session import Session

__all__ = ["Session", "score_events", "match_events", "confusion", "folder_recordings",
           "OTHER_FOLDER", "OTHER", "NONE"]
