"""SQLite registry: indexes, schema migration, many processes and threads, backend selection."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from quantlab import settings
from quantlab.errors import MissingDependency, SchemaError
from quantlab.registry import SQLiteRegistry, open_registry, reset
from quantlab.registry.cli import migrate as migrate_command
from quantlab.registry.query import SORT_FIELDS, RunSort, build_query

# ------------------------------------------------------------------------------ indexes


@pytest.fixture
def big(tmp_path: Path) -> SQLiteRegistry:
    reg = SQLiteRegistry(tmp_path / "registry.sqlite")
    for i in range(600):
        reg.insert_run({"id": f"r{i:04d}", "name": f"run {i}", "user": f"u{i % 30}",
                        "strategy": f"s{i % 20}", "status": "completed" if i % 50 else "failed",
                        "symbols": [f"SYM{i}"], "tags": [f"tag{i % 40}"],
                        "config_hash": f"h{i}", "queued_at": 1e9 + i,
                        "metrics": {"sharpe": i / 100, "calmar": i / 10}})
    return reg


def plan(reg: SQLiteRegistry, sort: str = "-queued_at", **filters: Any) -> str:
    parsed = reg._parse_sort(sort)
    sql, params = reg.find_query(build_query(**filters), parsed, 50, 0)
    rows = reg._db.get().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(row[3] for row in rows)


@pytest.mark.parametrize(("filters", "index"), [
    ({"status": "failed"}, "USING INDEX runs_status (status=?)"),
    ({"strategy": "s3"}, "USING INDEX runs_strategy (strategy=?)"),
    ({"user": "u7"}, "USING INDEX runs_user (user=?)"),
    ({"symbol": "SYM42"}, "SEARCH run_symbols USING PRIMARY KEY (symbol=?)"),
    ({"tag": "tag5"}, "SEARCH run_tags USING PRIMARY KEY (tag=?)"),
    ({"where": "sharpe>5.9"}, "USING COVERING INDEX run_metrics_value (name=? AND value>?)"),
    ({"since": 1e9 + 590}, "USING INDEX runs_queued_at (queued_at>?)"),
])
def test_main_filters_use_indexes(big: SQLiteRegistry, filters: dict[str, Any],
                                  index: str) -> None:
    query_plan = plan(big, **filters)
    assert index in query_plan, query_plan
    assert "SCAN runs" not in query_plan.replace("SCAN runs USING INDEX", ""), query_plan


def test_default_listing_and_hash_lookup_use_indexes(big: SQLiteRegistry) -> None:
    assert "SCAN runs USING INDEX runs_queued_at" in plan(big)
    rows = big._db.get().execute(
        "EXPLAIN QUERY PLAN SELECT doc FROM runs WHERE config_hash = ? AND status = 'completed' "
        "AND partial = 0 AND cached_from IS NULL ORDER BY finished_at DESC, queued_at DESC "
        "LIMIT 1", ("h5",)).fetchall()
    assert "USING INDEX runs_config_hash (config_hash=?)" in rows[0][3]
    assert big.find_by_hash("h5")["id"] == "r0005"  # type: ignore[index]
    assert [d["id"] for d in big.find_runs(where="sharpe>5.95", sort="-calmar")] == [
        "r0599", "r0598", "r0597", "r0596"]


def test_sort_fields_are_all_columns(big: SQLiteRegistry) -> None:
    for key in SORT_FIELDS:
        assert len(big.find_runs(sort=key, limit=2)) == 2
    assert big._parse_sort("-sharpe") == RunSort("sharpe", True, is_metric=True)


# ------------------------------------------------------------------------------ schema

V1_RUNS = [
    {"id": "old1", "name": "legacy cross", "status": "completed", "symbols": ["AAA", "BBB"],
     "tags": ["trend"], "metrics": {"sharpe": 1.4}, "queued_at": 1e9 + 1, "strategy": "sma"},
    {"id": "old2", "name": "legacy rsi", "status": "failed", "symbols": ["CCC"],
     "metrics": {"sharpe": 0.2}, "queued_at": 1e9 + 2, "error": "boom"},
    {"id": "old3", "name": "legacy queued", "status": "queued", "queued_at": 1e9 + 3},
]


def make_v1_store(path: Path) -> None:
    """A registry as QuantLab schema 1 wrote it: a meta table and runs(id, doc JSON)."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE runs (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    """)
    conn.executemany("INSERT INTO runs VALUES (?, ?)",
                     [(d["id"], json.dumps(d)) for d in V1_RUNS])
    conn.commit()
    conn.close()


def test_migrate_v1_store_in_place_keeps_every_run(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    make_v1_store(path)
    reg = SQLiteRegistry(path, auto_migrate=False)
    assert reg.schema_version() == 1
    assert reg.migrate() == (1, 2)
    assert reg.schema_version() == 2
    assert reg.count_runs() == 3
    assert [d["id"] for d in reg.find_runs(symbol="AAA")] == ["old1"]
    assert [d["id"] for d in reg.find_runs(where="sharpe>1")] == ["old1"]
    assert [d["id"] for d in reg.find_runs(tag="trend", status="completed")] == ["old1"]
    old2 = reg.get_run("old2")
    assert old2["error"] == "boom" and old2["attempts"] == 0 and old2["partial"] is False
    assert reg.migrate() == (2, 2)


def test_opening_a_v1_store_migrates_it(tmp_path: Path) -> None:
    make_v1_store(tmp_path / "registry.sqlite")
    reg = SQLiteRegistry(tmp_path / "registry.sqlite")
    assert reg.schema_version() == 2
    assert [d["id"] for d in reg.find_runs(sort="queued_at")] == ["old1", "old2", "old3"]


def test_store_newer_than_the_code_says_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    SQLiteRegistry(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=r"has schema 99, newer than this QuantLab understands "
                                          r"\(2\); upgrade quantlab"):
        SQLiteRegistry(path)


def test_migrate_command_reports_what_it_did(ql_home: Path) -> None:
    make_v1_store(ql_home / "registry.sqlite")
    reset()
    result = CliRunner().invoke(migrate_command, [])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"registry at sqlite:///{ql_home / 'registry.sqlite'}: schema 1 -> 2 (3 runs kept)")
    again = CliRunner().invoke(migrate_command, [])
    assert again.output.strip().endswith(": schema 2, already current")
    reset()


