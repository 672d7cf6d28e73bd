"""Helpers (no tests) for the analytics, report and dashboard tests: a QUANTLAB_HOME with the
sample data, a worker process the test owns, and real runs submitted through ``ql.submit``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import wait_for

HOME_VARS = ("QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL", "QUANTLAB_QUEUE_MAX",
             "QUANTLAB_MAX_CONCURRENT", "QUANTLAB_MAX_DURATION", "ALPHAVANTAGE_API_KEY",
             "QUANTLAB_DASHBOARD_URL")

# Three runs that differ in params, symbols and costs: enough for every comparison view.
RUN_SPECS: list[dict[str, Any]] = [
    {"name": "golden cross AAA", "strategy": "sma_crossover", "symbols": ["AAA"],
     "start": "2018-01-01", "params": {"fast": 10, "slow": 50}, "tags": ["trend"]},
    {"name": "slow cross BBB", "strategy": "sma_crossover", "symbols": ["BBB"],
     "start": "2018-01-01", "params": {"fast": 20, "slow": 100}, "commission": 0.001,
     "tags": ["trend"]},
    {"name": "rsi CCC", "strategy": "rsi_reversion", "symbols": ["CCC"], "start": "2019-01-01",
     "tags": ["mr"]},
]


@contextmanager
def worker_process(home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A QuantLab worker for ``home``, started and stopped by the test (so that submit finds it
    alive and spawns no detached worker of its own)."""
    from quantlab.jobs.supervisor import worker_alive
    from quantlab.settings import current

    env = dict(os.environ, QUANTLAB_HOME=str(home))
    log = open(home / "test-worker.log", "ab")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "quantlab", "worker", "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: worker_alive(current()), 60, "the test worker to start",
                 interval=0.05,
                 give_up=lambda: None if proc.poll() is None else "the test worker exited",
                 detail=lambda: f"see {home / 'test-worker.log'}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@contextmanager
def populated_home(base: Path, specs: Sequence[Mapping[str, Any]] = RUN_SPECS
                   ) -> Iterator[tuple[Path, list[str]]]:
    """A fresh QUANTLAB_HOME (env set for the duration) with the sample data, a running worker
    and ``specs`` submitted and completed; yields (home, run ids in the order of specs)."""
    import quantlab as ql

    home = base / "qlhome"
    home.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", str(home))
        mp.setenv("QUANTLAB_USER", "tester")
        for var in HOME_VARS:
            mp.delenv(var, raising=False)
        ql.data.sample()
        with worker_process(home):
            runs = [ql.submit(dict(spec)) for spec in specs]
            for run in runs:
                assert run.wait(timeout=240).status == "completed", run.record.get("error")
            yield home, [run.id for run in runs]
