"""The run record's schema: the statuses a run can be in (declared here, the lowest layer that
stores and indexes them; :mod:`quantlab.jobs.lifecycle` says which transitions are allowed)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status. A ``StrEnum``: each member equals its string (``RunStatus.QUEUED ==
    "queued"``), so records and events keep plain strings."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATUSES: tuple[str, ...] = tuple(RunStatus)
