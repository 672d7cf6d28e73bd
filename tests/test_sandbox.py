"""Notebook strategies run in a sandbox process apart from the worker, which can always stop it:
real worker processes, real user code (a metrics monkeypatch, ``while True: pass``, ``os._exit``),
real kills. The strategies below are defined in this "kernel" and travel to the workers as
source, as a notebook's do (``MARKERS``, ``json`` and ``os`` travel with them)."""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.strategies.sandbox import clean_environment
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SLOW, WAIT, Workers, event_types, wait_for
from tests.support.procs import _gone
from tests.support.redis import start_redis

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers

# SINGLE's data with the params of the strategies below. The strategies are hostile (they spin,
# exit, poison the process that calls them): the look-ahead audit, which calls a notebook
# strategy in the submitting process (here: the test's), is skipped, so only a sandbox runs them.
USER = {**SINGLE, "params": {"n": 5}, "audit": False}
# Where the strategies leave what the tests look at (a constant: it travels with their source).
MARKERS = tempfile.mkdtemp(prefix="quantlab-sandbox-test-")


def momentum(bars, n):
    close = bars.close[0]
    out = np.zeros(len(close), dtype=np.int8)
    out[n:] = np.where(close[n:] > close[:-n], 1, -1)
    return out


@ql.strategy(name="sandbox_poisoner")
def poisoner(bars, n=5):
    """Replaces a metrics function of the process it runs in: every Sharpe ratio is 99."""
    import quantlab.metrics

    original = quantlab.metrics.as_dict

    def poisoned(row):
        out = original(row)
        out["sharpe"] = 99.0
        return out

    quantlab.metrics.as_dict = poisoned
    quantlab.metrics.poisoned_by_a_user = True
    return momentum(bars, n)


@ql.strategy(name="sandbox_witness")
def witness(bars, n=5):
    """Tells whether what an earlier run's code left in its process is seen here."""
    import quantlab.metrics

    with open(os.path.join(MARKERS, "witness.json"), "w") as f:
        json.dump({"poisoned": hasattr(quantlab.metrics, "poisoned_by_a_user")}, f)
    return momentum(bars, n)


