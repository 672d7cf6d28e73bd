"""Atomic file writes, shared by the data store, the rate limiter and the registry's blobs.

Kept free of heavy imports: only the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from quantlab.errors import DiskFull, HomeNotWritable, StoreUnavailable


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


# -- an OSError under QUANTLAB_HOME, as the QuantLab error that names the path and the fix ---------

_READ_ONLY = frozenset({errno.EROFS})
_REFUSED = frozenset({errno.EACCES, errno.EPERM})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
WRITABLE_FIX = ("make QUANTLAB_HOME writable by the user QuantLab runs as (remount it read-write, "
                "or chmod/chown it), or point QUANTLAB_HOME at a writable folder")
FULL_FIX = "free space on that disk, or point QUANTLAB_HOME at a bigger disk"


def store_error(exc: OSError, path: Path | str, doing: str) -> StoreUnavailable:
    """The QuantLab error for ``exc``, met while ``doing`` (``"write the run registry"``) on
    ``path``: ``DiskFull``, ``HomeNotWritable`` (read-only or refused), else ``StoreUnavailable``."""
    shown = str(path)
    detail = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return DiskFull(f"cannot {doing}: the disk holding {shown} is full ({detail}); "
                        f"{FULL_FIX}", path=shown, fix=FULL_FIX, reason="disk full")
    if exc.errno in _READ_ONLY or exc.errno in _REFUSED:
        reason = "read-only" if exc.errno in _READ_ONLY else "permission"
        why = "is on a read-only file system" if reason == "read-only" else \
            "may not be written by this user"
        return HomeNotWritable(f"cannot {doing}: {shown} {why} ({detail}); {WRITABLE_FIX}",
                               path=shown, fix=WRITABLE_FIX, reason=reason)
    fix = "check the disk and the folder (its system log may say more), then try again"
    return StoreUnavailable(f"cannot {doing}: {shown} failed ({detail}); {fix}", path=shown,
                            fix=fix)


@contextlib.contextmanager
def home_errors(path: Path | str, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` met inside into :func:`store_error`'s QuantLab error."""
    try:
        yield
    except OSError as exc:
        raise store_error(exc, exc.filename or path, doing) from exc


def check_writable(folder: Path) -> None:
    """Create, write and remove a small file in ``folder`` (made if missing): a read-only,
    refused or full home fails here, as ``HomeNotWritable``/``DiskFull``, before anything is
    recorded. (A probe, not ``os.access``: root passes every permission check, and neither sees
    a full disk.)"""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe.", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name)
    except OSError as exc:  # named by the folder: the probe's own name means nothing to a user
        raise store_error(exc, folder, "write in QUANTLAB_HOME") from exc
