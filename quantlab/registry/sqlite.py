"""The embedded registry: one SQLite file (WAL mode) plus a folder of result blobs.

Layout (schema 2): ``runs`` holds one row per run, with the columns that searches filter and
sort on (status, strategy, user, queued_at, config_hash, name...) and the whole document as
JSON in ``doc``. Side tables ``run_symbols``, ``run_tags`` and ``run_metrics(run_id, name,
value)`` make symbol/tag/metric searches index lookups instead of JSON scans. Logs, checkpoints,
notifications, preferences and generic documents have tables of their own. Result blobs are
files under ``<home>/blobs`` written atomically (temporary file + ``os.replace``).

Schema 1 (QuantLab before the search indexes) was ``meta`` plus ``runs(id, doc)``;
:meth:`SQLiteRegistry.migrate` rebuilds it into schema 2 in one transaction.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from quantlab.errors import ConfigError, RunError
from quantlab.fileio import atomic_write_bytes, home_errors
from quantlab.registry._sqlite_conn import ConnectionPerThread
from quantlab.registry.base import Registry, run_not_found
from quantlab.registry.query import RunQuery, RunSort
from quantlab.registry.schema import (
    SCHEMA_VERSION,
    RunRecord,
    as_run_record,
    check_blob_key,
    check_collection,
    check_level,
    dumps,
    expected_statuses,
    new_notification,
    new_run_document,
    normalize_fields,
    to_json_document,
    with_id,
)

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    user TEXT,
    status TEXT NOT NULL,
    strategy TEXT,
    config_hash TEXT,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    progress REAL,
    priority INTEGER,
    attempts INTEGER,
    partial INTEGER NOT NULL DEFAULT 0,
    cached_from TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, queued_at);
CREATE INDEX IF NOT EXISTS runs_strategy ON runs (strategy, queued_at);
CREATE INDEX IF NOT EXISTS runs_user ON runs (user, queued_at);
CREATE INDEX IF NOT EXISTS runs_queued_at ON runs (queued_at);
CREATE INDEX IF NOT EXISTS runs_config_hash ON runs (config_hash, finished_at);
CREATE INDEX IF NOT EXISTS runs_name ON runs (name);
CREATE TABLE IF NOT EXISTS run_symbols (
    symbol TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (symbol, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_symbols_run ON run_symbols (run_id);
CREATE TABLE IF NOT EXISTS run_tags (
    tag TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (tag, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_tags_run ON run_tags (run_id);
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_metrics_value ON run_metrics (name, value);
CREATE TABLE IF NOT EXISTS metric_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, ts REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_run ON logs (run_id, ts, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY, state BLOB NOT NULL, meta TEXT NOT NULL, saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL NOT NULL,
    read INTEGER NOT NULL DEFAULT 0, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user, created_at);
CREATE TABLE IF NOT EXISTS preferences (user TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, id TEXT NOT NULL, saved_at REAL NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX IF NOT EXISTS documents_saved ON documents (collection, saved_at);
"""

_TRIALS_TABLE = """CREATE TABLE IF NOT EXISTS trials (
    grp TEXT NOT NULL, trial TEXT NOT NULL, sr REAL, recorded_at REAL NOT NULL,
    PRIMARY KEY (grp, trial)
) WITHOUT ROWID"""

_RUN_COLUMNS = (
    "id", "name", "user", "status", "strategy", "config_hash", "queued_at", "started_at",
    "finished_at", "heartbeat_at", "progress", "priority", "attempts", "partial", "cached_from",
)

_OPS_SQL = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "==": "=", "!=": "!="}


def _casefold(value: str | None) -> str | None:
    return None if value is None else value.casefold()


def _setup(conn: sqlite3.Connection) -> None:
    # SQLite's lower()/LIKE fold ASCII only; Python's casefold handles "Größe" and "ÉTÉ".
    conn.create_function("ql_casefold", 1, _casefold, deterministic=True)


