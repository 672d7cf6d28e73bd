"""What the run widget shows, as plain data driven by the run's record and its events.

Kept free of ipywidgets so that every state transition is testable without a front end: the
widget only renders a :class:`RunState`. A state is built from the registry record (the
present, after a kernel restart too) and then advanced by events, which may repeat what the
record already says (the record is read after the event cursor is taken), so ``apply`` is
idempotent for lifecycle events and never moves a finished run back.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from quantlab.durations import format_duration
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.render.format import format_count

LOG_TAIL = 8


class EventLike(Protocol):
    seq: int
    run_id: str
    type: str
    ts: float
    data: dict[str, Any]


@dataclass(frozen=True)
class LogLine:
    ts: float
    level: str
    message: str


@dataclass
class RunState:
    run_id: str
    name: str | None = None
    status: str = "queued"
    progress: float = 0.0  # 0..1
    step: str | None = None
    bars_done: int | None = None
    total_units: int | None = None
    # the step's own count where it has one (indicator series, engine functions compiled)
    step_done: int = 0
    step_total: int = 0
    eta_seconds: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    queue_position: int | None = None
    queue_length: int | None = None
    estimated_seconds: float | None = None
    attempts: int = 0
    worker: str | None = None
    error: str | None = None
    traceback: str | None = None
    cached_from: str | None = None
    partial: bool = False
    last_seq: int = 0
    follow_error: str | None = None
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_record(cls, record: Mapping[str, Any],
                    logs: Iterable[Mapping[str, Any]] = ()) -> RunState:
        state = cls(run_id=str(record["id"]))
        state.update_from_record(record)
        for line in logs:
            state.add_log(float(line.get("ts") or 0.0), str(line.get("level") or "info"),
                          str(line.get("message") or ""))
        return state

    def update_from_record(self, record: Mapping[str, Any]) -> None:
        """Take the registry's view; a finished state is never reopened by a stale record."""
        status = str(record.get("status") or self.status)
        if self.terminal and status not in TERMINAL:
            return
        attempts = _int_or(record.get("attempts"), self.attempts) or 0
        progress = _fraction(record.get("progress"), self.progress)
        # Workers write progress to the record less often than they publish it as events: a
        # record behind the events must not move the bar back (a new attempt may).
        behind = (status == self.status and attempts == self.attempts
                  and progress < self.progress)
        self.status = status
        self.name = record.get("name") or self.name
        if not behind:
            self.progress = progress
            self.step = record.get("step") or self.step
            self.bars_done = _int_or(record.get("bars_done"), self.bars_done)
            self.eta_seconds = _float_or(record.get("eta_seconds"), None)
        self.queued_at = _float_or(record.get("queued_at"), self.queued_at)
        self.started_at = _float_or(record.get("started_at"), self.started_at)
        self.finished_at = _float_or(record.get("finished_at"), self.finished_at)
        self.estimated_seconds = _float_or(record.get("estimated_seconds"),
                                           self.estimated_seconds)
        self.attempts = attempts
        self.worker = record.get("worker") or self.worker
        self.error = record.get("error") or self.error
        self.traceback = record.get("traceback") or self.traceback
        self.cached_from = record.get("cached_from") or self.cached_from
        self.partial = bool(record.get("partial") or False)
        position = record.get("position", record.get("queue_position"))
        if status == "queued" and position is not None:
            self.queue_position = _int_or(position, None)
        if status == "completed":
            self.progress = 1.0

    def add_log(self, ts: float, level: str, message: str) -> None:
        line = LogLine(ts, level, message)
        if line not in self.log:  # the record's tail and the events may both carry it
            self.log.append(line)

    def apply(self, event: EventLike) -> bool:
        """Advance by one event; returns whether anything visible changed."""
        if event.seq <= self.last_seq:
            return False
        self.last_seq = event.seq
        data = event.data or {}
        kind = event.type
        if kind == "log":
            self.add_log(event.ts, str(data.get("level") or "info"),
                         str(data.get("message") or ""))
            return True
        if self.terminal:
            return False  # nothing after the end changes the view of a finished run
        handler = _HANDLERS.get(kind)
        if handler is None:
            return False  # checkpoint and future event types: nothing to show
        handler(self, event.ts, data)
        return True

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds spent running (to the end for a finished run); None before it starts."""
        if self.started_at is None:
            return None
        end = self.finished_at if (self.terminal and self.finished_at) else (now or time.time())
        return max(0.0, end - self.started_at)

    def waited(self, now: float | None = None) -> float | None:
        if self.queued_at is None:
            return None
        return max(0.0, (now or time.time()) - self.queued_at)


def _on_queued(state: RunState, ts: float, data: dict[str, Any]) -> None:
    # A run whose worker died is queued again: it is not finished, and it resumes.
    state.status = "queued"
    state.queued_at = state.queued_at or ts
    state.queue_position = _int_or(data.get("position"), state.queue_position)
    state.estimated_seconds = _float_or(data.get("estimated_seconds"), state.estimated_seconds)
    state.eta_seconds = None


def _on_started(state: RunState, ts: float, data: dict[str, Any]) -> None:
    state.status = "running"
    state.started_at = _float_or(data.get("started_at"), None) or ts
    state.worker = data.get("worker") or state.worker
    state.attempts = _int_or(data.get("attempt") or data.get("attempts"), state.attempts) or 0
    state.queue_position = None


def _on_progress(state: RunState, ts: float, data: dict[str, Any]) -> None:
    state.status = "running"
    if state.started_at is None:
        state.started_at = ts
    # the fields of quantlab.jobs.lifecycle.Progress, one spelling each
    state.progress = _fraction(data.get("progress"), state.progress)
    state.step = data.get("step") or state.step
    state.bars_done = _int_or(data.get("bars_done"), state.bars_done)
    state.total_units = _int_or(data.get("total_units"), state.total_units)
    state.step_done = _int_or(data.get("step_done"), 0) or 0
    state.step_total = _int_or(data.get("step_total"), 0) or 0
    state.eta_seconds = _float_or(data.get("eta_seconds"), None)


def _on_completed(state: RunState, ts: float, data: dict[str, Any]) -> None:
    state.status = "completed"
    state.progress = 1.0
    state.eta_seconds = None
    state.finished_at = ts
    state.partial = bool(data.get("partial") or False)
    state.cached_from = data.get("cached_from") or state.cached_from


def _on_failed(state: RunState, ts: float, data: dict[str, Any]) -> None:
    state.status = "failed"
    state.eta_seconds = None
    state.finished_at = ts
    state.error = str(data.get("error") or state.error or "the run failed")
    state.traceback = data.get("traceback") or state.traceback


def _on_cancelled(state: RunState, ts: float, data: dict[str, Any]) -> None:
    state.status = "cancelled"
    state.eta_seconds = None
    state.finished_at = ts
    state.partial = bool(data.get("partial") or state.partial)


_HANDLERS = {
    "queued": _on_queued,
    "started": _on_started,
    "progress": _on_progress,
    "completed": _on_completed,
    "failed": _on_failed,
    "cancelled": _on_cancelled,
}


def _fraction(value: Any, default: float) -> float:
    number = _float_or(value, None)
    if number is None or math.isnan(number):
        return default
    return min(1.0, max(0.0, number))


def _float_or(value: Any, default: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int_or(value: Any, default: int | None) -> int | None:
    number = _float_or(value, None)
    return default if number is None or math.isnan(number) else int(number)


def summary_line(state: RunState, now: float | None = None) -> str:
    """The one line under the progress bar, e.g.
    ``simulating · 1.2 M bars · 0:03 elapsed · ~0:02 left``."""
    if state.status == "queued":
        parts = ["waiting for a worker"]
        if state.queue_position is not None:
            of = f" of {state.queue_length}" if state.queue_length else ""
            parts.append(f"position {state.queue_position}{of} in the queue")
        parts.append(f"{format_duration(state.waited(now))} waiting")
        if state.estimated_seconds is not None:
            estimate = state.estimated_seconds
            parts.append("under a second to run" if estimate < 1
                         else f"~{format_duration(estimate)} to run")
        if state.attempts:
            parts.append(f"resuming (attempt {state.attempts + 1})")
        return " · ".join(parts)
    parts = []
    if state.status == "running":
        parts.append(state.step or "starting")
        if state.step_total:  # e.g. computing indicators · 120/300
            parts.append(f"{state.step_done:,}/{state.step_total:,}")
    else:
        parts.append(state.status + (" (partial)" if state.partial else ""))
    # "0 bars" before the first chunk says nothing: the step says what is going on
    if state.bars_done is not None and (state.bars_done or state.status != "running"):
        parts.append(f"{format_count(state.bars_done)} bars")
    if state.cached_from:
        parts.append(f"from cache of run {state.cached_from}")
    else:
        parts.append(f"{format_duration(state.elapsed(now))} elapsed")
    if state.status == "running" and state.eta_seconds is not None:
        parts.append(f"~{format_duration(state.eta_seconds)} left")
    if state.attempts > 1:
        parts.append(f"attempt {state.attempts}")
    return " · ".join(parts)
