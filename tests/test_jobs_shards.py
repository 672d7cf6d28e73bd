"""Split sweeps on real worker processes.

A coordinator that dies: the sweep that completes afterwards holds every combination (team mode:
a private redis-server holds the queue and the shard board; the real reaper; the coordinator that
dies is a run document taken by a worker that is gone, so that the moment of its death is exact).

A cancel or the time limit of a split sweep: the run ends at once, however long the heartbeat
timeout is, and none of its shard messages is left on the queue (the SQLite queue and a real
redis-server).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab import settings
from quantlab.jobs import execution, orchestrator, queue, runner, shards
from quantlab.jobs.api import Run
from quantlab.jobs.shards import ShardBoard
from quantlab.registry import open_registry
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SWEEP, WAIT, Workers, wait_for

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers
no_worker = support.no_worker

COMBINATIONS = 24  # SWEEP: 8 fast x 3 slow, all valid
SHARDS = 2
GONE = "gone-host:1:MainThread"  # the coordinator that died


@pytest.fixture
def team(home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUANTLAB_REDIS_URL", redis_url)
    # two shards of 12, for the test and the workers it starts (they inherit the environment)
    monkeypatch.setenv("QUANTLAB_SHARD_COMBINATIONS", "12")
    # only the test's reaper pass presumes the coordinator dead, never a worker's own pass early
    monkeypatch.setenv("QUANTLAB_HEARTBEAT_TIMEOUT", "600")
    return redis_url


def _taken_by_a_coordinator_that_dies(run_id: str) -> None:
    """The run as a worker's ``execute`` leaves it when it takes it (``queued -> running``)."""
    now = time.time()
    assert open_registry().update_run(
        run_id, {"status": "running", "worker": GONE, "attempts": 1, "started_at": now,
                 "heartbeat_at": now, "step": execution.STEP_SIMULATING},
        expect_status=("queued",))


def _reaper_pass_once_the_coordinator_is_silent() -> list[str]:
    return orchestrator.reap(now=time.time() + 3600)


def _check_whole(run: Run) -> None:
    record = run.record
    assert record["status"] == "completed", record.get("error")
    table = run.result().table
    # partial is False only when every combination is there
    assert record["partial"] is (len(table) < COMBINATIONS)
    assert run.result().partial is record["partial"]
    expected = ql.backtest(SWEEP["symbols"], SWEEP["strategy"], SWEEP["params"],
                           start=SWEEP["start"], end=SWEEP["end"], interval="1d")
    pd.testing.assert_frame_equal(table, expected.table)
    assert record["partial"] is False
    assert record["attempts"] == 2
    # the new coordinator counted no half-done shard as done
    assert any(f"split into {SHARDS} shards (0 already done)" in line["message"]
               for line in run.logs())


@pytest.mark.redis
def test_a_helper_gives_its_shard_up_when_the_run_is_requeued_and_the_sweep_completes_whole(
        team: str, workers: Workers) -> None:
    run = ql.submit(SWEEP)
    _taken_by_a_coordinator_that_dies(run.id)
    for index in range(SHARDS):  # what the coordinator enqueued before it died
        queue.enqueue_shard(run.id, index, SHARDS)
    board = ShardBoard(run.id, SHARDS, settings.current())
    # one combination per engine call, 0.2 s apart: a shard of 12 takes over 2 s
    helper = workers.start(env={"QUANTLAB_JOBS_MAX_CHUNK": "1",
                                "QUANTLAB_JOBS_CHUNK_DELAY": "0.2"})

    def helper_mid_shard() -> list[int]:
        return [i for i in range(SHARDS)
                if (board.claimed_by(i) or "").split(":")[1:2] == [str(helper.pid)]
                and board.result(i) is None and board.done(i) >= 1]

    index = wait_for(helper_mid_shard, WAIT, "the helper to be in the middle of a shard")[0]
    assert board.done(index) < COMBINATIONS // SHARDS
    # the coordinator is presumed dead while the helper runs its shard: the run is re-queued,
    # the helper sees it no longer running, and then takes it as the new coordinator
    assert _reaper_pass_once_the_coordinator_is_silent() == [run.id]
    run.wait(timeout=WAIT)
    _check_whole(run)
    assert run.record["worker"].split(":")[1] == str(helper.pid)


