"""What a worker serves besides runs: the notification dispatcher and the Prometheus endpoint,
with one worker (threads) and with ``-w 2`` (forked processes, services in a spawned process)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import quantlab as ql
from tests.support import jobs as support
from tests.support.jobs import SINGLE, WAIT, Workers, wait_for
from tests.support.procs import free_port
from tests.support.redis import start_redis

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_a_worker_notifies_and_serves_metrics_of_all_its_processes(
        home: Path, workers: Workers, n: int) -> None:
    port = free_port()
    workers.start(n, args=("--metrics-port", str(port)))
    runs = [ql.submit({**SINGLE, "params": {"fast": f, "slow": 40}}, cache=False)
            for f in (5, 6, 7)]
    for run in runs:
        assert run.wait(timeout=WAIT).status == "completed"
    # the dispatcher (a thread, or the side process with -w 2) tells the user in the app
    notes = wait_for(lambda: len(ql.notifications.list(user="tester")) >= 3 and
                     ql.notifications.list(user="tester"), WAIT, "in-app notifications")
    assert {n["run_id"] for n in notes} >= {r.id for r in runs}
    # every process's runs are counted on the one endpoint
    samples = wait_for(lambda: (s := scrape(port)).get(
        ("backtest_total", (("status", "completed"), ("strategy", "sma_crossover")))) == 3 and s,
        WAIT, "the three completed runs in the metrics")
    assert samples[("backtest_execution_seconds_count", (("strategy", "sma_crossover"),))] == 3
    assert samples[("backtest_bars_processed_total", ())] > 0
    assert samples[("backtest_queue_size", ())] == 0
    beats = [v for (name, _), v in samples.items()
             if name == "quantlab_worker_heartbeat_timestamp_seconds"]
    assert beats and abs(max(beats) - time.time()) < 60


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A private redis-server that asks for a password; its URL (with the password)."""
    server = start_redis(tmp_path, password="s3cret-redis-pw")
    try:
        yield server.url
    finally:
        server.proc.kill()
        server.proc.wait(10)


def test_the_worker_logs_no_password_and_serves_metrics_on_this_machine_only(
        home: Path, workers: Workers, redis_with_password: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_REDIS_URL", redis_with_password)
    port = free_port()
    workers.start(1, args=("--metrics-port", str(port)), warm_up=False)
    shown = redis_with_password.replace("s3cret-redis-pw", "***")
    wait_for(lambda: "Prometheus metrics at" in workers.log_text(), WAIT, "the services")
    run = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}}, cache=False)
    assert run.wait(timeout=WAIT).status == "completed"
    text = workers.log_text()
    assert f"queue {shown}" in text
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in text
    assert "s3cret-redis-pw" not in text
    assert "without authentication" not in text  # no warning for the loopback default
    assert scrape(port)[("backtest_queue_size", ())] == 0


def test_a_metrics_address_that_is_not_this_machines_is_refused(home: Path) -> None:
    from click.testing import CliRunner

    from quantlab.cli import worker

    out = CliRunner().invoke(worker, ["--metrics-port", str(free_port()),
                                      "--metrics-address", "metrics.example"])
    assert out.exit_code == 2
    assert "Invalid value for '--metrics-address'" in out.output
    assert "'metrics.example' is not an IP address" in out.output
    assert "127.0.0.1 (the default: this machine only)" in out.output
