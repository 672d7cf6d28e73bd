"""One SQLite connection per thread and per process, in WAL mode.

Many processes share QuantLab's SQLite files: notebook kernels, workers, the Jupyter server.
SQLite handles that well in WAL mode (readers never block the writer) as long as every
process and every thread has a connection of its own and waits for locks instead of failing
at once. A connection must also never cross a ``fork()``: SQLite's locks are per process, so
a child that used its parent's connection could corrupt the file. :class:`ConnectionPerThread`
therefore keys its connections by thread *and* process id and opens a fresh one in a child.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quantlab.errors import StoreUnavailable
from quantlab.fileio import store_error

# How long a writer waits for another process's write lock before SQLite gives up. Writes are
# tiny (one run row, one event), so a wait this long only happens when a process hangs.
BUSY_TIMEOUT_MS = 30_000

# SQLite's result codes that say the environment failed (not the SQL), as the errno that
# quantlab.fileio.store_error turns into the QuantLab error naming the file and the fix.
_ENVIRONMENT_ERRNO = {
    "SQLITE_READONLY": errno.EROFS, "SQLITE_CANTOPEN": errno.EACCES, "SQLITE_PERM": errno.EACCES,
    "SQLITE_FULL": errno.ENOSPC, "SQLITE_IOERR": errno.EIO, "SQLITE_BUSY": errno.EBUSY,
    "SQLITE_LOCKED": errno.EBUSY,
}


def environment_error(exc: sqlite3.Error, path: Path) -> StoreUnavailable | None:
    """The QuantLab error for a SQLite error that the environment caused (read-only or refused
    file, full disk, I/O error, a lock held too long) on database ``path``; None for the rest
    (a bug in the SQL is not the user's to fix)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    base = name.split("_")[:2]
    code = _ENVIRONMENT_ERRNO.get("_".join(base))
    if code is None:
        return None
    if code == errno.EBUSY:
        fix = (f"another process holds {path} locked for more than {BUSY_TIMEOUT_MS // 1000} s; "
               f"stop the process that hangs (a worker or kernel), then try again")
        return StoreUnavailable(f"cannot use {path}: {exc}; {fix}", path=str(path), fix=fix)
    return store_error(OSError(code, str(exc)), path, f"write {path.name} in QUANTLAB_HOME")


class MappedConnection(sqlite3.Connection):
    """A connection whose statements raise QuantLab's environment errors (``HomeNotWritable``,
    ``DiskFull``, ``StoreUnavailable``: the path and the fix) instead of a raw
    ``sqlite3.OperationalError``."""

    ql_path = Path()

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            found = environment_error(exc, self.ql_path)
            if found is None:
                raise
            raise found from exc

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            found = environment_error(exc, self.ql_path)
            if found is None:
                raise
            raise found from exc


class ConnectionPerThread:
    """Lazily opened connections to one database file, one per (process, thread)."""

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None] | None = None):
        self.path = Path(path)
        self._setup = setup
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # In a forked child the inherited connection is abandoned, never closed: closing
            # it could release locks that belong to the parent.
            conn = self._open()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        with contextlib.suppress(OSError):  # a refused folder: told by the connect below
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; writes that must be atomic use write_transaction().
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=True, factory=MappedConnection,
            )
        except sqlite3.OperationalError as exc:
            found = environment_error(exc, self.path)
            if found is None:
                raise
            raise found from exc
        conn.ql_path = self.path
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable against application crashes in WAL mode; only a power loss can
        # lose the last transactions, which is the right trade for a research tool.
        conn.execute("PRAGMA synchronous = NORMAL")
        if self._setup is not None:
            self._setup(conn)
        return conn

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock first, so a read-check-write
        sequence inside is atomic across processes (this is what compare-and-set relies on)."""
        conn = self.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            # SQLite already rolled back after some errors (a full disk): nothing to undo then
            with contextlib.suppress(sqlite3.Error, StoreUnavailable):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None
