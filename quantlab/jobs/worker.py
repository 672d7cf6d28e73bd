"""The worker process: ``python -m quantlab.jobs.worker [-w N]`` (also ``quantlab worker``).

A worker is a Huey consumer with QuantLab's task, warmed up (the Numba kernels are loaded by a
tiny backtest before the first real run), and with a reaper in its main loop that re-queues runs
whose worker died.

Embedded mode starts one by itself: ``submit`` calls :func:`ensure_worker`, which spawns a
detached worker when none holds the lock file ``QUANTLAB_HOME/worker.lock``. Every running worker
holds a *shared* lock on it, so one exclusive attempt tells whether any worker is alive; a
second lock file serialises the spawners so that two kernels never start two workers.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from huey.consumer import Consumer, ConsumerStopped

from quantlab import settings as settings_mod
from quantlab.errors import QuantlabError, RunError
from quantlab.settings import Settings

log = logging.getLogger("quantlab.jobs")

LOCK_FILE = "worker.lock"
SPAWN_LOCK_FILE = "worker.spawn.lock"
LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
REAP_EVERY = 2.0  # seconds between two reaper passes of a worker
# Queue polling of SqliteHuey (Redis pops block instead): a new run is seen within 10 ms while
# the queue is busy, and within 100 ms after a quiet spell.
POLL_INITIAL = 0.01
POLL_MAX = 0.1
POLL_BACKOFF = 1.15


# -- the lock ----------------------------------------------------------------------------------------


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def worker_alive(settings: Settings | None = None) -> bool:
    """Whether some worker process holds the lock of this QUANTLAB_HOME."""
    settings = settings or settings_mod.current()
    fd = _open_lock(settings.home / LOCK_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def hold_worker_lock(settings: Settings) -> int:
    """Take the shared lock for the life of this process (the fd is never closed)."""
    fd = _open_lock(settings.home / LOCK_FILE)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


@contextlib.contextmanager
def _spawn_lock(settings: Settings) -> Iterator[None]:
    fd = _open_lock(settings.home / SPAWN_LOCK_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_worker(settings: Settings | None = None, *, wait: float = 60.0) -> int | None:
    """Start the embedded worker if none is alive; returns the new worker's pid, else None.
    ``RunError`` (with the error from its log) if it exits at start.

    The spawned process is detached (its own session, output in ``QUANTLAB_HOME/worker.log``)
    and outlives the kernel; it is shared by every kernel of this QUANTLAB_HOME.
    """
    settings = settings or settings_mod.current()
    settings.ensure_home()
    if worker_alive(settings):
        return None
    with _spawn_lock(settings):
        if worker_alive(settings):
            return None
        log_path = settings.home / LOG_FILE
        # the log is appended to: only what this worker writes can explain its exit
        log_start = log_path.stat().st_size if log_path.exists() else 0
        proc = spawn_worker(settings)
        deadline = time.monotonic() + wait
        # Hold the spawn lock until the child holds the worker lock, so that another kernel
        # waiting on the spawn lock sees it alive instead of starting a second one.
        while time.monotonic() < deadline and proc.poll() is None:
            if worker_alive(settings):
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RunError(
                f"the QuantLab worker exited at start (code {proc.returncode}): "
                f"{_last_error(log_path, log_start)}. Fix that and submit again, or start "
                f"a worker yourself with `quantlab worker`; its log is {settings.home / LOG_FILE}",
                returncode=proc.returncode,
            )
        (settings.home / PID_FILE).write_text(str(proc.pid))
        return proc.pid


def _last_error(path: Path, start: int = 0) -> str:
    """The last line of a worker log from byte ``start`` on that names an error (for the
    message of a failed start)."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def idle_exit() -> float:
    """Seconds the self-started worker waits idle before leaving (QUANTLAB_WORKER_IDLE_EXIT)."""
    from quantlab.settings import env_number

    return env_number("QUANTLAB_WORKER_IDLE_EXIT", 1800.0, positive=True)


def spawn_worker(settings: Settings, workers: int = 1) -> subprocess.Popen[bytes]:
    settings_mod.configure_numba_cache()  # the worker shares this process's Numba cache
    env = dict(os.environ, QUANTLAB_HOME=str(settings.home))
    with open(settings.home / LOG_FILE, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "quantlab.jobs.worker", "--workers", str(workers),
             "--idle-exit", str(idle_exit())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )


# -- warm-up -----------------------------------------------------------------------------------------


def warm_up() -> float:
    """Run a tiny backtest and a tiny sweep on synthetic bars so that the Numba kernels, the
    data store (DuckDB/pyarrow) and the Parquet writer are loaded before the first real run.
    Returns the seconds it took."""
    import numpy as np
    import pandas as pd

    import quantlab.data  # noqa: F401  (pyarrow and the store, used by every run)
    from quantlab.bars import from_frame
    from quantlab.engine import Simulation

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


