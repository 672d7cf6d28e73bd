"""Getting through an outage of the event store (Redis stopped, restarting, failing over).

Two halves, one per side of the stream:

- :class:`PendingEvents`, the worker's publisher. A run must not fail because Redis is away:
  the registry (SQLite/Mongo) is the run's truth and keeps being written, so an event that
  cannot be published is kept in this process, in order, and a background thread publishes
  what was kept once the store is back (retrying every :data:`RETRY_CAP_SECONDS` at most).
  While events wait, every new event of the process waits behind them, so a run's events reach
  the stream in the order they were told. Progress and checkpoint events of a run are
  coalesced (only the newest of each kind since the run's last other event is kept); status
  and log events are kept one by one. At most :data:`MAX_PENDING` events wait; past that the
  oldest progress/checkpoint/log event goes first, and only if nothing else is left the oldest
  event of all (logged as an error: followers then learn the run's end from the registry).
- :func:`follow_through_outages`, the followers' loop: it yields :class:`StreamOutage` notices
  instead of raising while the stream cannot be read, retries every
  :data:`RETRY_CAP_SECONDS` at most, and carries on from the last seq it saw. Redis restarted
  without persistence keeps numbering above the old seqs (see :mod:`quantlab.events.redis`),
  so nothing published after the restart is skipped.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from quantlab.errors import ConfigError, EventsUnavailable, QuantlabError
from quantlab.events.base import FOLLOW_POLL_SECONDS, Event, EventStream, encode_data

log = logging.getLogger("quantlab.events")

# The most events a process keeps while the store is away (a run keeps ~5 of them: started,
# the newest progress and checkpoint, its log lines, its end; so thousands of runs' worth).
MAX_PENDING = 10_000
# The longest pause between two tries at a store that is away (publisher and followers).
RETRY_CAP_SECONDS = 1.0
FIRST_RETRY_SECONDS = 0.1
# Events whose newest one says all (a later one replaces the earlier while they wait).
COALESCED = frozenset({"progress", "checkpoint"})
# How long a process that exits tries to publish what it still keeps.
EXIT_FLUSH_SECONDS = 5.0


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot be reached now (worth retrying), rather than a bug
    or bad input."""
    if isinstance(exc, EventsUnavailable):
        return True
    if isinstance(exc, QuantlabError):
        return False
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or \
        type(exc).__module__.startswith(("redis", "sqlite3"))


@dataclass
class _Pending:
    run_id: str
    type: str
    payload: str
    ts: float


