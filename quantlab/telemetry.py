"""Prometheus metrics.

Two kinds of metric, so that nothing is counted twice however many processes expose them:

* **Counters and histograms of what happened** (runs that ended, bars simulated, cache hits,
  notifier failures, event delivery latency). The run counters are fed by one
  :class:`Subscriber` of the event stream per home or team (a worker's side service, like the
  notification dispatcher: the others stand by), so every event is counted once wherever it was
  published (a cache hit in a notebook kernel included); the engine and the publishers never
  call them. In ``quantlab worker -w N`` the processes' metrics are aggregated through
  prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so one endpoint per
  machine reports the sum; across machines, ``sum()`` the counters.
* **Gauges of the shared state** (runs running, runs queued, age of the oldest running run) are
  read from the registry at scrape time by :class:`RegistryCollector`, so every endpoint reports
  the same value; aggregate them with ``max()`` in PromQL, never ``sum()``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quantlab import settings as settings_mod
from quantlab.errors import ConfigError, RunError
from quantlab.events import open_events
from quantlab.events.lock import LeaderThread, lead, leader_lock
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.registry import Registry, open_registry

log = logging.getLogger("quantlab.telemetry")

EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REGISTRY = CollectorRegistry(auto_describe=True)

BACKTEST_TOTAL = Counter(
    "backtest", "Runs that ended, by final status and strategy.",
    ["status", "strategy"], registry=REGISTRY,
)
EXECUTION_SECONDS = Histogram(
    "backtest_execution_seconds",
    "Execution time of a run that ended (cache hits are not executions: see backtest_cache).",
    ["strategy"], buckets=EXECUTION_BUCKETS, registry=REGISTRY,
)
BARS_PROCESSED = Counter(
    "backtest_bars_processed", "Bars simulated (bars x combinations for a sweep).",
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "backtest_cache", "Result-cache look-ups at submit, by outcome (hit or miss); a hit is "
    "answered at once and counted nowhere else.",
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

def observe_event(event: Any) -> None:
    """Update this process's counters from one event of the stream.

    ``event`` has ``type`` and ``data`` (a :class:`quantlab.events.Event`; payloads are declared
    in :mod:`quantlab.jobs.lifecycle`). A terminal event counts the run by status and strategy,
    and its execution ``seconds`` when it executed at all (a run cancelled while queued tells 0);
    a cache hit (``cached``) was counted as a hit when it was queued and is no execution. Progress events carry ``bars_delta``, the bars
    simulated since the previous one. A run of a notebook strategy (``notebook`` in the data,
    which the :class:`Subscriber` adds) is counted under ``strategy="notebook"`` (see
    :func:`strategy_label`).
    """
    data = event.data or {}
    if event.type in TERMINAL:
        if data.get("cached"):
            return
        label = strategy_label(data)
        BACKTEST_TOTAL.labels(status=event.type, strategy=label).inc()
        duration = data.get("seconds")
        if isinstance(duration, int | float) and duration > 0:
            EXECUTION_SECONDS.labels(strategy=label).observe(duration)
    elif event.type == "queued" and data.get("cached") is not None:
        # "cached" is told only when the cache was consulted (not with cache=False)
        CACHE_REQUESTS.labels(result="hit" if data["cached"] else "miss").inc()
    elif event.type == "progress":
        done = data.get("bars_delta")
        if isinstance(done, int | float) and done > 0:
            BARS_PROCESSED.inc(done)


#: the ``strategy`` label of every run of a notebook strategy not listed in
#: QUANTLAB_METRICS_STRATEGIES: user-chosen names would make the label values unbounded
NOTEBOOK_LABEL = "notebook"


def listed_strategies() -> frozenset[str]:
    """Notebook strategies that keep their own label: QUANTLAB_METRICS_STRATEGIES=a,b."""
    raw = os.environ.get("QUANTLAB_METRICS_STRATEGIES", "")
    return frozenset(name for name in (part.strip() for part in raw.split(",")) if name)


def strategy_label(data: Any) -> str:
    """The ``strategy`` label of a terminal event's run: the name of a built-in or registered
    (team) strategy, which the operators control, as it is; ``notebook`` for a strategy shipped
    from a notebook as source, unless its name is listed in QUANTLAB_METRICS_STRATEGIES."""
    name = str(data.get("strategy") or "unknown")
    if data.get("notebook") and name not in listed_strategies():
        return NOTEBOOK_LABEL
    return name


def is_notebook_run(registry: Registry, run_id: str, strategy: Any) -> bool:
    """Whether the run's strategy was shipped from a notebook (its config carries
    ``strategy_source``). A run whose record cannot be read counts as one unless its strategy
    is a built-in: an unknown name must not become a label value."""
    try:
        config = registry.get_run(run_id).get("config")
    except Exception:  # deleted, or the registry is away: decide by the name
        from quantlab.strategies.builtin import BUILTINS

        return strategy not in {s.name for s in BUILTINS}
    return isinstance(config, dict) and bool(config.get("strategy_source"))


def with_origin(event: Any, registry: Registry) -> Any:
    """``event``, a terminal one with ``notebook`` added to its data (what
    :func:`strategy_label` needs); other events unchanged."""
    data = event.data or {}
    if event.type not in TERMINAL or data.get("cached") or "notebook" in data:
        return event
    notebook = is_notebook_run(registry, event.run_id, data.get("strategy"))
    return dataclasses.replace(event, data={**data, "notebook": notebook})


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


def start_http_server(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr``:``port`` in a daemon thread (``quantlab worker
    --metrics-port``, ``--metrics-address``); returns the server (``shutdown()`` stops it).

    The endpoint has no authentication, hence this machine only by default; ConfigError when
    the address cannot be listened on (the port is taken, the address is not this machine's).
    """
    try:
        server, _thread = _start_http_server(port, addr=addr, registry=exposition_registry())
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {addr}:{port} ({exc.strerror or exc}); choose another "
            f"--metrics-port, or stop what listens there", address=addr, port=port) from None
    return server


