"""A run's life, declared once: its statuses, the transitions allowed between them, the event
each one tells (with a typed payload), and :func:`transition`, the one way a status changes.

::

    (new) ──> queued ──> running ──> completed | failed | cancelled
                │  ^        │
                │  └────────┘  the reaper (worker lost)
                └──> cancelled (cancel while queued) | completed (cache hit) | failed

A transition is one compare-and-set of the registry status (two processes racing on a run
cannot both win), then one event on the stream, then a line in the run's log. Every terminal
event carries the same :class:`Ending` fields (strategy, seconds, cached, reason, partial), so a
subscriber (metrics, notifications) never has to guess what a run was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from quantlab.errors import QuantlabError, RunError
from quantlab.events import open_events, open_publisher
from quantlab.events.base import Event
from quantlab.registry import open_registry
from quantlab.registry.schema import RunStatus, as_run_record
from quantlab.settings import Settings

log = logging.getLogger("quantlab.jobs")

__all__ = [
    "ALLOWED",
    "EVENT_PAYLOADS",
    "TERMINAL",
    "Cancelled",
    "Checkpoint",
    "Completed",
    "Ending",
    "EventPayload",
    "Failed",
    "Log",
    "Progress",
    "Queued",
    "RunStatus",
    "Started",
    "keep_events_through_outages",
    "publish",
    "run_log",
    "transition",
]

QUEUED, RUNNING = RunStatus.QUEUED, RunStatus.RUNNING
COMPLETED, FAILED, CANCELLED = RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED

TERMINAL: tuple[RunStatus, ...] = (COMPLETED, FAILED, CANCELLED)

# status -> the statuses a run may move to from it; None is "no run yet" (an insert).
ALLOWED: Mapping[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({QUEUED}),  # every run is inserted queued, a cache hit too
    # COMPLETED: a cache hit, answered at once; FAILED: a run that cannot be started
    QUEUED: frozenset({RUNNING, CANCELLED, COMPLETED, FAILED}),
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, QUEUED}),  # QUEUED: the reaper
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


# -- event payloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPayload:
    """The data of one event type; ``type`` is the event's type on the stream."""

    type: ClassVar[str] = ""
    # attribute -> key on the wire, for keys that are Python keywords
    renamed: ClassVar[Mapping[str, str]] = {}

    def data(self) -> dict[str, Any]:
        return {self.renamed.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Queued(EventPayload):
    """A run waits on the queue: submitted (``reason`` None), or put back (``worker_lost``,
    ``concurrency_limit``). ``cached`` says whether the result cache was consulted and missed
    (False), answered (True), or was not consulted (None: ``cache=False`` or a re-queue)."""

    type: ClassVar[str] = "queued"
    position: int | None = None
    priority: int = 0
    estimated_seconds: float | None = None
    cached: bool | None = None
    reason: str | None = None
    attempts: int | None = None
    worker: str | None = None


@dataclass(frozen=True)
class Started(EventPayload):
    type: ClassVar[str] = "started"
    worker: str
    attempts: int


@dataclass(frozen=True)
class Progress(EventPayload):
    """Where a running run is: ``progress`` is the 0..1 bar across every step, ``step`` the
    step's name, ``bars_done`` the bars simulated so far (bars x combinations for a sweep) and
    ``bars_delta`` those since the previous progress event, ``done_units``/``total_units`` the
    engine's units (bars, or combinations of a sweep), ``eta_seconds`` the estimate left;
    ``step_done``/``step_total`` count the step's own work where it has a count of its own
    (indicator series computed, engine functions compiled, parts of a sweep's
    overfitting statistics; 0/0 otherwise)."""

    type: ClassVar[str] = "progress"
    progress: float
    step: str
    bars_done: int
    bars_delta: int
    done_units: int
    total_units: int
    eta_seconds: float | None
    step_done: int = 0
    step_total: int = 0


@dataclass(frozen=True)
class Log(EventPayload):
    type: ClassVar[str] = "log"
    message: str
    level: str = "info"


@dataclass(frozen=True)
class Checkpoint(EventPayload):
    type: ClassVar[str] = "checkpoint"
    done_units: int
    total_units: int


@dataclass(frozen=True)
class Ending(EventPayload):
    """What every terminal event tells: the run's ``strategy`` (metrics are labelled by it),
    ``seconds`` of execution (0 for a run that never ran: a cache hit, a cancel while queued;
    for a run whose worker died, up to its last heartbeat), ``cached`` (answered
    from the result cache: no execution at all), ``reason`` (why it ended, when it did not simply
    finish: ``error``, ``timeout``, ``worker_lost``, ``cancelled``) and ``partial`` (a result was
    kept with some of it missing)."""

    strategy: str | None
    seconds: float = 0.0
    cached: bool = False
    reason: str | None = None
    partial: bool = False


@dataclass(frozen=True)
class Completed(Ending):
    type: ClassVar[str] = "completed"
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    cached_from: str | None = None


@dataclass(frozen=True)
class Failed(Ending):
    type: ClassVar[str] = "failed"
    error: str = ""
    traceback: str | None = None


@dataclass(frozen=True)
class Cancelled(Ending):
    """``while_`` (``while`` on the wire) is the status the run was cancelled in."""

    type: ClassVar[str] = "cancelled"
    renamed: ClassVar[Mapping[str, str]] = {"while_": "while"}
    while_: str = QUEUED
    combinations_done: int = 0


# Every event type on the stream and its payload (the stream's EVENT_TYPES, typed).
EVENT_PAYLOADS: Mapping[str, type[EventPayload]] = {p.type: p for p in (
    Queued, Started, Progress, Log, Checkpoint, Completed, Failed, Cancelled)}
# The event each status is told by.
STATUS_EVENT: Mapping[RunStatus, type[EventPayload]] = {
    QUEUED: Queued, RUNNING: Started, COMPLETED: Completed, FAILED: Failed, CANCELLED: Cancelled,
}
ENDING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Ending))


