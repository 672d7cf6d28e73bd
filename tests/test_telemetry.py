"""Prometheus metrics: counters fed by events, gauges read from the real registry, a real HTTP
endpoint, and multiprocess aggregation across real worker-like processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quantlab import telemetry
from quantlab.errors import ConfigError
from quantlab.events import Event
from tests.support.procs import free_port


def sample(registry, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def event(type: str, **data: object) -> Event:
    return Event(seq=1, run_id="r1", type=type, ts=time.time(), data=dict(data))


def test_terminal_events_count_runs_and_their_duration() -> None:
    before = sample(telemetry.REGISTRY, "backtest_total", status="failed", strategy="ema_crossover") or 0
    telemetry.observe_event(event("failed", strategy="ema_crossover", seconds=12.5))
    telemetry.observe_event(event("failed", strategy="ema_crossover", seconds=0.5))
    after = sample(telemetry.REGISTRY, "backtest_total", status="failed", strategy="ema_crossover")
    assert after == before + 2
    total = sample(telemetry.REGISTRY, "backtest_execution_seconds_sum", strategy="ema_crossover")
    assert total is not None and total >= 13.0


def test_progress_events_count_bars_and_other_events_count_nothing() -> None:
    before = sample(telemetry.REGISTRY, "backtest_bars_processed_total") or 0
    telemetry.observe_event(event("progress", progress=0.5, bars_delta=1_000))
    telemetry.observe_event(event("log", message="hello"))
    assert sample(telemetry.REGISTRY, "backtest_bars_processed_total") == before + 1_000


def test_delivery_latency_is_observed_per_client() -> None:
    e = Event(seq=2, run_id="r1", type="progress", ts=100.0, data={})
    before = sample(telemetry.REGISTRY, "quantlab_event_latency_seconds_count", client="widget") or 0
    telemetry.observe_delivery(e, "widget", now=100.04)
    assert sample(telemetry.REGISTRY, "quantlab_event_latency_seconds_count", client="widget") == before + 1
    assert sample(telemetry.REGISTRY, "quantlab_event_latency_seconds_bucket", client="widget",
                  le="0.05") >= 1


def test_state_gauges_come_from_the_registry(ql_home: Path) -> None:
    from quantlab.registry import open_registry

    reg = open_registry()
    now = time.time()
    reg.insert_run({"id": "q1", "name": "a", "strategy": "sma_crossover", "status": "queued"})
    reg.insert_run({"id": "q2", "name": "b", "strategy": "sma_crossover", "status": "queued"})
    reg.insert_run({"id": "r1", "name": "c", "strategy": "sma_crossover", "status": "running",
                    "started_at": now - 2000})
    served = telemetry.exposition_registry()
    assert sample(served, "backtest_queue_size") == 2
    assert sample(served, "active_backtests_count") == 1
    assert 1999 <= sample(served, "backtest_oldest_running_seconds") <= 2100


def test_http_endpoint_serves_the_metrics(ql_home: Path) -> None:
    port = free_port()
    telemetry.start_http_server(port, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "backtest_queue_size 0.0" in body
    assert "# TYPE backtest_execution_seconds histogram" in body


CHILD = """
import sys
from quantlab import telemetry
from quantlab.errors import ConfigError
from quantlab.events import Event
for _ in range(int(sys.argv[1])):
    telemetry.observe_event(Event(1, "r", "completed", 0.0, {"strategy": "momentum", "seconds": 1.0}))
"""


def test_multiprocess_workers_are_summed_on_one_endpoint(tmp_path: Path, ql_home: Path) -> None:
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(mp_dir))
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, check=True)
    code = ("from quantlab import telemetry; from prometheus_client import generate_latest; "
            "print(generate_latest(telemetry.exposition_registry()).decode())")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout
    families = {s.name: s for f in text_string_to_metric_families(out) for s in f.samples
                if s.labels.get("strategy") == "momentum"}
    assert families["backtest_total"].value == 7
    assert families["backtest_execution_seconds_count"].value == 7


@pytest.mark.parametrize("bad", [{"seconds": -1}, {"seconds": "soon"}])
def test_bad_durations_are_ignored_not_observed(bad: dict[str, object]) -> None:
    before = sample(telemetry.REGISTRY, "backtest_execution_seconds_count", strategy="x") or 0
    telemetry.observe_event(event("completed", strategy="x", **bad))
    assert (sample(telemetry.REGISTRY, "backtest_execution_seconds_count", strategy="x") or 0) == before
    assert sample(telemetry.REGISTRY, "backtest_total", status="completed", strategy="x") >= 1


def test_a_cache_hit_and_a_run_that_never_executed_are_no_executions() -> None:
    def count(name: str, **labels: str) -> float:
        return sample(telemetry.REGISTRY, name, **labels) or 0

    before = (count("backtest_execution_seconds_count", strategy="cachey"),
              count("backtest_total", status="completed", strategy="cachey"),
              count("backtest_total", status="cancelled", strategy="cachey"))
    telemetry.observe_event(event("queued", cached=True))
    telemetry.observe_event(event("completed", strategy="cachey", seconds=0.0, cached=True))
    telemetry.observe_event(event("cancelled", strategy="cachey", seconds=0.0, cached=False))
    assert count("backtest_execution_seconds_count", strategy="cachey") == before[0]
    assert count("backtest_total", status="completed", strategy="cachey") == before[1]
    assert count("backtest_total", status="cancelled", strategy="cachey") == before[2] + 1


def test_the_strategy_label_of_a_run_comes_from_its_record(ql_home: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.registry import open_registry

    monkeypatch.delenv("QUANTLAB_METRICS_STRATEGIES", raising=False)
    reg = open_registry()
    reg.insert_run({"id": "team", "name": "t", "strategy": "team_alpha", "status": "completed",
                    "config": {"strategy": "team_alpha"}})  # registered on the workers
    reg.insert_run({"id": "nb", "name": "n", "strategy": "my_idea_42", "status": "completed",
                    "config": {"strategy": "my_idea_42", "strategy_source": "def f(): ..."}})

    def label(run_id: str, strategy: str, **data: object) -> str:
        ending = Event(seq=1, run_id=run_id, type="completed", ts=time.time(),
                       data={"strategy": strategy, **data})
        return telemetry.strategy_label(telemetry.with_origin(ending, reg).data)

    assert label("team", "team_alpha") == "team_alpha"
    assert label("nb", "my_idea_42") == "notebook"
    assert label("deleted", "sma_crossover") == "sma_crossover"  # a built-in, record gone
    assert label("deleted", "whatever_a_user_typed") == "notebook"  # unknown: bounded
    assert label("nb", "my_idea_42", notebook=False) == "my_idea_42"  # told by the event
    monkeypatch.setenv("QUANTLAB_METRICS_STRATEGIES", "my_idea_42")
    assert label("nb", "my_idea_42") == "my_idea_42"


def test_the_endpoint_listens_on_this_machine_only_by_default(ql_home: Path) -> None:
    port = free_port()
    server = telemetry.start_http_server(port)
    try:
        assert server.server_address[:2] == ("127.0.0.1", port)
        with pytest.raises(ConfigError) as info:  # the port is taken now
            telemetry.start_http_server(port)
    finally:
        server.shutdown()
        server.server_close()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in str(info.value)
    assert "choose another --metrics-port" in str(info.value)