def beat_worker(worker: str) -> None:
    """Stamp ``worker``'s heartbeat gauge (the worker's consumer calls it every reaper pass)."""
    WORKER_HEARTBEAT.labels(worker=worker).set(time.time())


# -- the subscriber ------------------------------------------------------------------------------

LOCK_FILE = "telemetry-subscriber.lock"
REDIS_KEY = "quantlab:telemetry:subscriber"
STATE = "telemetry_state"  # registry collection of the subscriber's cursor
CURSOR_ID = "cursor"
SAVE_EVERY = 0.5  # seconds between two saves of the cursor
# A subscriber that finds no saved cursor (the first one of a home or team, e.g. after an
# upgrade) counts only events from this long before it started: older ones are history that an
# earlier release counted already, and counting them now would spike the counters (and the
# failure-rate alert).
HISTORY_SECONDS = 60.0


class Subscriber:
    """Follows every run's events and feeds the counters of this process.

    ``run(stop)`` blocks until ``stop`` is set: it waits for the subscriber lock (another
    subscriber of the same home or team may hold it), then follows the stream from the cursor
    saved in the registry, so that a standby taking over counts what the last holder did not.
    Without a saved cursor it starts from the first event. Errors of the stream or the registry
    are logged and retried; they never end the loop.
    """

    def __init__(self, settings: settings_mod.Settings | None = None,
                 observe: Callable[[Any], None] = observe_event) -> None:
        self.settings = settings or settings_mod.current()
        self.observe = observe
        self.counting = threading.Event()  # set while this subscriber holds the lock
        self.started_at = time.time()

    def run(self, stop: threading.Event) -> None:
        lock = leader_lock(self.settings.home / LOCK_FILE, self.settings.redis_url, REDIS_KEY)
        lead(lock, stop, lambda lost: self._follow(stop, lost), self.counting,
             "telemetry subscriber")

    def _follow(self, stop: threading.Event, lost: threading.Event) -> None:
        registry = open_registry(self.settings)
        stream = open_events(self.settings)
        saved_cursor = load_cursor(registry)
        cursor = saved_cursor or 0
        # without a saved cursor, events older than this are history (see HISTORY_SECONDS)
        counted_from = self.started_at - HISTORY_SECONDS if saved_cursor is None else 0.0
        if cursor > stream.last_seq():
            # the event store was emptied or replaced (numbering restarts): start over
            log.warning("telemetry cursor %s is past the last event %s; starting over",
                        cursor, stream.last_seq())
            cursor = 0
        saved, last_save = cursor, time.monotonic()
        try:
            while not (stop.is_set() or lost.is_set()):
                for event in stream.wait(None, cursor, timeout=0.5):
                    if event.ts >= counted_from:
                        self.observe(with_origin(event, registry))
                    cursor = event.seq
                if cursor != saved and time.monotonic() - last_save >= SAVE_EVERY:
                    save_cursor(registry, cursor)
                    saved, last_save = cursor, time.monotonic()
        finally:
            if cursor != saved:
                save_cursor(registry, cursor)


def load_cursor(registry: Registry) -> int | None:
    """The seq of the last event counted, None if no subscriber of this home or team saved one."""
    try:
        return int(registry.get_document(STATE, CURSOR_ID).get("seq") or 0)
    except RunError:  # none saved yet
        return None


def save_cursor(registry: Registry, seq: int) -> None:
    registry.save_document(STATE, {"id": CURSOR_ID, "seq": seq, "updated_at": time.time()})


class SubscriberThread(LeaderThread):
    """A subscriber running in a daemon thread; ``stop()`` ends it."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        super().__init__(subscriber.run, "quantlab-telemetry")


def start_subscriber_thread(settings: settings_mod.Settings | None = None) -> SubscriberThread:
    """Start a subscriber thread in this process (a worker's side service); returns it."""
    return SubscriberThread(Subscriber(settings))
