"""``ql.notifications``: your notification preferences, your in-app notifications, the log.

    import quantlab as ql
    ql.notifications.set_preferences(email="me@example.com", when="sharpe > 1.5")
    ql.notifications.add_webhook("https://hooks.example.com/quantlab", secret="<32 hex chars>")
    ql.notifications.list(unread_only=True)
    ql.notifications.mark_read(notification_id)
    ql.notifications.test()            # send a test notification to every channel now

A run can add its own targets and condition in its config: ``notify: {email: [...],
webhooks: [{url, secret}], when: "sharpe > 1", events: [completed, failed]}``. Delivery is done
by the dispatcher (a thread of the worker, or ``quantlab notify run``); see docs/notifications.md.

This module is the one facade of notifications: :mod:`quantlab.notify` is the machinery behind
it (dispatcher, channels, store), :mod:`quantlab.notifyspec` what a setting may say.
"""

from __future__ import annotations

import builtins
from typing import Any

from quantlab.notify import store
from quantlab.notify.deliverer import send_test
from quantlab.notify.dispatcher import Dispatcher, start_dispatcher_thread
from quantlab.notify.webhook import sign, verify_signature
from quantlab.notifyspec import EVENT_KINDS, METRIC_NAMES, parse_condition, validate_notify_config

__all__ = [
    "EVENT_KINDS",
    "METRIC_NAMES",
    "Dispatcher",
    "add_webhook",
    "deliveries",
    "get_preferences",
    "list",
    "mark_all_read",
    "mark_read",
    "parse_condition",
    "remove_webhook",
    "set_preferences",
    "sign",
    "start_dispatcher_thread",
    "test",
    "validate_notify_config",
    "verify_signature",
]

get_preferences = store.get_preferences
set_preferences = store.set_preferences
add_webhook = store.add_webhook
remove_webhook = store.remove_webhook
mark_read = store.mark_read
mark_all_read = store.mark_all_read


def list(  # the documented name: ql.notifications.list()
    user: str | None = None, *, unread_only: bool = False, limit: int = 50
) -> builtins.list[dict[str, Any]]:
    """Your in-app notifications (or ``user``'s), newest first: dicts with ``id``, ``run_id``,
    ``kind`` (completed/failed/cancelled), ``title``, ``body``, ``created_at``, ``read``."""
    return store.list_notifications(user, unread_only=unread_only, limit=limit)


def deliveries(
    run_id: str | None = None, *, user: str | None = None, status: str | None = None,
    limit: int = 50,
) -> builtins.list[dict[str, Any]]:
    """The delivery log, newest first: one dict per delivery (``channel``, ``target``,
    ``status`` delivered/failed/pending, ``attempts`` with ``status_code``, ``latency_ms``,
    ``error``), optionally for one run, user or status."""
    return store.list_deliveries(run_id=run_id, user=user, status=status, limit=limit)


def test(user: str | None = None) -> builtins.list[dict[str, Any]]:
    """Send a test notification to every channel of your preferences now; returns the
    delivery-log entries (check ``status`` and ``attempts[-1]['error']``)."""
    return send_test(user)
