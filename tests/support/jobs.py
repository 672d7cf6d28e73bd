"""Fixtures and helpers shared by the jobs tests (this module holds no tests).

Test modules import the fixtures they use by name; pytest registers fixtures found in a test
module's namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import kill_group, wait_for

ROOT = Path(__file__).resolve().parents[2]  # the repository

# Hang guard of every wait (never a speed threshold): generous, because a worker's first run
# may compile Numba kernels on a loaded machine.
WAIT = 300.0

# A sweep big enough to be watched when the worker is slowed down by the test knobs.
SWEEP = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2019-01-01",
         "end": "2022-12-31", "params": {"fast": list(range(5, 45, 5)), "slow": [50, 100, 150]}}
SINGLE = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2020-01-01",
          "end": "2020-12-31", "params": {"fast": 10, "slow": 30}}
# Worker environment that makes a run slow enough to cancel, kill or time out mid-way: at most
# 2 units (bars or combinations) per engine call and 50 ms between calls.
SLOW = {"QUANTLAB_JOBS_MAX_CHUNK": "2", "QUANTLAB_JOBS_CHUNK_DELAY": "0.05"}


@pytest.fixture
def home(ql_home: Path, sample_data_dir: Path) -> Iterator[Path]:
    """A fresh embedded QUANTLAB_HOME holding the sample data; any worker that QuantLab spawned
    in it is killed at the end."""
    shutil.copytree(sample_data_dir, ql_home / "data")
    yield ql_home
    pid_file = ql_home / "worker.pid"
    if pid_file.exists():
        kill_group(int(pid_file.read_text()))


# what Huey's consumer logs once it takes tasks
CONSUMER_STARTED = "Huey consumer started"


class Workers:
    """Worker processes started by a test (``python -m quantlab worker``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n_threads: int = 1, *, env: dict[str, str] | None = None,
              args: tuple[str, ...] = (), warm_up: bool = True, ready: bool = False
              ) -> subprocess.Popen[bytes]:
        """Start a worker; return once a worker holds the lock (any: a second one returns at
        once), or with ``ready`` once this one's consumer takes tasks (warm-up done)."""
        from quantlab.jobs.supervisor import worker_alive

        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        log_path = self.home / f"test-worker-{len(self.procs)}.log"
        log = open(log_path, "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "quantlab", "worker", "--workers", str(n_threads), *args]
        if not warm_up:
            cmd.append("--no-warm-up")
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        wait_for(lambda: worker_alive() or proc.poll() is not None, WAIT, "worker start")
        assert proc.poll() is None, self.log_text()
        if ready:
            wait_for(lambda: CONSUMER_STARTED in log_path.read_text(errors="replace")
                     or proc.poll() is not None, WAIT, "the worker's consumer to start")
            assert proc.poll() is None, self.log_text()
        return proc

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.home.glob("test-worker-*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()


@pytest.fixture
def workers(home: Path) -> Iterator[Workers]:
    pool = Workers(home)
    yield pool
    pool.stop()


@pytest.fixture
def no_worker(home: Path) -> Iterator[None]:
    """Hold the worker lock so that ``submit`` believes a worker is alive and starts none: the
    queue then keeps what is submitted."""
    fd = os.open(home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield
    os.close(fd)




def kill_the_runs_worker(run: Any, procs: list[subprocess.Popen[bytes]]) -> int:
    """kill -9 the worker process (of ``procs``) that holds ``run`` now; returns its pid."""
    victim_pid = int(run.record["worker"].split(":")[1])
    victim = next(p for p in procs if p.pid == victim_pid)
    victim.kill()
    victim.wait(timeout=10)
    return victim_pid


def event_types(run: Any) -> list[str]:
    return [e.type for e in run.events()]


def watch_concurrency(limit: int) -> list[str]:
    """Until the runs of this home end: the most runs the registry ever showed running (it must reach
    ``limit`` and never pass it), with the reaper's check for lost messages run as eagerly as it
    gets meanwhile (every queued run is old enough to be looked for on the queue); returns the
    reaper's warnings about re-enqueued runs (there must be none: nothing was lost)."""
    import logging
    import time

    from quantlab.jobs import orchestrator
    from quantlab.registry import open_registry

    registry = open_registry()
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "re-enqueued" in record.getMessage():
                warnings.append(record.getMessage())

    catch = Catch(logging.WARNING)
    logging.getLogger("quantlab.jobs").addHandler(catch)
    most = 0
    deadline = time.monotonic() + WAIT
    try:
        while registry.count_runs(status=["queued", "running"]):  # only ``runs`` in this home
            assert time.monotonic() < deadline, "the runs did not end"
            most = max(most, registry.count_runs(status="running"))
            assert most <= limit, f"{most} runs running with QUANTLAB_MAX_CONCURRENT={limit}"
            orchestrator.reap(orphans_older_than=0.0)
    finally:
        logging.getLogger("quantlab.jobs").removeHandler(catch)
    assert most == limit
    return warnings
