"""One host session with one board: what ``tessera device ...``, ``tessera demo`` and the
benchmarks do over the link, written once.

    >>> with Session.open("sim://?model=firmware_sim/default-4bit.tsr") as s:   # doctest: +SKIP
    ...     s.teach("yes", "yes_1.wav")              # reboot-safe (the client's rule)
    ...     s.ask("yes_2.wav")["answer"]
    'yes'

Every request goes through :class:`~tessera.protocol.client.Device` (its retries, ids and
reboot rule); the session adds what a person's host does around them: one ``hello`` per
session, recordings read from files or samples, a clean board, streams with detection turned on
and off again, and answers in one shape (``answer`` is the word or ``"none"``).
"""

from __future__ import annotations

import os

import numpy as np

from ..protocol.messages import ENVELOPE
from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from .scoring import NONE

__all__ = ["Session", "load_recording", "SAME_RECORDING", "SILENCE_DBFS"]

#: a recording whose cosine with a taught word's shots is at least this is that word's shot
SAME_RECORDING = 0.999
#: a recording whose loudest sample is under this level (dB full scale) is silence
SILENCE_DBFS = -50.0


def _refuse_silence(recording, pcm: np.ndarray) -> None:
    peak = float(np.max(np.abs(pcm.astype(np.int32)))) if pcm.size else 0.0
    dbfs = 20 * np.log10(peak / 32768.0) if peak else -np.inf
    if dbfs < SILENCE_DBFS:
        where = os.fspath(recording) if isinstance(recording, (str, os.PathLike)) else None
        raise InputError(f"the recording is silent (loudest sample {dbfs:.0f} dBFS, under "
                         f"{SILENCE_DBFS:.0f}): nothing to teach", source=where)


def load_recording(path: str) -> np.ndarray:
    """A recording as 16 kHz int16 samples: WAV (the runtime's reader), or FLAC and the other
    formats libsndfile reads where the optional ``soundfile`` is installed (``pip install
    tessera[flac]``)."""
    from ..runtime.audio import load_audio, resample, to_int16

    if path.lower().endswith(".wav"):
        return load_audio(path)
    try:
        import soundfile
    except ImportError:
        raise InputError("only WAV is read without the optional soundfile package (pip install "
                         "tessera[flac])", source=path) from None
    try:
        x, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as exc:                     # noqa: BLE001 (libsndfile raises its own)
        raise InputError(f"not a recording soundfile can read ({exc})", source=path) from None
    if x.shape[1] != 1:
        raise InputError(f"{x.shape[1]} channels: a recording must be mono", source=path)
    return to_int16(resample(x[:, 0], int(rate), SAMPLE_RATE))


def _pcm(recording) -> np.ndarray:
    """A recording given as a path (read by :func:`load_recording`) or as samples."""
    if isinstance(recording, (str, os.PathLike)):
        return load_recording(os.fspath(recording))
    return np.asarray(recording, np.int16)


class Session:
    """A host's session with one board (a :class:`~tessera.protocol.client.Device`): one
    ``hello`` (:attr:`info`), then teaching, asking and streaming."""

    def __init__(self, device):
        self.dev = device
        self.info = device.info_cache or device.info()     # the session's one hello

    @classmethod
    def open(cls, url: str, **kw) -> "Session":
        """A session over ``url`` (a serial port, ``socket://``, ``sim://`` or ``loop://``);
        ``kw`` go to :meth:`Device.open` (baudrate, timeout, retries)."""
        import tessera.firmware_sim  # noqa: F401  (registers the simulator's sim:// URLs)
        from ..protocol.client import Device

        dev = Device.open(url, **kw)
        try:
            return cls(dev)
        except BaseException:
            dev.close()
            raise

    def close(self) -> None:
        self.dev.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ words
    def teach(self, label: str, *recordings, check: bool = True) -> dict:
        """``label`` taught from one or more recordings (paths or 16 kHz samples) in one
        readout step, exactly once even across a reboot of the board (the client's rule: the
        same id, the shots streamed again if the board lost them).

        ``check``: what a person would not mean is caught: a silent recording is refused before
        anything is sent (naming it), and a recording the board already knew as another word
        (its cosine with that word's shots at least :data:`SAME_RECORDING`, as the board
        answered the shot) is taught but said in the answer's ``warnings``."""
        from ..protocol.messages import check_label

        check_label(label)                       # before a recording is read
        pcms = [_pcm(r) for r in recordings]
        if check:
            for r, pcm in zip(recordings, pcms):
                _refuse_silence(r, pcm)
        out = self.dev.enroll(label, *pcms)
        warnings = [f"this recording is already taught as {best!r} (cosine {cos:.3f}): it now "
                    f"teaches {label!r} too" for best, cos in filter(None, out.get("nearest", []))
                    if check and best != label and cos >= SAME_RECORDING]
        return {**out, "warnings": warnings} if warnings else out

    def ask(self, recording) -> dict:
        """The board's answer for one recording from rest: the board's own answer, plus
        ``answer`` (the word, or ``"none"``)."""
        r = self.dev.infer(_pcm(recording))
        return {**r, "answer": r.get("label") or NONE}

    def stream(self, recording=None, on_event=None, realtime: bool = False,
               params: dict | None = None, feed=None) -> dict:
        """Continuous detection over a recording: detection on (with ``params`` set for the
        stream and put back after it), the recording streamed from rest, the stream ended (the
        windows still open close), detection off. ``feed(dev, on_event)``: what to stream
        instead of a recording (spike frames, the microphone). Returns the events (each also
        handed to ``on_event`` as it arrives, without the message envelope) and the stream's
        length in ms."""
        events: list[dict] = []

        def got(e):
            e = {k: v for k, v in e.items() if k not in ENVELOPE}
            events.append(e)
            if on_event is not None:
                on_event(e)

        before = self.dev.params() if params else {}
        self.dev.reset()
        for k, v in (params or {}).items():
            self.dev.set_param(k, v)
        self.dev.set_param("detect", True)
        try:
            if feed is None:
                self.dev.stream_pcm(_pcm(recording), realtime=realtime, on_event=got)
            else:
                feed(self.dev, got)
            end = self.dev.end_utterance()
            self.dev.drain(got)
        finally:
            self.dev.set_param("detect", False)
            for k in params or {}:
                old = before.get(k)
                self.dev.set_param(k, "model" if k == "threshold" and old is None else old)
        return dict(events=events, stream_ms=end.get("stream_ms"))

    def untaught(self, *recordings) -> dict:
        """Recordings of words the person did not teach (for the threshold "person")."""
        return self.dev.untaught(*[_pcm(r) for r in recordings])

    def clear_untaught(self) -> dict:
        return self.dev.request({"t": "untaught", "clear": True})

    def forget(self, label: str) -> dict:
        return self.dev.forget(label)

    def rename(self, label: str, to: str) -> dict:
        """A taught word under another label (its shots kept)."""
        return self.dev.rename(label, to)

    def forget_all(self) -> None:
        """Every taught word forgotten and the untaught recordings cleared: a clean board."""
        for c in self.dev.classes():
            self.dev.forget(c)
        self.clear_untaught()

    def words(self) -> list[str]:
        return self.dev.classes()
