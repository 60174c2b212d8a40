"""Spike data sets: the SHD layout (official SHD/SSC files and our corpus) and folders of WAVs.

All readers return a :class:`SpikeSet`: every utterance's spikes in one flat (CSR) layout, with
labels, speakers and the train/val/test split of each utterance.

Official SHD/SSC files are read from a local folder only (no download): put ``shd_train.h5`` and
``shd_test.h5`` (gunzipped) in a folder and call :func:`read_shd_folder`. tonic 1.7's
``tonic.datasets.SHD(save_to=ROOT, train=...)`` reads the same files from ``ROOT/SHD/`` without
downloading when the extracted ``shd_train.h5`` sits there next to a file named
``shd_train.h5.zip`` (tonic only checks that the archive exists; an empty file will do).

WAV folders (:func:`read_wav_folder`) go through the runtime's front-end, with an on-disk cache
keyed by the file's path, size and mtime and by the front-end spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from ...runtime.errors import InputError

__all__ = ["SpikeSet", "read_spike_h5", "read_shd_folder", "read_wav_folder", "read_any",
           "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ID = {name: i for i, name in enumerate(SPLIT_NAMES)} | {"valid": 1}


@dataclass
class SpikeSet:
    """Spike trains of many utterances: utterance i owns ``times/units[offsets[i]:offsets[i+1]]``.

    ``split`` is 0/1/2 for train/val/test and -1 where the source says nothing.
    """

    times: np.ndarray          # float32 seconds
    units: np.ndarray          # int32 channel index
    offsets: np.ndarray        # int64 (n + 1,)
    labels: np.ndarray         # int64 (n,)
    speakers: np.ndarray       # int64 (n,)
    split: np.ndarray          # int8 (n,)
    channels: int
    label_names: list[str]
    speaker_names: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.size)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.times[a:b], self.units[a:b]

    def spike_counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @staticmethod
    def from_steps(events: list[tuple[np.ndarray, np.ndarray]], step_seconds: float,
                   labels: np.ndarray, speakers: np.ndarray, split: np.ndarray, channels: int,
                   label_names: list[str], speaker_names: list[str], source: str = "",
                   meta: dict | None = None) -> SpikeSet:
        """Utterances given as (time step, channel) index pairs, such as ``np.nonzero`` of the
        front-end's spike raster, one pair per utterance."""
        times = [np.asarray(t).astype(np.float32) * np.float32(step_seconds) for t, _ in events]
        lens = [t.size for t in times]
        return SpikeSet(np.concatenate(times) if times else np.zeros(0, np.float32),
                        np.concatenate([np.asarray(u, np.int32) for _, u in events])
                        if events else np.zeros(0, np.int32),
                        np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                        np.asarray(labels, np.int64), np.asarray(speakers, np.int64),
                        np.asarray(split, np.int8), channels, list(label_names),
                        list(speaker_names), source, meta or {})

    def subset(self, idx: np.ndarray) -> SpikeSet:
        idx = np.asarray(idx, np.int64)
        lens = self.offsets[idx + 1] - self.offsets[idx]
        gather = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) \
            if idx.size else np.zeros(0, np.int64)
        return SpikeSet(self.times[gather], self.units[gather],
                        np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                        self.labels[idx], self.speakers[idx], self.split[idx], self.channels,
                        self.label_names, self.speaker_names, self.source, dict(self.meta))

    def summary(self) -> dict:
        """Classes, utterances and speakers per split, and spike statistics.

        Rates use each utterance's span, from 0 to its last spike.
        """
        counts = self.spike_counts()
        n = len(self)
        span = np.zeros(n)
        nonempty = counts > 0
        span[nonempty] = np.maximum.reduceat(self.times, self.offsets[:-1][nonempty]) \
            if nonempty.any() else 0.0
        splits = {}
        for name, sid in (("train", 0), ("val", 1), ("test", 2), ("unassigned", -1)):
            m = self.split == sid
            if m.any():
                splits[name] = dict(utterances=int(m.sum()),
                                    speakers=int(np.unique(self.speakers[m]).size),
                                    classes=int(np.unique(self.labels[m]).size))
        stats = {}
        ok = span > 0
        if ok.any():
            utt = np.repeat(np.arange(n), counts)
            per_ch = np.bincount(utt * self.channels + self.units, minlength=n * self.channels)
            ch_rate = per_ch.reshape(n, self.channels)[ok] / span[ok, None]
            stats = dict(spikes_per_utterance=round(float(counts.mean()), 1),
                         spikes_per_utterance_p5_p95=[int(np.percentile(counts, 5)),
                                                      int(np.percentile(counts, 95))],
                         span_s_mean=round(float(span[ok].mean()), 3),
                         rate_hz_per_channel_mean=round(float(ch_rate.mean()), 2),
                         rate_hz_per_channel_p99=round(float(np.percentile(ch_rate, 99)), 1),
                         active_channel_fraction=round(float((ch_rate > 0).mean()), 3))
        return dict(source=self.source, classes=len(self.label_names),
                    label_names=list(self.label_names), utterances=n,
                    speakers=int(np.unique(self.speakers).size), channels=self.channels,
                    splits=splits, **stats)

    @staticmethod
    def concat(parts: list[SpikeSet], source: str = "") -> SpikeSet:
        if not parts:
            raise InputError("no data to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.channels != first.channels:
                raise InputError(f"{p.source}: {p.channels} channels, {first.source} has "
                                 f"{first.channels}")
        names = max((p.label_names for p in parts), key=len)
        spk_names: list[str] = []
        speakers = []
        for p in parts:
            for n in p.speaker_names:
                if n not in spk_names:
                    spk_names.append(n)
            lut = np.array([spk_names.index(n) for n in p.speaker_names] or [0], np.int64)
            speakers.append(lut[p.speakers])
        lens = np.concatenate([p.spike_counts() for p in parts])
        return SpikeSet(
            np.concatenate([p.times for p in parts]), np.concatenate([p.units for p in parts]),
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            np.concatenate([p.labels for p in parts]), np.concatenate(speakers),
            np.concatenate([p.split for p in parts]), first.channels, list(names), spk_names,
            source or "+".join(p.source for p in parts))


def _decode(a) -> list[str]:
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in a]


