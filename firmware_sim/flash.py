"""The simulated board's flash image: model file plus enrolled readout, written atomically.

Image layout: magic ``TSFL``, uint32 payload length, uint32 CRC-32 of the payload, then a msgpack
map ``{model: bin, levels: packed readout levels, classes: [name or nil], params: map,
generation: int}``. :func:`save` writes a temporary file, fsyncs it, renames it over the image
and fsyncs the folder: a crash at any point leaves either the old or the new image.
:func:`load` checks everything and returns ``None`` for a missing image; a corrupt one raises.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib

import msgpack

from ..runtime.atomic import write_atomic
from ..runtime.errors import InputError

__all__ = ["save", "load", "MAX_IMAGE"]

MAGIC = b"TSFL"
HEAD = struct.Struct("<4sII")
#: the largest image a board reads: its model (MODEL_FORMAT.md's limits keep a valid file far
#: below this) and its words; anything larger is refused without being read
MAX_IMAGE = 16 << 20


def save(path: str, image: dict, crash_after_temp: bool = False) -> int:
    payload = msgpack.packb(image, use_bin_type=True)
    blob = HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
    # fault injection: die between the write and the rename
    crash = (lambda: os._exit(86)) if crash_after_temp else None
    return write_atomic(path, blob, tmp=f"{path}.tmp", before_rename=crash)


def load(path: str) -> dict | None:
    """The image at ``path``, None when there is none; InputError (naming what is wrong) for
    anything that is not a whole image of this format."""
    if not os.path.exists(path):
        return None
    if os.path.isdir(path):
        raise InputError("the flash image is a folder (give a file name)", source=path)
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InputError("the flash image is not a regular file (a device, pipe or "
                                 "socket is never read as one)", source=path)
            blob = fh.read(MAX_IMAGE + 1)
    except OSError as exc:
        raise InputError(f"cannot read the flash image ({exc.strerror})", source=path) from None
    if len(blob) > MAX_IMAGE:
        raise InputError(f"flash image larger than any valid one ({MAX_IMAGE} bytes at most)",
                         source=path)
    if len(blob) < HEAD.size:
        raise InputError("flash image too short", source=path)
    magic, length, crc = HEAD.unpack_from(blob)
    payload = blob[HEAD.size:]
    if magic != MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
        raise InputError("flash image corrupt (magic, length or CRC)", source=path)
    try:
        image = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:                      # noqa: BLE001 (msgpack raises many kinds)
        raise InputError(f"flash image payload does not decode ({type(exc).__name__})",
                         source=path) from None
    if not isinstance(image, dict) or not isinstance(image.get("model"), bytes):
        raise InputError("flash image has no model", source=path)
    return image
