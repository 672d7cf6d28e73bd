"""Runs as jobs in embedded mode (SqliteHuey + SQLite registry/events), with real workers."""

from __future__ import annotations

import itertools
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.errors import ConfigError, QueueFull, RunError, RunNotFound, StoreUnavailable
from quantlab.events import open_events
from quantlab.jobs import orchestrator, queue, runner
from quantlab.jobs.supervisor import worker_alive
from quantlab.registry import open_registry
from quantlab.settings import current
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SLOW, SWEEP, WAIT, Workers, event_types, wait_for

MIN_LOOKBACK = 5  # read by a test strategy: a "notebook constant" that travels with its source

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers
no_worker = support.no_worker


def backtest_of(config: dict[str, object]) -> ql.Result:
    return ql.backtest(config["symbols"], config.get("strategy", "sma_crossover"),
                       config.get("params"), start=config.get("start"), end=config.get("end"),
                       interval="1d")


def test_submit_starts_a_worker_and_gives_the_same_result_as_backtest(home: Path) -> None:
    run = ql.submit(SINGLE, name="first", tags=["smoke"])
    assert run.status in ("queued", "running", "completed")
    assert worker_alive()
    pid = int((home / "worker.pid").read_text())
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed"
    assert record["user"] == "tester" and record["name"] == "first" and record["tags"] == ["smoke"]
    assert record["attempts"] == 1 and record["worker"].split(":")[1] == str(pid)
    assert record["progress"] == 1.0 and record["cached_from"] is None
    expected = backtest_of(SINGLE)
    result = run.result()
    assert result.metrics == pytest.approx(expected.metrics, nan_ok=True)
    pd.testing.assert_series_equal(result.equity, expected.equity, check_freq=False)
    pd.testing.assert_frame_equal(result.trades.reset_index(drop=True),
                                  expected.trades.reset_index(drop=True))
    assert record["metrics"]["sharpe"] == pytest.approx(expected.metrics["sharpe"])
    types = event_types(run)
    assert types[:2] == ["queued", "started"] and types[-1] == "completed"
    steps = [e.data["step"] for e in run.events() if e.type == "progress"]
    assert steps.index("collecting market data") < steps.index("computing indicators") \
        < steps.index("simulating") < steps.index("saving results")
    # a second submit reuses the running worker
    second = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert second.status == "completed"
    assert int((home / "worker.pid").read_text()) == pid


def test_submitted_sweep_matches_the_backtest_sweep(home: Path) -> None:
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    expected = backtest_of(SWEEP)
    result = run.result()
    assert result.table is not None and len(result.table) == 24
    pd.testing.assert_frame_equal(result.table, expected.table)
    assert result.params == expected.params
    assert run.record["best_params"] == expected.params


@pytest.mark.parametrize("bad", [
    {**SINGLE, "comission": 0.001},
    {**SINGLE, "symbols": ["NOPE"]},
    {**SINGLE, "params": {"fast": [50], "slow": [10]}},
    {**SINGLE, "start": "2021-01-01", "end": "2020-01-01"},
    {**SINGLE, "start": "2031-01-01", "end": "2032-01-01"},
])
def test_an_invalid_config_creates_nothing(home: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ql.submit(bad)
    assert open_registry().count_runs() == 0
    assert open_events().last_seq() == 0
    assert queue.pending_count() == 0
    assert not (home / "worker.pid").exists() and not worker_alive()


def test_bad_priority_and_cache_arguments_are_refused(home: Path) -> None:
    with pytest.raises(ConfigError, match="priority must be a whole number"):
        ql.submit(SINGLE, priority="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cache must be True or False"):
        ql.submit(SINGLE, cache="yes")  # type: ignore[arg-type]
    assert open_registry().count_runs() == 0


@pytest.mark.parametrize(("priority", "shown"), [
    (10**30, "a number of about 31 digits"), (-1_000_001, "-1,000,001")])
def test_a_priority_out_of_range_is_refused_before_anything_is_recorded(
        home: Path, priority: int, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        ql.submit(SINGLE, priority=priority)
    assert str(info.value) == ("priority must be between -1,000,000 and 1,000,000 (higher runs "
                               f"first, default 0), got {shown}")
    assert info.value.field == "priority"
    assert open_registry().count_runs() == 0 and queue.pending_count() == 0


@pytest.mark.parametrize(("params", "message"), [
    ({"fast": 10, "slow": 5000},
     "no signal can form: slow=5,000 > {n} bars (AAA has {n} 1d bars from 2020-01-01 to "
     "2020-12-31); a window must be shorter than the data: use slow < {n}, or give more data"),
    ({"fast": 10**18, "slow": 10**18 + 1},
     "no signal can form: fast=1,000,000,000,000,000,000 > {n} bars"),
    ({"fast": [5, 10], "slow": [50, 200, "n"]},
     "no signal can form: slow={n} = {n} bars (AAA has {n} 1d bars from 2020-01-01 to "
     "2020-12-31); a window must be shorter than the data: keep slow below {n} in the sweep"),
])
def test_a_window_as_long_as_the_data_is_refused_at_submit(
        home: Path, params: dict[str, Any], message: str) -> None:
    n = ql.data.bar_counts("AAA", SINGLE["start"], SINGLE["end"])["AAA"]
    assert 200 < n < 300  # a year of business days
    if isinstance(params["slow"], list):
        params = {**params, "slow": [n if v == "n" else v for v in params["slow"]]}
    with pytest.raises(ConfigError) as info:
        ql.submit({**SINGLE, "params": params})
    assert str(info.value).startswith(message.format(n=n))
    assert str(info.value.field).startswith("params.") and info.value.fields["bars"] == n
    assert open_registry().count_runs() == 0 and queue.pending_count() == 0


def test_a_window_shorter_than_the_data_is_accepted(home: Path, no_worker: None) -> None:
    n = ql.data.bar_counts("AAA", SINGLE["start"], SINGLE["end"])["AAA"]
    assert ql.submit({**SINGLE, "params": {"fast": 10, "slow": n - 1}}).status == "queued"


def test_queue_full_creates_nothing(home: Path, no_worker: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_QUEUE_MAX", "2")
    first = ql.submit(SINGLE)
    ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}})
    with pytest.raises(QueueFull) as info:
        ql.submit({**SINGLE, "params": {"fast": 6, "slow": 40}})
    assert "QUANTLAB_QUEUE_MAX=2" in str(info.value) and "nothing was created" in str(info.value)
    assert open_registry().count_runs() == 2
    assert queue.pending_count() == 2
    first.cancel()
    assert ql.submit({**SINGLE, "params": {"fast": 6, "slow": 40}}).status == "queued"


