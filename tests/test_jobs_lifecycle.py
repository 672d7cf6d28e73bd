"""The run lifecycle as one stream: every status change goes through ``lifecycle.transition``,
every terminal event carries the same fields, progress events have one spelling, and the metrics
subscriber counts a cache hit apart from executions. Runs are executed in this process
(``runner.execute``, the Huey task's body) so that each test sees the events a worker publishes.
"""

from __future__ import annotations

import ast
import dataclasses
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import quantlab as ql
from quantlab import telemetry
from quantlab.events import open_events
from quantlab.jobs import lifecycle, orchestrator, runner
from quantlab.jobs.lifecycle import TERMINAL, RunStatus
from quantlab.registry import open_registry
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SWEEP, wait_for

# fixtures (pytest finds them in the module's namespace)
home = support.home
no_worker = support.no_worker

ROOT = Path(__file__).resolve().parent.parent
# The progress fields of the contract (notes of issue 14), one spelling each.
PROGRESS_FIELDS = {"progress", "step", "bars_done", "bars_delta", "done_units", "total_units",
                   "eta_seconds", "step_done", "step_total"}
ENDING = {"strategy", "seconds", "cached", "reason", "partial"}


@ql.strategy(name="lifecycle_broken")
def lifecycle_broken(bars: Any, n: int = 3) -> Any:
    return bars.close * (n // 0)  # fails on the worker: ZeroDivisionError


def terminal_events(run: Any) -> list[Any]:
    return [e for e in run.events() if e.type in TERMINAL]


def executed(config: dict[str, Any], **submit: Any) -> Any:
    """A run submitted and executed here, as a worker would."""
    run = ql.submit(config, **submit)
    runner.execute(run.id)
    return run


def test_every_terminal_event_tells_the_same_fields_and_its_strategy(
        home: Path, no_worker: None) -> None:
    completed = executed(SINGLE)
    cached = ql.submit(SINGLE)
    failed = executed({**SINGLE, "strategy": "lifecycle_broken", "params": {"n": 3}})
    queued = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).cancel()
    running = ql.submit(SWEEP, cache=False)
    open_registry().update_run(running.id, {"cancel_requested": True})  # asked, not yet seen
    runner.execute(running.id)  # the worker takes it and stops at its first check
    given_up = ql.submit({**SINGLE, "params": {"fast": 6, "slow": 40}})
    lifecycle.transition(given_up.id, RunStatus.RUNNING, expect=RunStatus.QUEUED, fields={
        "worker": "gone:1:Worker-1", "attempts": orchestrator.MAX_ATTEMPTS,
        "heartbeat_at": time.time() - 3600})
    orchestrator.reap()

    expected = {completed: ("completed", "sma_crossover", None),
                cached: ("completed", "sma_crossover", None),
                failed: ("failed", "lifecycle_broken", "error"),
                queued: ("cancelled", "sma_crossover", "cancelled"),
                running: ("cancelled", "sma_crossover", "cancelled"),
                given_up: ("failed", "sma_crossover", "worker_lost")}
    field_sets: dict[str, set[frozenset[str]]] = {}
    for run, (status, strategy, reason) in expected.items():
        assert run.status == status, run.record.get("error")
        [event] = terminal_events(run)
        assert event.type == status
        assert set(event.data) >= ENDING, (status, sorted(event.data))
        assert event.data["strategy"] == strategy
        assert event.data["reason"] == reason
        field_sets.setdefault(status, set()).add(frozenset(event.data))
    # one payload per type: every event of a type has the same keys
    assert all(len(sets) == 1 for sets in field_sets.values()), field_sets
    assert terminal_events(cached)[0].data["cached"] is True
    assert terminal_events(cached)[0].data["seconds"] == 0.0
    assert terminal_events(completed)[0].data["cached"] is False
    assert terminal_events(completed)[0].data["seconds"] > 0
    assert terminal_events(queued)[0].data["while"] == "queued"
    assert terminal_events(running)[0].data["while"] == "running"


def test_progress_events_have_exactly_the_contract_fields(home: Path, no_worker: None) -> None:
    assert {f.name for f in dataclasses.fields(lifecycle.Progress)} == PROGRESS_FIELDS
    run = executed(SWEEP, cache=False)
    progress = [e.data for e in run.events() if e.type == "progress"]
    assert progress and all(set(data) == PROGRESS_FIELDS for data in progress)
    assert progress[-1]["progress"] == pytest.approx(0.99)  # saving results
    assert sum(data["bars_delta"] for data in progress) == progress[-2]["bars_done"]


