"""The Huey app: ``SqliteHuey`` under ``QUANTLAB_HOME`` (embedded) or ``PriorityRedisHuey``
at ``QUANTLAB_REDIS_URL`` (team), and the messages QuantLab queues: execute a run by id, and
execute one shard of a split sweep.

Only a run id (and a shard's index and count) crosses the queue; everything else lives in the
registry. The queue is a delivery mechanism, not the source of truth: a message that is lost or
delivered twice is harmless, because a worker starts a run only by compare-and-setting its
registry status from ``queued`` to ``running``.

A message names its task by a string (Huey's ``<module>.<task name>``); this module builds and
sends messages by that name alone, and :mod:`quantlab.jobs.tasks` registers the bodies that run
them on the consumer's app. So submitting needs none of the worker's code.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.registry import Message

from quantlab import settings as settings_mod
from quantlab.settings import Settings

QUEUE_NAME = "quantlab"
TASK_NAME = "quantlab.execute_run"
SHARD_TASK_NAME = "quantlab.execute_shard"
QUEUE_FILE = "queue.sqlite"

# The first part of each task's name on the wire (Huey's "<module of the body>.<task name>"):
# the module that registered the bodies when these names were first sent, kept so that messages
# already on a queue, and workers of the previous release during a rolling upgrade, still match.
TASKS_MODULE = "quantlab.jobs.queue"

_lock = threading.Lock()
_apps: dict[tuple[Any, ...], Huey] = {}


def wire_name(task_name: str) -> str:
    """The name a message gives its task (``Huey``'s ``<module of the body>.<task name>``)."""
    return f"{TASKS_MODULE}.{task_name}"


def queue_key(settings: Settings) -> tuple[Any, ...]:
    return (os.getpid(), settings.redis_url or str(settings.home / QUEUE_FILE))


def build_huey(settings: Settings) -> Huey:
    """A new Huey instance for ``settings`` (no task bodies: see :mod:`quantlab.jobs.tasks`)."""
    if settings.redis_url:
        # Blocking pops (BZPOPMIN) wake a worker ~1 ms after an enqueue; health checks and
        # retries let the connection pool recover when Redis restarts.
        return PriorityRedisHuey(
            QUEUE_NAME, url=settings.redis_url, results=False, utc=True, blocking=True,
            read_timeout=1,
        )
    settings.ensure_home()
    return SqliteHuey(
        QUEUE_NAME, filename=str(settings.home / QUEUE_FILE), results=False, utc=True,
        timeout=30,
    )


def huey_app(settings: Settings | None = None) -> Huey:
    """This process's Huey app for ``settings`` (cached; rebuilt after a fork)."""
    settings = settings or settings_mod.current()
    key = queue_key(settings)
    with _lock:
        found = _apps.get(key)
        if found is None:
            found = _apps[key] = build_huey(settings)
        return found


def _message(task_name: str, args: tuple[Any, ...], priority: int) -> Message:
    # No Huey retries: a failed run is final, and a lost worker is handled by the reaper.
    return Message(id=str(uuid.uuid4()), name=wire_name(task_name), retries=0, retry_delay=0,
                   priority=int(priority) or None, args=args, kwargs={})


def message(run_id: str, priority: int = 0, settings: Settings | None = None) -> Message:
    """The queue message that runs ``run_id`` (its ``.id`` is known before it is sent)."""
    return _message(TASK_NAME, (run_id,), priority)


def send(task: Message, settings: Settings | None = None) -> str:
    """Put a message made by :func:`message` on the queue; returns its id."""
    huey = huey_app(settings)
    huey.storage.enqueue(huey.serializer.serialize(task), task.priority)
    return str(task.id)


def enqueue(run_id: str, priority: int = 0, settings: Settings | None = None) -> str:
    """Put ``run_id`` on the queue (higher ``priority`` first); returns the Huey task id."""
    return send(message(run_id, priority, settings), settings)


def enqueue_shard(run_id: str, index: int, count: int, priority: int = 0,
                  settings: Settings | None = None) -> str:
    """Put shard ``index`` of ``count`` of run ``run_id``'s sweep on the queue."""
    return send(_message(SHARD_TASK_NAME, (run_id, int(index), int(count)), priority), settings)


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
            found = huey.serializer.deserialize(raw)
        except Exception:  # a foreign or corrupt message is not ours to judge
            continue
        if isinstance(found, Message) and found.args and found.name.endswith(TASK_NAME):
            ids.add(str(found.args[0]))
    return ids


def pending_count(settings: Settings | None = None) -> int:
    return int(huey_app(settings).storage.queue_size())