def test_positions_follow_priority_and_the_worker_takes_the_highest_first(
        home: Path, no_worker: None, workers: Workers) -> None:
    low = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}) for f in (5, 6, 7)]
    assert [r.position for r in low] == [1, 2, 3]
    urgent = ql.submit({**SINGLE, "params": {"fast": 8, "slow": 40}}, priority=5)
    assert urgent.position == 1 and low[0].position == 2
    assert urgent.record["estimated_seconds"] > 0
    workers.start()
    for run in [*low, urgent]:
        run.wait(timeout=WAIT)
    started = sorted([*low, urgent], key=lambda r: r.record["started_at"])
    assert started == [urgent, *low]


def test_cancel_a_queued_run_takes_it_off_the_queue(home: Path, no_worker: None,
                                                    workers: Workers) -> None:
    doomed = ql.submit(SINGLE)
    doomed.cancel()
    assert doomed.status == "cancelled"
    assert event_types(doomed) == ["queued", "cancelled"]
    later = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}})
    workers.start()
    later.wait(timeout=WAIT)
    assert later.status == "completed"
    assert doomed.status == "cancelled" and event_types(doomed) == ["queued", "cancelled"]
    with pytest.raises(RunError, match="cancelled before it produced a result"):
        doomed.result()


def test_cancel_a_running_sweep_keeps_its_finished_combinations(home: Path,
                                                                workers: Workers) -> None:
    workers.start(env=SLOW)
    run = ql.submit(SWEEP)
    wait_for(lambda: any(e.type == "progress" and e.data.get("done_units", 0) >= 4
                         for e in run.events()), WAIT, "4 combinations done")
    run.cancel()
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    result = run.result()
    assert result.partial and result.table is not None
    kept = len(result.table)
    assert 4 <= kept < 24
    full = backtest_of(SWEEP).table
    pd.testing.assert_frame_equal(result.table, full.iloc[:kept])
    cancelled = [e for e in run.events() if e.type == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].data["combinations_done"] == kept
    assert event_types(run).count("completed") == 0


