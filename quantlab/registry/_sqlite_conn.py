"""One SQLite connection per thread and per process, in WAL mode.

Many processes share QuantLab's SQLite files: notebook kernels, workers, the Jupyter server.
SQLite handles that well in WAL mode (readers never block the writer) as long as every
process and every thread has a connection of its own and waits for locks instead of failing
at once. A connection must also never cross a ``fork()``: SQLite's locks are per process, so
a child that used its parent's connection could corrupt the file. :class:`ConnectionPerThread`
therefore keys its connections by thread *and* process id and opens a fresh one in a child.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# How long a writer waits for another process's write lock before SQLite gives up. Writes are
# tiny (one run row, one event), so a wait this long only happens when a process hangs.
BUSY_TIMEOUT_MS = 30_000


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; writes that must be atomic use write_transaction().
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=True,
        )
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
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None
