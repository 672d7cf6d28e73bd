"""A submit either happens or it does not; a dead embedded worker is replaced; a run whose home
turns read-only keeps its work (issue 13, §2 and §3).

Real parts: the tests' own redis-server, stopped to make it unreachable and started again on the
same port; real worker processes; a real kill -9; a home made read-only for real (``chattr +i``
on its folders when the tests run as root, whom ``chmod`` does not stop; ``chmod a-w`` else).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import quantlab as ql
from quantlab import events as events_mod
from quantlab.errors import DiskFull, HomeNotWritable, ServerUnreachable, StoreUnavailable
from quantlab.events import open_events
from quantlab.events.redis import RedisEventStream
from quantlab.jobs import orchestrator, queue
from quantlab.jobs.supervisor import worker_alive
from quantlab.registry import open_registry
from quantlab.registry import reset as reset_registry
from quantlab.registry.sqlite import SQLiteRegistry
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SWEEP, WAIT, Workers
from tests.support.procs import wait_for
from tests.support.redis import RedisServer, start_redis

home = support.home
workers = support.workers

PASSWORD = "s3cret-pw"
OTHER = {**SINGLE, "params": {"fast": 5, "slow": 40}}


def backtest_of(config: dict[str, Any]) -> Any:
    return ql.backtest(config["symbols"], config.get("strategy", "sma_crossover"),
                       config.get("params"), start=config.get("start"), end=config.get("end"),
                       interval="1d")


# -- helpers -----------------------------------------------------------------------------------------


class ReadOnly:
    """Makes every folder of a home read-only for real, even for root: ``chattr +i`` (no entry
    can be created, renamed or removed in it; files already open stay writable, as under a
    ``chmod a-w`` for a normal user), or ``chmod a-w`` when not root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: list[Path] = []
        self.modes: dict[Path, int] = {}

    def on(self) -> None:
        self.dirs = [self.root, *(p for p in self.root.rglob("*") if p.is_dir())]
        if os.geteuid() != 0:
            self.modes = {d: d.stat().st_mode for d in self.dirs}
            for d in self.dirs:
                d.chmod(self.modes[d] & ~0o222)
            return
        if shutil.which("chattr") is None:
            pytest.skip("running as root, where chmod does not stop writes, and chattr is "
                        "missing: cannot make a home read-only here (apt-get install e2fsprogs)")
        done = subprocess.run(["chattr", "+i", *map(str, self.dirs)], capture_output=True,
                              text=True)
        if done.returncode:
            self.off()
            pytest.skip(f"running as root, where chmod does not stop writes, and chattr +i is "
                        f"refused here ({done.stderr.strip()}): cannot make a home read-only")

    def off(self) -> None:
        if self.modes:
            for d, mode in self.modes.items():
                d.chmod(mode)
            self.modes = {}
        elif self.dirs:
            subprocess.run(["chattr", "-i", *map(str, self.dirs)], capture_output=True)
        self.dirs = []


@pytest.fixture
def read_only(home: Path) -> Iterator[ReadOnly]:
    guard = ReadOnly(home)
    yield guard
    guard.off()  # always: pytest must be able to remove the folder


