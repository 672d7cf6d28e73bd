"""The run registry: every run, its logs, checkpoint, notifications and result blobs.

``open_registry()`` picks the backend from the settings: MongoDB (team mode, when
``QUANTLAB_MONGO_URL`` is set) or a SQLite file under ``QUANTLAB_HOME`` (embedded mode). The
rest of QuantLab only sees the :class:`Registry` interface and the :class:`RunRecord` it stores.

Inside the package: ``schema`` (the run record, its defaults, the checks every stored field goes
through), ``query`` (filters, thresholds, sort keys, paging), ``base`` (the :class:`Registry`
contract), ``sqlite`` and ``mongo`` (the backends).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from quantlab import settings as _settings
from quantlab.errors import SchemaError
from quantlab.registry.base import Registry
from quantlab.registry.query import SORT_FIELDS
from quantlab.registry.schema import (
    LOG_LEVELS,
    RUN_DEFAULTS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    RunRecord,
    RunStatus,
)
from quantlab.registry.sqlite import SQLiteRegistry

if TYPE_CHECKING:
    from quantlab.registry.mongo import MongoRegistry

__all__ = [
    "LOG_LEVELS",
    "RUN_DEFAULTS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "SORT_FIELDS",
    "MongoRegistry",
    "Registry",
    "RunRecord",
    "RunStatus",
    "SQLiteRegistry",
    "SchemaError",
    "open_registry",
    "reset",
]

_cache: dict[tuple[str, ...], Registry] = {}
_lock = threading.Lock()


def open_registry(settings: _settings.Settings | None = None, *, auto_migrate: bool = True
                  ) -> Registry:
    """The registry the settings select (default: the current environment's).

    Opened once per store and process: a forked or spawned process opens its own, because
    neither SQLite connections nor pymongo clients survive a fork.
    """
    s = settings if settings is not None else _settings.current()
    if s.mongo_url:
        key: tuple[str, ...] = ("mongo", s.mongo_url, s.mongo_db, str(os.getpid()))
    else:
        key = ("sqlite", str(s.home / "registry.sqlite"), str(os.getpid()))
    with _lock:
        registry = _cache.get(key)
        if registry is None:
            registry = _open(s, auto_migrate)
            if auto_migrate:  # only fully usable registries are shared
                _cache[key] = registry
        return registry


def _open(s: _settings.Settings, auto_migrate: bool) -> Registry:
    if s.mongo_url:
        from quantlab.registry.mongo import MongoRegistry  # pymongo is an optional extra

        return MongoRegistry(s.mongo_url, s.mongo_db, auto_migrate=auto_migrate)
    s.ensure_home()
    return SQLiteRegistry(s.home / "registry.sqlite", s.home / "blobs", auto_migrate=auto_migrate)


def reset() -> None:
    """Close and forget every registry this process opened (tests; after changing settings)."""
    with _lock:
        for key, registry in list(_cache.items()):
            if key[-1] == str(os.getpid()):
                registry.close()
        _cache.clear()


def __getattr__(name: str) -> object:
    if name == "MongoRegistry":  # imported on demand: pymongo is an optional extra
        from quantlab.registry.mongo import MongoRegistry

        return MongoRegistry
    raise AttributeError(f"module 'quantlab.registry' has no attribute {name!r}")
