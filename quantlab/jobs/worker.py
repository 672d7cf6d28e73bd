"""The worker process: a Huey consumer with QuantLab's tasks (``quantlab worker [-w N]``).

The consumer is warmed up (the Numba kernels are loaded by a tiny backtest before the first real
run) and runs a reaper in its main loop that re-queues runs whose worker died. What a worker
serves besides runs (the notification dispatcher, the metrics endpoint and subscriber) belongs
to higher layers: the ``quantlab worker`` command passes them in as ``services``, which
:func:`serve` runs beside the consumer. Starting workers in embedded mode is
:mod:`quantlab.jobs.supervisor`'s.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from huey.consumer import Consumer, ConsumerStopped

import quantlab.data  # noqa: F401  (pyarrow and the store, loaded by the warm-up)
from quantlab import settings as settings_mod
from quantlab.bars import from_frame
from quantlab.engine import Simulation
from quantlab.errors import ConfigError
from quantlab.jobs import lifecycle, tasks
from quantlab.jobs.orchestrator import reap
from quantlab.jobs.queue import huey_app
from quantlab.jobs.supervisor import has_work, hold_worker_lock
from quantlab.settings import Settings
from quantlab.strategies import sandbox

log = logging.getLogger("quantlab.jobs")

REAP_EVERY = 2.0  # seconds between two reaper passes of a worker
# Queue polling of SqliteHuey (Redis pops block instead): a new run is seen within 10 ms while
# the queue is busy, and within 100 ms after a quiet spell.
POLL_INITIAL = 0.01
POLL_MAX = 0.1
POLL_BACKOFF = 1.15

# Starts the side services in the process that calls it and returns their stop. Given by the
# command that composes a worker (module-level functions or partials of them: with -w N it is
# sent to a spawned process).
Services = Callable[[], Callable[[], None]]
# Called with this worker's name at every reaper pass (e.g. a heartbeat gauge).
Beat = Callable[[str], None]


# -- warm-up -----------------------------------------------------------------------------------------


def warm_up() -> float:
    """Run a tiny backtest and a tiny sweep on synthetic bars so that the Numba kernels, the
    data store (DuckDB/pyarrow) and the Parquet writer are loaded before the first real run.
    Returns the seconds it took."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    index = pd.date_range("2020-01-01", periods=300, freq="B")
    frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                          "close": close, "volume": 1e6}, index=index)
    bars = from_frame(frame, "WARMUP")
    for params in ({}, {"fast": [5, 10], "slow": [20, 30]}):
        try:
            sim = Simulation(bars, strategy="sma_crossover", params=params)
            sim.prepare()
            while not sim.finished:
                sim.run(sim.total_units)
            sim.result().to_blobs()
        except Exception:  # a warm-up failure must not keep the worker from serving runs
            log.warning("warm-up backtest failed", exc_info=True)
    return time.perf_counter() - t0


# -- the consumer ------------------------------------------------------------------------------------


class QueueOutageLog(logging.Filter):
    """Huey logs a full traceback each time its worker cannot read the queue (every
    ``POLL_MAX`` seconds while Redis is down) and each time its scheduler cannot read the
    schedule. Keep the first of an outage as one warning line naming the queue, then one line a
    minute saying it still fails (with the count)."""

    EVERY = 60.0
    READS: ClassVar[dict[str, str]] = {"Error reading from queue": "the queue", "Error reading schedule.": "the schedule"}

    def __init__(self, queue: str) -> None:
        super().__init__()
        self.queue = queue
        self._last: dict[str, float] = {}
        self._hidden: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        what = self.READS.get(record.getMessage())
        if what is None:
            return True
        error = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text = None, None
        now, last = time.monotonic(), self._last.get(what)
        if last is not None and now - last < self.EVERY:
            self._hidden[what] = self._hidden.get(what, 0) + 1
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        hidden = self._hidden.get(what, 0)
        if last is None or now - last > 2 * self.EVERY:  # a new outage
            record.msg = "cannot read %s at %s (%s); retrying (said once a minute while it lasts)"
            record.args = (what, self.queue, error)
        else:
            record.msg = "still cannot read %s at %s (%s); %d more attempts failed"
            record.args = (what, self.queue, error, hidden)
        self._last[what], self._hidden[what] = now, 0
        return True