@pytest.fixture
def team(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Team mode on a private redis-server that asks for a password (registry: SQLite)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_redis(workdir, password=PASSWORD)
    monkeypatch.setenv("QUANTLAB_REDIS_URL", server.url)
    events_mod.reset()
    yield server
    stop_redis(server)
    events_mod.reset()


def stop_redis(server: RedisServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(timeout=10)


def restart_redis(server: RedisServer) -> RedisServer:
    again = start_redis(server.workdir, port=server.port, password=PASSWORD)
    server.proc = again.proc
    return server


def redacted(server: RedisServer) -> str:
    return f"redis://:***@127.0.0.1:{server.port}/0"


def nothing_ran_but(run_id: str) -> None:
    """After the reaper looked for lost messages (as every worker's does), only ``run_id`` was
    ever executed in this home, and no run is left queued or running."""
    orchestrator.reap(orphans_older_than=0.0)
    ql.get_run(run_id).wait(timeout=WAIT)
    docs = open_registry().find_runs(limit=None)
    assert [d["id"] for d in docs if d.get("started_at")] == [run_id]
    assert not [d["id"] for d in docs if d["status"] in ("queued", "running")]


# -- §2: a submit either happens or it does not ------------------------------------------------------


@pytest.mark.redis
def test_submit_with_redis_down_names_the_url_and_nothing_runs_once_it_is_back(
        team: RedisServer, workers: Workers) -> None:
    assert open_registry().count_runs() == 0  # the kernel's stores are open, as after a while
    stop_redis(team)
    with pytest.raises(ServerUnreachable) as info:
        ql.submit(SINGLE)
    message = str(info.value)
    assert redacted(team) in message and PASSWORD not in message
    assert info.value.url == redacted(team)
    assert "start redis-server there, or fix QUANTLAB_REDIS_URL" in info.value.fix
    assert info.value.fix in message
    assert open_registry().count_runs() == 0  # checked before anything was recorded

    restart_redis(team)
    workers.start(warm_up=False)
    second = ql.submit(OTHER)
    nothing_ran_but(second.id)
    assert second.status == "completed"


@pytest.mark.redis
def test_redis_lost_while_the_run_is_recorded_leaves_nothing_to_execute(
        team: RedisServer, workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis answers the submit's check, then goes away before the run's ``queued`` event is
    told: the submit raises, and the run it had recorded never executes."""
    real_publish = RedisEventStream.publish

    def publish_after_redis_died(self: RedisEventStream, run_id: str, type: str,
                                 data: Any = None) -> Any:
        if type == "queued":
            stop_redis(team)
        return real_publish(self, run_id, type, data)

    with monkeypatch.context() as patch:
        patch.setattr(RedisEventStream, "publish", publish_after_redis_died)
        with pytest.raises(ServerUnreachable) as info:
            ql.submit(SINGLE)
    failed_id = info.value.fields.get("run_id")
    assert redacted(team) in str(info.value) and PASSWORD not in str(info.value)
    assert "nothing was created" in str(info.value)

    restart_redis(team)
    events_mod.reset()
    workers.start(warm_up=False)
    second = ql.submit(OTHER)
    nothing_ran_but(second.id)
    with pytest.raises(ql.RunNotFound):
        ql.get_run(failed_id)


@pytest.mark.redis
def test_the_magic_and_rest_say_redis_is_unreachable_and_create_nothing(
        team: RedisServer, tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from tests.support.server import JupyterProcess, quantlab_env

    stop_redis(team)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "quantlab")
    cell = "%%backtest\nstrategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: 10, slow: 30}\n"
    err = shell.run_cell(cell, store_history=False).error_in_exec
    assert isinstance(err, ServerUnreachable), err
    rendered = err._render_traceback_()  # type: ignore[attr-defined]
    assert len(rendered) == 1 and "Traceback" not in rendered[0]
    assert redacted(team) in rendered[0] and PASSWORD not in rendered[0]

    root = tmp_path / "root"
    root.mkdir()
    env = quantlab_env(Path(os.environ["QUANTLAB_HOME"]), tmp_path / "jupyter",
                       {"QUANTLAB_REDIS_URL": team.url})
    server = JupyterProcess(env, root, tmp_path / "server.log")
    try:
        server.wait_ready()
        status, reply = server.request("POST", "/quantlab/api/runs", {"config": SINGLE})
    finally:
        server.stop()
    assert status == 503, reply
    assert reply["type"] == "ServerUnreachable" and reply["url"] == redacted(team)
    assert redacted(team) in reply["message"] and PASSWORD not in json.dumps(reply)
    assert "start redis-server there" in reply["fix"]
    assert open_registry().count_runs() == 0


def test_submit_into_a_read_only_home_names_the_path_and_nothing_runs_later(
        home: Path, read_only: ReadOnly, workers: Workers) -> None:
    # a kernel that has worked a while: its registry, events and queue files are open
    assert open_registry().count_runs() == 0
    assert open_events().last_seq() == 0 and queue.pending_count() == 0
    read_only.on()
    with pytest.raises(HomeNotWritable) as info:
        ql.submit(SINGLE)
    message = str(info.value)
    assert info.value.path == str(home)
    assert message.startswith(f"cannot write in QUANTLAB_HOME: {home} ")
    assert message.endswith("make QUANTLAB_HOME writable by the user QuantLab runs as (remount "
                            "it read-write, or chmod/chown it), or point QUANTLAB_HOME at a "
                            "writable folder")
    read_only.off()
    assert not worker_alive()  # nor was a worker started
    workers.start(warm_up=False)
    second = ql.submit(OTHER)
    nothing_ran_but(second.id)


def test_a_submit_that_died_before_queueing_its_run_is_ended_by_the_reaper(
        home: Path, workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel killed between recording a run and sending its message: the run is never
    executed (its submitter never heard back), and the reaper ends it failed after the grace."""
    def killed(*_: Any, **__: Any) -> str:
        raise KeyboardInterrupt  # as if the kernel died here: no undo runs

    with monkeypatch.context() as patch:
        patch.setattr(queue, "send", killed)
        with pytest.raises(KeyboardInterrupt):
            ql.submit(SINGLE)
    [doc] = open_registry().find_runs(limit=None)
    assert doc["status"] == "queued" and doc["step"] == "submitting"
    workers.start(warm_up=False)
    orchestrator.reap(orphans_older_than=0.0)
    assert ql.get_run(doc["id"]).status == "queued"  # within the grace: left alone
    monkeypatch.setattr(orchestrator, "SUBMIT_GRACE", 0.0)
    orchestrator.reap(orphans_older_than=0.0)
    run = ql.get_run(doc["id"])
    assert run.status == "failed" and run.record.get("started_at") is None
    assert "its submit did not finish" in run.record["error"]


# -- errors of the environment are QuantLab errors ---------------------------------------------------


def test_sqlite_errors_of_a_read_only_home_are_quantlab_errors(
        home: Path, read_only: ReadOnly) -> None:
    ql.runs()  # the registry exists; this process's connection is closed below
    reset_registry()
    events_mod.reset()
    read_only.on()
    registry_file = home / "registry.sqlite"
    for call in (ql.runs, lambda: ql.get_run("01ABC"), lambda: ql.submit(SINGLE)):
        with pytest.raises(HomeNotWritable) as info:
            call()
        assert info.value.path in (str(home), str(registry_file))
        assert "make QUANTLAB_HOME writable" in str(info.value)


def test_a_full_registry_database_is_disk_full_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    registry = SQLiteRegistry(path)
    registry._db.get().execute("PRAGMA max_page_count = 1")  # SQLite's own SQLITE_FULL
    with pytest.raises(DiskFull) as info:
        registry.insert_run({"id": "r1", "name": "x" * 100_000})
    assert info.value.path == str(path)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert str(info.value).startswith(f"cannot write registry.sqlite in QUANTLAB_HOME: the disk "
                                      f"holding {path} is full (database or disk is full); ")
    assert info.value.fix in str(info.value)


def test_the_server_answers_an_unavailable_store_with_503_and_a_full_disk_with_507() -> None:
    from quantlab.server.handlers import error_body, status_for

    away = ServerUnreachable("cannot reach the queue's Redis at redis://h:6379/0 (refused); fix",
                             url="redis://h:6379/0", fix="fix")
    assert status_for(away) == 503
    assert error_body(away) == {"message": str(away), "type": "ServerUnreachable",
                                "url": "redis://h:6379/0", "fix": "fix"}
    assert status_for(HomeNotWritable("m", path="/h", fix="f", reason="read-only")) == 503
    assert status_for(DiskFull("m", path="/h", fix="f", reason="disk full")) == 507
    assert status_for(StoreUnavailable("m", path="/h", fix="f")) == 503


# -- §3: a dead embedded worker, a home that turns read-only mid-run ---------------------------------


@pytest.mark.slow
def test_a_killed_embedded_worker_is_replaced_without_another_submit(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"QUANTLAB_JOBS_MAX_CHUNK": "2", "QUANTLAB_JOBS_CHUNK_DELAY": "0.3",
                        "QUANTLAB_HEARTBEAT_TIMEOUT": "3",
                        "QUANTLAB_CHECKPOINT_SECONDS": "0.2"}.items():
        monkeypatch.setenv(name, value)  # the worker that submit spawns inherits them
    running = ql.submit(SWEEP)
    waiting = ql.submit({**SWEEP, "params": {"fast": [5, 10], "slow": [50]}})  # one chunk
    wait_for(lambda: "checkpoint" in support.event_types(running), WAIT, "a checkpoint")
    victim = int((home / "worker.pid").read_text())
    os.kill(victim, signal.SIGKILL)

    assert running.wait(timeout=WAIT).status == "completed", running.record["error"]
    assert waiting.wait(timeout=WAIT).status == "completed", waiting.record["error"]
    replacement = int((home / "worker.pid").read_text())
    assert replacement != victim
    assert running.record["attempts"] == 2
    assert running.record["worker"].split(":")[1] == str(replacement)
    assert any("resumed from checkpoint" in line["message"] for line in running.logs())
    pd.testing.assert_frame_equal(running.result().table, backtest_of(SWEEP).table)


def test_a_run_keeps_its_work_when_the_home_turns_read_only_mid_run(
        home: Path, read_only: ReadOnly, workers: Workers) -> None:
    workers.start(env={"QUANTLAB_JOBS_MAX_CHUNK": "8", "QUANTLAB_JOBS_CHUNK_DELAY": "0.1"},
                  warm_up=False)
    run = ql.submit(SINGLE)
    wait_for(lambda: run.record.get("step") == "simulating" or run.done, WAIT, "simulating")
    assert not run.done
    read_only.on()

    def told() -> list[str]:
        return [line["message"] for line in run.logs()
                if line["message"].startswith("cannot save the result yet")]

    wait_for(lambda: told() or run.done, WAIT, "the save to be refused")
    assert told(), run.record.get("error")
    assert str(home / "blobs") in told()[0] and "trying again in" in told()[0]
    assert "cannot save the result yet" in workers.log_text()
    assert run.status == "running"
    read_only.off()

    record = run.wait(timeout=WAIT).record
    assert record["status"] == "completed", record["error"]
    assert record["attempts"] == 1
    expected = backtest_of(SINGLE)
    assert run.result().metrics == pytest.approx(expected.metrics, nan_ok=True)
    pd.testing.assert_series_equal(run.result().equity, expected.equity, check_freq=False)
