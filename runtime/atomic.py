"""Files written so that a crash at any point leaves either the old file or the new one."""

from __future__ import annotations

import os

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, blob: bytes, tmp: str | None = None,
                 before_rename=None) -> int:
    """Write ``blob`` to a temporary file (``tmp``, default ``PATH.PID.tmp``), fsync it, rename
    it over ``path`` and fsync the folder; a failed write leaves no temporary file behind.
    ``before_rename()`` runs between the write and the rename (fault injection). Returns the
    bytes written."""
    path = os.fspath(path)
    tmp = tmp or f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:                                          # the rename itself survives a power cut
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return len(blob)
