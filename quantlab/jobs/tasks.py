"""The Huey tasks a worker executes, registered here on the consumer's app: a run, and one shard
of a split sweep. Messages name them by :func:`quantlab.jobs.queue.wire_name` (this module's
name and the task's), so the submitting side builds them without importing any of this.
"""

from __future__ import annotations

from huey.api import Huey

from quantlab.jobs import queue, runner, shards


def execute_run(run_id: str) -> None:
    """Run ``run_id`` (see :func:`quantlab.jobs.runner.execute`)."""
    runner.execute(run_id)


def execute_shard(run_id: str, index: int, count: int) -> None:
    """Run one shard of a split sweep (see :func:`quantlab.jobs.shards.execute_shard`)."""
    shards.execute_shard(run_id, index, count)


BODIES = {queue.TASK_NAME: execute_run, queue.SHARD_TASK_NAME: execute_shard}
for _body in BODIES.values():
    # Huey names a task after its body's module: keep the names messages are sent under
    _body.__module__ = queue.TASKS_MODULE


def register(huey: Huey) -> Huey:
    """Register the task bodies on ``huey`` (once per app); returns it."""
    for name, body in BODIES.items():
        if not _registered(huey, name):
            # No Huey retries: a failed run is final, and a lost worker is handled by the reaper.
            huey.task(name=name, retries=0)(body)
    return huey


def _registered(huey: Huey, name: str) -> bool:
    try:
        huey._registry.string_to_task(queue.wire_name(name))
    except Exception:  # huey's HueyException: not registered yet
        return False
    return True