def test_a_failing_strategy_fails_the_run_with_its_traceback_and_the_worker_lives(
        home: Path, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "plugins" / "exploding_strategies.py"
    module.parent.mkdir()
    module.write_text(textwrap.dedent("""
        import quantlab as ql

        @ql.strategy
        def exploding(bars, threshold=1):
            raise RuntimeError(f"boom at threshold {threshold}")
    """))
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.setenv("PYTHONPATH", str(module.parent))
    import exploding_strategies  # noqa: F401  (registers the strategy in this kernel too)

    proc = workers.start(args=("--import", "exploding_strategies"))
    run = ql.submit({**SINGLE, "strategy": "exploding", "params": {"threshold": 3}})
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "failed"
    assert "boom at threshold 3" in record["error"]
    # the strategy's source travelled with the config; the traceback names it and its line
    assert record["config"]["strategy_source"].count("def exploding") == 1
    assert "<strategy exploding>" in record["traceback"]
    assert 'raise RuntimeError(f"boom at threshold {threshold}")' in record["traceback"]
    assert any(line["level"] == "error" and "boom" in line["message"] for line in run.logs())
    failed = [e for e in run.events() if e.type == "failed"]
    assert len(failed) == 1 and failed[0].data["reason"] == "error"
    with pytest.raises(RunError, match="boom at threshold 3"):
        run.result()
    after = ql.submit(SINGLE).wait(timeout=WAIT)
    assert after.status == "completed" and proc.poll() is None
    assert after.record["worker"].split(":")[1] == str(proc.pid)


def test_a_worker_refuses_a_strategy_module_it_cannot_import(home: Path) -> None:
    from quantlab.jobs.worker import import_strategy_modules

    with pytest.raises(ConfigError, match="cannot import strategy module 'no_such_mod"):
        import_strategy_modules(["no_such_module_here"])


def test_cache_hit_returns_the_result_at_once_and_new_data_misses(home: Path) -> None:
    first = ql.submit(SINGLE).wait(timeout=WAIT)
    cached = ql.submit({**SINGLE, "name": "again"})
    record = cached.record
    assert record["status"] == "completed" and record["cached_from"] == first.id
    assert cached.id != first.id and record["name"] == "again"
    assert event_types(cached) == ["queued", "completed"]
    pd.testing.assert_series_equal(cached.result().equity, first.result().equity)
    assert cached.record["metrics"] == first.record["metrics"]
    fresh = ql.submit(SINGLE, cache=False)
    assert fresh.record["cached_from"] is None
    fresh.wait(timeout=WAIT)
    assert fresh.record["config_hash"] == first.record["config_hash"]
    # change one bar inside the run's range: the hash changes, the cache misses
    frame = ql.data.load("AAA", "2020-03-02", "2020-03-31").frame("AAA")
    frame.iloc[2, [frame.columns.get_loc(c) for c in ("open", "high", "low", "close")]] *= 0.97
    ql.data.import_frame("AAA", frame, interval="1d", mode="extend", adjusted=True)
    changed = ql.submit(SINGLE)
    assert changed.record["cached_from"] is None
    assert changed.record["config_hash"] != first.record["config_hash"]
    changed.wait(timeout=WAIT)
    assert changed.status == "completed"


def test_max_duration_fails_the_run_with_a_timeout(home: Path, workers: Workers) -> None:
    workers.start(env={**SLOW, "QUANTLAB_MAX_DURATION": "0.3"})
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "failed"
    assert record["error"].startswith("timeout: the run took longer than "
                                      "QUANTLAB_MAX_DURATION=0.3 s")
    assert [e.data["reason"] for e in run.events() if e.type == "failed"] == ["timeout"]


def test_a_sweep_stopped_by_the_time_limit_keeps_its_finished_combinations(
        home: Path, workers: Workers) -> None:
    # 12 chunks of 2 combinations, 0.5 s each: the 2 s limit stops it a few chunks in
    workers.start(env={"QUANTLAB_JOBS_MAX_CHUNK": "2", "QUANTLAB_JOBS_CHUNK_DELAY": "0.5",
                       "QUANTLAB_MAX_DURATION": "2"})
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "failed" and record["partial"] is True, record
    result = run.result()  # a timed-out sweep gives what it finished, as a cancelled one does
    kept = len(result.table)
    assert result.partial and 2 <= kept < 24
    assert record["error"].endswith(f"its {kept:,} finished combinations are kept: run.result()")
    pd.testing.assert_frame_equal(result.table, backtest_of(SWEEP).table.iloc[:kept])
    failed = [e for e in run.events() if e.type == "failed"]
    assert len(failed) == 1 and failed[0].data["partial"] is True


@pytest.mark.slow
@pytest.mark.parametrize(("config", "chunk"), [(SWEEP, "2"), (SINGLE, "8")],
                         ids=["sweep", "single"])
def test_kill_9_mid_run_resumes_from_the_checkpoint_on_another_worker(
        home: Path, workers: Workers, config: dict[str, object], chunk: str) -> None:
    env = {**SLOW, "QUANTLAB_JOBS_MAX_CHUNK": chunk, "QUANTLAB_HEARTBEAT_TIMEOUT": "3",
           "QUANTLAB_CHECKPOINT_SECONDS": "0.2"}
    procs = [workers.start(env=env), workers.start(env=env)]
    run = ql.submit(config)
    wait_for(lambda: "checkpoint" in event_types(run), WAIT, "a checkpoint")
    victim_pid = support.kill_the_runs_worker(run, procs)
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed", record["error"]
    assert record["attempts"] == 2
    assert record["worker"].split(":")[1] != str(victim_pid)
    types = event_types(run)
    assert types.count("completed") == 1 and types.count("started") == 2
    requeued = [e for e in run.events() if e.type == "queued" and e.data.get("reason")]
    assert [e.data["reason"] for e in requeued] == ["worker_lost"]
    assert any("resumed from checkpoint" in line["message"] for line in run.logs())
    expected = backtest_of(config)
    result = run.result()
    assert result.metrics == pytest.approx(expected.metrics, nan_ok=True)
    pd.testing.assert_series_equal(result.equity, expected.equity, check_freq=False)
    if expected.table is not None:
        pd.testing.assert_frame_equal(result.table, expected.table)


def test_events_replay_from_any_sequence_number(home: Path) -> None:
    run = ql.submit(SINGLE).wait(timeout=WAIT)
    events = run.events()
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    middle = seqs[len(seqs) // 2]
    assert [e.seq for e in run.events(after=middle)] == [s for s in seqs if s > middle]
    followed = list(run.follow(after=middle, idle_timeout=5))
    assert [e.seq for e in followed] == [s for s in seqs if s > middle]


def test_get_run_runs_search_and_frame(home: Path) -> None:
    a = ql.submit(SINGLE, tags=["alpha"]).wait(timeout=WAIT)
    b = ql.submit({**SINGLE, "symbols": ["BBB"]}, name="bbb run").wait(timeout=WAIT)
    assert ql.get_run(a.id) == a and ql.get_run(a.id).status == "completed"
    with pytest.raises(RunNotFound):
        ql.get_run("01NOPE")
    assert [r.id for r in ql.runs(tag="alpha")] == [a.id]
    assert [r.id for r in ql.runs(symbol="BBB")] == [b.id]
    assert [r.id for r in ql.runs(text="bbb")] == [b.id]
    found = ql.runs(status="completed", sort="queued_at")
    assert [r.id for r in found] == [a.id, b.id]
    frame = found.to_frame()
    assert list(frame.index) == [a.id, b.id]
    assert frame.loc[a.id, "metric.sharpe"] == pytest.approx(a.record["metrics"]["sharpe"])
    assert a.id in repr(found) and "<table" in found._repr_html_()
    assert f"run {a.id}" in repr(a) and "completed" in a._repr_html_()


def test_wait_with_a_timeout_raises_and_the_run_goes_on(home: Path, no_worker: None) -> None:
    run = ql.submit(SINGLE)
    with pytest.raises(TimeoutError, match=r"wait longer, or run\.cancel"):
        run.wait(timeout=0.2)
    assert run.status == "queued"
    assert "position 1" in repr(run)


def test_reaper_requeues_a_run_whose_worker_stopped_beating(home: Path, no_worker: None) -> None:
    run = ql.submit(SINGLE)
    registry = open_registry()
    # What a worker that took the run and then died leaves behind:
    registry.update_run(run.id, {"status": "running", "worker": "gone:1:Worker-1", "attempts": 1,
                                 "heartbeat_at": time.time() - 60}, expect_status=("queued",))
    assert queue.pending_count() == 1  # its original message was consumed in real life:
    queue.huey_app().storage.flush_queue()
    assert orchestrator.reap() == [run.id]
    record = run.record
    assert record["status"] == "queued" and record["worker"] is None
    assert [e.data.get("reason") for e in run.events() if e.type == "queued"] == [None,
                                                                                  "worker_lost"]
    assert queue.queued_run_ids() == {run.id}
    # a run that lost its worker MAX_ATTEMPTS times is given up
    registry.update_run(run.id, {"status": "running", "attempts": orchestrator.MAX_ATTEMPTS,
                                 "heartbeat_at": time.time() - 60}, expect_status=("queued",))
    assert orchestrator.reap() == []
    assert run.status == "failed" and "given up" in run.record["error"]


def test_reaper_reenqueues_a_queued_run_whose_message_was_lost(home: Path,
                                                              no_worker: None) -> None:
    run = ql.submit(SINGLE)
    queue.huey_app().storage.flush_queue()  # e.g. Redis restarted without persistence
    assert orchestrator.reap(now=time.time() + 60) == [run.id]
    assert queue.queued_run_ids() == {run.id}
    assert orchestrator.reap(now=time.time() + 60) == []  # now it is there: nothing to do


def test_reaper_leaves_a_run_a_live_worker_holds_and_takes_back_one_a_dead_worker_held(
        home: Path, no_worker: None, caplog: pytest.LogCaptureFixture) -> None:
    import json

    from quantlab.jobs import slots

    run = ql.submit(SINGLE)
    queue.huey_app().storage.flush_queue()  # a worker took its message ...
    with slots.holding(run.id, current(), "w:1"):  # ... and holds it
        assert orchestrator.reap(now=time.time() + 60) == []
    assert "re-enqueued" not in caplog.text
    # a worker that died holding it leaves a mark that goes stale: the message is lost
    stale = json.dumps({"worker": "gone:1", "at": time.time() - slots.IN_HAND_STALE - 1})
    queue.huey_app().storage.put_data(f"{slots.IN_HAND_PREFIX}{run.id}.x", stale.encode())
    assert orchestrator.reap(now=time.time() + 60) == [run.id]
    assert f"run {run.id} was queued but not on the queue; re-enqueued" in caplog.text
    assert queue.queued_run_ids() == {run.id}
    assert slots.in_hand([run.id], current()) == set()
    keys = [k.decode() if isinstance(k, bytes) else str(k)
            for k in queue.huey_app().storage.result_items()]
    assert not [k for k in keys if k.startswith(slots.IN_HAND_PREFIX)]  # the stale mark is gone


def test_the_take_lock_is_exclusive_and_a_dead_holders_is_broken_once(home: Path) -> None:
    import json

    from quantlab.jobs import slots

    first, second = slots.TakeLock(current(), "w:1"), slots.TakeLock(current(), "w:2")
    assert first.acquire(timeout=0.1)
    assert not second.acquire(timeout=0.1)  # a live holder keeps it
    first.release()
    assert second.acquire(timeout=0.1)
    second.release()
    storage = queue.huey_app().storage
    dead = {"token": "t-dead", "worker": "gone:1", "at": time.time() - slots.LOCK_STALE - 1}
    storage.put_data(slots.LOCK_KEY, json.dumps(dead).encode())
    assert first.acquire(timeout=1.0)  # the dead holder's lock was broken
    assert not second.acquire(timeout=0.1)  # and the new holder's is not broken again
    first.release()


def test_a_duplicate_message_never_runs_a_run_twice(home: Path, workers: Workers) -> None:
    workers.start()
    run = ql.submit(SINGLE)
    queue.enqueue(run.id)  # the same run delivered twice
    run.wait(timeout=WAIT)
    marker = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert marker.status == "completed"
    assert event_types(run).count("started") == 1 and run.record["attempts"] == 1


def test_run_ids_sort_by_submit_time() -> None:
    ids = [orchestrator.new_run_id(now=t) for t in (1.0, 2.0, 1000.0)]
    assert ids == sorted(ids) and all(len(i) == 26 for i in ids)
    assert orchestrator.new_run_id(now=5.0) != orchestrator.new_run_id(now=5.0)


def test_estimates_scale_with_the_config_shape(home: Path) -> None:
    from quantlab.config import BacktestConfig

    one = BacktestConfig.from_any(SINGLE)
    sweep = BacktestConfig.from_any({**SINGLE, "params": {"fast": [5, 10], "slow": [40, 50]}})
    assert orchestrator.approx_bars(one) == pytest.approx(252, rel=0.02)
    assert orchestrator.work_units(sweep, 4) == pytest.approx(4 * orchestrator.work_units(one, 1))
    minutes = BacktestConfig.from_any({**SINGLE, "interval": "1min"}, check=False)
    assert orchestrator.approx_bars(minutes) == pytest.approx(252 * 390, rel=0.02)


def test_chunk_sizer_aims_at_the_target_time() -> None:
    from quantlab.jobs.execution import ChunkSizer

    sizer = ChunkSizer(target=0.05, first=64)
    sizer.observe(64, 0.001)  # far too fast: grow, but at most 8x per step
    assert sizer.next(10_000) == 512
    sizer.observe(512, 0.1)  # twice too slow: halve
    assert sizer.next(10_000) == 256
    assert sizer.next(10) == 10
    capped = ChunkSizer(cap=2)
    capped.observe(2, 0.0)
    assert capped.next(100) == 2


def test_environment_knobs_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_HEARTBEAT_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="QUANTLAB_HEARTBEAT_TIMEOUT='soon' is not a number"):
        orchestrator.stale_after()
    monkeypatch.setenv("QUANTLAB_HEARTBEAT_TIMEOUT", "-1")
    with pytest.raises(ConfigError, match="must be positive"):
        orchestrator.stale_after()


def test_cli_status_runs_and_cancel(home: Path, no_worker: None) -> None:
    from click.testing import CliRunner

    from quantlab.jobs import cli

    run = ql.submit(SINGLE, name="cli run")
    runner = CliRunner()
    out = runner.invoke(cli.status, [run.id])
    assert out.exit_code == 0 and f"run {run.id}" in out.output and "queued" in out.output
    out = runner.invoke(cli.runs, ["--status", "queued"])
    assert out.exit_code == 0 and run.id in out.output and "cli run" in out.output
    out = runner.invoke(cli.runs, ["--status", "runing"])
    assert out.exit_code == 2 and "did you mean 'running'?" in out.output
    out = runner.invoke(cli.cancel, [run.id])
    assert out.exit_code == 0 and "cancelled" in out.output
    assert run.status == "cancelled"
    out = runner.invoke(cli.status, ["NOPE"])
    assert out.exit_code == 2 and "NOPE" in out.output
    assert os.environ["QUANTLAB_HOME"] == str(home)


def test_only_the_owner_or_an_admin_may_cancel_a_run(home: Path, no_worker: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from quantlab.errors import NotOwner
    from quantlab.jobs import cli

    monkeypatch.setenv("QUANTLAB_USER", "alice")
    mine = ql.submit(SINGLE)
    assert mine.record["user"] == "alice"
    monkeypatch.setenv("QUANTLAB_USER", "bob")
    refused = (f"run {mine.id} belongs to alice: only alice or an admin (QUANTLAB_ADMINS) can "
               f"cancel it; you are bob")
    with pytest.raises(NotOwner) as caught:
        ql.get_run(mine.id).cancel()  # the Python API asks as QUANTLAB_USER
    assert str(caught.value) == refused
    assert caught.value.owner == "alice" and caught.value.user == "bob"
    out = CliRunner().invoke(cli.cancel, [mine.id])  # `quantlab cancel` follows the same rule
    assert out.exit_code == 2 and refused in out.output
    assert mine.status == "queued" and event_types(mine) == ["queued"]
    assert queue.queued_run_ids() == {mine.id}  # still on the queue
    # an admin may
    monkeypatch.setenv("QUANTLAB_ADMINS", "carol, bob")
    assert ql.get_run(mine.id).cancel().status == "cancelled"
    # and the owner may, with no admin set (a single-user install: every run is the user's)
    monkeypatch.delenv("QUANTLAB_ADMINS")
    monkeypatch.setenv("QUANTLAB_USER", "alice")
    again = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}})
    assert again.cancel().status == "cancelled"


