"""The leader lock of a subscriber of the event stream that must run once per home (embedded)
or per team (Redis): the notification dispatcher, the metrics subscriber.

Every worker process may start such a subscriber; the first one to take the lock follows the
stream and the others wait as hot standbys, taking over when the holder's process ends (the OS
drops a file lock of a dead process; a Redis lease expires when it is no longer renewed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("quantlab.events")


class LeaderLock(Protocol):
    #: set when a held lock is lost (a Redis lease that could not be renewed)
    lost: threading.Event

    def acquire(self, stop: threading.Event, poll: float = 0.5) -> bool: ...

    def release(self) -> None: ...

    @property
    def holder(self) -> str: ...


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FileLock:
    """An exclusive ``flock`` on a file in the home folder (one per open file, so two
    dispatchers in one process exclude each other too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lost = threading.Event()
        self._file: Any = None
        self._token = _me()

    def _try(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(self._token + "\n")
        handle.flush()
        self._file = handle
        return True

    def acquire(self, stop: threading.Event, poll: float = 0.5) -> bool:
        """Wait until the lock is ours (True) or ``stop`` is set (False)."""
        self.lost.clear()
        while not stop.is_set():
            if self._try():
                return True
            stop.wait(poll)
        return False

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "nobody"
        except OSError:
            return "nobody"


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    """A lease in Redis (``SET NX PX``) renewed every third of its time to live."""

    def __init__(self, url: str, key: str, ttl: float = 15.0) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.lost = threading.Event()
        self._token = _me()
        self._held = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, stop: threading.Event, poll: float = 0.5) -> bool:
        self.lost.clear()
        while not stop.is_set():
            try:
                if self.client.set(self.key, self._token, nx=True, px=self.ttl_ms):
                    self._held.set()
                    self._renewer = threading.Thread(target=self._renew, args=(stop,),
                                                     name="quantlab-lease", daemon=True)
                    self._renewer.start()
                    return True
            except Exception:  # Redis down: wait and try again, like a standby
                pass
            stop.wait(poll)
        return False

    def _renew(self, stop: threading.Event) -> None:
        while self._held.is_set() and not stop.wait(self.ttl_ms / 3000):
            if not self._held.is_set():
                return
            try:
                renewed = self.client.eval(_RENEW, 1, self.key, self._token, self.ttl_ms)
            except Exception:
                renewed = 0
            if not renewed:
                self.lost.set()  # someone else may deliver now: stop delivering
                return

    def release(self) -> None:
        if self._held.is_set():
            self._held.clear()
            with contextlib.suppress(Exception):  # else the lease expires on its own
                self.client.eval(_RELEASE, 1, self.key, self._token)

    @property
    def holder(self) -> str:
        try:
            value = self.client.get(self.key)
        except Exception as exc:  # Redis away: say so rather than fail a status display
            return f"unknown (Redis unreachable: {exc})"
        return value.decode() if isinstance(value, bytes) else "nobody"


def leader_lock(path: Path, redis_url: str | None, key: str) -> LeaderLock:
    """Redis lease ``key`` in team mode (subscribers on many machines), else a file lock."""
    if redis_url:
        return RedisLock(redis_url, key)
    return FileLock(path)


def lead(lock: LeaderLock, stop: threading.Event, follow: Callable[[threading.Event], None],
         leading: threading.Event, what: str) -> None:
    """Run ``follow(lost)`` whenever this process holds ``lock``, until ``stop`` is set: wait
    for the lock (a hot standby), follow while holding it (``leading`` set meanwhile; ``lost``
    set if the lock is lost), and retry after an error with a capped backoff: an outage of the
    stream or the registry never ends the loop."""
    from quantlab.events.outage import RETRY_CAP_SECONDS, unreachable

    failures = 0
    down = False
    while not stop.is_set():
        pause = 0.5
        try:
            if not lock.acquire(stop):
                return
            leading.set()
            try:
                follow(lock.lost)
                failures = 0
            finally:
                leading.clear()
                lock.release()
            down = False
        except Exception as exc:
            if unreachable(exc):  # an outage (Redis restarting): wait for it, retry every second
                if not down:
                    log.warning("%s: event stream unreachable (%s); waiting for it", what, exc)
                down = True
                pause = RETRY_CAP_SECONDS
            else:
                failures += 1
                log.exception("%s error; retrying", what)
                pause = min(30.0, 0.5 * 2 ** min(failures, 6))
        if not stop.is_set():
            stop.wait(pause)


class LeaderThread:
    """A leader-locked follower of the stream (its ``run(stop)``) in a daemon thread of this
    process; ``stop()`` ends it."""

    def __init__(self, run: Callable[[threading.Event], None], name: str) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=run, args=(self.stop_event,), name=name,
                                       daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
