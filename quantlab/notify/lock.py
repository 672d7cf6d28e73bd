"""The lock that lets only one dispatcher per home (embedded) or per team (Redis) deliver: the
event stream's leader lock (:mod:`quantlab.events.lock`) under the dispatcher's names."""

from __future__ import annotations

from pathlib import Path

from quantlab.events.lock import LeaderLock, leader_lock

__all__ = ["LOCK_FILE", "REDIS_KEY", "lock_for"]

LOCK_FILE = "notify-dispatcher.lock"
REDIS_KEY = "quantlab:notify:dispatcher"


def lock_for(home: Path, redis_url: str | None) -> LeaderLock:
    """Redis lease in team mode (dispatchers on many machines), file lock otherwise."""
    return leader_lock(home / LOCK_FILE, redis_url, REDIS_KEY)
