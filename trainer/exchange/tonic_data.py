"""tonic interop: our spike data as tonic datasets, our transforms in tonic pipelines.

tonic represents an audio sample as a structured event array with fields ``t`` (microseconds),
``x`` (channel) and ``p`` (polarity, always 1 here), ordering ``"txp"`` and sensor size
``(channels, 1, 1)``, as its own SHD and SSC datasets do. :class:`TesseraSpikes` serves any data
:func:`~tessera.trainer.data.readers.read_any` reads (our corpus files, a folder of official SHD/SSC
files, a WAV folder through our front-end) that way, offline; :func:`as_tonic` wraps one of our
transforms (:mod:`tessera.trainer.data.transforms`) so it takes and returns tonic events and can sit
in ``tonic.transforms.Compose`` next to tonic's own (``ToFrame`` bins like our ``Bin``, but
from the first event rather than from 0).
Needs the ``tonic`` package (the ``interop`` or ``dev`` extra).
"""

from __future__ import annotations

import numpy as np

from ...runtime.errors import InputError

__all__ = ["EVENT_DTYPE", "to_events", "from_events", "TesseraSpikes", "as_tonic"]

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)])


def to_events(times: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(seconds, channels) -> tonic events (microseconds, sorted by time)."""
    ev = np.zeros(np.size(times), EVENT_DTYPE)
    ev["t"] = np.round(np.asarray(times, np.float64) * 1e6).astype(np.int64)
    ev["x"] = np.asarray(units, np.int64)
    ev["p"] = 1
    return ev[np.argsort(ev["t"], kind="stable")]


def from_events(events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tonic events -> (seconds, channels)."""
    return events["t"].astype(np.float64) * 1e-6, events["x"].astype(np.int64)


def _tonic():
    try:
        import tonic
    except ImportError:
        raise InputError("tonic interop needs the tonic package: pip install -e '.[interop]'") \
            from None
    return tonic


def TesseraSpikes(path: str, split: str | None = None, transform=None, target_transform=None):
    """A tonic dataset over ``path`` (see :func:`~tessera.trainer.data.readers.read_any`), optionally
    one ``split`` ("train", "val" or "test", as the data records it). Items are
    ``(events, label)``; ``classes`` are the label names, ``sensor_size`` (channels, 1, 1)."""
    tonic = _tonic()
    from ..data.readers import read_any

    data = read_any(path)
    names = {"train": 0, "val": 1, "test": 2}
    if split is not None and split not in names:
        raise InputError(f"split must be train, val or test, got {split!r}")
    index = np.arange(len(data.labels)) if split is None else \
        np.flatnonzero(data.split == names[split])

    class _Dataset(tonic.Dataset):
        sensor_size = (data.channels, 1, 1)
        dtype = EVENT_DTYPE
        ordering = "txp"
        classes = list(data.label_names)

        def __init__(self):
            super().__init__(save_to=".", transform=transform,
                             target_transform=target_transform)
            self.data, self.index = data, index

        def __len__(self) -> int:
            return len(self.index)

        def __getitem__(self, i: int):
            k = int(self.index[i])
            events = to_events(*self.data.sample(k))
            target = int(self.data.labels[k])
            if self.transform is not None:
                events = self.transform(events)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return events, target

        def _check_exists(self) -> bool:
            return True

    return _Dataset()


def as_tonic(transform, rng: np.random.Generator | None = None):
    """One of our transforms as a callable on tonic events (for ``tonic.transforms.Compose``).
    Random transforms draw from ``rng`` (default: seeded 0)."""
    rng = rng or np.random.default_rng(0)

    def apply(events: np.ndarray):
        sample = from_events(events)
        try:
            out = transform(sample, rng)
        except TypeError:
            out = transform(sample)
        if isinstance(out, tuple) and len(out) == 2:
            return to_events(*out)
        return out                              # e.g. Bin: a dense array, the pipeline's end
    return apply