def read_spike_h5(path: str | os.PathLike, split: str | None = None) -> SpikeSet:
    """Read an h5 file in the SHD layout (official SHD/SSC, or a tessera corpus).

    ``split`` ("train", "val", "test") labels every utterance of a file that records no split
    (the official files: shd_train.h5 is "train", shd_test.h5 is "test").
    """
    src = os.fspath(path)
    if not os.path.exists(src):
        raise InputError("no such file", source=src)
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - install problem
        raise InputError("reading h5 files needs h5py: pip install -e '.[data]'") from exc
    try:
        h5 = h5py.File(src, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", source=src) from None
    with h5:
        for key in ("spikes/times", "spikes/units", "labels"):
            if key not in h5:
                raise InputError(f"not in the SHD layout: missing dataset '{key}'", source=src)
        try:
            t_list = h5["spikes/times"][:]
            u_list = h5["spikes/units"][:]
            labels = np.asarray(h5["labels"][:], np.int64)
            n = labels.size
            speakers = np.asarray(h5["extra/speaker"][:], np.int64) if "extra/speaker" in h5 \
                else np.zeros(n, np.int64)
            keys = _decode(h5["extra/keys"][:]) if "extra/keys" in h5 else []
            g = h5.get("extra/tessera")
            if g is not None:
                file_split = np.asarray(g["split"][:], np.int8)
                spk_names = _decode(g["speaker_names"][:])
                channels = int(g.attrs["channels"])
                meta = dict(format=str(g.attrs.get("format", "")),
                            frontend=json.loads(g.attrs.get("frontend", "{}")),
                            config=json.loads(g.attrs.get("config", "{}")))
            else:
                file_split = None
                spk_names = []
                channels = 700
                meta = dict(format="shd")
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"corrupt or unreadable SHD-layout data ({exc})", source=src) from None
    if not (len(t_list) == len(u_list) == n == speakers.size):
        raise InputError(f"inconsistent lengths: {len(t_list)} times, {len(u_list)} units, "
                         f"{n} labels, {speakers.size} speakers", source=src)
    lens = np.array([np.size(t) for t in t_list], np.int64)
    if np.any(lens != np.array([np.size(u) for u in u_list], np.int64)):
        raise InputError("an utterance has different numbers of spike times and units", source=src)
    times = np.concatenate([np.asarray(t, np.float32) for t in t_list]) if n else np.zeros(0, np.float32)
    units = np.concatenate([np.asarray(u, np.int64) for u in u_list]) if n else np.zeros(0, np.int64)
    if times.size and (not np.all(np.isfinite(times)) or times.min() < 0):
        raise InputError("spike times must be finite and >= 0 seconds", source=src)
    if units.size and (units.min() < 0 or units.max() >= channels):
        raise InputError(f"spike units outside 0..{channels - 1}", source=src)
    if n and labels.min() < 0:
        raise InputError("negative labels", source=src)
    if file_split is None:
        if split is not None and split not in _SPLIT_ID:
            raise InputError(f"unknown split {split!r} (train, val or test)")
        file_split = np.full(n, _SPLIT_ID[split] if split else -1, np.int8)
    n_classes = max(len(keys), int(labels.max()) + 1 if n else 0)
    label_names = keys + [str(i) for i in range(len(keys), n_classes)]
    n_spk = int(speakers.max()) + 1 if n else 0
    spk_names = spk_names + [f"speaker{i}" for i in range(len(spk_names), n_spk)]
    return SpikeSet(times, units.astype(np.int32), np.concatenate([[0], np.cumsum(lens)]),
                    labels, speakers, file_split, channels, label_names, spk_names, src, meta)


