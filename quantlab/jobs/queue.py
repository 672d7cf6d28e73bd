"""The Huey app: ``SqliteHuey`` under ``QUANTLAB_HOME`` (embedded) or ``PriorityRedisHuey``
at ``QUANTLAB_REDIS_URL`` (team), with the one task QuantLab queues: execute a run by id.

Only a run id crosses the queue (Huey pickles task arguments); everything else lives in the
registry. The queue is a delivery mechanism, not the source of truth: a message that is lost or
delivered twice is harmless, because a worker starts a run only by compare-and-setting its
registry status from ``queued`` to ``running``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey, TaskWrapper

from quantlab import settings as settings_mod
from quantlab.settings import Settings

QUEUE_NAME = "quantlab"
TASK_NAME = "quantlab.execute_run"
SHARD_TASK_NAME = "quantlab.execute_shard"
QUEUE_FILE = "queue.sqlite"

_lock = threading.Lock()
_apps: dict[tuple[Any, ...], tuple[Huey, dict[str, TaskWrapper]]] = {}


def _execute_run(run_id: str) -> None:
    """The Huey task: run ``run_id`` (imports lazily: the submitting kernel never runs it)."""
    from quantlab.jobs.runner import execute

    execute(run_id)


def _execute_shard(run_id: str, index: int, count: int) -> None:
    """The Huey task of one shard of a split sweep (see :mod:`quantlab.jobs.shards`)."""
    from quantlab.jobs.shards import execute_shard

    execute_shard(run_id, index, count)


def queue_key(settings: Settings) -> tuple[Any, ...]:
    return (os.getpid(), settings.redis_url or str(settings.home / QUEUE_FILE))


def build_huey(settings: Settings) -> tuple[Huey, dict[str, TaskWrapper]]:
    """A new Huey instance for ``settings`` and the QuantLab tasks registered on it."""
    huey: Huey
    if settings.redis_url:
        # Blocking pops (BZPOPMIN) wake a worker ~1 ms after an enqueue; health checks and
        # retries let the connection pool recover when Redis restarts.
        huey = PriorityRedisHuey(
            QUEUE_NAME, url=settings.redis_url, results=False, utc=True, blocking=True,
            read_timeout=1,
        )
    else:
        settings.ensure_home()
        huey = SqliteHuey(
            QUEUE_NAME, filename=str(settings.home / QUEUE_FILE), results=False, utc=True,
            timeout=30,
        )
    # No Huey retries: a failed run is final, and a lost worker is handled by the reaper.
    tasks = {
        TASK_NAME: huey.task(name=TASK_NAME, retries=0)(_execute_run),
        SHARD_TASK_NAME: huey.task(name=SHARD_TASK_NAME, retries=0)(_execute_shard),
    }
    return huey, tasks


def app(settings: Settings | None = None) -> tuple[Huey, dict[str, TaskWrapper]]:
    """This process's Huey app and tasks for ``settings`` (cached; rebuilt after a fork)."""
    settings = settings or settings_mod.current()
    key = queue_key(settings)
    with _lock:
        found = _apps.get(key)
        if found is None:
            found = _apps[key] = build_huey(settings)
        return found


def huey_app(settings: Settings | None = None) -> Huey:
    return app(settings)[0]


def message(run_id: str, priority: int = 0, settings: Settings | None = None) -> Any:
    """The queue message that runs ``run_id`` (its ``.id`` is known before it is sent)."""
    _, tasks = app(settings)
    return tasks[TASK_NAME].s(run_id, priority=int(priority) or None)


def send(task: Any, settings: Settings | None = None) -> str:
    """Put a message made by :func:`message` on the queue; returns its id."""
    huey_app(settings).enqueue(task)
    return str(task.id)


def enqueue(run_id: str, priority: int = 0, settings: Settings | None = None) -> str:
    """Put ``run_id`` on the queue (higher ``priority`` first); returns the Huey task id."""
    return send(message(run_id, priority, settings), settings)


def enqueue_shard(run_id: str, index: int, count: int, priority: int = 0,
                  settings: Settings | None = None) -> str:
    """Put shard ``index`` of ``count`` of run ``run_id``'s sweep on the queue."""
    huey, tasks = app(settings)
    message = tasks[SHARD_TASK_NAME].s(run_id, int(index), int(count),
                                       priority=int(priority) or None)
    huey.enqueue(message)
    return str(message.id)


def revoke(task_id: str | None, settings: Settings | None = None) -> None:
    """Make a queued message a no-op (the registry status already says the run is over)."""
    if task_id:
        huey_app(settings).revoke_by_id(task_id, revoke_once=True)


def queued_run_ids(settings: Settings | None = None, limit: int | None = None) -> set[str]:
    """Run ids of the messages waiting in the queue (for the orphan check of the reaper)."""
    huey = huey_app(settings)
    ids: set[str] = set()
    for raw in huey.storage.enqueued_items(limit):
        try:
            task = huey.deserialize_task(raw)
        except Exception:  # a foreign or corrupt message is not ours to judge
            continue
        if task.args and task.name.endswith(TASK_NAME):
            ids.add(str(task.args[0]))
    return ids


def pending_count(settings: Settings | None = None) -> int:
    return int(huey_app(settings).storage.queue_size())