@pytest.mark.redis
@pytest.mark.parametrize("leftover_cancel", [False, True],
                         ids=["requeued", "requeued-while-stopping"])
def test_a_new_coordinator_runs_again_a_shard_whose_result_is_only_a_part(
        team: str, workers: Workers, monkeypatch: pytest.MonkeyPatch,
        leftover_cancel: bool) -> None:
    run = ql.submit(SWEEP)
    _taken_by_a_coordinator_that_dies(run.id)
    doc = open_registry().get_run(run.id)
    board = ShardBoard(run.id, SHARDS, settings.current())
    # shard 1 as a helper left it when it stopped after 2 combinations: claimed, a 2-row
    # table and a result that is not complete
    assert board.claim(1, "gone-helper:2:MainThread")
    monkeypatch.setenv("QUANTLAB_JOBS_MAX_CHUNK", "2")

    def stop() -> None:
        raise execution.CancelRequested

    bars, _ = execution.load_bars(doc)
    with pytest.raises(execution.CancelRequested):
        shards.run_shard(doc, 1, SHARDS, bars, settings.current(), between=stop)
    assert board.result(1) == {"rows": 2, "complete": False}
    if leftover_cancel:  # the dead coordinator was stopping on the time limit ...
        board.cancel()
        assert board.claim(0, shards.NO_ONE)  # ... and had put shard 0 out of every reach
    assert _reaper_pass_once_the_coordinator_is_silent() == [run.id]
    workers.start()
    run.wait(timeout=WAIT)
    _check_whole(run)


# -- cancel and the time limit of a split sweep --------------------------------------------------