@ql.strategy(name="sandbox_spinner")
def spinner(bars, n=5):
    """Never returns (after saying which process it spins in)."""
    with open(os.path.join(MARKERS, "spinner.pid"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass


@ql.strategy(name="sandbox_late_spinner")
def late_spinner(bars, n=5):
    """A sweep's strategy that never returns for n=10 only."""
    if n == 10:
        with open(os.path.join(MARKERS, "late_spinner.pid"), "w") as f:
            f.write(str(os.getpid()))
        while True:
            pass
    return momentum(bars, n)


@ql.strategy(name="sandbox_env_reader")
def env_reader(bars, n=5):
    with open(os.path.join(MARKERS, "env.json"), "w") as f:
        json.dump(dict(os.environ), f)
    return momentum(bars, n)


@ql.strategy(name="sandbox_quitter")
def quitter(bars, n=5):
    os._exit(3)


@pytest.fixture(autouse=True)
def _no_markers() -> None:
    for marker in Path(MARKERS).iterdir():
        marker.unlink()


def marker_pid(name: str) -> int | None:
    path = Path(MARKERS) / name
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


def sandbox_server_pid(pool: Workers) -> int | None:
    found = re.search(r"QuantLab sandbox server pid (\d+) ready", pool.log_text())
    return int(found.group(1)) if found else None


def backtest_of(config: dict[str, Any]) -> ql.Result:
    return ql.backtest(config["symbols"], config.get("strategy", "sma_crossover"),
                       config.get("params"), start=config.get("start"), end=config.get("end"),
                       interval="1d")


def test_a_user_strategy_cannot_change_what_the_worker_computes_after_it(
        home: Path, workers: Workers) -> None:
    proc = workers.start()
    attack = ql.submit({**USER, "strategy": "sandbox_poisoner"}).wait(timeout=WAIT)
    assert attack.status == "completed", attack.record["error"]
    assert attack.record["metrics"]["sharpe"] == 99.0  # its own result is its own code's doing
    builtin = ql.submit(SINGLE).wait(timeout=WAIT)
    true_sharpe = backtest_of(SINGLE).metrics["sharpe"]
    assert builtin.record["worker"].split(":")[1] == str(proc.pid)  # the same worker
    assert builtin.record["metrics"]["sharpe"] == pytest.approx(true_sharpe) != 99.0
    cached = ql.submit({**SINGLE, "name": "again"})
    assert cached.record["cached_from"] == builtin.id
    assert cached.record["metrics"]["sharpe"] == pytest.approx(true_sharpe)
    # nor can it change what a later notebook strategy sees: each run gets a fresh sandbox
    seen = ql.submit({**USER, "strategy": "sandbox_witness"}).wait(timeout=WAIT)
    assert seen.status == "completed", seen.record["error"]
    assert json.loads((Path(MARKERS) / "witness.json").read_text()) == {"poisoned": False}


def test_a_user_strategy_gives_the_same_result_in_its_sandbox_as_in_the_kernel(
        home: Path, workers: Workers) -> None:
    workers.start()
    for params in ({"n": 7}, {"n": [3, 5, 7, 9]}):
        config = {**USER, "strategy": "sandbox_witness", "params": params}
        run = ql.submit(config).wait(timeout=WAIT)
        assert run.status == "completed", run.record["error"]
        expected = backtest_of(config)
        result = run.result()
        assert result.metrics == pytest.approx(expected.metrics, nan_ok=True)
        pd.testing.assert_series_equal(result.equity, expected.equity, check_freq=False)
        if expected.table is not None:
            pd.testing.assert_frame_equal(result.table, expected.table)


def test_user_strategies_run_in_sandboxes_of_a_multi_process_worker(
        home: Path, workers: Workers) -> None:
    workers.start(2)  # Huey forks the worker processes: each starts its own sandbox server
    runs = [ql.submit({**USER, "strategy": "sandbox_witness", "params": {"n": n}})
            for n in (3, 4, 5, 6)]
    for run in runs:
        run.wait(timeout=WAIT)
        assert run.status == "completed", run.record["error"]
        expected = backtest_of({**USER, "strategy": "sandbox_witness",
                                "params": run.record["config"]["params"]})
        assert run.result().metrics == pytest.approx(expected.metrics, nan_ok=True)


def test_cancel_kills_a_user_strategy_that_never_returns_and_the_worker_goes_on(
        home: Path, workers: Workers) -> None:
    # a 60 s time limit: the run ends cancelled, so the cancel (not the limit) stopped it
    proc = workers.start(env={"QUANTLAB_MAX_DURATION": "60"})
    stuck = ql.submit({**USER, "strategy": "sandbox_spinner"})
    spinning = wait_for(lambda: marker_pid("spinner.pid"), WAIT, "the strategy to spin")
    later = ql.submit(SINGLE)  # queued behind it: the worker has one thread
    stuck.cancel()
    stuck.wait(timeout=WAIT)
    later.wait(timeout=WAIT)
    assert stuck.status == "cancelled"
    assert event_types(stuck)[-1] == "cancelled" and "failed" not in event_types(stuck)
    cancelled = next(e for e in stuck.events() if e.type == "cancelled")
    assert cancelled.data["reason"] == "cancelled" and cancelled.data["seconds"] < 60
    assert later.status == "completed"
    assert later.record["worker"].split(":")[1] == str(proc.pid) and proc.poll() is None
    wait_for(lambda: _gone(spinning), WAIT, "the spinning sandbox to be gone")


def test_the_time_limit_kills_a_stuck_user_strategy(home: Path, workers: Workers) -> None:
    proc = workers.start(env={"QUANTLAB_MAX_DURATION": "10"})
    # the limit counts from the run's start: let a first notebook run start the sandbox server
    first = ql.submit({**USER, "strategy": "sandbox_witness"}).wait(timeout=WAIT)
    assert first.status == "completed", first.record["error"]
    stuck = ql.submit({**USER, "strategy": "sandbox_spinner"}).wait(timeout=WAIT)
    assert stuck.status == "failed"
    assert "QUANTLAB_MAX_DURATION=10" in stuck.record["error"]
    failed = [e for e in stuck.events() if e.type == "failed"]
    assert len(failed) == 1 and failed[0].data["reason"] == "timeout"
    spinning = marker_pid("spinner.pid")
    assert spinning is not None  # the user code did run, and spun
    wait_for(lambda: _gone(spinning), WAIT, "the spinning sandbox to be gone")
    after = ql.submit(SINGLE).wait(timeout=WAIT)
    assert after.status == "completed" and proc.poll() is None


def test_a_stuck_user_sweep_cancelled_keeps_its_last_checkpoint(home: Path,
                                                                workers: Workers) -> None:
    workers.start(env={**SLOW, "QUANTLAB_CHECKPOINT_SECONDS": "0.1"})
    config = {**USER, "strategy": "sandbox_late_spinner", "params": {"n": list(range(3, 13))}}
    run = ql.submit(config)
    wait_for(lambda: marker_pid("late_spinner.pid"), WAIT, "the strategy to spin at n=10")
    checkpoints = [e.data["done_units"] for e in run.events() if e.type == "checkpoint"]
    assert checkpoints, event_types(run)  # 7 combinations done before n=10, 2 per chunk
    run.cancel()
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    table = run.result().table
    assert len(table) == checkpoints[-1]  # what the last checkpoint had finished
    expected = backtest_of({**config, "params": {"n": list(range(3, 3 + len(table)))}}).table
    pd.testing.assert_frame_equal(table, expected, check_like=True)


def test_a_worker_stops_on_sigterm_while_user_code_spins_and_takes_it_along(
        home: Path, workers: Workers) -> None:
    proc = workers.start()
    ql.submit({**USER, "strategy": "sandbox_spinner"})
    spinning = wait_for(lambda: marker_pid("spinner.pid"), WAIT, "the strategy to spin")
    server = sandbox_server_pid(workers)
    assert server is not None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT)  # a hang guard: it leaves at once
    wait_for(lambda: _gone(spinning), WAIT, "the spinning sandbox to be gone")
    wait_for(lambda: _gone(server), WAIT, "the sandbox server to be gone")


def test_a_user_strategy_that_ends_its_process_fails_its_run_and_the_worker_lives(
        home: Path, workers: Workers) -> None:
    proc = workers.start()
    run = ql.submit({**USER, "strategy": "sandbox_quitter"}).wait(timeout=WAIT)
    assert run.status == "failed"
    assert "strategy 'sandbox_quitter' ended the process it ran in" in run.record["error"]
    after = ql.submit(SINGLE).wait(timeout=WAIT)
    assert after.status == "completed" and proc.poll() is None


@pytest.mark.redis
def test_user_code_sees_none_of_the_workers_secrets(home: Path, workers: Workers,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    redis = start_redis(tmp_path, password="redis-pw-4f2a")
    try:
        monkeypatch.setenv("QUANTLAB_REDIS_URL", redis.url)  # team mode, a password in the URL
        secrets = {"QUANTLAB_SMTP_PASSWORD": "smtp-pw-9c1d", "ALPHAVANTAGE_API_KEY": "av-77e0",
                   "QUANTLAB_WEBHOOK_SECRET": "hook-3b8e", "AWS_SECRET_ACCESS_KEY": "aws-5d1f",
                   "SOME_SERVICE_URL": "https://svc.example/hook/tok-6e2b",
                   "HTTPS_PROXY": "http://proxyuser:proxy-pw-0a9c@127.0.0.1:9"}
        workers.start(env=secrets)
        run = ql.submit({**USER, "strategy": "sandbox_env_reader"}).wait(timeout=WAIT)
        assert run.status == "completed", run.record["error"]
        seen = json.loads((Path(MARKERS) / "env.json").read_text())
        assert "PATH" in seen  # an environment, only without secrets
        for secret in (*secrets.values(), "redis-pw-4f2a", redis.url, str(home)):
            assert not [name for name, value in seen.items() if secret in value], secret
        assert not [name for name in seen if name.startswith("QUANTLAB_")
                    and name not in ("QUANTLAB_THREADS", "QUANTLAB_JOBS_MAX_CHUNK",
                                     "QUANTLAB_JOBS_CHUNK_DELAY")]
    finally:
        redis.proc.terminate()
        redis.proc.wait(timeout=10)


def test_the_sandbox_environment_drops_every_secret_and_keeps_the_rest() -> None:
    environ = {
        "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "NUMBA_CACHE_DIR": "/c",
        "QUANTLAB_THREADS": "2", "QUANTLAB_HOME": "/srv/quantlab",
        "QUANTLAB_REDIS_URL": "redis://:pw@redis:6379/0", "QUANTLAB_MONGO_URL": "mongodb://m/db",
        "QUANTLAB_SMTP_PASSWORD": "pw", "QUANTLAB_SMTP_USER": "ops", "GITHUB_TOKEN": "t",
        "DATABASE_URL": "postgres://x", "MY_API_KEY": "k", "SLACK_WEBHOOK": "https://h/x",
        "http_proxy": "http://u:pw@proxy:3128", "NO_PROXY": "localhost",
    }
    assert clean_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "NUMBA_CACHE_DIR": "/c",
        "QUANTLAB_THREADS": "2", "NO_PROXY": "localhost"}


def test_the_worker_refuses_to_build_a_shipped_strategy_in_its_own_process(home: Path) -> None:
    from quantlab.config import BacktestConfig
    from quantlab.errors import RunError
    from quantlab.jobs.execution import engine_kwargs
    from quantlab.strategies.usercode import attach_strategy_source

    cfg = BacktestConfig.from_any(attach_strategy_source({**USER, "strategy": "sandbox_witness"}),
                                  check=False)
    with pytest.raises(RunError, match="'sandbox_witness' travelled as source: it runs in a "
                                       "sandbox process"):
        engine_kwargs(cfg)


def test_a_sandboxed_sweeps_saved_result_keeps_its_overfitting_summary() -> None:
    """The runner saves a sandbox's result from the sandbox's blobs; the overfitting summary it
    computes after the sweep must go into summary.json as a Result's does, or the stored
    result's view shows no PBO."""
    import pandas as pd

    from quantlab.engine import Result
    from quantlab.jobs.isolation import ShippedResult
    from tests.support.engine import random_walk

    sweep = ql.backtest(random_walk(300, seed=3), "sma_crossover",
                        {"fast": [3, 5], "slow": [20, 30]})
    shipped = ShippedResult(sweep.to_blobs())
    pd.testing.assert_frame_equal(shipped.table, sweep.table)
    assert shipped.overfitting_summary is None
    shipped.overfitting_summary = {"pbo": 0.25, "n_sweep": 4}
    saved = Result.from_blobs(shipped.to_blobs())
    assert saved.overfitting_summary == {"pbo": 0.25, "n_sweep": 4}
    pd.testing.assert_frame_equal(saved.table, sweep.table)
