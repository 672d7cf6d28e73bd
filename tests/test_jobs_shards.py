"""A split sweep whose coordinator dies: the sweep that completes afterwards holds every
combination. Team mode (a private redis-server holds the queue and the shard board), real worker
processes, the real reaper; the coordinator that dies is a run document taken by a worker that is
gone, so that the moment of its death is exact."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import quantlab as ql
from quantlab import settings
from quantlab.jobs import execution, orchestrator, queue, shards
from quantlab.jobs.api import Run
from quantlab.jobs.shards import ShardBoard
from quantlab.registry import open_registry
from tests.support import jobs as support
from tests.support.jobs import SWEEP, WAIT, Workers, wait_for

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers

pytestmark = pytest.mark.redis

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
    if leftover_cancel:  # the dead coordinator was stopping on the time limit
        board.cancel()
    assert _reaper_pass_once_the_coordinator_is_silent() == [run.id]
    workers.start()
    run.wait(timeout=WAIT)
    _check_whole(run)