class QuantlabConsumer(Consumer):
    """Huey's consumer plus a reaper pass every ``REAP_EVERY`` seconds in its main loop (the
    main loop runs even when every worker is busy, and forks nothing, so it is fork-safe)."""

    def __init__(self, huey: Any, settings: Settings, *, idle_exit: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(huey, **kwargs)
        self.settings = settings
        self.idle_exit = idle_exit
        self._next_reap = 0.0
        self._busy_at = time.monotonic()

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
                from quantlab.jobs.orchestrator import reap

                reap(self.settings)
            except Exception:  # a registry or queue blip; the next pass tries again
                log.warning("reaper pass failed", exc_info=True)
            # outside the try: an idle exit stops the consumer by raising, and is no failure
            self._check_idle(now)
        return result

    def _beat(self) -> None:
        from quantlab import telemetry

        telemetry.WORKER_HEARTBEAT.labels(worker=worker_name()).set(time.time())

    def _check_idle(self, now: float) -> None:
        """The worker QuantLab started by itself leaves after ``idle_exit`` seconds without a
        queued or running run (the next ``submit`` starts a new one)."""
        if self.idle_exit is None:
            return
        from quantlab.jobs import backends

        try:
            busy = backends.registry(self.settings).count_runs(status=["queued", "running"])
        except Exception:  # a registry blip: count as busy, the next pass looks again
            log.warning("idle check failed", exc_info=True)
            busy = 1
        if busy:
            self._busy_at = now
        elif now - self._busy_at >= self.idle_exit:
            log.info("idle for %.0f s; stopping", now - self._busy_at)
            self._quit()

    def _quit(self) -> None:
        self.stop(graceful=True)
        raise ConsumerStopped


def make_consumer(settings: Settings, workers: int = 1,
                  idle_exit: float | None = None) -> QuantlabConsumer:
    from quantlab.jobs.queue import huey_app

    huey = huey_app(settings)
    return QuantlabConsumer(
        huey, settings, idle_exit=idle_exit, workers=workers,
        # Threads share one process's warm Numba cache; processes (forked after warm-up) run
        # several backtests truly in parallel.
        worker_type="thread" if workers == 1 else "process",
        initial_delay=POLL_INITIAL, max_delay=POLL_MAX, backoff=POLL_BACKOFF,
        periodic=False, check_worker_health=True, health_check_interval=1,
    )


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantlab.jobs.worker",
                                     description="Run QuantLab workers on this machine.")
    parser.add_argument("-w", "--workers", type=int, default=1,
                        help="runs executed in parallel (processes when more than 1)")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the warm-up backtest")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="stop after SECONDS without queued or running runs (the worker "
                        "that QuantLab starts by itself uses 1800)")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="import MODULE first (it registers strategies "
                        "with @ql.strategy); repeatable, also QUANTLAB_WORKER_IMPORTS=a,b")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on PORT (/metrics)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    try:
        return serve(workers=args.workers, warm=not args.no_warm_up, imports=args.imports,
                     idle_exit=args.idle_exit, metrics_port=args.metrics_port)
    except QuantlabError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def import_strategy_modules(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the modules that register a team's strategies (given, plus
    ``QUANTLAB_WORKER_IMPORTS``), so that runs can name them. Returns the modules imported."""
    import importlib

    from quantlab.errors import ConfigError

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
          idle_exit: float | None = None, metrics_port: int | None = None) -> int:
    """Run the consumer in this process until SIGINT/SIGTERM."""
    settings_mod.configure_numba_cache()
    if metrics_port is not None and workers > 1:
        use_multiprocess_metrics()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = settings_mod.current()
    settings.ensure_home()
    imported = import_strategy_modules(imports)
    if imported:
        log.info("strategy modules imported: %s", ", ".join(imported))
    hold_worker_lock(settings)
    where = settings.redis_url or settings.home
    log.info("QuantLab worker pid %s, %s worker(s), queue %s", os.getpid(), workers, where)
    if warm:
        log.info("warm-up took %.3f s", warm_up())
    stop_services = start_services(workers, metrics_port)
    try:
        make_consumer(settings, workers, idle_exit).run()
    finally:
        stop_services()
    return 0


def start_services(workers: int, metrics_port: int | None) -> Callable[[], None]:
    """Start what a worker serves besides runs: the notification dispatcher (one per home or
    team delivers; the others stand by) and the metrics endpoint. Returns their stop.

    With one worker they are threads of this process. With ``-w N`` Huey forks the worker
    processes, and a fork taken while another thread holds a lock (an import, a connection)
    leaves the child deadlocked: so they run in a *spawned* side process instead.
    """
    if workers == 1:
        return run_services(metrics_port)
    import multiprocessing

    side = multiprocessing.get_context("spawn").Process(
        target=_services_process, args=(metrics_port,), name="quantlab-worker-services",
        daemon=True)
    side.start()

    def stop() -> None:
        side.terminate()
        side.join(timeout=10)

    return stop


def run_services(metrics_port: int | None) -> Callable[[], None]:
    if metrics_port is not None:
        from quantlab import telemetry

        telemetry.start_http_server(metrics_port)
        log.info("Prometheus metrics on port %s", metrics_port)
    from quantlab.notify import start_dispatcher_thread

    dispatcher = start_dispatcher_thread()
    return dispatcher.stop if dispatcher is not None else (lambda: None)


def _services_process(metrics_port: int | None) -> None:
    import signal
    import threading

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    stop = run_services(metrics_port)
    done.wait()
    stop()


def use_multiprocess_metrics() -> None:
    """Let the ``-w N`` worker processes share one metrics endpoint (prometheus_client's
    multiprocess mode). Must run before prometheus_client is imported."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quantlab-metrics-")


if __name__ == "__main__":
    sys.exit(main())