def test_only_the_user_a_notification_is_for_or_an_admin_may_mark_it_read(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.errors import NotOwner

    registry = open_registry()
    note = registry.add_notification({"user": "alice", "run_id": "R1", "kind": "completed",
                                      "title": "done", "body": "done"})
    monkeypatch.setenv("QUANTLAB_USER", "bob")
    with pytest.raises(NotOwner, match=f"notification {note} belongs to alice: only alice or an "
                                       f"admin \\(QUANTLAB_ADMINS\\) can mark it read; you are bob"):
        ql.notifications.mark_read(note)
    with pytest.raises(NotOwner, match="the notifications of alice are alice's: only alice or "
                                       "an admin"):
        ql.notifications.mark_all_read("alice")
    assert registry.get_notification(note)["read"] is False
    assert ql.notifications.mark_read("no-such-notification") is False
    monkeypatch.setenv("QUANTLAB_ADMINS", "bob")
    assert ql.notifications.mark_read(note) is True
    assert registry.get_notification(note)["read"] is True
    monkeypatch.delenv("QUANTLAB_ADMINS")
    monkeypatch.setenv("QUANTLAB_USER", "alice")
    other = registry.add_notification({"user": "alice", "run_id": "R1", "kind": "failed",
                                       "title": "failed", "body": "failed"})
    assert ql.notifications.mark_all_read() == 1 and registry.get_notification(other)["read"]


def test_max_concurrent_holds_with_two_worker_processes(home: Path, workers: Workers) -> None:
    workers.start(2, env={**SLOW, "QUANTLAB_JOBS_MAX_CHUNK": "16",
                          "QUANTLAB_MAX_CONCURRENT": "1"})
    runs = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}) for f in (5, 6, 7)]
    for run in runs:
        run.wait(timeout=WAIT)
    records = sorted((r.record for r in runs), key=lambda d: d["started_at"])
    assert all(d["status"] == "completed" and d["attempts"] == 1 for d in records)
    for earlier, later in itertools.pairwise(records):
        assert later["started_at"] >= earlier["finished_at"]
    assert all(event_types(r).count("started") == 1 for r in runs)


