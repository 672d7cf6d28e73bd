"""The event stream: where a run's life is told (queued, started, progress ... completed).

``open_events()`` picks the backend from the settings: Redis Streams when
``QUANTLAB_REDIS_URL`` is set, else a table in ``<QUANTLAB_HOME>/events.sqlite``.
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
from quantlab.events.sqlite import SQLiteEventStream

if TYPE_CHECKING:
    from quantlab.events.redis import RedisEventStream

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventStream",
    "EventsUnavailable",
    "RedisEventStream",
    "SQLiteEventStream",
    "open_events",
    "reset",
]

_cache: dict[tuple[str, str, int], EventStream] = {}
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


def _open(s: _settings.Settings) -> EventStream:
    if s.redis_url:
        from quantlab.events.redis import RedisEventStream

        return RedisEventStream(s.redis_url)
    s.ensure_home()
    return SQLiteEventStream(s.home / "events.sqlite")


def reset() -> None:
    """Close and forget every stream this process opened (tests; after changing settings)."""
    with _lock:
        for (_, _, pid), stream in list(_cache.items()):
            if pid == os.getpid():
                stream.close()
        _cache.clear()


def __getattr__(name: str) -> object:
    if name == "RedisEventStream":
        from quantlab.events.redis import RedisEventStream

        return RedisEventStream
    raise AttributeError(f"module 'quantlab.events' has no attribute {name!r}")