def test_a_cache_hit_is_counted_apart_from_executions(home: Path, no_worker: None) -> None:
    def sample(name: str, **labels: str) -> float:
        return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0

    strategy = {"strategy": "sma_crossover"}
    before = (sample("backtest_execution_seconds_count", **strategy),
              sample("backtest_total", status="completed", **strategy),
              sample("backtest_cache_total", result="hit"))
    subscriber = telemetry.start_subscriber_thread()
    try:
        first = executed(SINGLE)
        second = ql.submit(SINGLE)
        assert second.record["cached_from"] == first.id
        last = open_events().last_seq()
        wait_for(lambda: (telemetry.load_cursor(open_registry()) or 0) >= last, 30,
                 "the subscriber to count every event")
    finally:
        subscriber.stop()
    assert sample("backtest_execution_seconds_count", **strategy) == before[0] + 1
    assert sample("backtest_total", status="completed", **strategy) == before[1] + 1
    assert sample("backtest_cache_total", result="hit") == before[2] + 1


def test_a_standby_subscriber_counts_nothing_until_it_holds_the_lock(ql_home: Path) -> None:
    seen: list[list[int]] = [[], []]
    subscribers = [telemetry.Subscriber(observe=lambda e, i=i: seen[i].append(e.seq))
                   for i in range(2)]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True)
               for s, stop in zip(subscribers, stops, strict=True)]
    threads[0].start()
    wait_for(lambda: subscribers[0].counting.is_set(), 10, "the first to hold the lock")
    threads[1].start()
    open_events().publish("r1", "log", {"message": "one"})
    wait_for(lambda: seen[0] == [1], 10, "the holder to count the first event")
    stops[0].set()
    threads[0].join(10)
    wait_for(lambda: subscribers[1].counting.is_set(), 10, "the standby to take over")
    open_events().publish("r1", "log", {"message": "two"})
    wait_for(lambda: seen[1] == [2], 10, "the standby to count from the saved cursor on")
    stops[1].set()
    threads[1].join(10)
    assert seen == [[1], [2]]


def test_the_first_subscriber_leaves_history_uncounted(ql_home: Path) -> None:
    """With no saved cursor (the first subscriber of a home, e.g. after an upgrade), events from
    well before it started were counted by the release that saw them: counting them again would
    spike the counters. Events from then on are counted, and the cursor saved covers both."""
    old = open_events().publish("old", "log", {"message": "history"})
    with sqlite3.connect(ql_home / "events.sqlite") as db:  # published two hours ago
        db.execute("UPDATE events SET ts = ts - 7200 WHERE seq = ?", (old.seq,))
    open_events().publish("recent", "log", {"message": "a few seconds before the subscriber"})
    seen: list[str] = []
    subscriber = telemetry.Subscriber(observe=lambda e: seen.append(e.run_id))
    stop = threading.Event()
    thread = threading.Thread(target=subscriber.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: subscriber.counting.is_set(), 10, "the subscriber to hold the lock")
        open_events().publish("new", "log", {"message": "now"})
        wait_for(lambda: seen == ["recent", "new"], 10, "the recent and new events counted")
    finally:
        stop.set()
        thread.join(10)
    assert telemetry.load_cursor(open_registry()) == open_events().last_seq()


def test_transition_refuses_what_the_table_does_not_allow(home: Path, no_worker: None) -> None:
    run = ql.submit(SINGLE)
    with pytest.raises(ValueError, match="no transition queued -> queued"):
        lifecycle.transition(run.id, RunStatus.QUEUED, expect=RunStatus.QUEUED)
    with pytest.raises(ValueError, match="told by a 'started' event, not 'cancelled'"):
        lifecycle.transition(run.id, RunStatus.RUNNING, expect=RunStatus.QUEUED,
                             event=lifecycle.Cancelled("sma_crossover"))
    before = open_events().last_seq(run.id)
    # a loser of the compare-and-set publishes nothing
    assert not lifecycle.transition(run.id, RunStatus.COMPLETED, expect=RunStatus.RUNNING,
                                    event=lifecycle.Completed("sma_crossover"))
    assert open_events().last_seq(run.id) == before and run.status == "queued"
    for source, targets in lifecycle.ALLOWED.items():
        if source in TERMINAL:
            assert not targets  # a final status is final


