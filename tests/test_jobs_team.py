"""Runs as jobs in team mode: PriorityRedisHuey and Redis Streams events on a private
redis-server, with the SQLite registry in a home shared by the test and its worker processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import quantlab as ql
from quantlab import settings
from quantlab.jobs import queue
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SLOW, SWEEP, WAIT, Workers, event_types, wait_for

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers

pytestmark = pytest.mark.redis


@pytest.fixture
def team(home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUANTLAB_REDIS_URL", redis_url)
    return redis_url


def test_team_run_completes_on_a_redis_worker_and_replays_its_events(
        team: str, home: Path, workers: Workers) -> None:
    assert settings.current().redis_url == team
    assert type(queue.huey_app()).__name__ == "PriorityRedisHuey"
    workers.start()
    run = ql.submit(SINGLE).wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed" and record["attempts"] == 1
    assert not (home / "worker.pid").exists()  # team mode never spawns a worker by itself
    expected = ql.backtest("AAA", "sma_crossover", SINGLE["params"], start=SINGLE["start"],
                           end=SINGLE["end"], interval="1d")
    pd.testing.assert_series_equal(run.result().equity, expected.equity, check_freq=False)
    events = run.events()
    assert [e.type for e in events][:2] == ["queued", "started"]
    assert events[-1].type == "completed"
    middle = events[len(events) // 2].seq
    assert [e.seq for e in run.events(after=middle)] == [e.seq for e in events if e.seq > middle]


def test_team_queue_runs_the_highest_priority_first(team: str, workers: Workers) -> None:
    low = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}) for f in (5, 6)]
    high = ql.submit({**SINGLE, "params": {"fast": 7, "slow": 40}}, priority=10)
    assert queue.pending_count() == 3 and high.position == 1
    workers.start()
    for run in [*low, high]:
        run.wait(timeout=WAIT)
    order = sorted([*low, high], key=lambda r: r.record["started_at"])
    assert order == [high, *low]


def test_team_cancel_of_a_running_sweep_keeps_its_finished_part(team: str,
                                                               workers: Workers) -> None:
    workers.start(env=SLOW)
    run = ql.submit(SWEEP)
    wait_for(lambda: any(e.type == "progress" and e.data.get("done_units", 0) >= 2
                         for e in run.events()), WAIT, "2 combinations done")
    run.cancel().wait(timeout=WAIT)
    assert run.status == "cancelled" and run.record["partial"] is True
    assert 2 <= len(run.result().table) < 24


def test_team_max_concurrent_holds_under_8_worker_processes(team: str,
                                                           workers: Workers) -> None:
    """8 processes racing for 3 slots: the registry never shows a 4th running run, no run is
    lost, put back noisily or run twice."""
    env = {**SLOW, "QUANTLAB_JOBS_MAX_CHUNK": "24", "QUANTLAB_MAX_CONCURRENT": "3"}
    workers.start(4, env=env)
    workers.start(4, env=env)
    runs = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}) for f in range(5, 17)]
    assert support.watch_concurrency(limit=3) == []
    assert "re-enqueued" not in workers.log_text()
    for run in runs:
        assert run.record["status"] == "completed" and run.record["attempts"] == 1
        assert event_types(run).count("started") == 1
        assert event_types(run).count("completed") == 1


def restart_redis(server: object) -> None:
    """Stop the private redis-server and start a new one on the same port (no persistence:
    queue and streams come back empty)."""
    proc: subprocess.Popen[bytes] = server.proc  # type: ignore[attr-defined]
    proc.terminate()
    proc.wait(timeout=10)
    binary = shutil.which("redis-server")
    assert binary is not None
    port = server.port  # type: ignore[attr-defined]
    server.proc = subprocess.Popen(  # type: ignore[attr-defined]
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(server.workdir)],  # type: ignore[attr-defined]
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(up, 30, "redis-server restart")


@pytest.mark.slow
def test_workers_and_clients_reconnect_after_redis_restarts(team: str, redis_server: object,
                                                           workers: Workers) -> None:
    proc = workers.start()
    before = ql.submit(SINGLE).wait(timeout=WAIT)
    assert before.status == "completed"
    restart_redis(redis_server)
    time.sleep(0.5)  # the worker's blocking pop notices the lost connection meanwhile
    after = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}).wait(timeout=WAIT)
    assert after.status == "completed"
    assert after.record["worker"].split(":")[1] == str(proc.pid) and proc.poll() is None
    assert event_types(after)[0] == "queued" and event_types(after)[-1] == "completed"
