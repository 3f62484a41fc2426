"""Durability on disk, shared by every writer (the EOD writer, HDB housekeeping, log compression)."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a directory's entries (a rename into it), to disk by name: fsync reaches
    the inode from any descriptor, a read-only one included."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
