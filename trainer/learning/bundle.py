"""The model bundle: one versioned file for a trained model (``model.tsb``).

A bundle is a zip archive (stored, not compressed) of

* ``bundle.json``: ``format`` (``tessera-model/2``), the training ``config`` and the ``core``'s
  config (maps), the ``iteration``, the front-end's ``level_eq`` (or null), the open-set
  ``calibration`` (the threshold, the silence floor and the confidence's logistic, or null:
  ``tessera calibrate`` writes a new bundle with it), ``extra`` (the run's summary) and
  ``arrays``: for every array its name, dtype and shape;
* one ``NAME.npy`` per array (``params/w_in``, ``masks/w_rec``, ``log_lr/w_out``...), in NumPy's
  own format, read with ``allow_pickle=False``.

Nothing in it is unpickled, and nothing is found beside it by folder: what ``tessera export``
puts in the chip's file comes from the bundle alone. Every member is checked against the listing
(name, dtype, shape, size) before an array is read, so a hostile bundle is refused by name
without allocating what it declares. Writes go to a temporary file and replace atomically.
Reading needs numpy only; :func:`state_of` gives the trainer's tensors.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from ...runtime.errors import InputError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_SUFFIX", "is_bundle", "write_bundle", "read_bundle",
           "bundle_bytes"]

BUNDLE_FORMAT = "tessera-model/2"
BUNDLE_SUFFIX = ".tsb"
#: what a bundle may hold: arrays, values per array, bytes in all, and its listing's size
MAX_ARRAYS = 256
MAX_VALUES = 1 << 26
MAX_BYTES = 1 << 30
MAX_LISTING = 16 << 20
_DTYPES = {"<f4", "<f8", "<i8", "<i4", "|b1"}
_KEYS = ("config", "core", "iteration", "level_eq", "calibration", "extra", "arrays")


def is_bundle(path: str) -> bool:
    """Whether ``path`` is read as a bundle: its name ends in ``.tsb``, or it is a zip archive
    holding ``bundle.json`` (a torch checkpoint is a zip archive too, without it)."""
    if str(path).endswith(BUNDLE_SUFFIX):
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return "bundle.json" in z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def bundle_bytes(doc: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The bundle of ``doc`` (``config``, ``core``, ``iteration``, ``level_eq``,
    ``calibration``, ``extra``) and ``arrays`` (name -> array)."""
    listing = {}
    arrays = {name: np.array(a, order="C") for name, a in arrays.items()}   # 0-d stays 0-d
    for name, a in arrays.items():
        if a.dtype.str not in _DTYPES:
            raise InputError(f"bundle: array {name!r} of dtype {a.dtype} (float32/64, int32/64 "
                             f"or bool only)")
        listing[name] = dict(dtype=a.dtype.str, shape=list(a.shape))
    body = dict(format=BUNDLE_FORMAT, **{k: doc.get(k) for k in _KEYS if k != "arrays"},
                arrays=listing)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("bundle.json", json.dumps(body, indent=1, sort_keys=True))
        for name, a in arrays.items():
            npy = io.BytesIO()
            np.save(npy, a, allow_pickle=False)
            z.writestr(f"{name}.npy", npy.getvalue())
    return buf.getvalue()


def write_bundle(path: str, doc: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write the bundle atomically; returns its size in bytes."""
    from ...runtime.atomic import write_atomic

    blob = bundle_bytes(doc, arrays)
    read_bundle(blob, path)                    # what is written must read back
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    write_atomic(path, blob)
    return len(blob)


def _listing(z: zipfile.ZipFile, source: str) -> dict:
    try:
        info = z.getinfo("bundle.json")
    except KeyError:
        raise InputError("not a tessera model bundle (no bundle.json in the archive)",
                         source=source) from None
    if info.file_size > MAX_LISTING:
        raise InputError(f"bundle: bundle.json of {info.file_size} bytes (at most "
                         f"{MAX_LISTING})", source=source)
    try:
        doc = json.loads(z.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"bundle: bundle.json is not JSON ({exc})", source=source) from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"bundle: format {str(got)[:40]!r}, this tessera reads "
                         f"{BUNDLE_FORMAT!r}", source=source)
    for key, kind in (("config", dict), ("core", dict), ("iteration", int), ("extra", dict),
                      ("arrays", dict)):
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise InputError(f"bundle: {key} is not a {kind.__name__}", source=source)
    for key in ("level_eq", "calibration"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise InputError(f"bundle: {key} is neither a map nor null", source=source)
    return doc


def _checked_shape(name: str, spec, source: str) -> tuple[tuple[int, ...], str]:
    if not (isinstance(spec, dict) and spec.get("dtype") in _DTYPES
            and isinstance(spec.get("shape"), list) and len(spec["shape"]) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_VALUES
                    for n in spec["shape"])):
        raise InputError(f"bundle: array {name!r} is not listed with a dtype of "
                         f"{sorted(_DTYPES)} and a shape", source=source)
    shape = tuple(spec["shape"])
    if int(np.prod(shape, dtype=object)) > MAX_VALUES:
        raise InputError(f"bundle: array {name!r} of shape {shape} (at most {MAX_VALUES} "
                         f"values)", source=source)
    return shape, spec["dtype"]


def read_bundle(src, source: str = "") -> tuple[dict, dict[str, np.ndarray]]:
    """(listing, arrays) of a bundle (a path or its bytes); a named :class:`InputError` for
    anything that is not one."""
    raw = isinstance(src, (bytes, bytearray))
    source = source or ("<bundle>" if raw else os.fspath(src))
    try:
        z = zipfile.ZipFile(io.BytesIO(src) if raw else os.fspath(src))
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"not a readable tessera model bundle ({type(exc).__name__}: "
                         f"{str(exc)[:120]})", source=source) from None
    with z:
        doc = _listing(z, source)
        names = doc["arrays"]
        if len(names) > MAX_ARRAYS:
            raise InputError(f"bundle: {len(names)} arrays (at most {MAX_ARRAYS})", source=source)
        members = {i.filename: i for i in z.infolist()}
        expected = {f"{n}.npy" for n in names} | {"bundle.json"}
        if set(members) != expected:
            odd = sorted(set(members) ^ expected)[:3]
            raise InputError(f"bundle: members and listing differ ({odd})", source=source)
        arrays, total = {}, 0
        for name, spec in names.items():
            shape, dtype = _checked_shape(name, spec, source)
            need = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            total += need
            info = members[f"{name}.npy"]
            if total > MAX_BYTES or info.file_size > need + 4096:
                raise InputError(f"bundle: array {name!r} holds {info.file_size} bytes for "
                                 f"{need} listed ({total} in all; at most {MAX_BYTES})",
                                 source=source)
            try:
                with z.open(info) as fh:
                    a = np.load(io.BytesIO(fh.read()), allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InputError(f"bundle: array {name!r} unreadable ({type(exc).__name__}: "
                                 f"{str(exc)[:120]})", source=source) from None
            if a.shape != shape or a.dtype.str != dtype:
                raise InputError(f"bundle: array {name!r} is {a.dtype.str} {a.shape}, listed "
                                 f"{dtype} {shape}", source=source)
            arrays[name] = a
    return doc, arrays