def read_shd_folder(folder: str | os.PathLike, dataset: str = "shd") -> SpikeSet:
    """The official files of ``dataset`` ("shd" or "ssc") found in ``folder``, splits set by file."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError("no such folder", source=folder)
    parts = []
    for split in ("train", "valid", "test"):
        path = os.path.join(folder, f"{dataset}_{split}.h5")
        if os.path.exists(path):
            parts.append(read_spike_h5(path, split="val" if split == "valid" else split))
        elif os.path.exists(path + ".gz"):
            raise InputError(f"found {os.path.basename(path)}.gz: gunzip it first", source=folder)
    if not parts:
        raise InputError(f"no {dataset}_train.h5 / {dataset}_test.h5 in this folder", source=folder)
    return SpikeSet.concat(parts, source=folder)


_FSDD = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav$", re.IGNORECASE)


def wav_items(folder: str) -> list[tuple[str, str, str]]:
    """(path, label, speaker) for FSDD-style flat folders and label/xxx.wav folders."""
    items = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if os.path.isfile(full) and name.lower().endswith(".wav"):
            m = _FSDD.match(name)
            if not m:
                raise InputError("WAV name not of the form {label}_{speaker}_{i}.wav", source=full)
            items.append((full, m["label"], m["speaker"]))
        elif os.path.isdir(full) and not name.startswith((".", "_")):
            for f in sorted(os.listdir(full)):
                if f.lower().endswith(".wav"):
                    # Speech Commands: {speaker hash}_nohash_{i}.wav
                    items.append((os.path.join(full, f), name, f.split("_nohash_")[0].split("_")[0]))
    return items


def wav_index(items: list[tuple[str, str, str]]) -> tuple[list[str], list[str], np.ndarray,
                                                         np.ndarray]:
    """(label names, speaker names, label of each item, speaker of each item) for
    :func:`wav_items`; numeric labels sort as numbers ("2" before "10")."""
    label_names = sorted({lab for _, lab, _ in items},
                         key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    speaker_names = sorted({spk for _, _, spk in items})
    labels = np.array([label_names.index(lab) for _, lab, _ in items], np.int64)
    speakers = np.array([speaker_names.index(s) for _, _, s in items], np.int64)
    return label_names, speaker_names, labels, speakers


def heard_by_device(audio, speakers, spec, level_eq, seed: int = 0, show: bool = False
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(steps, units) of each utterance ``audio(i)`` (its int16 samples) heard as a
    device with the long-term level equalization ``level_eq`` hears them: each speaker's
    (``speakers[i]``) utterances in one shuffled order (``seed``) through one front-end whose
    running level starts at the reference and is kept from one utterance to the next."""
    from ...runtime.frontend import Cochlea, design

    tab = design(spec)._replace(eq=level_eq.check(spec.channels))
    order = np.random.default_rng(seed).permutation(len(speakers))
    try:
        from tqdm import tqdm
        order = tqdm(order, desc="encode (level eq)", unit="utt", disable=not show, leave=False)
    except ImportError:  # pragma: no cover
        pass
    fe: dict = {}
    events: list = [None] * len(speakers)
    for i in order:
        c = fe.setdefault(speakers[i], Cochlea(tables=tab))
        steps, u = np.nonzero(c.encode(audio(i)))
        events[i] = (steps.astype(np.int32), u.astype(np.uint16))
    return events


def _equalized_wavs(items, spec, level_eq, cache: str, show: bool, seed: int = 0) -> list:
    """:func:`heard_by_device` of a WAV folder's items, cached as one file per folder, order
    and equalizer."""
    stamp = "|".join(f"{os.path.abspath(p)}|{os.stat(p).st_size}|{os.stat(p).st_mtime_ns}"
                     for p, _, _ in items)
    key = hashlib.sha1(f"{stamp}|{seed}|{level_eq.key()}".encode()).hexdigest()
    cfile = os.path.join(cache, f"eq-{key}.npz")
    if os.path.exists(cfile):
        try:
            with np.load(cfile) as z:
                return [(z[f"s{i}"], z[f"u{i}"]) for i in range(len(items))]
        except (OSError, ValueError, KeyError):
            pass                                   # a damaged cache entry is recomputed
    from ...runtime.audio import load_audio

    events = heard_by_device(lambda i: load_audio(items[i][0]), [s for _, _, s in items], spec,
                             level_eq, seed, show)
    tmp = cfile + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, **{f"s{i}": s_ for i, (s_, _) in enumerate(events)},
             **{f"u{i}": u for i, (_, u) in enumerate(events)})
    os.replace(tmp, cfile)
    return events


