"""The event stream: where a run's life is told (queued, started, progress ... completed).

``open_events()`` picks the backend from the settings: Redis Streams when
``QUANTLAB_REDIS_URL`` is set, else a table in ``<QUANTLAB_HOME>/events.sqlite``.
``open_publisher()`` is the same store behind a :class:`PendingEvents` that keeps, in order,
what cannot be published while the store is away (a worker's runs outlive a Redis outage).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from quantlab import settings as _settings
from quantlab.errors import EventsUnavailable
from quantlab.events.base import (
    EVENT_TYPES,
    Event,
    EventStream,
)
from quantlab.events.outage import PendingEvents, StreamOutage, follow_through_outages
from quantlab.events.sqlite import SQLiteEventStream

if TYPE_CHECKING:
    from quantlab.events.redis import RedisEventStream

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventStream",
    "EventsUnavailable",
    "PendingEvents",
    "RedisEventStream",
    "SQLiteEventStream",
    "StreamOutage",
    "follow_through_outages",
    "open_events",
    "open_publisher",
    "reset",
]

_cache: dict[tuple[str, str, int], EventStream] = {}
_publishers: dict[tuple[str, str, int], PendingEvents] = {}
_lock = threading.Lock()


def open_events(settings: _settings.Settings | None = None) -> EventStream:
    """The event stream the settings select, opened once per store and process."""
    s = settings if settings is not None else _settings.current()
    kind, where = ("redis", s.redis_url) if s.redis_url else (
        "sqlite", str(s.home / "events.sqlite"))
    key = (kind, where, os.getpid())
    with _lock:
        stream = _cache.get(key)
        if stream is None:
            stream = _open(s)
            _cache[key] = stream
        return stream


def open_publisher(settings: _settings.Settings | None = None) -> PendingEvents:
    """The settings' event store for a publisher that must not fail when it is away (a worker):
    events that cannot be published wait in this process and are published, in order, when
    the store is back. Its own connection fails fast (one try, then the events wait)."""
    s = settings if settings is not None else _settings.current()
    where = s.redis_url or str(s.home / "events.sqlite")
    key = ("redis" if s.redis_url else "sqlite", where, os.getpid())
    with _lock:
        publisher = _publishers.get(key)
        if publisher is None:
            publisher = _publishers[key] = PendingEvents(_open(s, retries=1))
        return publisher


def _open(s: _settings.Settings, retries: int = 10) -> EventStream:
    if s.redis_url:
        from quantlab.events.redis import RedisEventStream

        return RedisEventStream(s.redis_url, retries=retries)
    s.ensure_home()
    return SQLiteEventStream(s.home / "events.sqlite")


def reset() -> None:
    """Close and forget every stream this process opened (tests; after changing settings)."""
    with _lock:
        for (_, _, pid), stream in list(_cache.items()):
            if pid == os.getpid():
                stream.close()
        _cache.clear()
        for (_, _, pid), publisher in list(_publishers.items()):
            if pid == os.getpid():
                publisher.stream.close()
        _publishers.clear()


def __getattr__(name: str) -> object:
    if name == "RedisEventStream":
        from quantlab.events.redis import RedisEventStream

        return RedisEventStream
    raise AttributeError(f"module 'quantlab.events' has no attribute {name!r}")