def _sets_status(node: ast.AST | None) -> bool:
    """A mapping literal with a top-level ``"status"`` key (``**`` merges included)."""
    if not isinstance(node, ast.Dict):
        return False
    return any((isinstance(k, ast.Constant) and k.value == "status")
               or (k is None and _sets_status(v)) for k, v in zip(node.keys, node.values,
                                                                  strict=True))


def _status_names(func: ast.AST) -> set[str]:
    """Names in ``func`` that hold a mapping given a ``"status"`` key: ``x = {"status": ..}``,
    ``x["status"] = ..``, ``x.update({"status": ..})``."""
    names = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign | ast.AnnAssign) and _sets_status(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant) \
                and node.slice.value == "status":
            names.add(node.value.id)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "update" and isinstance(node.func.value, ast.Name) \
                and node.args and _sets_status(node.args[0]):
            names.add(node.func.value.id)
    return names


def _status_writes(path: Path) -> list[str]:
    """Registry writes of a run's status in ``path``: every ``insert_run`` (a new run has a
    status), and every ``update_run`` whose fields set ``"status"``."""
    found = []
    for func in ast.walk(ast.parse(path.read_text())):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        names = _status_names(func)
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            fields = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "fields"), None)
            writes = node.func.attr == "insert_run" or (node.func.attr == "update_run" and (
                _sets_status(fields) or (isinstance(fields, ast.Name) and fields.id in names)))
            if writes:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {func.name}")
    return found


def test_no_status_is_written_outside_the_lifecycle() -> None:
    allowed = {ROOT / "quantlab" / "jobs" / "lifecycle.py"}
    registry = ROOT / "quantlab" / "registry"
    offenders = [hit for path in sorted((ROOT / "quantlab").rglob("*.py"))
                 if path not in allowed and registry not in path.parents
                 for hit in _status_writes(path)]
    assert offenders == []
    # the check sees a write when there is one: the lifecycle's own, and the old way
    assert _status_writes(ROOT / "quantlab" / "jobs" / "lifecycle.py")
    old = ROOT / "tests" / "test_jobs.py"  # a test fakes a dead worker's state by hand
    assert any("test_reaper_requeues" in hit for hit in _status_writes(old))


FORBIDDEN_IN_JOBS = ("quantlab.notebook", "quantlab.reports", "quantlab.telemetry",
                     "quantlab.notify", "quantlab.notifications", "quantlab.render",
                     "quantlab.server", "quantlab.dashboards", "quantlab.cli")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # in functions too
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{a.name}" for a in node.names)
            names.add(node.module)
    return names


