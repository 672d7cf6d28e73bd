"""Worker supervision in embedded mode: is a worker alive, start one when none is.

``submit`` calls :func:`ensure_worker`, which spawns a detached worker when none holds the lock
file ``QUANTLAB_HOME/worker.lock``. Every running worker holds a *shared* lock on it, so one
exclusive attempt tells whether any worker is alive; a second lock file serialises the spawners
so that two kernels never start two workers, and a third serialises those attempts (a probe
holds the lock for an instant, which another probe would take for a live worker). The spawned
worker is the ``quantlab worker`` command (``python -m quantlab worker``), so that it runs the
same side services (notification dispatcher, metrics subscriber) as a worker started by hand;
it leaves after :func:`idle_exit` seconds without work.

A kernel that submitted runs also keeps that worker alive (:func:`watch_worker`): a thread that
looks every second, while this home has runs queued or running, and starts a new worker when
the one QuantLab started is gone (killed, crashed). The new worker's reaper puts the dead
worker's run back on the queue, to resume from its checkpoint; so ``run.wait()`` and the widget
never wait behind a dead worker for the next submit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from quantlab import settings as settings_mod
from quantlab.errors import RunError
from quantlab.fileio import home_errors
from quantlab.jobs.lifecycle import RunStatus
from quantlab.registry import open_registry
from quantlab.settings import Settings, env_number

LOCK_FILE = "worker.lock"
SPAWN_LOCK_FILE = "worker.spawn.lock"
PROBE_LOCK_FILE = "worker.probe.lock"
PROBE_WAIT = 2.0  # seconds a probe waits for another one to finish before it looks anyway
LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
WATCH_EVERY = 1.0  # seconds between two looks of the watchdog at the embedded worker
WATCH_PAUSE_LOOKS = 10  # looks the watchdog skips after a failed one

log = logging.getLogger("quantlab.jobs")


# -- the lock ----------------------------------------------------------------------------------------


def _open_lock(path: Path) -> int:
    with home_errors(path, "open the worker lock"):  # a read-only home: the path and the fix
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def worker_alive(settings: Settings | None = None) -> bool:
    """Whether some worker process holds the lock of this QUANTLAB_HOME."""
    settings = settings or settings_mod.current()
    with _one_probe_at_a_time(settings.home):
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


_probing_here = threading.Lock()


def _new_probe_lock() -> None:
    global _probing_here
    _probing_here = threading.Lock()


# a child forked while another thread probed would find the lock taken for good
os.register_at_fork(after_in_child=_new_probe_lock)


@contextlib.contextmanager
def _one_probe_at_a_time(home: Path) -> Iterator[None]:
    """Probes of the worker lock take turns: a probe holds it exclusively for an instant, and
    another probe in that instant (the kernel's prestart thread beside a submit, a second
    kernel) would answer "alive" and start no worker. A thread lock in this process, a lock
    file across processes; the wait for the file is bounded, since a forked child may inherit
    a probe's lock (then only that rare race is back), and a home where the file cannot be
    made (turned read-only) is probed without it: the worker lock's own error says why."""
    with _probing_here:
        try:
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(home / PROBE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            deadline = time.monotonic() + PROBE_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.001)
            yield
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
    with home_errors(settings.home, "create QUANTLAB_HOME"):
        settings.ensure_home()
    if worker_alive(settings):
        return None
    with _spawn_lock(settings):
        if worker_alive(settings):
            return None
        log_path = settings.home / LOG_FILE
        # the log is appended to: only what this worker writes can explain its exit
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with home_errors(log_path, "start the QuantLab worker"):
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
        with home_errors(settings.home / PID_FILE, "record the worker's pid"):
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
    return env_number("QUANTLAB_WORKER_IDLE_EXIT", 1800.0, positive=True)


def spawn_worker(settings: Settings, workers: int = 1) -> subprocess.Popen[bytes]:
    settings_mod.configure_numba_cache()  # the worker shares this process's Numba cache
    env = dict(os.environ, QUANTLAB_HOME=str(settings.home))
    with open(settings.home / LOG_FILE, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "quantlab", "worker", "--workers", str(workers),
             "--idle-exit", str(idle_exit())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )


def has_work(settings: Settings) -> bool:
    """Whether any run is queued or running (an idle self-started worker leaves when not)."""
    return bool(open_registry(settings).count_runs(status=[RunStatus.QUEUED, RunStatus.RUNNING]))


# -- the watchdog ------------------------------------------------------------------------------------

_watchdogs: dict[str, threading.Thread] = {}
_watchdogs_lock = threading.Lock()


def watch_worker(settings: Settings) -> None:
    """Keep the embedded worker of ``settings.home`` alive from this process while the home has
    runs queued or running (a daemon thread, one per home, ending when there is no work left or
    the settings moved to another home or to Redis). Called by ``submit`` and ``Run.wait``."""
    if settings.redis_url:
        return
    key = str(settings.home)
    with _watchdogs_lock:
        found = _watchdogs.get(key)
        if found is not None and found.is_alive():
            return
        thread = threading.Thread(target=_watch, args=(settings,), daemon=True,
                                  name="quantlab-worker-watchdog")
        _watchdogs[key] = thread
        thread.start()


def _watch(settings: Settings) -> None:
    missed = 0
    while True:
        time.sleep(WATCH_EVERY)
        now = settings_mod.current()
        if now.home != settings.home or now.redis_url or not settings.home.exists():
            return
        try:
            if not has_work(settings):
                return
            if worker_alive(settings):
                missed = 0
                continue
            # seen gone twice, a second apart: not a worker leaving while the last run ends
            missed += 1
            if missed < 2:
                continue
            log.warning("the QuantLab worker of %s is gone while runs are pending; starting a "
                        "new one (its reaper re-queues a run the old one was running)",
                        settings.home)
            ensure_worker(settings)
            missed = 0
        except Exception:  # a store blip, or a worker that cannot start: look again later
            log.warning("worker watchdog of %s: look failed", settings.home, exc_info=True)
            missed = -WATCH_PAUSE_LOOKS  # not a start attempt every other second