# ------------------------------------------------------------------------------ selection


def test_open_registry_picks_sqlite_in_home_and_caches_it(ql_home: Path) -> None:
    reset()
    reg = open_registry()
    assert isinstance(reg, SQLiteRegistry)
    assert reg.path == ql_home / "registry.sqlite"
    reg.insert_run({"id": "via-open"})
    assert open_registry() is reg
    assert open_registry(settings.current()).get_run("via-open")["status"] == "queued"
    reset()


def test_open_registry_picks_mongo_when_url_set(ql_home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import mongomock
    import mongomock.gridfs

    from quantlab.registry.mongo import MongoRegistry

    mongomock.gridfs.enable_gridfs_integration()
    monkeypatch.setenv("QUANTLAB_MONGO_URL", "mongodb://team-db.example:27017")
    monkeypatch.setenv("QUANTLAB_MONGO_DB", "research")
    reset()
    with mongomock.patch(servers=(("team-db.example", 27017),)):
        reg = open_registry()
        assert isinstance(reg, MongoRegistry)
        assert reg.db.name == "research"
        assert "mongodb://team-db.example:27017" in reg.location
        reg.insert_run({"id": "team-run"})
        assert open_registry().get_run("team-run")["id"] == "team-run"
    reset()


def test_mongo_without_pymongo_says_which_extra_to_install(
    ql_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)
    monkeypatch.setenv("QUANTLAB_MONGO_URL", "mongodb://localhost:27017")
    reset()
    with pytest.raises(MissingDependency) as info:
        open_registry()
    assert str(info.value) == ("the MongoDB registry needs the 'pymongo' package, which is not "
                               "installed. Install it with: pip install 'quantlab[mongo]'")


# ------------------------------------------------------------------------------ blobs


def test_blob_writes_are_fsynced_and_a_failed_one_keeps_the_old_blob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = SQLiteRegistry(tmp_path / "registry.sqlite")
    key = "runs/r1/equity.parquet"
    reg.put_blob(key, b"old")
    real_fsync, synced = os.fsync, []

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    reg.put_blob(key, b"new")
    assert synced  # through quantlab.fileio.atomic_write_bytes: on disk before the rename

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        reg.put_blob(key, b"newer")
    assert reg.get_blob(key) == b"new"
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["equity.parquet"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# ------------------------------------------------------------------------------ concurrency


def _race_to_complete(path: str, worker: str, run_ids: list[str], queue: object) -> None:
    reg = SQLiteRegistry(Path(path))
    won = [rid for rid in run_ids
           if reg.update_run(rid, {"status": "completed", "worker": worker},
                             expect_status=["running"])]
    for i in range(100):
        reg.append_log("shared", f"{worker} {i}")
    queue.put((worker, won))  # type: ignore[attr-defined]


def _hammer_field(path: str, field: str, n: int) -> None:
    reg = SQLiteRegistry(Path(path))
    for i in range(1, n + 1):
        if field == "metrics":
            reg.update_run("hot", {"metrics": {"sharpe": float(i)}})
        else:
            reg.update_run("hot", {field: i})


def test_two_processes_complete_each_run_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    reg = SQLiteRegistry(path)
    run_ids = [f"race{i}" for i in range(40)]
    for rid in run_ids:
        reg.insert_run({"id": rid, "status": "running"})
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race_to_complete, args=(str(path), w, run_ids, queue))
             for w in ("w1", "w2")]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(results["w1"] + results["w2"]) == sorted(run_ids)  # each won exactly once
    for worker, won in results.items():
        for rid in won:
            assert reg.get_run(rid)["worker"] == worker
    assert len(reg.logs("shared")) == 200


def test_concurrent_updates_of_different_fields_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    reg = SQLiteRegistry(path)
    reg.insert_run({"id": "hot"})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer_field, args=(str(path), f, 150))
             for f in ("bars_done", "metrics")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    doc = reg.get_run("hot")
    assert doc["bars_done"] == 150 and doc["metrics"] == {"sharpe": 150.0}
    assert [d["id"] for d in reg.find_runs(where="sharpe==150")] == ["hot"]


def test_threads_share_a_registry_object(tmp_path: Path) -> None:
    reg = SQLiteRegistry(tmp_path / "registry.sqlite")
    errors: list[BaseException] = []

    def insert(prefix: str) -> None:
        try:
            for i in range(50):
                reg.insert_run({"id": f"{prefix}{i}", "tags": [prefix]})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(f"t{k}-",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert reg.count_runs() == 200 and reg.count_runs(tag="t2-") == 50


def _use_inherited(reg: SQLiteRegistry) -> None:
    reg.insert_run({"id": "from-child", "symbols": ["KID"]})


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    reg = SQLiteRegistry(tmp_path / "registry.sqlite")
    reg.insert_run({"id": "from-parent"})
    parent_conn = reg._db.get()
    child = multiprocessing.get_context("fork").Process(target=_use_inherited, args=(reg,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert reg._db.get() is parent_conn
    assert [d["id"] for d in reg.find_runs(symbol="KID")] == ["from-child"]
    assert parent_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
