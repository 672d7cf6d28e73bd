"""Notifications: tell researchers when their runs end — only when it matters.

A subscriber of the event stream (:class:`~quantlab.notify.dispatcher.Dispatcher`) delivers, per
user preferences and per-run ``notify`` blocks, to in-app notifications, email (SMTP, with
digests) and signed webhooks (with retries and a delivery log). The public API is
``quantlab.notifications`` (``ql.notifications``); the CLI is ``quantlab notify``.
"""

from __future__ import annotations

from quantlab.notify.conditions import METRIC_NAMES, Condition, ConditionError, parse_condition
from quantlab.notify.dispatcher import (
    Dispatcher,
    DispatcherThread,
    plan_deliveries,
    send_test,
    start_dispatcher_thread,
)
from quantlab.notify.validation import (
    EVENT_KINDS,
    check_webhook_url,
    validate_notify_config,
    validate_preferences,
)
from quantlab.notify.webhook import sign, verify_signature

__all__ = [
    "EVENT_KINDS",
    "METRIC_NAMES",
    "Condition",
    "ConditionError",
    "Dispatcher",
    "DispatcherThread",
    "check_webhook_url",
    "parse_condition",
    "plan_deliveries",
    "send_test",
    "sign",
    "start_dispatcher_thread",
    "validate_notify_config",
    "validate_preferences",
    "verify_signature",
]