def test_max_concurrent_is_never_exceeded_in_the_registry_and_a_put_back_is_quiet(
        home: Path, workers: Workers) -> None:
    """What a user sees never shows more running runs than QUANTLAB_MAX_CONCURRENT (a worker
    finding no room leaves its run queued), and a run put back is never taken for a lost
    message by the reaper (the 're-enqueued' warning)."""
    workers.start(4, env={**SLOW, "QUANTLAB_JOBS_MAX_CHUNK": "24",
                          "QUANTLAB_MAX_CONCURRENT": "2"})
    runs = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}) for f in range(5, 13)]
    assert support.watch_concurrency(limit=2) == []  # no 're-enqueued' warning
    assert "re-enqueued" not in workers.log_text()
    for run in runs:
        assert run.record["status"] == "completed" and run.record["attempts"] == 1
        assert event_types(run).count("started") == 1
        assert event_types(run).count("queued") == 1  # a put-back tells nothing


def test_a_split_sweep_runs_on_several_workers_and_equals_the_whole_sweep(
        home: Path, workers: Workers) -> None:
    env = {"QUANTLAB_SHARD_COMBINATIONS": "5", "QUANTLAB_JOBS_MAX_CHUNK": "1",
           "QUANTLAB_JOBS_CHUNK_DELAY": "0.02"}
    first, second = workers.start(env=env), workers.start(env=env)
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed", record["error"]
    assert any("split into 5 shards" in line["message"] for line in run.logs())
    expected = backtest_of(SWEEP)
    result = run.result()
    pd.testing.assert_frame_equal(result.table, expected.table)
    assert result.params == expected.params and not result.partial
    assert result.metrics == pytest.approx(expected.metrics, nan_ok=True)
    pd.testing.assert_series_equal(result.equity, expected.equity, check_freq=False)
    # one stream: progress aggregated over the shards and monotonic, one completed event
    done = [e.data["done_units"] for e in run.events()
            if e.type == "progress" and e.data["step"] == "simulating"]
    assert done == sorted(done) and done[-1] == 24
    assert event_types(run).count("completed") == 1
    # both processes ran shards: each shard's worker beat is gone, but the helper's log shows it
    helper_logs = workers.log_text()
    assert "quantlab.execute_shard" in helper_logs
    assert first.poll() is None and second.poll() is None
    assert not any(k.startswith(f"runs/{run.id}/shards/") for k in _blob_keys(home, run.id))