class QuantlabConsumer(Consumer):
    """Huey's consumer plus a reaper pass every ``REAP_EVERY`` seconds in its main loop (the
    main loop runs even when every worker is busy, and forks nothing, so it is fork-safe)."""

    def __init__(self, huey: Any, settings: Settings, *, idle_exit: float | None = None,
                 beat: Beat | None = None, **kwargs: Any) -> None:
        super().__init__(huey, **kwargs)
        self.settings = settings
        self.idle_exit = idle_exit
        self.beat = beat
        self._next_reap = 0.0
        self._busy_at = time.monotonic()

    def run(self) -> None:
        self._beat()  # at once: the first reaper pass may come after the first runs ended
        super().run()

    def _beat(self) -> None:
        if self.beat is not None:
            self.beat(worker_name())

    def check_worker_health(self) -> bool:
        # A dead worker process is replaced by a fork of this one, whose reaper may have opened
        # the queue's SQLite connection since: a forked child must not inherit it.
        if self.environment.forks:
            self.huey.storage.close()
        return bool(super().check_worker_health())

    def loop(self, health_check_ts: float | None = None) -> float | None:
        result = super().loop(health_check_ts)
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY
            self._beat()
            if not self.settings.home.exists():
                log.info("QUANTLAB_HOME %s is gone; stopping", self.settings.home)
                self._quit()
            try:
                reap(self.settings)
            except Exception:  # a registry or queue blip; the next pass tries again
                log.warning("reaper pass failed", exc_info=True)
            # outside the try: an idle exit stops the consumer by raising, and is no failure
            self._check_idle(now)
        return result

    def _check_idle(self, now: float) -> None:
        """The worker QuantLab started by itself leaves after ``idle_exit`` seconds without a
        queued or running run (the next ``submit`` starts a new one)."""
        if self.idle_exit is None:
            return
        try:
            busy = has_work(self.settings)
        except Exception:  # a registry blip: count as busy, the next pass looks again
            log.warning("idle check failed", exc_info=True)
            busy = True
        if busy:
            self._busy_at = now
        elif now - self._busy_at >= self.idle_exit:
            log.info("idle for %.0f s; stopping", now - self._busy_at)
            self._quit()

    def _quit(self) -> None:
        self.stop(graceful=True)
        raise ConsumerStopped


def make_consumer(settings: Settings, workers: int = 1, idle_exit: float | None = None,
                  beat: Beat | None = None) -> QuantlabConsumer:
    huey = tasks.register(huey_app(settings))
    return QuantlabConsumer(
        huey, settings, idle_exit=idle_exit, beat=beat, workers=workers,
        # Threads share one process's warm Numba cache; processes (forked after warm-up) run
        # several backtests truly in parallel.
        worker_type="thread" if workers == 1 else "process",
        initial_delay=POLL_INITIAL, max_delay=POLL_MAX, backoff=POLL_BACKOFF,
        periodic=False, check_worker_health=True, health_check_interval=1,
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def import_strategy_modules(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the modules that register a team's strategies (given, plus
    ``QUANTLAB_WORKER_IMPORTS``), so that runs can name them. Returns the modules imported."""
    names = [*modules, *os.environ.get("QUANTLAB_WORKER_IMPORTS", "").split(",")]
    done = []
    for name in (n.strip() for n in names):
        if not name or name in done:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"the worker cannot import strategy module {name!r} ({exc}); install it where "
                f"the worker runs or fix PYTHONPATH", field="imports"
            ) from exc
        done.append(name)
    return done


def serve(workers: int = 1, warm: bool = True, imports: list[str] | tuple[str, ...] = (),
          idle_exit: float | None = None, services: Services | None = None,
          beat: Beat | None = None) -> int:
    """Run the consumer in this process until SIGINT/SIGTERM, with ``services`` beside it."""
    settings_mod.configure_numba_cache()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = settings_mod.current()
    settings.ensure_home()
    imported = import_strategy_modules(imports)
    if imported:
        log.info("strategy modules imported: %s", ", ".join(imported))
    hold_worker_lock(settings)
    where = settings_mod.redact(settings.redis_url) if settings.redis_url else settings.home
    quiet_outages = QueueOutageLog(str(where))
    for process in ("Worker", "Scheduler"):
        logging.getLogger(f"huey.consumer.{process}").addFilter(quiet_outages)
    log.info("QuantLab worker pid %s, %s worker(s), queue %s", os.getpid(), workers, where)
    if warm:
        log.info("warm-up took %.3f s", warm_up())
    lifecycle.keep_events_through_outages()  # runs outlive a Redis outage (docs/operations.md)
    stop_services = start_services(services, workers)
    try:
        make_consumer(settings, workers, idle_exit, beat).run()
    finally:
        sandbox.stop_servers()  # no user code outlives its worker
        stop_services()
    return 0


def start_services(services: Services | None, workers: int) -> Callable[[], None]:
    """Start what a worker serves besides runs; returns their stop.

    With one worker they are threads of this process. With ``-w N`` Huey forks the worker
    processes, and a fork taken while another thread holds a lock (an import, a connection)
    leaves the child deadlocked: so they run in a *spawned* side process instead.
    """
    if services is None:
        return lambda: None
    if workers == 1:
        return services()
    side = multiprocessing.get_context("spawn").Process(
        target=_services_process, args=(services,), name="quantlab-worker-services",
        daemon=True)
    side.start()

    def stop() -> None:
        side.terminate()
        side.join(timeout=10)

    return stop


def _services_process(services: Services) -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    stop = services()
    done.wait()
    stop()


if __name__ == "__main__":
    # The worker is composed with its services by the `quantlab worker` command, above jobs.
    import sys

    print("error: start workers with `quantlab worker` (or `python -m quantlab worker`); "
          "`python -m quantlab.jobs.worker` is no longer an entry point", file=sys.stderr)
    sys.exit(2)