# What a stopping coordinator used to wait for shards no worker claimed (its bound was this + 1 s):
# set large, so that "ended well before it" is a logical bound, not a speed threshold.
HEARTBEAT_TIMEOUT = 60.0
SPLIT = 4  # shards of 6 of the 24 combinations
# the lone worker's engine: one combination per call, 0.1 s apart (a shard takes over 0.6 s)
ONE_BY_ONE = {"QUANTLAB_JOBS_MAX_CHUNK": "1", "QUANTLAB_JOBS_CHUNK_DELAY": "0.1"}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The SQLite queue of an embedded home, or a real redis-server; sweeps split in 4 shards
    and a heartbeat timeout of a minute, for the test and the workers it starts."""
    if request.param == "redis":
        monkeypatch.setenv("QUANTLAB_REDIS_URL", request.getfixturevalue("redis_url"))
    monkeypatch.setenv("QUANTLAB_SHARD_COMBINATIONS", "6")
    monkeypatch.setenv("QUANTLAB_HEARTBEAT_TIMEOUT", str(HEARTBEAT_TIMEOUT))
    return str(request.param)


def _shard_messages(run_id: str) -> list[int]:
    """The shard indexes of ``run_id`` whose message waits on the queue (read from the queue's
    storage itself)."""
    huey = queue.huey_app()
    found = [huey.serializer.deserialize(raw) for raw in huey.storage.enqueued_items()]
    return sorted(m.args[1] for m in found
                  if m.name.endswith("execute_shard") and m.args[0] == run_id)


def _event(run: Run, kind: str) -> Any:
    return next(e for e in run.events() if e.type == kind)


def _coordinating_alone(run: Run, done: int) -> None:
    """Wait until the lone worker, as the coordinator, has run ``done`` combinations of shard
    0, while the other shards wait on the queue for a worker that never comes."""
    wait_for(lambda: any(e.type == "progress" and e.data.get("done_units", 0) >= done
                         for e in run.events()), WAIT, f"{done} combinations done")
    assert _shard_messages(run.id) == list(range(SPLIT))  # it runs shard 0 as its own


def _no_shard_state_left(run: Run) -> None:
    board = ShardBoard(run.id, SPLIT, settings.current())
    assert [board.claimed_by(i) for i in range(SPLIT)] == [None] * SPLIT
    assert [board.result(i) for i in range(SPLIT)] == [None] * SPLIT
    assert not board.cancelled()


def test_cancel_of_a_split_sweep_ends_it_at_once_and_takes_its_shards_off_the_queue(
        backend: str, workers: Workers) -> None:
    workers.start(env=ONE_BY_ONE)
    run = ql.submit(SWEEP)
    _coordinating_alone(run, 2)
    asked = time.time()
    run.cancel()
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    took = _event(run, "cancelled").ts - asked
    assert took < HEARTBEAT_TIMEOUT / 2, (
        f"the cancel took {took:.1f} s: the coordinator waited for shards no worker claimed")
    # the finished combinations are kept: those of shard 0, the whole sweep's first rows
    table = run.result().table
    assert 2 <= len(table) < COMBINATIONS // SPLIT
    full = ql.backtest(SWEEP["symbols"], SWEEP["strategy"], SWEEP["params"],
                       start=SWEEP["start"], end=SWEEP["end"], interval="1d").table
    pd.testing.assert_frame_equal(table, full.iloc[:len(table)])
    assert _event(run, "cancelled").data["combinations_done"] == len(table)
    assert _shard_messages(run.id) == []
    _no_shard_state_left(run)


def test_cancel_of_a_split_sweep_keeps_the_part_of_a_helpers_shard_and_leaves_nothing(
        backend: str, home: Path, workers: Workers) -> None:
    """Two workers, each in the middle of a shard, and shards that wait on the queue. The
    helper stops at its next chunk; its part is merged (or, if it came after the coordinator
    stopped waiting, removed by the helper itself); a waiting shard is never started (its
    message was taken off the queue, and it was claimed for no one)."""
    slower = {**ONE_BY_ONE, "QUANTLAB_JOBS_CHUNK_DELAY": "0.2"}  # a shard takes over 1.2 s
    procs = [workers.start(env=slower), workers.start(env=slower)]
    # both take messages before the submit, so that the helper starts a shard while the
    # coordinator runs its first one
    wait_for(lambda: workers.log_text().count("Huey consumer started") == 2, WAIT,
             "both workers to consume")
    run = ql.submit(SWEEP)
    coordinator = wait_for(lambda: run.record["worker"], WAIT, "a coordinator").split(":")[1]
    helper = next(p for p in procs if str(p.pid) != coordinator)
    board = ShardBoard(run.id, SPLIT, settings.current())

    def in_a_shard(pid: str) -> bool:
        return any((board.claimed_by(i) or "").split(":")[1:2] == [pid]
                   and board.result(i) is None and board.done(i) >= 1 for i in range(SPLIT))

    wait_for(lambda: in_a_shard(coordinator) and in_a_shard(str(helper.pid)), WAIT,
             "both workers to be in the middle of a shard")
    waiting = {i for i in range(SPLIT) if board.claimed_by(i) is None}
    assert waiting, "no shard left on the queue"
    asked = time.time()
    run.cancel()
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    took = _event(run, "cancelled").ts - asked
    assert took < HEARTBEAT_TIMEOUT / 2, f"the cancel took {took:.1f} s"
    # each shard kept a prefix of its combinations: the whole sweep's rows for them
    table = run.result().table
    full = ql.backtest(SWEEP["symbols"], SWEEP["strategy"], SWEEP["params"],
                       start=SWEEP["start"], end=SWEEP["end"], interval="1d").table
    per = COMBINATIONS // SPLIT
    numbered = full.reset_index(drop=True).reset_index(names="position")
    positions = list(table.merge(numbered, on=["fast", "slow"])["position"])
    pd.testing.assert_frame_equal(table, full.iloc[positions].reset_index(drop=True))
    shard_of = [p // per for p in positions]
    for shard in set(shard_of):  # a prefix of the shard: no gap
        mine = [p for p in positions if p // per == shard]
        assert mine == list(range(shard * per, shard * per + len(mine)))
    # a shard that no worker had started when the cancel came was never started after it
    assert not waiting & set(shard_of)
    assert _shard_messages(run.id) == []
    # the helper is done with its shard: nothing of the shards is left, whenever it stopped
    wait_for(lambda: not (home / "blobs" / "runs" / run.id / "shards").exists()
             and not any(board.claimed_by(i) or board.result(i) for i in range(SPLIT)), WAIT,
             "the shards' state to be gone")
    _no_shard_state_left(run)
    assert all(p.poll() is None for p in procs)


def test_the_time_limit_of_a_split_sweep_ends_it_at_once_and_takes_its_shards_off_the_queue(
        backend: str, workers: Workers) -> None:
    limit = 1.0
    workers.start(env={**ONE_BY_ONE, "QUANTLAB_MAX_DURATION": str(limit)})
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    record = run.record
    # as an unsplit sweep's time limit: failed, with the timeout reason
    assert record["status"] == "failed", record
    assert record["error"].startswith(
        f"timeout: the run took longer than QUANTLAB_MAX_DURATION={limit:g} s")
    failed = _event(run, "failed")
    assert failed.data["reason"] == "timeout"
    over = failed.ts - _event(run, "started").ts - limit
    assert over < HEARTBEAT_TIMEOUT / 2, (
        f"the run ended {over:.1f} s after its time limit: the coordinator waited for shards "
        f"no worker claimed")
    assert _shard_messages(run.id) == []
    _no_shard_state_left(run)


def test_cancel_of_a_queued_run_takes_its_message_off_the_queue(
        backend: str, no_worker: None) -> None:
    kept = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}})
    doomed = ql.submit(SINGLE)
    assert queue.queued_run_ids() == {kept.id, doomed.id}
    doomed.cancel()
    assert doomed.status == "cancelled"
    assert queue.queued_run_ids() == {kept.id} and queue.pending_count() == 1


def test_the_shard_messages_of_a_run_are_removed_and_no_others(backend: str,
                                                               no_worker: None) -> None:
    run, other = ql.submit(SWEEP), ql.submit(SINGLE)
    for index in range(SPLIT):
        queue.enqueue_shard(run.id, index, SPLIT)
        queue.enqueue_shard(other.id, index, SPLIT)
    assert queue.remove_shards(run.id) == SPLIT
    assert _shard_messages(run.id) == [] and _shard_messages(other.id) == list(range(SPLIT))
    assert queue.queued_run_ids() == {run.id, other.id}  # the runs' own messages stay
    assert queue.remove_shards(run.id) == 0


@pytest.mark.parametrize("stop", ["cancel requested", "stopped by its coordinator"])
def test_a_shard_of_a_sweep_being_stopped_returns_at_once(home: Path, no_worker: None,
                                                          stop: str) -> None:
    """The second line of defence: a shard message that a worker popped before the coordinator
    could take it off the queue runs nothing."""
    run = ql.submit(SWEEP)
    _taken_by_a_coordinator_that_dies(run.id)  # a coordinator that is running it
    board = ShardBoard(run.id, SHARDS, settings.current())
    if stop == "cancel requested":
        orchestrator.cancel(run.id)
        assert run.record["cancel_requested"] is True
    else:  # a cancel or the time limit, as the coordinator tells its helpers
        board.cancel()
    shards.execute_shard(run.id, 1, SHARDS)
    assert board.claimed_by(1) is None and board.result(1) is None and board.done(1) == 0


# -- combinations that raise, in a split sweep ---------------------------------------------------


@ql.strategy(name="shards_picky")
def shards_picky(bars: Any, fast: int = 5, slow: int = 50) -> Any:
    if fast >= slow:
        raise ValueError(f"fast={fast} must be below slow={slow}")
    if fast > 30:
        raise ValueError(f"fast={fast} is over 30")
    close = bars.close[0]
    return np.where(ql.ind.sma(close, fast) > ql.ind.sma(close, slow), 1, -1)


PICKY = {**SWEEP, "strategy": "shards_picky",
         # 8 x 3 = 24 combinations, 14 of them invalid, in each of the 4 shards of 6: every
         # one of the last shard's (fast 35 and 40), which must not fail the sweep
         "params": {"fast": list(range(5, 45, 5)), "slow": [10, 20, 50]}}


def _unsplit(config: dict[str, Any]) -> Any:
    return ql.backtest(config["symbols"], config["strategy"], config["params"],
                       start=config["start"], end=config["end"], interval="1d")


@pytest.fixture
def by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs name ``shards_picky`` without its source, as a team's strategy module that the
    worker imports (``--import``) is named by a submitter: only such a sweep is split (a
    notebook strategy's source runs whole in one sandbox). The worker is this process (the
    test module registered the strategy), which runs every shard itself as the coordinator."""
    monkeypatch.setattr(orchestrator, "attach_strategy_source", lambda config: config)


