"""Prometheus metrics.

Two kinds of metric, so that nothing is counted twice however many processes expose them:

* **Counters and histograms of what a process did** (runs it finished, bars it simulated, cache
  hits, notifier failures, event delivery latency). Each worker process records its own; in
  ``quantlab worker -w N`` they are aggregated through prometheus_client's multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``), so one endpoint per machine reports the sum. They are fed by
  :func:`observe_event`, called with each event the process *publishes* — the metrics subscribe
  to the event stream; the engine never calls them.
* **Gauges of the shared state** (runs running, runs queued, age of the oldest running run) are
  read from the registry at scrape time by :class:`RegistryCollector`, so every endpoint reports
  the same value; aggregate them with ``max()`` in PromQL, never ``sum()``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REGISTRY = CollectorRegistry(auto_describe=True)

BACKTEST_TOTAL = Counter(
    "backtest", "Runs that ended, by final status and strategy.",
    ["status", "strategy"], registry=REGISTRY,
)
EXECUTION_SECONDS = Histogram(
    "backtest_execution_seconds", "Wall time from a run's start to its end.",
    ["strategy"], buckets=EXECUTION_BUCKETS, registry=REGISTRY,
)
BARS_PROCESSED = Counter(
    "backtest_bars_processed", "Bars simulated (bars x combinations for a sweep).",
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "backtest_cache", "Result-cache look-ups at submit, by outcome (hit or miss).",
    ["result"], registry=REGISTRY,
)
WORKER_HEARTBEAT = Gauge(
    "quantlab_worker_heartbeat_timestamp_seconds", "Unix time of each worker's last heartbeat.",
    ["worker"], registry=REGISTRY, multiprocess_mode="max",
)
EVENT_LATENCY = Histogram(
    "quantlab_event_latency_seconds",
    "Delay from an event's publication to its delivery to a client (widget, Lab panel).",
    ["client"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
NOTIFIER_FAILURES = Counter(
    "quantlab_notifier_failures", "Notification deliveries that failed, by channel.",
    ["channel"], registry=REGISTRY,
)

TERMINAL = ("completed", "failed", "cancelled")


def observe_event(event: Any, strategy: str | None = None) -> None:
    """Update this process's counters from one event it published.

    ``event`` has ``type`` and ``data`` (a :class:`quantlab.events.Event`). Terminal events
    carry ``seconds`` (the run's duration) and ``strategy`` (the label, unless given here);
    progress events carry ``bars_delta``, the bars simulated since the previous one.
    """
    data = event.data or {}
    if event.type in TERMINAL:
        label = strategy or data.get("strategy") or "unknown"
        BACKTEST_TOTAL.labels(status=event.type, strategy=label).inc()
        duration = data.get("seconds")
        if isinstance(duration, int | float) and duration >= 0:
            EXECUTION_SECONDS.labels(strategy=label).observe(duration)
    elif event.type == "queued" and data.get("cached") is not None:
        # "cached" is told only when the cache was consulted (not with cache=False)
        CACHE_REQUESTS.labels(result="hit" if data["cached"] else "miss").inc()
    elif event.type == "progress":
        done = data.get("bars_delta")
        if isinstance(done, int | float) and done > 0:
            BARS_PROCESSED.inc(done)


def observe_delivery(event: Any, client: str, now: float | None = None) -> None:
    """Record how long ``event`` took to reach ``client`` (``widget``, ``lab``, ``notifier``)."""
    delay = (now if now is not None else time.time()) - float(event.ts)
    EVENT_LATENCY.labels(client=client).observe(max(delay, 0.0))


class RegistryCollector(Collector):
    """Gauges of shared state, read from the run registry at scrape time."""

    def __init__(self, registry_factory: Any = None) -> None:
        self._factory = registry_factory

    def _registry(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from quantlab.registry import open_registry

        return open_registry()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reg = self._registry()
        yield GaugeMetricFamily("active_backtests_count", "Runs running now.",
                                value=reg.count_runs(status="running"))
        yield GaugeMetricFamily("backtest_queue_size", "Runs waiting in the queue.",
                                value=reg.count_runs(status="queued"))
        oldest = reg.find_runs(status="running", sort="started_at", limit=1)
        started = oldest[0].get("started_at") if oldest else None
        age = time.time() - started if started else 0.0
        yield GaugeMetricFamily("backtest_oldest_running_seconds",
                                "Seconds since the longest-running run started (0 when none runs).",
                                value=max(age, 0.0))


def exposition_registry(include_state: bool = True) -> CollectorRegistry:
    """The registry an endpoint serves: this process (or all worker processes in multiprocess
    mode) plus, when asked, the registry-derived gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
    else:
        served = CollectorRegistry()
        served.register(_Forward(REGISTRY))
    if include_state:
        served.register(RegistryCollector())
    return served


class _Forward(Collector):
    """Serve another registry's metrics from this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from self._source.collect()


def metric_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every sample name an endpoint can expose (for the alert-rule test and docs)."""
    names: set[str] = set()
    for family in (registry or REGISTRY).collect():
        names.add(family.name)
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum", "_created"))
    names.update({"active_backtests_count", "backtest_queue_size", "backtest_oldest_running_seconds"})
    return names


def start_http_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` in a daemon thread (``quantlab worker --metrics-port``)."""
    from prometheus_client import start_http_server as _start

    _start(port, addr=addr, registry=exposition_registry())