class PendingEvents:
    """Publish to ``stream``, keeping in order what cannot be published while it is away."""

    def __init__(self, stream: EventStream, *, max_pending: int = MAX_PENDING,
                 retry_cap: float = RETRY_CAP_SECONDS) -> None:
        self.stream = stream
        self.max_pending = max_pending
        self.retry_cap = retry_cap
        self.dropped = 0
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._outage_since: float | None = None
        _ALIVE.add(self)

    @property
    def pending(self) -> int:
        """How many events wait for the store."""
        with self._lock:
            return len(self._pending)

    def publish(self, run_id: str, type: str, data: Mapping[str, Any] | None = None) -> Event:
        """Publish now if nothing waits and the store answers; else keep the event for the
        flusher and return it with ``seq`` 0 (not numbered yet). Bad input raises at once."""
        if not isinstance(run_id, str) or not run_id:
            raise ConfigError(f"an event needs the id of its run, got {run_id!r}",
                              field="run_id")
        payload = encode_data(type, data)
        with self._lock:
            if not self._pending:
                try:
                    return self.stream._append(run_id, type, payload)
                except Exception as exc:
                    if not unreachable(exc):
                        raise
                    self._outage_since = time.monotonic()
                    log.warning("event store %s unreachable (%s); keeping this process's events "
                                "and publishing them when it is back", self.stream.location, exc)
            item = _Pending(run_id, type, payload, time.time())
            self._keep(item)
            self._start_flusher()
            return Event(0, run_id, type, item.ts, json.loads(payload))

    def _keep(self, item: _Pending) -> None:
        pending = self._pending
        if item.type in COALESCED:
            # drop the same kind of this run among its trailing coalescable events
            for i in range(len(pending) - 1, -1, -1):
                other = pending[i]
                if other.run_id != item.run_id:
                    continue
                if other.type not in COALESCED:
                    break
                if other.type == item.type:
                    del pending[i]
                    break
        pending.append(item)
        if len(pending) > self.max_pending:
            victim = next((i for i, p in enumerate(pending) if p.type in COALESCED or
                           p.type == "log"), 0)
            lost = pending.pop(victim)
            self.dropped += 1
            level = logging.ERROR if lost.type not in COALESCED and lost.type != "log" \
                else logging.WARNING
            log.log(level, "event store %s still unreachable with %d events kept: dropped the "
                    "'%s' event of run %s (the registry keeps the run's state)",
                    self.stream.location, self.max_pending, lost.type, lost.run_id)

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name="quantlab-events-pending",
                                             daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while True:
            time.sleep(delay)
            if self.flush():
                return
            delay = min(delay * 2, self.retry_cap)

    def flush(self) -> bool:
        """Publish what waits, oldest first; True when nothing is left (the store answered)."""
        while True:
            with self._lock:
                if not self._pending:
                    self._back()
                    return True
                head = self._pending[0]
                try:
                    self.stream._append(head.run_id, head.type, head.payload)
                except Exception as exc:
                    if not unreachable(exc):  # the store refuses this one: never retry it
                        log.exception("event store %s refused the '%s' event of run %s; dropped",
                                      self.stream.location, head.type, head.run_id)
                        self._pending.pop(0)
                        self.dropped += 1
                        continue
                    return False
                self._pending.pop(0)

    def _back(self) -> None:
        if self._outage_since is not None:
            log.warning("event store %s is back after %.1f s; the events kept meanwhile are "
                        "published", self.stream.location, time.monotonic() - self._outage_since)
            self._outage_since = None

    def flush_before_exit(self, seconds: float = EXIT_FLUSH_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(0.2, self.retry_cap))
        left = self.pending
        if left:
            log.error("event store %s unreachable at exit: %d events of this process were not "
                      "published (the registry keeps the runs' state)", self.stream.location, left)


_ALIVE: weakref.WeakSet[PendingEvents] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for publisher in list(_ALIVE):
        if publisher.pending:
            publisher.flush_before_exit()


# -- followers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOutage:
    """Not an event: a follower's notice that the stream cannot be read (``error`` says why;
    the follower keeps retrying), or, with ``back`` True, that it can again. ``after`` is the
    seq the follower resumes from."""

    error: str
    after: int
    back: bool = False

    @property
    def message(self) -> str:
        if self.back:
            return f"event stream reachable again; resuming after event {self.after}"
        return f"event stream unreachable ({self.error}); reconnecting…"


def follow_through_outages(stream: EventStream, run_id: str | None = None, after: int = 0,
                           stop: threading.Event | None = None,
                           idle_timeout: float | None = None,
                           retry_cap: float = RETRY_CAP_SECONDS,
                           ) -> Iterator[Event | StreamOutage]:
    """Like :meth:`EventStream.follow`, but an unreachable stream never ends it: it yields a
    :class:`StreamOutage` when the stream goes away and again (``back``) when it returns, and
    retries meanwhile with a pause growing to ``retry_cap`` seconds. The idle timeout does not
    run during an outage."""
    last_activity = time.monotonic()
    delay = FIRST_RETRY_SECONDS
    down = False
    while stop is None or not stop.is_set():
        timeout = FOLLOW_POLL_SECONDS
        if idle_timeout is not None and not down:
            remaining = idle_timeout - (time.monotonic() - last_activity)
            if remaining <= 0:
                return
            timeout = min(timeout, remaining)
        try:
            events = stream.wait(run_id, after, timeout=timeout)
        except Exception as exc:
            if not unreachable(exc):
                raise
            if not down:
                down = True
                yield StreamOutage(str(exc), after)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, retry_cap)
            continue
        if down:
            down = False
            delay = FIRST_RETRY_SECONDS
            last_activity = time.monotonic()
            yield StreamOutage("", after, back=True)
        if events:
            last_activity = time.monotonic()
        for event in events:
            after = event.seq
            yield event