def _executed(config: dict[str, Any]) -> Run:
    run = ql.submit(config)
    assert not run.record["config"].get("strategy_source")
    runner.execute(run.id)
    return run


def test_a_split_sweep_counts_the_combinations_that_raised_as_an_unsplit_one(
        backend: str, no_worker: None, by_name: None) -> None:
    unsplit = _unsplit(PICKY)
    assert unsplit.config["failed"] == 14 and len(unsplit.table) == 10
    run = _executed(PICKY)
    assert run.status == "completed", run.record.get("error")
    assert any(f"split into {SPLIT} shards" in line["message"] for line in run.logs())
    result = run.result()
    pd.testing.assert_frame_equal(result.table, unsplit.table)
    assert result.params == unsplit.params
    for key in ("n_combinations", "skipped", "failed", "failures"):
        assert result.config[key] == unsplit.config[key], key
    assert len(result.config["failures"]) == 10  # the first 10 by position, with their error
    assert result.config["failures"][0] == {
        "params": {"fast": 10, "slow": 10},
        "error": "strategy 'shards_picky' raised ValueError: fast=10 must be below slow=10 "
                 "(with params {'fast': 10, 'slow': 10}); its traceback shows where"}


def test_a_split_sweep_whose_every_combination_raised_fails_as_an_unsplit_one(
        backend: str, no_worker: None, by_name: None) -> None:
    hopeless = {**PICKY, "params": {"fast": list(range(50, 110, 10)), "slow": [10, 20, 30, 40]}}
    with pytest.raises(ql.StrategyError) as unsplit:
        _unsplit(hopeless)
    run = _executed(hopeless)
    assert any(f"split into {SPLIT} shards" in line["message"] for line in run.logs())
    assert run.status == "failed"
    assert str(unsplit.value) in run.record["error"]
    assert "every one of the 24 combinations of strategy 'shards_picky' failed" \
        in run.record["error"]