def _blob_keys(home: Path, run_id: str) -> list[str]:
    root = home / "blobs"
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
            and run_id in str(p)]


def test_cancel_of_a_split_sweep_keeps_the_finished_part_of_every_shard(
        home: Path, workers: Workers) -> None:
    env = {"QUANTLAB_SHARD_COMBINATIONS": "8", "QUANTLAB_JOBS_MAX_CHUNK": "1",
           "QUANTLAB_JOBS_CHUNK_DELAY": "0.1"}
    workers.start(env=env)
    workers.start(env=env)
    run = ql.submit(SWEEP)
    wait_for(lambda: any(e.type == "progress" and e.data.get("done_units", 0) >= 4
                         for e in run.events()), WAIT, "4 combinations done")
    run.cancel().wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    table = run.result().table
    assert 4 <= len(table) < 24
    full = backtest_of(SWEEP).table
    # every kept row is the whole sweep's row for the same parameters
    merged = table.merge(full, on=["fast", "slow"], suffixes=("", "_full"))
    assert len(merged) == len(table)
    assert (merged["sharpe"].fillna(-99) == merged["sharpe_full"].fillna(-99)).all()


@pytest.mark.slow
def test_a_shard_whose_worker_is_killed_is_run_again_and_the_sweep_completes(
        home: Path, workers: Workers) -> None:
    from quantlab import settings
    from quantlab.jobs.shards import ShardBoard

    env = {"QUANTLAB_SHARD_COMBINATIONS": "6", "QUANTLAB_JOBS_MAX_CHUNK": "1",
           "QUANTLAB_JOBS_CHUNK_DELAY": "0.1", "QUANTLAB_HEARTBEAT_TIMEOUT": "3"}
    # both consumers taking tasks before the submit: else the first may run every shard itself
    # while the second is still warming up, and no helper ever runs one
    procs = [workers.start(env=env, ready=True), workers.start(env=env, ready=True)]
    run = ql.submit(SWEEP)
    coordinator = wait_for(lambda: run.record["worker"], WAIT, "a coordinator")
    helper = next(p for p in procs if str(p.pid) != coordinator.split(":")[1])
    board = ShardBoard(run.id, 4, settings.current())

    def helper_running_a_shard() -> bool:
        for index in range(4):
            owner = board.claimed_by(index)
            if owner and owner.split(":")[1] == str(helper.pid) \
                    and board.result(index) is None and board.done(index) >= 1:
                return True
        return False

    wait_for(helper_running_a_shard, WAIT, "the helper to run a shard")
    helper.kill()
    helper.wait(timeout=10)
    run.wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    assert any("lost its worker; running it here" in line["message"] for line in run.logs())
    pd.testing.assert_frame_equal(run.result().table, backtest_of(SWEEP).table)
    assert not run.result().partial


def test_cli_worker_refuses_a_strategy_module_it_cannot_import(home: Path) -> None:
    from click.testing import CliRunner

    from quantlab import cli

    out = CliRunner().invoke(cli.worker, ["--import", "no_such_module_here", "--no-warm-up"])
    assert out.exit_code == 2
    assert "cannot import strategy module 'no_such_module_here'" in out.output
    assert not worker_alive()


def test_a_worker_that_cannot_start_is_reported_by_submit(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_WORKER_IMPORTS", "no_such_strategy_pack")
    with pytest.raises(RunError) as info:
        ql.submit(SINGLE)
    message = str(info.value)
    assert message.startswith("the QuantLab worker exited at start")
    assert "cannot import strategy module 'no_such_strategy_pack'" in message
    assert "worker.log" in message
    assert open_registry().count_runs() == 0  # a submit that raises created nothing


def test_another_probes_instant_is_not_taken_for_a_live_worker(home: Path) -> None:
    # A probe holds the worker lock exclusively for an instant. Another probe (the kernel's
    # prestart thread beside a submit, a second kernel) in that instant answered "alive", and
    # no worker was started. Here another process's probe stays in its instant until released.
    import fcntl
    import threading

    from quantlab.jobs.supervisor import LOCK_FILE, PROBE_LOCK_FILE

    probe = os.open(home / PROBE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    lock = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(probe, fcntl.LOCK_EX)
    fcntl.flock(lock, fcntl.LOCK_EX)
    answers: list[bool] = []
    asking = threading.Thread(target=lambda: answers.append(worker_alive(current())))
    asking.start()
    try:
        asking.join(0.3)
        assert answers == []  # it waits for the other probe to finish instead of answering
    finally:
        os.close(lock)
        os.close(probe)
    asking.join(10)
    assert answers == [False]
    # a worker's own (shared) lock is alive
    held = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_SH)
    try:
        assert worker_alive(current())
    finally:
        os.close(held)


def test_a_child_forked_during_a_probe_can_probe(home: Path) -> None:
    from quantlab.jobs import supervisor

    with supervisor._probing_here:  # another thread of this process is probing
        pid = os.fork()
        if pid == 0:  # the child: its copy of the lock was taken by a thread it does not have
            code = 1
            try:
                supervisor.worker_alive(current())
                code = 0
            finally:
                os._exit(code)
    statuses: list[int] = []

    def ended() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            statuses.append(status)
        return bool(statuses)

    try:
        wait_for(ended, 30, "the forked child's probe")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)  # it hangs on the lock: fail, leaving nothing behind
        os.waitpid(pid, 0)
        raise
    assert os.waitstatus_to_exitcode(statuses[0]) == 0


