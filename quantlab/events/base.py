"""The event stream's contract: :class:`Event`, :data:`EVENT_TYPES` and :class:`EventStream`.

The stream is the one place where a run's life is told. Every event gets a sequence number
``seq`` that strictly increases across *all* runs, in every backend, so a reader that remembers
the last ``seq`` it saw can resume (or replay from any point) without gaps or duplicates.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from quantlab.errors import ConfigError, did_you_mean

EVENT_TYPES = ("queued", "started", "progress", "log", "checkpoint", "completed", "failed",
               "cancelled")

# follow() wakes at least this often to notice its stop flag.
FOLLOW_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Event:
    seq: int
    run_id: str
    type: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for WebSocket and REST clients)."""
        return asdict(self)


def encode_data(type: str, data: Mapping[str, Any] | None) -> str:
    """Validate an event's type and payload and return the payload as JSON text."""
    if type not in EVENT_TYPES:
        raise ConfigError(
            f"unknown event type {type!r}{did_you_mean(str(type), EVENT_TYPES)}; an event is one of "
            f"{', '.join(EVENT_TYPES)}", field="type"
        )
    if data is None:
        return "{}"
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"event data must be a dict, got {type_name(data)}; publish e.g. "
            f"data={{'progress': 0.5}}", field="data"
        )
    try:
        return json.dumps(dict(data), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"event data of a '{type}' event is not JSON: {exc}; use strings, numbers (not NaN "
            f"or infinity), booleans, None, lists and dicts", field="data"
        ) from None


def type_name(value: Any) -> str:
    return type(value).__name__


def check_read_args(run_id: str | None, after: int, limit: int) -> None:
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise ConfigError(f"run_id must be a non-empty string or None (all runs), got "
                          f"{run_id!r}", field="run_id")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ConfigError(f"'after' must be a sequence number >= 0, got {after!r}; pass the seq "
                          f"of the last event you saw, or 0 for everything", field="after")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"'limit' must be a whole number >= 1, got {limit!r}", field="limit")


class EventStream(ABC):
    """Publish and follow run events; safe from many threads and processes."""

    #: where the events are kept, for messages
    location: str = ""

    def publish(self, run_id: str, type: str, data: Mapping[str, Any] | None = None) -> Event:
        """Append an event to the run's stream and to the all-runs stream; returns it with its
        seq. Unknown ``type`` or non-JSON ``data`` -> ConfigError."""
        if not isinstance(run_id, str) or not run_id:
            raise ConfigError(f"an event needs the id of its run, got {run_id!r}",
                              field="run_id")
        payload = encode_data(type, data)
        return self._append(run_id, type, payload)

    @abstractmethod
    def _append(self, run_id: str, type: str, payload: str) -> Event: ...

    @abstractmethod
    def read(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events with ``seq > after``, oldest first (one run, or all runs when None)."""

    @abstractmethod
    def wait(self, run_id: str | None = None, after: int = 0, timeout: float = 1.0,
             limit: int = 1000) -> list[Event]:
        """Like :meth:`read`, but block up to ``timeout`` seconds until there is something."""

    @abstractmethod
    def last_seq(self, run_id: str | None = None) -> int:
        """The seq of the newest stored event (of one run, or of all), 0 if there is none."""

    def follow(self, run_id: str | None = None, after: int = 0,
               stop: threading.Event | None = None, idle_timeout: float | None = None
               ) -> Iterator[Event]:
        """Yield events as they come, forever, until ``stop`` is set or nothing arrived for
        ``idle_timeout`` seconds. Resume later with ``after=<seq of the last event seen>``."""
        last_activity = time.monotonic()
        while stop is None or not stop.is_set():
            timeout = FOLLOW_POLL_SECONDS
            if idle_timeout is not None:
                remaining = idle_timeout - (time.monotonic() - last_activity)
                if remaining <= 0:
                    return
                timeout = min(timeout, remaining)
            events = self.wait(run_id, after, timeout=timeout)
            if events:
                last_activity = time.monotonic()
            for event in events:
                after = event.seq
                yield event

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections opened by this process."""
