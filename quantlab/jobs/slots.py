"""``QUANTLAB_MAX_CONCURRENT``: the take lock, and the marks of runs a worker holds in hand.

With a limit, workers take runs one at a time: each holds the *take lock* (an atomic
``put_if_empty`` in the queue's key-value store, the one the shards' claims use: a Redis hash
or a SQLite table) while it counts the running runs and, only when there is room, moves its run
``queued -> running``. So the registry never shows more running runs than the limit, not even
for an instant, and a worker that finds no room leaves its run ``queued``, untouched, and puts
its message back on the queue.

Between taking a run's message off the queue and putting it back (or starting it), the run is
queued but on no queue: the worker marks it *in hand* meanwhile, so that the reaper's check for
lost messages does not take it for one. A mark or a lock left by a worker that died goes stale
and is ignored (the lock: broken by exactly one other worker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from huey.constants import EmptyData

from quantlab.jobs import queue
from quantlab.settings import Settings

log = logging.getLogger("quantlab.jobs")

__all__ = ["IN_HAND_STALE", "LOCK_STALE", "LOCK_WAIT", "TakeLock", "forget", "holding",
           "in_hand"]

LOCK_KEY = "quantlab.take-lock"
IN_HAND_PREFIX = "quantlab.in-hand."
# A holder keeps the lock for two registry calls (milliseconds): one held this long has died.
LOCK_STALE = 10.0
# How long a worker waits for the lock before it puts its run back on the queue.
LOCK_WAIT = 5.0
# A run marked in hand longer than this was held by a worker that died: its message is lost.
IN_HAND_STALE = 30.0


def _load(raw: Any) -> dict[str, Any] | None:
    if raw is EmptyData:
        return None
    try:
        found = json.loads(bytes(raw))
    except (TypeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


class TakeLock:
    """The one lock under which a worker counts the running runs and takes one."""

    def __init__(self, settings: Settings, worker: str) -> None:
        self.storage = queue.huey_app(settings).storage
        self.worker = worker
        self.token = uuid.uuid4().hex

    def acquire(self, timeout: float = LOCK_WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            value = json.dumps({"token": self.token, "worker": self.worker,
                                "at": time.time()}).encode()
            if self.storage.put_if_empty(LOCK_KEY, value):
                return True
            self._break_if_stale()
            if time.monotonic() >= deadline:
                return False
            time.sleep(random.uniform(0.001, 0.005))

    def _break_if_stale(self) -> None:
        held = _load(self.storage.peek_data(LOCK_KEY))
        if held is None or time.time() - float(held.get("at") or 0.0) < LOCK_STALE:
            return
        # Of the workers that see the same stale lock, exactly one breaks it (a second one,
        # later, would otherwise delete the lock the first one then took).
        if self.storage.put_if_empty(f"{LOCK_KEY}.broken.{held.get('token')}", b"1"):
            log.warning("the take lock held by %s for more than %g s was broken (that worker "
                        "died while taking a run)", held.get("worker"), LOCK_STALE)
            self.storage.delete_data(LOCK_KEY)

    def release(self) -> None:
        held = _load(self.storage.peek_data(LOCK_KEY))
        if held is not None and held.get("token") == self.token:
            self.storage.delete_data(LOCK_KEY)


@contextlib.contextmanager
def holding(run_id: str, settings: Settings, worker: str) -> Iterator[None]:
    """Mark ``run_id`` in hand (taken off the queue by ``worker``, not started) meanwhile. Each
    holder has a mark of its own: one that put the run back must not drop the mark of the next
    worker, which may have taken the message again already."""
    storage = queue.huey_app(settings).storage
    key = f"{IN_HAND_PREFIX}{run_id}.{uuid.uuid4().hex}"
    storage.put_data(key, json.dumps({"worker": worker, "at": time.time()}).encode())
    try:
        yield
    finally:
        storage.delete_data(key)


def _marks(settings: Settings) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """``(key, run id, mark)`` of every in-hand mark (read only when the reaper misses a run)."""
    for key, value in queue.huey_app(settings).storage.result_items().items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith(IN_HAND_PREFIX):
            yield name, name[len(IN_HAND_PREFIX):].rpartition(".")[0], _load(value)


def in_hand(run_ids: Iterable[str], settings: Settings, now: float | None = None) -> set[str]:
    """Those of ``run_ids`` a live worker holds in hand (a fresh mark)."""
    wanted = set(run_ids)
    now = time.time() if now is None else now
    return {run_id for _key, run_id, mark in _marks(settings)
            if run_id in wanted and mark is not None
            and now - float(mark.get("at") or 0.0) < IN_HAND_STALE}


def forget(run_id: str, settings: Settings) -> None:
    """Drop the stale in-hand marks of ``run_id`` (left by dead workers): its message was sent
    again."""
    storage = queue.huey_app(settings).storage
    for key, found, _mark in list(_marks(settings)):
        if found == run_id:
            storage.delete_data(key)