def _row(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    values = [doc.get(col) for col in _RUN_COLUMNS]
    values[_RUN_COLUMNS.index("partial")] = 1 if doc.get("partial") else 0
    return (*values, dumps(doc))


class SQLiteRegistry(Registry):
    """Registry in ``path`` (a SQLite file) with blobs under ``blob_dir``."""

    def __init__(self, path: Path, blob_dir: Path | None = None, *, auto_migrate: bool = True):
        self.path = Path(path)
        self.blob_dir = Path(blob_dir) if blob_dir is not None else self.path.parent / "blobs"
        self.location = f"sqlite:///{self.path}"
        self._db = ConnectionPerThread(self.path, _setup)
        self._open_store(auto_migrate)
        with self._db.write_transaction() as conn:
            # added beside schema 2 without a migration: a new table, created where missing
            conn.execute(_TRIALS_TABLE)

    # ---- schema ------------------------------------------------------------------------------

    def _stored_version(self, conn: sqlite3.Connection) -> int:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None:
                return int(row[0])
        return 1 if "runs" in tables else 0

    def _open_store(self, auto_migrate: bool) -> None:
        with self._db.write_transaction() as conn:
            version = self._stored_version(conn)
            if version == 0:
                self._create_current(conn)
                return
        if version > SCHEMA_VERSION:
            raise self._too_new(version)
        if version < SCHEMA_VERSION and auto_migrate:
            self.migrate()

    def _create_current(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA_V2.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        return self._stored_version(self._db.get())

    def migrate(self) -> tuple[int, int]:
        with self._db.write_transaction() as conn:
            before = self._stored_version(conn)
            if before > SCHEMA_VERSION:
                raise self._too_new(before)
            if before == 1:
                self._migrate_1_to_2(conn)
            elif before == 0:
                self._create_current(conn)
            return before, self._stored_version(conn)

    def _migrate_1_to_2(self, conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs RENAME TO runs_v1")
        self._create_current(conn)
        for run_id, raw in conn.execute("SELECT id, doc FROM runs_v1").fetchall():
            doc = new_run_document({**json.loads(raw), "id": run_id})
            self._insert_row(conn, doc)
        conn.execute("DROP TABLE runs_v1")

    # ---- runs --------------------------------------------------------------------------------

    def _insert_row(self, conn: sqlite3.Connection, doc: Mapping[str, Any]) -> None:
        marks = ", ".join("?" for _ in range(len(_RUN_COLUMNS) + 1))
        conn.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}, doc) VALUES ({marks})",
                     _row(doc))
        self._write_side_tables(conn, doc)

    def _write_side_tables(self, conn: sqlite3.Connection, doc: Mapping[str, Any],
                           only: Iterable[str] = ("symbols", "tags", "metrics")) -> None:
        run_id = doc["id"]
        keys = set(only)
        if "symbols" in keys:
            conn.execute("DELETE FROM run_symbols WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT OR IGNORE INTO run_symbols VALUES (?, ?)",
                             [(s, run_id) for s in doc.get("symbols") or ()])
        if "tags" in keys:
            conn.execute("DELETE FROM run_tags WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT OR IGNORE INTO run_tags VALUES (?, ?)",
                             [(t, run_id) for t in doc.get("tags") or ()])
        if "metrics" in keys:
            conn.execute("DELETE FROM run_metrics WHERE run_id = ?", (run_id,))
            metrics = doc.get("metrics") or {}
            conn.executemany("INSERT INTO run_metrics VALUES (?, ?, ?)",
                             [(run_id, k, v) for k, v in metrics.items() if v is not None])
            conn.executemany("INSERT OR IGNORE INTO metric_names VALUES (?)",
                             [(k,) for k in metrics])

    def insert_run(self, doc: RunRecord) -> None:
        full = new_run_document(doc)
        with self._db.write_transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (full["id"],)).fetchone():
                raise RunError(
                    f"a run with id '{full['id']}' already exists; ids must be unique — let "
                    f"ql.submit create them", run_id=full["id"]
                )
            self._insert_row(conn, full)

    def get_run(self, run_id: str) -> RunRecord:
        row = self._db.get().execute("SELECT doc FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise run_not_found(run_id)
        return as_run_record(json.loads(row[0]))

    def update_run(self, run_id: str, fields: RunRecord, *,
                   expect_status: Iterable[str] | None = None) -> bool:
        changes = normalize_fields(fields)
        if changes.get("id", run_id) != run_id:
            raise ConfigError(f"a run's id cannot change (tried '{run_id}' -> "
                              f"'{changes['id']}')", field="id")
        expected = expected_statuses(expect_status)
        with self._db.write_transaction() as conn:
            row = conn.execute("SELECT doc, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise run_not_found(run_id)
            if expected is not None and row[1] not in expected:
                return False
            doc = {**json.loads(row[0]), **changes}
            assignments = ", ".join(f"{col} = ?" for col in _RUN_COLUMNS[1:])
            conn.execute(f"UPDATE runs SET {assignments}, doc = ? WHERE id = ?",
                         (*_row(doc)[1:], run_id))
            touched = {"symbols", "tags", "metrics"} & changes.keys()
            if touched:
                self._write_side_tables(conn, doc, touched)
        return True

    def _where(self, query: RunQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def any_of(column: str, values: tuple[str, ...]) -> None:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)

        if query.statuses is not None:
            any_of("runs.status", query.statuses)
        if query.strategies is not None:
            any_of("runs.strategy", query.strategies)
        if query.users is not None:
            any_of("runs.user", query.users)
        for table, column, values in (("run_symbols", "symbol", query.symbols),
                                      ("run_tags", "tag", query.tags)):
            if values is not None:
                marks = ", ".join("?" for _ in values)
                clauses.append(f"runs.id IN (SELECT run_id FROM {table} WHERE {column} IN ({marks}))")
                params.extend(values)
        if query.since is not None:
            clauses.append("runs.queued_at >= ?")
            params.append(query.since)
        if query.until is not None:
            clauses.append("runs.queued_at <= ?")
            params.append(query.until)
        if query.text:
            clauses.append("instr(ql_casefold(runs.name), ?) > 0")
            params.append(query.text.casefold())
        for t in query.where:
            clauses.append("runs.id IN (SELECT run_id FROM run_metrics "
                           f"WHERE name = ? AND value {_OPS_SQL[t.op]} ?)")
            params.extend((t.metric, t.value))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def find_query(self, query: RunQuery, sort: RunSort, limit: int | None, offset: int
                   ) -> tuple[str, list[Any]]:
        """The SQL (and parameters) find_runs executes: exposed for EXPLAIN QUERY PLAN."""
        where, params = self._where(query)
        direction = "DESC" if sort.descending else "ASC"
        join = ""
        if sort.is_metric:
            join = " LEFT JOIN run_metrics sm ON sm.run_id = runs.id AND sm.name = ?"
            params = [sort.key, *params]
            order = f"sm.value {direction}"
        else:
            order = f"runs.{sort.key} {direction}"
        sql = (f"SELECT runs.doc FROM runs{join}{where} ORDER BY {order}, runs.queued_at DESC, "
               f"runs.id DESC LIMIT ? OFFSET ?")
        return sql, [*params, -1 if limit is None else limit, offset]

    def _find(self, query: RunQuery, sort: RunSort, limit: int | None, offset: int
              ) -> list[RunRecord]:
        sql, params = self.find_query(query, sort, limit, offset)
        return [as_run_record(json.loads(r[0])) for r in self._db.get().execute(sql, params)]

    def _count(self, query: RunQuery) -> int:
        where, params = self._where(query)
        return int(self._db.get().execute(f"SELECT COUNT(*) FROM runs{where}", params).fetchone()[0])

    def metric_names(self) -> set[str]:
        return {r[0] for r in self._db.get().execute("SELECT name FROM metric_names")}

    def find_by_hash(self, config_hash: str) -> RunRecord | None:
        row = self._db.get().execute(
            "SELECT doc FROM runs WHERE config_hash = ? AND status = 'completed' AND partial = 0 "
            "AND cached_from IS NULL ORDER BY finished_at DESC, queued_at DESC LIMIT 1",
            (config_hash,),
        ).fetchone()
        return None if row is None else as_run_record(json.loads(row[0]))

    def stale_runs(self, heartbeat_before: float) -> list[RunRecord]:
        rows = self._db.get().execute(
            "SELECT doc FROM runs WHERE status = 'running' "
            "AND COALESCE(heartbeat_at, started_at, queued_at) < ? ORDER BY queued_at",
            (float(heartbeat_before),),
        )
        return [as_run_record(json.loads(r[0])) for r in rows]

    def _delete_run_records(self, run_id: str) -> None:
        with self._db.write_transaction() as conn:
            if conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount == 0:
                raise run_not_found(run_id)
            for table in ("run_symbols", "run_tags", "run_metrics", "logs", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))

    def _cached_copies(self, run_id: str) -> list[str]:
        rows = self._db.get().execute("SELECT id FROM runs WHERE cached_from = ?",
                                      (run_id,)).fetchall()
        return [row[0] for row in rows]

    # ---- logs --------------------------------------------------------------------------------

    def append_log(self, run_id: str, message: str, level: str = "info",
                   ts: float | None = None) -> None:
        check_level(level)
        self._db.get().execute(
            "INSERT INTO logs (run_id, ts, level, message) VALUES (?, ?, ?, ?)",
            (run_id, time.time() if ts is None else float(ts), level, str(message)),
        )

    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        if limit is None:
            rows = self._db.get().execute(
                "SELECT ts, level, message FROM logs WHERE run_id = ? ORDER BY ts, id", (run_id,)
            ).fetchall()
        else:
            rows = self._db.get().execute(
                "SELECT ts, level, message FROM logs WHERE run_id = ? ORDER BY ts DESC, id DESC "
                "LIMIT ?", (run_id, max(0, int(limit))),
            ).fetchall()[::-1]
        return [{"ts": ts, "level": level, "message": message} for ts, level, message in rows]

    # ---- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, run_id: str, state: bytes, meta: Mapping[str, Any]) -> None:
        self._db.get().execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
            (run_id, bytes(state), dumps(to_json_document(meta, "checkpoint meta")), time.time()),
        )

    def load_checkpoint(self, run_id: str) -> tuple[bytes, dict[str, Any]] | None:
        row = self._db.get().execute(
            "SELECT state, meta FROM checkpoints WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), dict(json.loads(row[1])))

    def delete_checkpoint(self, run_id: str) -> None:
        self._db.get().execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))

    # ---- notifications -----------------------------------------------------------------------

    def add_notification(self, doc: Mapping[str, Any]) -> str:
        full = new_notification(doc)
        self._db.get().execute(
            "INSERT INTO notifications VALUES (?, ?, ?, 0, ?)",
            (full["id"], full["user"], full["created_at"], dumps(full)),
        )
        return str(full["id"])

    def list_notifications(self, user: str, *, unread_only: bool = False,
                           limit: int = 50) -> list[dict[str, Any]]:
        unread = " AND read = 0" if unread_only else ""
        rows = self._db.get().execute(
            f"SELECT doc, read FROM notifications WHERE user = ?{unread} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ?", (user, int(limit)),
        )
        return [{**json.loads(doc), "read": bool(read)} for doc, read in rows]

    def mark_read(self, notification_id: str) -> bool:
        cur = self._db.get().execute("UPDATE notifications SET read = 1 WHERE id = ?",
                                     (notification_id,))
        return cur.rowcount > 0

    def get_notification(self, notification_id: str) -> dict[str, Any] | None:
        row = self._db.get().execute("SELECT doc, read FROM notifications WHERE id = ?",
                                     (notification_id,)).fetchone()
        return None if row is None else {**json.loads(row[0]), "read": bool(row[1])}

    # ---- preferences -------------------------------------------------------------------------

    def get_preferences(self, user: str) -> dict[str, Any]:
        row = self._db.get().execute("SELECT doc FROM preferences WHERE user = ?",
                                     (user,)).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def set_preferences(self, user: str, prefs: Mapping[str, Any]) -> None:
        self._db.get().execute("INSERT OR REPLACE INTO preferences VALUES (?, ?)",
                               (user, dumps(to_json_document(prefs, "preferences"))))

    # ---- trial ledger ------------------------------------------------------------------------

    def record_trials(self, group: str, trials: Mapping[str, float | None]) -> int:
        now = time.time()
        rows = [(group, key, _finite_or_none(sr), now) for key, sr in trials.items()]
        count = "SELECT COUNT(*) FROM trials WHERE grp = ?"
        with self._db.write_transaction() as conn:
            before = conn.execute(count, (group,)).fetchone()[0]
            # a trial keeps its first entry; only an SR it did not know (a cancelled run's)
            # is filled in by a later one
            conn.executemany("INSERT INTO trials VALUES (?, ?, ?, ?) ON CONFLICT (grp, trial) "
                             "DO UPDATE SET sr = excluded.sr WHERE trials.sr IS NULL", rows)
            return int(conn.execute(count, (group,)).fetchone()[0] - before)

    def trial_ledger(self, group: str) -> dict[str, float | None]:
        rows = self._db.get().execute("SELECT trial, sr FROM trials WHERE grp = ?", (group,))
        return {key: sr for key, sr in rows}

    # ---- documents ---------------------------------------------------------------------------

    def save_document(self, collection: str, doc: Mapping[str, Any]) -> str:
        check_collection(collection)
        full = with_id(to_json_document(doc, f"document for '{collection}'"))
        self._db.get().execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                               (collection, full["id"], time.time(), dumps(full)))
        return str(full["id"])

    def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        check_collection(collection)
        row = self._db.get().execute(
            "SELECT doc FROM documents WHERE collection = ? AND id = ?", (collection, doc_id)
        ).fetchone()
        if row is None:
            raise self._missing_document(collection, doc_id)
        return dict(json.loads(row[0]))

    def list_documents(self, collection: str, limit: int = 100) -> list[dict[str, Any]]:
        check_collection(collection)
        rows = self._db.get().execute(
            "SELECT doc FROM documents WHERE collection = ? ORDER BY saved_at DESC LIMIT ?",
            (collection, int(limit)),
        )
        return [json.loads(r[0]) for r in rows]

    def delete_document(self, collection: str, doc_id: str) -> bool:
        check_collection(collection)
        cur = self._db.get().execute("DELETE FROM documents WHERE collection = ? AND id = ?",
                                     (collection, doc_id))
        return cur.rowcount > 0

    # ---- blobs -------------------------------------------------------------------------------

    def put_blob(self, key: str, data: bytes) -> None:
        target = self.blob_dir / check_blob_key(key)
        payload = bytes(data)
        # temp file, fsync, os.replace: readers see the old or the new file, never half of one
        with home_errors(target, f"save the result blob {key}"):
            atomic_write_bytes(target, lambda fh: fh.write(payload))

    def get_blob(self, key: str) -> bytes:
        try:
            return (self.blob_dir / check_blob_key(key)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing_blob(key, str(self.blob_dir)) from None

    def delete_blobs(self, prefix: str) -> int:
        check_blob_key(prefix.rstrip("/"), "blob prefix")
        # Walk only the deepest folder the prefix names completely.
        folder = self.blob_dir.joinpath(*prefix.split("/")[:-1])
        if not folder.is_dir():
            return 0
        deleted = 0
        for path in sorted(folder.rglob("*"), reverse=True):  # children before their folders
            key = path.relative_to(self.blob_dir).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith("."):
                path.unlink(missing_ok=True)
                deleted += 1
            elif path.is_dir() and (key + "/").startswith(prefix) and not any(path.iterdir()):
                path.rmdir()
        if folder != self.blob_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return deleted

    def close(self) -> None:
        self._db.close()


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)

