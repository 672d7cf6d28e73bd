"""Contract tests of the run registry, run against every backend.

The ``registry`` fixture is parametrised over SQLite and MongoDB. MongoDB is a real server
when ``QUANTLAB_TEST_MONGO_URL`` is set (test id ``mongo-real``), else mongomock (test id
``mongo-mongomock``); the run also prints which one it used.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantlab.errors import ConfigError, RunError, RunNotFound
from quantlab.registry import SCHEMA_VERSION, Registry, SQLiteRegistry
from tests.support.registry import MONGO_URL, make_mongo_registry

MONGO_ID = "mongo-real" if MONGO_URL else "mongo-mongomock"
_announced = False


def _announce(request: pytest.FixtureRequest) -> None:
    """Say once, in the test output, which MongoDB the Mongo contract tests ran against."""
    global _announced
    if _announced:
        return
    _announced = True
    text = (f"registry contract tests: MongoDB = real server at {MONGO_URL}" if MONGO_URL else
            "registry contract tests: MongoDB = mongomock (set QUANTLAB_TEST_MONGO_URL to use a "
            "real server)")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # print past pytest's output capture
            reporter.write_line("")
            reporter.write_line(text)


@pytest.fixture(params=["sqlite", MONGO_ID])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "sqlite":
        reg: Registry = SQLiteRegistry(tmp_path / "registry.sqlite", tmp_path / "blobs")
        yield reg
        reg.close()
        return
    _announce(request)
    db_name = f"quantlab_test_{uuid.uuid4().hex[:12]}"
    reg = make_mongo_registry(db_name)
    yield reg
    if MONGO_URL:
        reg.client.drop_database(db_name)  # type: ignore[attr-defined]
    reg.close()


def run(run_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": run_id, **fields}


T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def populated(registry: Registry) -> Registry:
    """Eight runs that differ in every searchable field."""
    docs = [
        run("r1", name="Golden cross, large caps", user="ana", strategy="sma_crossover",
            symbols=["AAA", "BBB"], tags=["trend"], status="completed", queued_at=T0 + 1,
            metrics={"sharpe": 1.8, "max_drawdown_pct": -12.0}),
        run("r2", name="golden cross small caps", user="ana", strategy="sma_crossover",
            symbols=["CCC"], tags=["trend", "small"], status="completed", queued_at=T0 + 2,
            metrics={"sharpe": 0.7, "max_drawdown_pct": -25.0}),
        run("r3", name="RSI mean reversion", user="bo", strategy="rsi", symbols=["AAA"],
            tags=["mr"], status="failed", queued_at=T0 + 3, metrics={}),
        run("r4", name="été momentum", user="bo", strategy="momentum", symbols=["DDD", "AAA"],
            tags=[], status="running", queued_at=T0 + 4, metrics={"sharpe": 2.5}),
        run("r5", name="breakout", user="cy", strategy="breakout", symbols=["BBB"],
            tags=["trend"], status="queued", queued_at=T0 + 5),
        run("r6", name="flat", user="cy", strategy="sma_crossover", symbols=["EEE"],
            tags=["flat"], status="completed", queued_at=T0 + 6,
            metrics={"sharpe": float("nan"), "max_drawdown_pct": 0.0}),
        run("r7", name="Golden cross, sweep", user="ana", strategy="sma_crossover",
            symbols=["AAA"], tags=["trend", "sweep"], status="cancelled", queued_at=T0 + 7,
            metrics={"sharpe": 1.2, "max_drawdown_pct": -20.0}),
        run("r8", name="rsi 2", user="dee", strategy="rsi", symbols=["FFF"], tags=["mr"],
            status="completed", queued_at=T0 + 8, metrics={"sharpe": -0.4,
                                                             "max_drawdown_pct": -40.0}),
    ]
    for doc in docs:
        registry.insert_run(doc)
    return registry


def ids(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in docs]


# ------------------------------------------------------------------------------ runs


def test_insert_fills_defaults_and_keeps_extra_keys(registry: Registry) -> None:
    registry.insert_run(run("a1", name="first", config={"start": dt.date(2015, 1, 2), "cash": 1e5},
                            symbols=("AAA",), custom_field={"x": [1, 2]}))
    doc = registry.get_run("a1")
    assert doc["status"] == "queued"
    assert doc["progress"] == 0.0 and doc["attempts"] == 0 and doc["partial"] is False
    assert doc["cancel_requested"] is False and doc["metrics"] == {} and doc["tags"] == []
    assert doc["symbols"] == ["AAA"]
    assert doc["config"] == {"start": "2015-01-02", "cash": 100000.0}
    assert doc["custom_field"] == {"x": [1, 2]}
    assert isinstance(doc["queued_at"], float) and doc["queued_at"] > T0
    assert doc["heartbeat_at"] is None and doc["worker"] is None


def test_insert_existing_id_is_refused_and_keeps_the_first(registry: Registry) -> None:
    registry.insert_run(run("dup", name="original"))
    with pytest.raises(RunError, match="a run with id 'dup' already exists"):
        registry.insert_run(run("dup", name="second"))
    assert registry.get_run("dup")["name"] == "original"


def test_insert_without_id_names_the_field(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="needs a non-empty string 'id'"):
        registry.insert_run({"name": "no id"})


def test_get_missing_run_says_how_to_list_runs(registry: Registry) -> None:
    with pytest.raises(RunNotFound) as info:
        registry.get_run("nope")
    assert str(info.value) == "no run 'nope' — list runs with ql.runs()"


def test_update_sets_top_level_fields_and_replaces_dicts(registry: Registry) -> None:
    registry.insert_run(run("u1", metrics={"sharpe": 1.0, "calmar": 2.0}, config={"a": 1}))
    assert registry.update_run("u1", {"progress": 0.5, "step": "simulating",
                                      "metrics": {"sharpe": 3.0}}) is True
    doc = registry.get_run("u1")
    assert doc["progress"] == 0.5 and doc["step"] == "simulating"
    assert doc["metrics"] == {"sharpe": 3.0}  # replaced whole
    assert doc["config"] == {"a": 1}
    assert ids(registry.find_runs(where="sharpe>=3")) == ["u1"]
    assert registry.find_runs(where="calmar>0") == []


def test_update_missing_run_raises(registry: Registry) -> None:
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        registry.update_run("ghost", {"progress": 1.0})
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        registry.update_run("ghost", {"status": "running"}, expect_status=["queued"])


def test_compare_and_set_updates_only_from_expected_status(registry: Registry) -> None:
    registry.insert_run(run("c1"))
    assert registry.update_run("c1", {"status": "running", "worker": "w1"},
                               expect_status=["queued"]) is True
    # a second worker trying the same transition loses and changes nothing
    assert registry.update_run("c1", {"status": "running", "worker": "w2"},
                               expect_status=["queued"]) is False
    assert registry.get_run("c1")["worker"] == "w1"
    assert registry.update_run("c1", {"status": "completed"}, expect_status="running") is True
    assert registry.update_run("c1", {"status": "completed"},
                               expect_status=("running",)) is False
    assert registry.get_run("c1")["status"] == "completed"


def test_update_rejects_bad_fields_with_the_fix(registry: Registry) -> None:
    registry.insert_run(run("b1"))
    with pytest.raises(ConfigError, match=r"unknown run status 'complete' — did you mean "
                                          r"'completed'\?"):
        registry.update_run("b1", {"status": "complete"})
    with pytest.raises(ConfigError, match="a run's id cannot change"):
        registry.update_run("b1", {"id": "b2"})
    with pytest.raises(ConfigError, match=r"field name 'metrics.sharpe' is not valid.*whole "
                                          r"'metrics' dict"):
        registry.update_run("b1", {"metrics.sharpe": 1.0})
    with pytest.raises(ConfigError, match="metric 'sharpe' must be a number, got 'high'"):
        registry.update_run("b1", {"metrics": {"sharpe": "high"}})
    with pytest.raises(ConfigError, match="run field 'tags' must be a list of strings"):
        registry.update_run("b1", {"tags": "trend"})
    with pytest.raises(ConfigError, match="unknown run status 'done'"):
        registry.update_run("b1", {"progress": 1}, expect_status=["done"])
    assert registry.get_run("b1")["status"] == "queued"  # nothing was half-applied


def test_non_finite_metrics_are_stored_as_undefined(populated: Registry) -> None:
    assert populated.get_run("r6")["metrics"] == {"sharpe": None, "max_drawdown_pct": 0.0}
    assert "r6" not in ids(populated.find_runs(where="sharpe<100", limit=None))
    assert "r6" not in ids(populated.find_runs(where="sharpe!=1", limit=None))


# ------------------------------------------------------------------------------ search


def test_filters_by_value_or_list(populated: Registry) -> None:
    assert ids(populated.find_runs(status="completed")) == ["r8", "r6", "r2", "r1"]
    assert ids(populated.find_runs(status=["failed", "cancelled"])) == ["r7", "r3"]
    assert ids(populated.find_runs(strategy="rsi")) == ["r8", "r3"]
    assert ids(populated.find_runs(symbol="AAA")) == ["r7", "r4", "r3", "r1"]
    assert ids(populated.find_runs(symbol=["BBB", "CCC"])) == ["r5", "r2", "r1"]
    assert ids(populated.find_runs(tag="trend")) == ["r7", "r5", "r2", "r1"]
    assert ids(populated.find_runs(user=["bo", "dee"])) == ["r8", "r4", "r3"]
    assert ids(populated.find_runs(user="ana", symbol="AAA", status="completed")) == ["r1"]


def test_time_range_accepts_epoch_datetime_and_iso(populated: Registry) -> None:
    assert ids(populated.find_runs(since=T0 + 6)) == ["r8", "r7", "r6"]
    assert ids(populated.find_runs(until=T0 + 2)) == ["r2", "r1"]
    since = dt.datetime.fromtimestamp(T0 + 3, tz=dt.UTC)
    until_iso = dt.datetime.fromtimestamp(T0 + 4, tz=dt.UTC).isoformat()
    assert ids(populated.find_runs(since=since, until=until_iso)) == ["r4", "r3"]
    with pytest.raises(ConfigError, match=r"'since' must be a time.*'2024-06-01'"):
        populated.find_runs(since="last tuesday")


def test_text_search_is_case_insensitive_substring_of_name(populated: Registry) -> None:
    assert ids(populated.find_runs(text="GOLDEN CROSS")) == ["r7", "r2", "r1"]
    assert ids(populated.find_runs(text="ÉTÉ")) == ["r4"]
    assert ids(populated.find_runs(text="cross, ")) == ["r7", "r1"]
    assert populated.find_runs(text="a.*b") == []  # not a pattern


def test_metric_thresholds_string_and_tuple_forms(populated: Registry) -> None:
    assert ids(populated.find_runs(where="sharpe>1")) == ["r7", "r4", "r1"]
    assert ids(populated.find_runs(where="sharpe>1, max_drawdown_pct>=-20")) == ["r7", "r1"]
    assert ids(populated.find_runs(where=[("sharpe", "<=", 0.7)])) == ["r8", "r2"]
    assert ids(populated.find_runs(where=[("max_drawdown_pct", "==", -25)])) == ["r2"]
    # a run that lacks the metric matches no threshold, not even !=
    assert ids(populated.find_runs(where="sharpe != 1.8")) == ["r8", "r7", "r4", "r2"]
    assert populated.count_runs(where="sharpe>1", strategy="sma_crossover") == 2


def test_sort_by_field_and_metric_and_paging(populated: Registry) -> None:
    assert ids(populated.find_runs(sort="queued_at", limit=3)) == ["r1", "r2", "r3"]
    assert ids(populated.find_runs(sort="-sharpe", limit=None)) == [
        "r4", "r1", "r7", "r2", "r8", "r6", "r5", "r3"]  # runs without it last, newest first
    assert ids(populated.find_runs(sort="sharpe", status="completed")) == [
        "r6", "r8", "r2", "r1"]
    assert ids(populated.find_runs(sort="name", user="ana")) == ["r1", "r7", "r2"]
    pages = [ids(populated.find_runs(limit=3, offset=o)) for o in (0, 3, 6)]
    assert pages == [["r8", "r7", "r6"], ["r5", "r4", "r3"], ["r2", "r1"]]
    assert populated.find_runs(limit=0) == []
    assert populated.count_runs() == 8 and populated.count_runs(symbol="AAA") == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"where": "sharpe => 1"}, r"unknown comparison '=>' in the threshold on 'sharpe' — did you "
                               r"mean '>='\?; valid: >= <= == != > <"),
    ({"where": "sharpe = 1"}, r"unknown comparison '=' .*\(use '==' for equality\)"),
    ({"where": "sharpe is big"}, r"cannot read the metric threshold 'sharpe is big'; write "
                                 r"thresholds as 'sharpe>1, max_drawdown_pct>=-20'"),
    ({"where": [("sharpe", ">")]}, r"is not a \(metric, op, value\) tuple"),
    ({"where": [("sharpe", ">", "x")]}, r"threshold value 'x' for 'sharpe' is not a number"),
    ({"sort": "-queud_at"}, r"unknown sort key 'queud_at' — did you mean 'queued_at'\?; sort "
                            r"by one of queued_at, .* or a recorded metric \(max_drawdown_pct, "
                            r"sharpe\)"),
    ({"status": "complete"}, r"unknown run status 'complete' — did you mean 'completed'\?"),
    ({"limit": -1}, r"'limit' must be a whole number >= 0"),
    ({"symbol": 5}, r"filter 'symbol' must be a string or a list of strings"),
])
def test_bad_filters_name_the_problem_and_the_valid_forms(
    populated: Registry, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        populated.find_runs(**kwargs)


def test_sort_by_any_metric_name_on_a_store_without_metrics(registry: Registry) -> None:
    registry.insert_run(run("q1", queued_at=T0))
    registry.insert_run(run("q2", queued_at=T0 + 1))
    assert ids(registry.find_runs(sort="-sharpe")) == ["q2", "q1"]


def test_find_by_hash_returns_newest_reusable_completed_run(registry: Registry) -> None:
    base = {"config_hash": "h1", "status": "completed"}
    registry.insert_run(run("old", finished_at=T0 + 10, **base))
    registry.insert_run(run("new", finished_at=T0 + 20, **base))
    registry.insert_run(run("partial", finished_at=T0 + 30, partial=True, **base))
    registry.insert_run(run("cached", finished_at=T0 + 40, cached_from="new", **base))
    registry.insert_run(run("failed", finished_at=T0 + 50, config_hash="h1", status="failed"))
    registry.insert_run(run("other", finished_at=T0 + 60, config_hash="h2", status="completed"))
    found = registry.find_by_hash("h1")
    assert found is not None and found["id"] == "new"
    assert registry.find_by_hash("h3") is None


def test_stale_runs_are_running_runs_without_recent_heartbeat(registry: Registry) -> None:
    registry.insert_run(run("alive", status="running", started_at=T0, heartbeat_at=T0 + 100))
    registry.insert_run(run("dead", status="running", started_at=T0, heartbeat_at=T0 + 10))
    registry.insert_run(run("never_beat", status="running", started_at=T0 + 5))
    registry.insert_run(run("done", status="completed", started_at=T0, heartbeat_at=T0 + 1))
    assert sorted(ids(registry.stale_runs(T0 + 50))) == ["dead", "never_beat"]


def test_delete_run_removes_its_logs_checkpoint_and_blobs(registry: Registry) -> None:
    for rid in ("d1", "d2"):
        registry.insert_run(run(rid, symbols=["AAA"], metrics={"sharpe": 1.0}))
        registry.append_log(rid, "hello")
        registry.save_checkpoint(rid, b"state", {"bar": 3})
        registry.put_blob(f"runs/{rid}/equity.parquet", b"eq-" + rid.encode())
    registry.delete_run("d1")
    with pytest.raises(RunNotFound):
        registry.get_run("d1")
    assert registry.logs("d1") == [] and registry.load_checkpoint("d1") is None
    with pytest.raises(RunError, match=r"no result blob 'runs/d1/equity\.parquet'"):
        registry.get_blob("runs/d1/equity.parquet")
    assert ids(registry.find_runs(symbol="AAA", where="sharpe>0")) == ["d2"]
    assert registry.get_blob("runs/d2/equity.parquet") == b"eq-d2"
    assert registry.logs("d2")[0]["message"] == "hello"
    with pytest.raises(RunNotFound):
        registry.delete_run("d1")


@pytest.mark.parametrize("order", [("orig", "copy1", "copy2"), ("copy1", "orig", "copy2"),
                                   ("copy1", "copy2", "orig")])
def test_result_blobs_go_with_the_last_run_that_shows_them(registry: Registry,
                                                           order: tuple[str, ...]) -> None:
    # a run answered from the result cache shows its original's blobs: deleting the original
    # must not take the result away from its cached copies, nor leave the blobs behind
    blob = "runs/orig/equity.parquet"
    registry.insert_run(run("orig", status="completed", result_blobs=[blob]))
    registry.put_blob(blob, b"eq")
    for rid in ("copy1", "copy2"):
        registry.insert_run(run(rid, status="completed", result_blobs=[blob], cached_from="orig"))
    for k, rid in enumerate(order):
        registry.delete_run(rid)
        with pytest.raises(RunNotFound):
            registry.get_run(rid)
        if k < len(order) - 1:
            assert registry.get_blob(blob) == b"eq", f"deleting {order[:k + 1]}"
    with pytest.raises(RunError, match="no result blob"):
        registry.get_blob(blob)


# ------------------------------------------------------------------------------ the rest


def test_logs_oldest_first_and_last_n(registry: Registry) -> None:
    registry.insert_run(run("l1"))
    for i in range(5):
        registry.append_log("l1", f"line {i}", level="warning" if i == 3 else "info",
                            ts=T0 + i)
    registry.append_log("l1", "late but early ts", ts=T0 - 1)
    lines = registry.logs("l1")
    assert [x["message"] for x in lines] == ["late but early ts"] + [f"line {i}"
                                                                     for i in range(5)]
    assert lines[4] == {"ts": T0 + 3, "level": "warning", "message": "line 3"}
    assert [x["message"] for x in registry.logs("l1", limit=2)] == ["line 3", "line 4"]
    with pytest.raises(ConfigError, match=r"unknown log level 'warn' — did you mean 'warning'\?"):
        registry.append_log("l1", "x", level="warn")


def test_checkpoint_is_one_per_run_and_replaced(registry: Registry) -> None:
    assert registry.load_checkpoint("k1") is None
    registry.save_checkpoint("k1", b"\x00first", {"bars_done": 10})
    registry.save_checkpoint("k1", b"\x00second", {"bars_done": 20})
    assert registry.load_checkpoint("k1") == (b"\x00second", {"bars_done": 20})
    big = os.urandom(9 * 1024 * 1024)  # beyond MongoDB's inline limit: goes to GridFS
    registry.save_checkpoint("k1", big, {"bars_done": 30})
    assert registry.load_checkpoint("k1") == (big, {"bars_done": 30})
    registry.save_checkpoint("k1", b"small again", {"bars_done": 40})
    assert registry.load_checkpoint("k1") == (b"small again", {"bars_done": 40})
    registry.delete_checkpoint("k1")
    assert registry.load_checkpoint("k1") is None


def test_notifications_newest_first_and_read_flag(registry: Registry) -> None:
    first = registry.add_notification({"user": "ana", "run_id": "r1", "kind": "completed",
                                       "title": "run done", "body": "sharpe 1.8"})
    second = registry.add_notification({"user": "ana", "run_id": "r2", "kind": "failed",
                                        "title": "run failed", "body": "boom"})
    registry.add_notification({"user": "bo", "run_id": "r3", "kind": "completed",
                               "title": "other user", "body": ""})
    listed = registry.list_notifications("ana")
    assert [n["id"] for n in listed] == [second, first]
    assert listed[0]["read"] is False and listed[0]["title"] == "run failed"
    assert listed[0]["created_at"] >= listed[1]["created_at"]
    assert registry.mark_read(first) is True
    assert registry.mark_read("missing") is False
    assert [n["id"] for n in registry.list_notifications("ana", unread_only=True)] == [second]
    assert registry.list_notifications("ana")[1]["read"] is True
    found = registry.get_notification(first)  # whose it is: the ownership check reads it
    assert found is not None and found["user"] == "ana" and found["read"] is True
    assert registry.get_notification("missing") is None
    with pytest.raises(ConfigError, match="a notification needs the 'user' it is for"):
        registry.add_notification({"title": "nobody"})


def test_preferences_per_user(registry: Registry) -> None:
    assert registry.get_preferences("ana") == {}
    registry.set_preferences("ana", {"notify": ["in_app"], "theme": "dark"})
    registry.set_preferences("ana", {"notify": ["email"]})
    assert registry.get_preferences("ana") == {"notify": ["email"]}
    assert registry.get_preferences("bo") == {}


def test_generic_documents(registry: Registry) -> None:
    cid = registry.save_document("comparisons", {"runs": ["r1", "r2"], "title": "A vs B"})
    assert registry.get_document("comparisons", cid) == {"runs": ["r1", "r2"], "title": "A vs B",
                                                         "id": cid}
    registry.save_document("comparisons", {"id": cid, "runs": ["r1"], "title": "A"})
    assert registry.get_document("comparisons", cid)["runs"] == ["r1"]
    other = registry.save_document("comparisons", {"id": "fixed", "runs": []})
    assert other == "fixed"
    assert [d["id"] for d in registry.list_documents("comparisons")] == ["fixed", cid]
    assert registry.delete_document("comparisons", cid) is True
    assert registry.delete_document("comparisons", cid) is False
    with pytest.raises(RunError, match=f"no document '{cid}' in 'comparisons'"):
        registry.get_document("comparisons", cid)
    with pytest.raises(ConfigError, match="collection name 'my comparisons' is not valid"):
        registry.save_document("my comparisons", {})


def test_trial_ledger_keeps_the_first_entry_of_each_trial_per_group(registry: Registry) -> None:
    assert registry.trial_ledger("g1") == {}
    assert registry.record_trials("g1", {"a": 0.1, "b": None, "c": float("nan")}) == 3
    assert registry.record_trials("g1", {"a": 0.9, "d": -0.2}) == 1  # a is kept as first seen
    assert registry.record_trials("g2", {"a": 0.5}) == 1
    assert registry.record_trials("g2", {}) == 0
    assert registry.trial_ledger("g1") == {"a": 0.1, "b": None, "c": None, "d": -0.2}
    assert registry.record_trials("g1", {"b": 0.3, "c": None}) == 0  # b's unknown SR filled in
    assert registry.trial_ledger("g1") == {"a": 0.1, "b": 0.3, "c": None, "d": -0.2}
    assert registry.trial_ledger("g2") == {"a": 0.5}


def test_blobs_put_replace_get_and_delete_by_prefix(registry: Registry) -> None:
    registry.put_blob("runs/x1/equity.parquet", b"v1")
    registry.put_blob("runs/x1/equity.parquet", b"v2")
    registry.put_blob("runs/x1/trades.parquet", b"trades")
    registry.put_blob("runs/x10/equity.parquet", b"other run")
    assert registry.get_blob("runs/x1/equity.parquet") == b"v2"
    assert registry.delete_blobs("runs/x1/") == 2
    assert registry.get_blob("runs/x10/equity.parquet") == b"other run"
    with pytest.raises(RunError, match=r"no result blob 'runs/x1/trades\.parquet'"):
        registry.get_blob("runs/x1/trades.parquet")
    with pytest.raises(ConfigError, match=r"blob key '\.\./etc/passwd' is not valid.*'runs/<id>/"):
        registry.put_blob("../etc/passwd", b"")


def test_schema_is_current(registry: Registry) -> None:
    assert registry.schema_version() == SCHEMA_VERSION
    assert registry.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
