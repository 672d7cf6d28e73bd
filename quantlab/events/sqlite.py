"""Embedded event stream: a table in ``<home>/events.sqlite`` (WAL), followed by ``seq``.

``seq`` is SQLite's AUTOINCREMENT rowid: strictly increasing, never reused, shared by all runs.
:meth:`SQLiteEventStream.wait` polls with an adaptive sleep (5 ms, doubling to 50 ms), so a
follower sees a new event within about 50 ms while an idle follower costs ~20 cheap indexed
queries a second.

Bounds mirror the Redis backend, where each run has its own stream next to the all-runs
stream: every ``trim_every`` events, the publishing run is cut to its newest ``max_per_run``
events, and the all-runs view to its newest ``max_total`` (older events leave that view,
flag ``in_all = 0``, but stay readable per run); events that left the all-runs view are deleted
``run_ttl`` seconds after they were published, as Redis expires an idle run's stream.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from quantlab.events.base import Event, EventStream, check_read_args
from quantlab.registry._sqlite_conn import ConnectionPerThread

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "run_id TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL, "
    "in_all INTEGER NOT NULL DEFAULT 1)",
    "CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq)",
    "CREATE INDEX IF NOT EXISTS events_all ON events (seq) WHERE in_all = 1",
    "CREATE INDEX IF NOT EXISTS events_expiring ON events (ts) WHERE in_all = 0",
)

MIN_POLL_SECONDS = 0.005
MAX_POLL_SECONDS = 0.05


class SQLiteEventStream(EventStream):
    def __init__(self, path: Path, *, max_per_run: int = 10_000, max_total: int = 100_000,
                 run_ttl: float = 7 * 24 * 3600, trim_every: int = 100):
        self.path = Path(path)
        self.location = f"sqlite:///{self.path}"
        self.max_per_run = max_per_run
        self.max_total = max_total
        self.run_ttl = run_ttl
        self.trim_every = max(1, trim_every)
        self._db = ConnectionPerThread(self.path)
        conn = self._db.get()
        for statement in _SCHEMA:
            conn.execute(statement)

    def _append(self, run_id: str, type: str, payload: str) -> Event:
        ts = time.time()
        cur = self._db.get().execute(
            "INSERT INTO events (run_id, type, ts, data) VALUES (?, ?, ?, ?)",
            (run_id, type, ts, payload),
        )
        seq = int(cur.lastrowid or 0)
        if seq % self.trim_every == 0:
            self._trim(run_id)
        return Event(seq, run_id, type, ts, json.loads(payload))

    def _trim(self, run_id: str) -> None:
        conn = self._db.get()
        row = conn.execute("SELECT seq FROM events WHERE run_id = ? ORDER BY seq DESC "
                           "LIMIT 1 OFFSET ?", (run_id, self.max_per_run)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM events WHERE run_id = ? AND seq <= ?", (run_id, row[0]))
        row = conn.execute("SELECT seq FROM events WHERE in_all = 1 ORDER BY seq DESC "
                           "LIMIT 1 OFFSET ?", (self.max_total,)).fetchone()
        if row is not None:
            conn.execute("UPDATE events SET in_all = 0 WHERE in_all = 1 AND seq <= ?", (row[0],))
        conn.execute("DELETE FROM events WHERE in_all = 0 AND ts < ?",
                     (time.time() - self.run_ttl,))

    def read(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[Event]:
        check_read_args(run_id, after, limit)
        if run_id is None:
            rows = self._db.get().execute(
                "SELECT seq, run_id, type, ts, data FROM events WHERE in_all = 1 AND seq > ? "
                "ORDER BY seq "
                "LIMIT ?", (after, limit))
        else:
            rows = self._db.get().execute(
                "SELECT seq, run_id, type, ts, data FROM events WHERE run_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?", (run_id, after, limit))
        return [Event(seq, rid, typ, ts, json.loads(data)) for seq, rid, typ, ts, data in rows]

    def wait(self, run_id: str | None = None, after: int = 0, timeout: float = 1.0,
             limit: int = 1000) -> list[Event]:
        deadline = time.monotonic() + max(0.0, timeout)
        pause = MIN_POLL_SECONDS
        while True:
            events = self.read(run_id, after, limit)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_POLL_SECONDS)

    def last_seq(self, run_id: str | None = None) -> int:
        if run_id is None:
            row = self._db.get().execute("SELECT MAX(seq) FROM events WHERE in_all = 1").fetchone()
        else:
            row = self._db.get().execute("SELECT MAX(seq) FROM events WHERE run_id = ?",
                                         (run_id,)).fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._db.close()