# -- what a split sweep's progress says (issue 17, rough edge 15) --------------------------------


def test_a_split_sweep_tells_its_indicators_then_simulates_then_its_overfitting_never_back(
        backend: str, no_worker: None) -> None:
    from quantlab.jobs.execution import (
        STEP_INDICATORS,
        STEP_OVERFITTING,
        STEP_SAVING,
        STEP_SIMULATING,
    )

    run = ql.submit(SWEEP)
    runner.execute(run.id)
    assert run.status == "completed", run.record.get("error")
    assert any(f"split into {SPLIT} shards" in line["message"] for line in run.logs())
    told = [e.data for e in run.events() if e.type == "progress"]
    steps = [p["step"] for p in told]
    first_simulating = steps.index(STEP_SIMULATING)
    # the shard the coordinator prepares first: its look-backs counted as computed, before
    # any combination is simulated (fast 5, 10 x slow 50, 100, 150: 5 look-backs)
    indicators = [p for p in told[:first_simulating] if p["step"] == STEP_INDICATORS]
    counts = [p["step_done"] for p in indicators]
    assert len(indicators) >= 2 and counts == sorted(counts) and counts[-1] == 5
    assert indicators[-1]["step_total"] == 5
    assert steps[:2] == ["collecting market data", STEP_INDICATORS]
    assert STEP_INDICATORS not in steps[first_simulating:]  # never back to the first steps
    # the end: the overfitting statistics counted part by part, then the save
    end = [p for p in told if p["step"] == STEP_OVERFITTING]
    parts = [p["step_done"] for p in end]
    assert parts == sorted(parts) and parts[0] == 0 and parts[-1] == end[-1]["step_total"] >= 3
    assert steps[-1] == STEP_SAVING
    assert max(i for i, s in enumerate(steps) if s == STEP_SIMULATING) \
        < steps.index(STEP_OVERFITTING) < steps.index(STEP_SAVING)
    assert all(p["done_units"] == COMBINATIONS for p in end)  # the shards' units, not 0
    progress = [p["progress"] for p in told]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(0.99)
    assert run.record["overfitting"]["n_sweep"] == COMBINATIONS