def test_the_self_started_worker_leaves_when_idle(home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_WORKER_IDLE_EXIT", "1")
    run = ql.submit(SINGLE).wait(timeout=WAIT)
    assert run.status == "completed"
    wait_for(lambda: not worker_alive(), WAIT, "the idle worker to leave")
    log_text = (home / "worker.log").read_text()
    assert "idle for" in log_text
    assert "failed" not in log_text  # leaving is not reported as a failed reaper pass
    # the next submit starts a new one
    again = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert again.status == "completed"


def test_a_strategy_defined_in_the_kernel_travels_to_the_worker_as_source(
        home: Path, workers: Workers) -> None:
    @ql.strategy(name="jobs_test_momentum_flip")
    def momentum_flip(bars, lookback=10):
        lookback = max(lookback, MIN_LOOKBACK)
        close = bars.close[0]
        signal = np.zeros(len(close), dtype=np.int8)
        signal[lookback:] = np.where(close[lookback:] > close[:-lookback], 1, -1)
        return signal

    workers.start()  # a worker that never imported this code
    config = {**SINGLE, "strategy": "jobs_test_momentum_flip", "params": {"lookback": [10, 20]}}
    run = ql.submit(config).wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    # the module's import and constant travelled with the source
    source = run.record["config"]["strategy_source"]
    assert "import numpy as np" in source and "MIN_LOOKBACK = 5" in source
    expected = ql.backtest("AAA", momentum_flip, {"lookback": [10, 20]}, start=SINGLE["start"],
                           end=SINGLE["end"], interval="1d")
    pd.testing.assert_frame_equal(run.result().table, expected.table)
    # its overfitting statistics were re-simulated in its sandbox: those of the sweep here
    stored, here = run.record["overfitting"], expected.overfitting(trials="registry")
    assert stored["n_sweep"] == 2 and stored["pbo"] == here.pbo
    assert stored["dsr_best"] == pytest.approx(here.dsr_best)


def test_the_worker_bars_cache_is_bounded_by_count_and_bytes(home: Path) -> None:
    from quantlab.jobs.execution import BarsCache

    small = ql.data.load("AAA", "2020-01-01", "2020-12-31")
    loads: list[str] = []

    def loader(key: str) -> object:
        loads.append(key)
        return small

    cache = BarsCache(size=2, max_bytes=10 * 2**20)
    for key in ("a", "b", "a", "c", "b"):
        assert cache.get(key, lambda key=key: loader(key)) is small
    assert loads == ["a", "b", "c", "b"]  # "a" was used again, so "b" was the oldest
    assert (cache.hits, cache.misses) == (1, 4)
    one = BarsCache._nbytes(small)
    tight = BarsCache(size=8, max_bytes=one + one // 2)
    tight.get("x", lambda: small)
    tight.get("y", lambda: small)
    tight.get("x", lambda: small)  # evicted by the byte budget: loaded again
    assert tight.misses == 3


@pytest.mark.slow
def test_a_killed_worker_process_of_a_multi_process_worker_is_replaced_and_its_run_resumed(
        home: Path, workers: Workers) -> None:
    env = {**SLOW, "QUANTLAB_JOBS_MAX_CHUNK": "8", "QUANTLAB_HEARTBEAT_TIMEOUT": "3",
           "QUANTLAB_CHECKPOINT_SECONDS": "0.2"}
    parent = workers.start(2, env=env)
    run = ql.submit(SINGLE)
    wait_for(lambda: "checkpoint" in event_types(run), WAIT, "a checkpoint")
    child = int(run.record["worker"].split(":")[1])
    assert child != parent.pid  # the run executes in a forked worker process
    os.kill(child, signal.SIGKILL)
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed", record["error"]
    assert record["attempts"] == 2 and parent.poll() is None
    pd.testing.assert_series_equal(run.result().equity, backtest_of(SINGLE).equity,
                                   check_freq=False)
    # the consumer replaced the dead process: a new run still completes
    again = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert again.status == "completed"


def test_a_worker_reuses_indicators_of_earlier_runs_on_the_same_data(home: Path) -> None:
    def computed(run: ql.Run) -> int:
        lines = [line["message"] for line in run.logs()
                 if line["message"].startswith("indicators computed: ")]
        assert len(lines) == 1, run.logs()
        return int(lines[0].split(": ")[1].split()[0])

    first = ql.submit(SINGLE, cache=False).wait(timeout=WAIT)
    again = ql.submit({**SINGLE, "cash": 50_000}, cache=False).wait(timeout=WAIT)
    other = ql.submit({**SINGLE, "params": {"fast": 7, "slow": 30}}, cache=False).wait(timeout=WAIT)
    assert computed(first) == 2            # the fast and the slow average
    assert computed(again) == 0            # same data, same windows: both from the cache
    assert computed(other) == 1            # only the new fast window
    alone = ql.backtest("AAA", "sma_crossover", SINGLE["params"], start=SINGLE["start"],
                        end=SINGLE["end"], cash=50_000)
    assert again.result().metrics == pytest.approx(alone.metrics, nan_ok=True)


def test_a_failed_start_is_explained_by_that_workers_own_log_lines(tmp_path: Path) -> None:
    from quantlab.jobs.supervisor import _last_error

    log = tmp_path / "worker.log"
    log.write_text("ValueError: an error of an earlier worker\n")
    start = log.stat().st_size
    with log.open("a") as fh:
        fh.write("QuantLab worker pid 7, 1 worker(s)\nKilled\n")
    assert _last_error(log, start) == "Killed"
    assert _last_error(log) == "ValueError: an error of an earlier worker"


def test_a_queue_that_refuses_the_message_creates_nothing_and_shows_no_password(
        home: Path, no_worker: None) -> None:
    def refuse(*_: Any, **__: Any) -> str:
        raise ConnectionError("Error connecting to redis://:s3cret@127.0.0.1:1/0")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "send", refuse)
        with pytest.raises(StoreUnavailable) as info:
            ql.submit(SINGLE)
    message = str(info.value)
    assert message.startswith("could not put the run on the queue (Error connecting to "
                              "redis://:***@127.0.0.1:1/0); nothing was created.")
    assert "s3cret" not in message
    assert open_registry().count_runs() == 0


# -- what a run's first seconds say (issue 17, rough edge 15) ---------------------------------------


def _progress(run: Any) -> list[dict[str, Any]]:
    return [e.data for e in run.events() if e.type == "progress"]


def test_a_sweep_tells_its_indicators_with_increasing_counts_before_simulating(
        home: Path) -> None:
    from quantlab.jobs.execution import STEP_INDICATORS, STEP_SIMULATING

    run = ql.submit(SWEEP).wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    told = _progress(run)
    steps = [p["step"] for p in told]
    indicators = [p for p in told if p["step"] == STEP_INDICATORS]
    # every distinct look-back of the grid, counted as computed: fast 5..40, slow 50/100/150
    windows = len(set(SWEEP["params"]["fast"]) | set(SWEEP["params"]["slow"]))  # type: ignore[index]
    counts = [p["step_done"] for p in indicators]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == windows
    assert indicators[-1]["step_total"] == windows
    # the bar moves through the step, and the step ends before the first simulated chunk
    fractions = [p["progress"] for p in indicators]
    assert fractions == sorted(fractions) and fractions[-1] > fractions[0]
    assert max(i for i, s in enumerate(steps) if s == STEP_INDICATORS) \
        < steps.index(STEP_SIMULATING)
    # the step's counts never pass for simulated units or bars
    assert all(p["bars_done"] == 0 and p["done_units"] == 0 for p in indicators)
    progress = [p["progress"] for p in told]
    assert progress == sorted(progress)


def test_a_fresh_workers_first_run_reports_compiling_the_engine(
        home: Path, workers: Workers, tmp_path: Path) -> None:
    """A worker with an empty Numba cache and no warm-up compiles the engine in its first
    chunk: the run says so (Numba's own compile event, never a guess from the time taken),
    counting the functions compiled; the next run of the same kind compiles nothing."""
    from quantlab.jobs.execution import STEP_COMPILING, STEP_INDICATORS, STEP_SIMULATING

    workers.start(env={"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}, warm_up=False)
    first = ql.submit(SINGLE).wait(timeout=WAIT)
    assert first.status == "completed", first.record["error"]
    told = _progress(first)
    steps = [p["step"] for p in told]
    compiling = [p for p in told if p["step"] == STEP_COMPILING]
    assert compiling, steps
    counts = [p["step_done"] for p in compiling]
    assert counts == sorted(counts) and counts[-1] == compiling[-1]["step_total"] > 1
    first_compile = steps.index(STEP_COMPILING)
    assert steps.index(STEP_INDICATORS) < first_compile < steps.index(STEP_SIMULATING)
    progress = [p["progress"] for p in told]
    assert progress == sorted(progress)
    assert compiling[-1]["progress"] > compiling[0]["progress"]  # the bar moves meanwhile
    # the compile's seconds are not taken for simulating ones: no ETA from that chunk
    after_compile = told[max(i for i, s in enumerate(steps) if s == STEP_COMPILING) + 1]
    assert after_compile["step"] == STEP_SIMULATING and after_compile["eta_seconds"] is None

    again = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert again.status == "completed", again.record["error"]
    assert STEP_COMPILING not in [p["step"] for p in _progress(again)]


def test_a_sweeps_end_tells_its_overfitting_statistics_part_by_part_then_saving(
        home: Path, no_worker: None) -> None:
    from quantlab.jobs.execution import STEP_OVERFITTING, STEP_SAVING, STEP_SIMULATING
    from quantlab.research.overfitting import steps as overfitting_steps

    run = ql.submit(SWEEP)
    runner.execute(run.id)
    assert run.status == "completed", run.record["error"]
    told = _progress(run)
    steps = [p["step"] for p in told]
    end = [p for p in told if p["step"] == STEP_OVERFITTING]
    n = len(run.result().table)
    # the ledger, then the re-simulation's parts, then the CSCV
    assert end[-1]["step_total"] == 1 + overfitting_steps(n)
    parts = [p["step_done"] for p in end]
    assert parts == sorted(parts) and parts[0] == 0 and parts[-1] == end[-1]["step_total"]
    fractions = [p["progress"] for p in end]
    assert fractions[0] == pytest.approx(0.95) and fractions[-1] == pytest.approx(0.99)
    assert fractions == sorted(fractions) and len(set(fractions)) > 2  # the bar moves
    assert steps.index(STEP_OVERFITTING) > max(i for i, s in enumerate(steps)
                                               if s == STEP_SIMULATING)
    assert steps[-1] == STEP_SAVING and STEP_OVERFITTING not in steps[steps.index(STEP_SAVING):]
    assert all(p["done_units"] == p["total_units"] == n for p in end)
    progress = [p["progress"] for p in told]
    assert progress == sorted(progress)


def test_a_single_runs_end_has_no_overfitting_step(home: Path, no_worker: None) -> None:
    from quantlab.jobs.execution import STEP_OVERFITTING, STEP_SAVING

    run = ql.submit(SINGLE)
    runner.execute(run.id)
    assert run.status == "completed", run.record["error"]
    steps = [p["step"] for p in _progress(run)]
    assert STEP_OVERFITTING not in steps and steps[-1] == STEP_SAVING


def test_a_fresh_workers_sweep_end_tells_the_statistics_compile_and_never_goes_back(
        home: Path, workers: Workers, tmp_path: Path) -> None:
    """On an empty Numba cache the overfitting statistics' kernels (block sums, CSCV) compile
    at the sweep's end: told as the engine's compile (Numba's own event) between the parts of
    the step, the bar staying where it is."""
    from quantlab.jobs.execution import STEP_COMPILING, STEP_OVERFITTING, STEP_SAVING

    workers.start(env={"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}, warm_up=False)
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    told = _progress(run)
    steps = [p["step"] for p in told]
    first_end = steps.index(STEP_OVERFITTING)
    compiled = [p for p in told[first_end:] if p["step"] == STEP_COMPILING]
    assert compiled, steps[first_end:]
    assert compiled[-1]["step_done"] == compiled[-1]["step_total"] >= 1
    assert steps[-1] == STEP_SAVING
    assert steps.index(STEP_SAVING) > max(i for i, s in enumerate(steps) if s == STEP_COMPILING)
    progress = [p["progress"] for p in told]
    assert progress == sorted(progress)
    assert all(p["progress"] >= 0.95 for p in compiled)