# -- publishing ------------------------------------------------------------------------------------


# Set in a worker process (see keep_events_through_outages): its events outlive an outage.
_KEEP_THROUGH_OUTAGES = False


def keep_events_through_outages(keep: bool = True) -> None:
    """Make this process (a worker) keep the events it cannot publish while the event store is
    away, and publish them in order when it is back, instead of raising: its running runs go on
    computing through a Redis outage (their truth is the registry). Elsewhere (a notebook
    submitting, cancelling) a publish that cannot be made raises, so the caller learns it."""
    global _KEEP_THROUGH_OUTAGES
    _KEEP_THROUGH_OUTAGES = keep


def publish(run_id: str, payload: EventPayload, settings: Settings | None = None, *,
            retry_for: float = 5.0) -> Event:
    """Publish an event, retrying through a short outage of the event store (Redis restart).
    In a worker (:func:`keep_events_through_outages`) it never fails for an outage: the event
    waits in the process (returned with ``seq`` 0) and is published when the store is back."""
    if _KEEP_THROUGH_OUTAGES:
        return open_publisher(settings).publish(run_id, payload.type, payload.data())
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return open_events(settings).publish(run_id, payload.type, payload.data())
        except QuantlabError:
            raise
        except Exception as exc:  # connection errors of Redis/SQLite
            if time.monotonic() >= deadline:
                raise RunError(
                    f"could not publish the '{payload.type}' event of run {run_id}: {exc}; "
                    f"check that the event store (QUANTLAB_REDIS_URL or QUANTLAB_HOME) is "
                    f"reachable", run_id=run_id,
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def run_log(run_id: str, message: str, level: str = "info",
            settings: Settings | None = None) -> None:
    """A line in the run's log and a ``log`` event (the widget's live tail)."""
    open_registry(settings).append_log(run_id, message, level)
    publish(run_id, Log(message, level), settings)


# -- the one transition ----------------------------------------------------------------------------


def transition(run_id: str, to: RunStatus, *,
               expect: RunStatus | Iterable[RunStatus] | None,
               fields: Mapping[str, Any] | None = None, event: EventPayload | None = None,
               note: str | None = None, level: str = "info",
               on_won: Callable[[], None] | None = None,
               settings: Settings | None = None) -> bool:
    """Move run ``run_id`` to status ``to``; returns whether this caller won.

    ``expect`` is the status (or statuses) the run must be in: the registry update is a
    compare-and-set on it, so of two processes racing on a run only one wins. ``expect=None``
    inserts a new run, ``fields`` being its document. Only then, in this order: ``on_won()`` (what
    the winner must do whatever happens next), ``note`` appended to the run's log, and ``event``
    published (a payload of the type that tells ``to``; None only for the quiet undo of a take
    nobody was told of). So an event store that stays away (the publish raises after its
    retries) loses neither the log line nor the winner's bookkeeping. A terminal status gets
    ``finished_at`` (now) and the ``step`` of its name unless ``fields`` say otherwise.
    """
    expected = _expected(expect)
    _check_allowed(run_id, expected, to, event)
    registry = open_registry(settings)
    doc = as_run_record({**(fields or {}), "status": to})
    if to in TERMINAL:
        doc.setdefault("finished_at", time.time())
        doc.setdefault("step", str(to))
    if expected is None:
        registry.insert_run({**doc, "id": run_id})
    elif not registry.update_run(run_id, doc, expect_status=expected):
        return False
    if on_won is not None:
        on_won()
    if note is not None:
        registry.append_log(run_id, note, level)
    if event is not None:
        publish(run_id, event, settings)
    log.debug("run %s: %s -> %s", run_id, "new" if expected is None else "|".join(expected), to)
    return True


def _expected(expect: RunStatus | Iterable[RunStatus] | None) -> tuple[RunStatus, ...] | None:
    if expect is None:
        return None
    if isinstance(expect, str):
        return (RunStatus(expect),)
    return tuple(RunStatus(e) for e in expect)


def _check_allowed(run_id: str, expected: tuple[RunStatus, ...] | None, to: RunStatus,
                   event: EventPayload | None) -> None:
    """A transition the table does not allow, or told by the wrong event, is a bug here."""
    for source in expected or (None,):
        if to not in ALLOWED[source]:
            raise ValueError(f"run {run_id}: no transition {source or 'new'} -> {to}; allowed: "
                             f"{', '.join(sorted(ALLOWED[source])) or 'none (final status)'}")
    if event is not None and not isinstance(event, STATUS_EVENT[RunStatus(to)]):
        raise ValueError(f"run {run_id}: the move to {to} is told by a "
                         f"'{STATUS_EVENT[RunStatus(to)].type}' event, not '{event.type}'")