def test_jobs_imports_no_higher_layer_and_has_no_cycle() -> None:
    jobs = {f"quantlab.jobs.{p.stem}": p for p in (ROOT / "quantlab" / "jobs").glob("*.py")
            if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in jobs.items():
        imported = _imports(path)
        assert not [i for i in imported if i.startswith(FORBIDDEN_IN_JOBS)], name
        graph[name] = {j for j in jobs if j != name and any(
            i == j or i.startswith(j + ".") for i in imported)}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    assert [name for name in graph if reaches(name, name, set())] == []


def test_event_payloads_match_the_event_types() -> None:
    from quantlab.events import EVENT_TYPES

    assert sorted(lifecycle.EVENT_PAYLOADS) == sorted(EVENT_TYPES)
    assert all(payload.type == kind for kind, payload in lifecycle.EVENT_PAYLOADS.items())
    assert set(lifecycle.Cancelled("x").data()) >= {"while", *ENDING}
    assert lifecycle.Failed("x", seconds=1.5, error="boom").data()["error"] == "boom"


def test_a_cache_hit_that_cannot_be_told_raises_and_never_executes(
        home: Path, no_worker: None) -> None:
    """The event store fails after the cache hit's run was recorded: submit raises, and the run
    ends failed (left queued, never enqueued, the reaper would have executed it)."""
    first = executed(SINGLE)
    real_publish = lifecycle.publish

    def store_away(run_id: str, payload: lifecycle.EventPayload, *args: Any, **kwargs: Any) -> Any:
        if payload.type == "queued":
            raise ql.RunError(f"could not publish the 'queued' event of run {run_id}",
                              run_id=run_id)
        return real_publish(run_id, payload, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lifecycle, "publish", store_away)
        with pytest.raises(ql.RunError, match="could not publish the 'queued' event"):
            ql.submit({**SINGLE, "name": "cached, untold"})
    (doc,) = [d for d in open_registry().find_runs(limit=None) if d["id"] != first.id]
    assert doc["status"] == "failed"
    assert doc["error"].startswith("the cached result could not be recorded: could not publish")
    assert doc["id"] not in orchestrator.reap()  # nothing puts it back on the queue
    assert doc["id"] != first.id


def test_a_failure_keeps_its_log_line_when_the_event_cannot_be_told(
        home: Path, no_worker: None) -> None:
    """transition() writes the log before it publishes: a failed run's error and traceback are
    in its log even if the 'failed' event could not be told."""
    run = ql.submit({**SINGLE, "strategy": "lifecycle_broken", "params": {"n": 3}})
    real_publish = lifecycle.publish

    def store_away(run_id: str, payload: lifecycle.EventPayload, *args: Any, **kwargs: Any) -> Any:
        if payload.type == "failed":
            raise ql.RunError("the event store is away", run_id=run_id)
        return real_publish(run_id, payload, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lifecycle, "publish", store_away)
        with pytest.raises(ql.RunError, match="the event store is away"):
            runner.execute(run.id)
    assert run.status == "failed"
    errors = [line for line in open_registry().logs(run.id) if line["level"] == "error"]
    assert errors and "ZeroDivisionError" in errors[-1]["message"]


def test_queue_messages_keep_the_task_names_of_the_previous_release(ql_home: Path) -> None:
    """Messages already on a queue at an upgrade (and workers of the previous release during a
    rolling one) name their task by these strings: a worker must still find the bodies."""
    from quantlab.jobs import queue, tasks

    names = {"run": "quantlab.jobs.queue.quantlab.execute_run",
             "shard": "quantlab.jobs.queue.quantlab.execute_shard"}
    assert queue.message("R1").name == names["run"]
    huey = tasks.register(queue.huey_app())
    for name in names.values():
        huey._registry.string_to_task(name)  # raises when no body is registered under it


def test_notebook_strategies_share_one_metrics_label_unless_listed(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # a notebook strategy's name is the user's choice: as a label value it would make the
    # series unbounded, so its runs count under strategy="notebook"; built-ins keep their name,
    # and so does a notebook strategy listed in QUANTLAB_METRICS_STRATEGIES
    def sample(name: str, **labels: str) -> float:
        return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0

    def count_with_a_subscriber(*configs: dict[str, Any]) -> list[Any]:
        subscriber = telemetry.start_subscriber_thread()
        try:
            runs = [executed(config, cache=False) for config in configs]
            last = open_events().last_seq()
            wait_for(lambda: (telemetry.load_cursor(open_registry()) or 0) >= last, 30,
                     "the subscriber to count every event")
        finally:
            subscriber.stop()
        return runs

    monkeypatch.delenv("QUANTLAB_METRICS_STRATEGIES", raising=False)
    broken = {**SINGLE, "strategy": "lifecycle_broken", "params": {"n": 3}}
    before = (sample("backtest_total", status="failed", strategy="notebook"),
              sample("backtest_total", status="failed", strategy="lifecycle_broken"),
              sample("backtest_total", status="completed", strategy="sma_crossover"))
    notebook_run, builtin_run = count_with_a_subscriber(broken, SINGLE)
    assert notebook_run.record["config"]["strategy_source"]  # shipped from the notebook
    assert notebook_run.status == "failed" and builtin_run.status == "completed"
    assert sample("backtest_total", status="failed", strategy="notebook") == before[0] + 1
    assert sample("backtest_total", status="failed", strategy="lifecycle_broken") == before[1]
    assert sample("backtest_total", status="completed", strategy="sma_crossover") == before[2] + 1

    monkeypatch.setenv("QUANTLAB_METRICS_STRATEGIES", "team_alpha, lifecycle_broken")
    count_with_a_subscriber({**broken, "params": {"n": 4}})
    assert sample("backtest_total", status="failed", strategy="lifecycle_broken") == before[1] + 1
    assert sample("backtest_total", status="failed", strategy="notebook") == before[0] + 1