def test_a_split_sweeps_first_steps_are_summed_over_its_shards(backend: str,
                                                                no_worker: None) -> None:
    from quantlab.jobs.execution import STEP_COMPILING, STEP_INDICATORS, StepProgress

    board = ShardBoard("r-steps", 3, settings.current())
    assert shards.start_step(board, simulating=False) == StepProgress(STEP_INDICATORS, 0, 0)
    board.tell_step(0, STEP_INDICATORS, 4, 10)
    board.tell_step(1, STEP_INDICATORS, 6, 6)
    assert shards.start_step(board, simulating=False) == StepProgress(STEP_INDICATORS, 10, 16)
    # a shard that compiles: the compile is told, summed over the shards compiling
    board.tell_step(2, STEP_COMPILING, 3, 20)
    assert shards.start_step(board, simulating=False) == StepProgress(STEP_COMPILING, 3, 20)
    assert shards.start_step(board, simulating=True) == StepProgress(STEP_COMPILING, 3, 20)
    board.tell_step(2, STEP_COMPILING, 20, 20)  # compiled: no longer compiling
    assert shards.start_step(board, simulating=True) is None
    # a shard whose worker went silent mid-compile is released: its compile is over
    board.tell_step(2, STEP_COMPILING, 5, 20)
    board.release(2)
    assert shards.start_step(board, simulating=True) is None
    assert shards.start_step(board, simulating=False) == StepProgress(STEP_INDICATORS, 10, 16)
    board.clear()
    assert board.step_counts(0, STEP_INDICATORS) is None


def test_a_helpers_shard_writes_its_indicator_counts_on_the_board(home: Path,
                                                                   no_worker: None) -> None:
    """A helper worker's shard tells its coordinator what it computed first (the counts the
    coordinator sums): shard 0 of 2 is fast 5..20 x slow 50, 100, 150, 7 look-backs."""
    from quantlab.jobs.execution import STEP_COMPILING, STEP_INDICATORS

    run = ql.submit(SWEEP)
    _taken_by_a_coordinator_that_dies(run.id)  # a coordinator that is running it
    board = ShardBoard(run.id, SHARDS, settings.current())
    shards.execute_shard(run.id, 0, SHARDS)
    assert board.result(0) is not None and board.result(0)["complete"]
    assert board.step_counts(0, STEP_INDICATORS) == (7, 7)
    # this process has the engine compiled (or loads it from Numba's cache): nothing compiled
    compiled = board.step_counts(0, STEP_COMPILING)
    assert compiled is None or compiled[0] == compiled[1]
    assert shards.start_step(board, simulating=False) == shards.StepProgress(
        STEP_INDICATORS, 7, 7)
    shards.cleanup(run.id, SHARDS, settings.current())
    assert board.step_counts(0, STEP_INDICATORS) is None
