"""The Huey app: ``SqliteHuey`` under ``QUANTLAB_HOME`` (embedded) or ``PriorityRedisHuey``
at ``QUANTLAB_REDIS_URL`` (team), and the messages QuantLab queues: execute a run by id, and
execute one shard of a split sweep.

Only a run id (and a shard's index and count) crosses the queue; everything else lives in the
registry. The queue is a delivery mechanism, not the source of truth: a message that is lost or
delivered twice is harmless, because a worker starts a run only by compare-and-setting its
registry status from ``queued`` to ``running``.

A cancelled run's messages are deleted from the queue (:func:`remove`, :func:`remove_shards`),
not only revoked: nothing of a stopped run waits for a worker.

A message names its task by a string (Huey's ``<module>.<task name>``); this module builds and
sends messages by that name alone, and :mod:`quantlab.jobs.tasks` registers the bodies that run
them on the consumer's app. So submitting needs none of the worker's code.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.registry import Message
from huey.storage import RedisPriorityQueue, RedisStorage, SqliteStorage

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


def remove(task_id: str | None, settings: Settings | None = None) -> int:
    """Take the message ``task_id`` off the queue (a run cancelled while queued); returns 1 if
    it was waiting there, else 0 (a worker took it meanwhile: the run's status makes it a
    no-op)."""
    if not task_id:
        return 0
    return remove_messages(lambda found: str(found.id) == str(task_id), settings)


def remove_shards(run_id: str, settings: Settings | None = None) -> int:
    """Take every waiting shard message of run ``run_id`` off the queue (its sweep was stopped
    or is over); returns how many were removed."""
    def of_the_run(found: Message) -> bool:
        return found.name == wire_name(SHARD_TASK_NAME) and bool(found.args) \
            and str(found.args[0]) == run_id

    return remove_messages(of_the_run, settings)


def remove_messages(matches: Callable[[Message], bool], settings: Settings | None = None) -> int:
    """Delete the waiting messages for which ``matches`` is true from the queue itself (a Huey
    revoke would only mark them, leaving them queued until a worker pops and drops them), on
    either backend; returns how many were deleted. A message a worker pops meanwhile is not
    deleted (nor counted): its body finds the run's state and returns at once."""
    huey = huey_app(settings)
    removed = 0
    for raw, delete in _waiting_messages(huey):
        try:
            found = huey.serializer.deserialize(raw)
        except Exception:  # a foreign or corrupt message is not ours to judge
            continue
        if isinstance(found, Message) and matches(found):
            removed += int(delete())
    return removed


def _waiting_messages(huey: Huey) -> Iterator[tuple[bytes, Callable[[], int]]]:
    """Each waiting message's data with a function that deletes exactly that message (0 if it
    is gone by then). Huey's storages have no delete of one message: this reaches into the two
    that QuantLab builds (``build_huey``)."""
    storage = huey.storage
    if isinstance(storage, SqliteStorage):
        rows = storage.sql("select id, data from task where queue = ?", (storage.name,),
                           results=True)
        for row_id, data in rows or ():
            yield bytes(data), partial(_delete_sqlite_row, storage, row_id)
    elif isinstance(storage, RedisPriorityQueue):
        # members are an 8-byte enqueue timestamp, then the message
        for member in storage.conn.zrange(storage.queue_key, 0, -1):
            yield member[8:], partial(storage.conn.zrem, storage.queue_key, member)
    elif isinstance(storage, RedisStorage):
        for member in storage.conn.lrange(storage.queue_key, 0, -1):
            yield member, partial(storage.conn.lrem, storage.queue_key, 1, member)
    else:
        raise TypeError(f"cannot delete messages from a {type(storage).__name__} queue")


def _delete_sqlite_row(storage: SqliteStorage, row_id: int) -> int:
    with storage.db(commit=True) as cursor:
        cursor.execute("delete from task where id = ?", (row_id,))
        return int(cursor.rowcount)


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