def read_wav_folder(folder: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                    spec=None, progress: bool | None = None, level_eq=None) -> SpikeSet:
    """Encode a folder of labelled WAVs through the front-end, caching the spikes on disk.

    Layouts: FSDD style ``{label}_{speaker}_{i}.wav`` in one folder, or one sub-folder per label
    (``label/xxx.wav``, as Google Speech Commands; the speaker is the name before ``_nohash_``;
    the official ``validation_list.txt`` / ``testing_list.txt`` set the splits, see
    :func:`official_wav_split`).
    ``progress``: a bar on stderr; by default only when stderr is a terminal.
    ``level_eq``: a :class:`~tessera.runtime.leveleq.LevelEq` (a model's): hear the folder as
    a device with that equalizer would (:func:`_equalized_wavs`).
    """
    from ...runtime.audio import load_audio
    from ...runtime.frontend import Cochlea, FrontendSpec

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError("no such folder", source=folder)
    items = wav_items(folder)
    if not items:
        raise InputError("no WAV files found", source=folder)
    spec = spec or FrontendSpec()
    cache = os.path.join(os.fspath(cache_dir or default_cache_dir()), "wav-spikes", spec.digest())
    os.makedirs(cache, exist_ok=True)
    fe = None
    events = []
    show = sys.stderr.isatty() if progress is None else progress
    try:
        from tqdm import tqdm
        it = tqdm(items, desc="encode wavs", unit="file", disable=not show, leave=False)
    except ImportError:  # pragma: no cover
        it = items
    if level_eq is not None:
        events, it = _equalized_wavs(items, spec, level_eq, cache, show), ()
    for path, _, _ in it:
        st = os.stat(path)
        key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        cfile = os.path.join(cache, key + ".npz")
        steps = u = None
        if os.path.exists(cfile):
            try:
                with np.load(cfile) as z:
                    steps, u = z["steps"], z["units"]
            except (OSError, ValueError, KeyError):
                steps = None                       # a damaged cache entry is recomputed
        if steps is None:
            fe = fe or Cochlea(spec)
            spikes = fe.encode(load_audio(path))
            steps, u = np.nonzero(spikes)
            tmp = cfile + f".{os.getpid()}.tmp.npz"
            np.savez(tmp, steps=steps.astype(np.int32), units=u.astype(np.uint16))
            os.replace(tmp, cfile)
        events.append((steps, u))
    label_names, speaker_names, labels, speakers = wav_index(items)
    return SpikeSet.from_steps(events, spec.step_seconds, labels, speakers,
                               official_wav_split(folder, items), spec.channels, label_names,
                               speaker_names, folder, dict(format="wav-folder",
                                                           frontend=spec.to_dict(),
                                                           files=[p for p, _, _ in items]))


def official_wav_split(folder: str, items: list[tuple[str, str, str]]) -> np.ndarray:
    """The split of each item from a Speech Commands-style folder's official lists
    (``validation_list.txt`` and ``testing_list.txt``: one ``label/file.wav`` a line; every other
    file is train); -1 for every item when the folder has no lists (then episodes split by
    speaker)."""
    lists = {}
    for split, name in ((1, "validation_list.txt"), (2, "testing_list.txt")):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    lists.update({line.strip().replace("\\", "/"): split for line in f
                                  if line.strip()})
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the official split list ({exc})",
                                 source=path) from None
    if not lists:
        return np.full(len(items), -1, np.int8)
    rel = [os.path.relpath(p, folder).replace(os.sep, "/") for p, _, _ in items]
    unknown = sorted(set(lists) - set(rel))
    if unknown and len(unknown) == len(lists):
        raise InputError(f"none of the files the split lists name is in the folder (first: "
                         f"{unknown[0]})", source=folder)
    return np.array([lists.get(r, 0) for r in rel], np.int8)


def default_cache_dir() -> str:
    return os.environ.get("TESSERA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tessera")


def read_any(path: str | os.PathLike, level_eq=None, **wav_options) -> SpikeSet:
    """A file in the SHD layout, a folder of official SHD files, or a folder of WAVs
    (``wav_options`` go to :func:`read_wav_folder`; ``level_eq``, a model's level
    equalization, applies to WAVs only: spike files are as stored)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        names = os.listdir(path)
        for ds in ("shd", "ssc"):
            if any(n.startswith(f"{ds}_") and n.endswith((".h5", ".h5.gz")) for n in names):
                return read_shd_folder(path, ds)
        return read_wav_folder(path, level_eq=level_eq, **wav_options)
    return read_spike_h5(path)
