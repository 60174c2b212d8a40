"""The ``.tsr`` model file: one versioned, self-describing msgpack document with a CRC.

MODEL_FORMAT.md (at the repository root) is the specification; this module is its reference
reader and writer. Layout::

    offset  size  field
    0       4     magic  b"TSRM"
    4       2     format version, little-endian uint16 (this module writes 4, reads 2 to 4)
    6       2     flags, uint16, 0
    8       4     payload length in bytes, uint32
    12      4     CRC-32 (zlib polynomial) of the payload, uint32
    16      n     payload: one msgpack map

Arrays inside the payload are maps ``{"shape": [...], "bits": b, "signed": bool, "data": bytes}``
holding integers packed at ``b`` bits each (two's complement when signed, little-endian bit
order within bytes); since version 3 an array may be sparse: ``mask`` (one bit per value, set
where it is not zero) and ``data`` holding only those values; since version 4 ``deflate: true``
says that ``data`` and ``mask`` are zlib streams of those bytes. Reading never unpickles
anything: msgpack with ``raw=False``,
``strict_map_key=True`` and size limits, and every field is checked against the geometry.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

import msgpack
import numpy as np

from .atomic import write_atomic
from .errors import InputError

__all__ = ["MAGIC", "VERSION", "pack_ints", "unpack_ints", "ModelFile", "write_model", "read_model",
           "encode_model", "decode_model"]

MAGIC = b"TSRM"
VERSION = 4                     # written; 2 (every array dense) and 3 (no deflate) are read too
READS = (2, 3, 4)
HEADER = struct.Struct("<4sHHII")
MAX_BYTES = 64 << 20            # refuse payloads above 64 MiB before reading them
MAX_INFLATED = 16 << 20         # a deflated stream may hold at most 16 MiB (4096 x 4096 at 8 bits)


def _bits_of(v: np.ndarray, bits: int) -> bytes:
    u = (v & ((1 << bits) - 1)).astype(np.uint64)
    bitplanes = ((u[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bitplanes.reshape(-1), bitorder="little").tobytes()


def pack_ints(a: np.ndarray, bits: int, signed: bool = True, sparse: bool | None = None,
              deflate: bool | None = None) -> dict:
    """Pack an integer array at ``bits`` bits per value (1..32). ``sparse``: store a bitmap of
    the non-zero entries (``mask``) and only those values (format version 3); None: whichever
    of the two is smaller; False: dense, as format version 2 must. ``deflate``: store ``data``
    and ``mask`` as zlib streams (format version 4); None: when that is smaller."""
    a = np.asarray(a)
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be 1..32, got {bits}")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    v = a.astype(np.int64).reshape(-1)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"values outside {bits}-bit {'signed' if signed else 'unsigned'} range")
    out = {"shape": list(a.shape), "bits": bits, "signed": signed}
    nz = v != 0
    if sparse or (sparse is None and (v.size + 7) // 8 + (int(nz.sum()) * bits + 7) // 8
                  < (v.size * bits + 7) // 8):
        out["mask"] = np.packbits(nz, bitorder="little").tobytes()
        v = v[nz]
    out["data"] = _bits_of(v, bits)
    if deflate is not False:
        packed = {k: zlib.compress(out[k], 9) for k in ("data", "mask") if k in out}
        if deflate or sum(map(len, packed.values())) + 9 < sum(len(out[k]) for k in packed):
            out.update(packed, deflate=True)
    return out


def _inflate(blob: bytes, size: int, name: str, what: str) -> bytes:
    """The ``size`` bytes a zlib stream holds; an error naming the field for anything else
    (a damaged stream, more or fewer bytes, bytes after its end): never more than ``size`` + 1
    bytes are produced, whatever the stream claims."""
    if size > MAX_INFLATED:
        raise InputError(f"model field {name!r}: its deflated {what} would hold {size} bytes "
                         f"(at most {MAX_INFLATED})")
    z = zlib.decompressobj()
    try:
        out = z.decompress(blob, size + 1)
    except zlib.error as exc:
        raise InputError(f"model field {name!r}: its {what} is not a valid deflate stream "
                         f"({exc})") from None
    if len(out) != size or not z.eof or z.unused_data or z.unconsumed_tail:
        raise InputError(f"model field {name!r}: its deflated {what} does not hold exactly "
                         f"{size} bytes")
    return out


def unpack_ints(d, name: str, expect: tuple | None = None) -> np.ndarray:
    """Inverse of :func:`pack_ints`, with the checks a file from elsewhere needs; ``expect``:
    the shape the reader's own dimensions need, checked on the declared shape before anything
    is inflated or allocated."""
    if expect is not None and isinstance(d, dict) and d.get("shape") != list(expect):
        raise InputError(f"model field {name} declares shape {str(d.get('shape'))[:40]}, the "
                         f"model's dimensions need {list(expect)}")
    if not isinstance(d, dict) or set(d) - {"mask", "deflate"} != {"shape", "bits", "signed",
                                                                    "data"}:
        raise InputError(f"model field {name!r}: not a packed array")
    shape, bits, signed, data = d["shape"], d["bits"], d["signed"], d["data"]
    deflated = d.get("deflate", False)
    if not isinstance(deflated, bool):
        raise InputError(f"model field {name!r}: deflate must be true or false")
    if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                and s >= 0 for s in shape)
            or not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32
            or not isinstance(signed, bool) or not isinstance(data, bytes)
            or not isinstance(d.get("mask", b""), bytes)):
        raise InputError(f"model field {name!r}: bad array header")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n > MAX_BYTES * 8:
        raise InputError(f"model field {name!r}: shape {shape} is too large")
    stored, where = n, None
    if "mask" in d:
        mask = _inflate(d["mask"], (n + 7) // 8, name, "mask") if deflated else d["mask"]
        if len(mask) != (n + 7) // 8:
            raise InputError(f"model field {name!r}: a mask of {len(mask)} bytes for "
                             f"{n} values (needs {(n + 7) // 8})")
        flags = np.unpackbits(np.frombuffer(mask, np.uint8), bitorder="little")
        if flags[n:].any():
            raise InputError(f"model field {name!r}: mask bits set beyond its {n} values")
        where = flags[:n].astype(bool)
        stored = int(where.sum())
    if deflated:
        data = _inflate(data, (stored * bits + 7) // 8, name, "data")
    if len(data) != (stored * bits + 7) // 8:
        raise InputError(f"model field {name!r}: {len(data)} bytes of data for "
                         f"{stored} {'stored ' if where is not None else ''}values of shape "
                         f"{shape} at {bits} bits")
    planes = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: stored * bits]
    # each value's bytes, least significant first, widened to 4 bytes: no (stored, bits) int64
    by = np.packbits(planes.reshape(stored, bits), axis=1, bitorder="little")
    word = np.zeros((stored, 4), np.uint8)
    word[:, : by.shape[1]] = by
    u = word.view("<u4").reshape(stored).astype(np.int64)
    if signed:
        u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    if where is not None:
        full = np.zeros(n, np.int64)
        full[where] = u
        u = full
    return u.reshape(shape)


@dataclass
class ModelFile:
    """The decoded contents of a ``.tsr`` file (see MODEL_FORMAT.md for every field)."""

    meta: dict
    frontend: dict                 # spec, channel list, fixed-point poles and residues
    core: dict                     # geometry, constants, integer weights and shifts
    readout: dict                  # features, weight bits, enroll rule
    labels: list[str] = field(default_factory=list)


_SECTIONS = ("meta", "frontend", "core", "readout", "labels")


def encode_model(m: ModelFile) -> bytes:
    payload = msgpack.packb({"format": "tessera-model", **{k: getattr(m, k) for k in _SECTIONS}},
                            use_bin_type=True)
    return HEADER.pack(MAGIC, VERSION, 0, len(payload), zlib.crc32(payload)) + payload


def write_model(path: str | os.PathLike, m: ModelFile) -> int:
    """Write atomically (:func:`~tessera.runtime.atomic.write_atomic`); returns the file size in
    bytes."""
    blob = encode_model(m)
    decode_model(blob, str(path))                  # never write what we could not read back
    return write_atomic(path, blob)


def decode_model(blob: bytes, source: str = "<bytes>") -> ModelFile:
    if len(blob) < HEADER.size:
        raise InputError(f"too short for a tessera model ({len(blob)} bytes)", source=source)
    magic, version, flags, length, crc = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise InputError(f"not a tessera model file (magic {magic!r}, expected {MAGIC!r})",
                         source=source)
    if version not in READS:
        raise InputError(f"model format version {version} is not supported (this reader: "
                         f"{', '.join(map(str, READS))}; re-export the model with tessera "
                         f"export)", source=source)
    if flags != 0:
        raise InputError(f"model header flags {flags:#06x}: this reader knows none (0 expected; "
                         f"a newer exporter's file?)", source=source)
    payload = blob[HEADER.size:]
    if len(payload) != length:
        raise InputError(f"truncated or padded model: header says {length} payload bytes, file "
                         f"has {len(payload)}", source=source)
    if zlib.crc32(payload) != crc:
        raise InputError("model file CRC mismatch (corrupted)", source=source)
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=MAX_BYTES,
                              max_str_len=1 << 20, max_array_len=1 << 20, max_map_len=1 << 16)
    except Exception as exc:                                  # noqa: BLE001 (msgpack raises many)
        raise InputError(f"model payload is not valid msgpack ({type(exc).__name__})",
                         source=source) from None
    if not isinstance(doc, dict) or doc.get("format") != "tessera-model":
        raise InputError("model payload is not a tessera-model map", source=source)
    missing = [k for k in _SECTIONS if k not in doc]
    if missing:
        raise InputError(f"model file lacks section(s) {missing}", source=source)
    for k in ("meta", "frontend", "core", "readout"):
        if not isinstance(doc[k], dict):
            raise InputError(f"model section {k!r} is not a map", source=source)
    if not isinstance(doc["labels"], list) or not all(isinstance(x, str) for x in doc["labels"]):
        raise InputError("model field 'labels' must be a list of strings", source=source)
    return ModelFile(**{k: doc[k] for k in _SECTIONS})


def read_model(path: str | os.PathLike) -> ModelFile:
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES + HEADER.size:
            raise InputError(f"file of {size} bytes is too large for a model", source=path)
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise InputError("no such model file", source=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a model file", source=path) from None
    return decode_model(blob, path)
