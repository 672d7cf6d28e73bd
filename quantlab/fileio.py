"""Atomic file writes, shared by the data store, the rate limiter and the registry's blobs.

Kept free of heavy imports: only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode() -> int:
    # mkstemp creates 0600 files; written files should be as readable as any file the user makes
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write_bytes(path: Path, writer: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temporary file in its folder: fsync, then ``os.replace``.

    ``writer(fileobj)`` writes the content. Readers see the old or the new file, never half of
    one. A failure leaves the old file untouched and no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
