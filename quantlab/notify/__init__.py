"""Notifications, the machinery: tell researchers when their runs end — only when it matters.

A subscriber of the event stream, the dispatcher, delivers per user preferences and per-run
``notify`` blocks to in-app notifications, email (SMTP, with digests) and signed webhooks (with
retries and a delivery log). The user API is :mod:`quantlab.notifications`
(``ql.notifications``), the one facade; the CLI is ``quantlab notify``; what a setting may say
(conditions, webhook URLs, ``notify`` blocks) is checked in :mod:`quantlab.notifyspec`.

The modules, by concern:

- ``planning``: which deliveries an event of a run calls for;
- ``deliverer``: sending one delivery and logging its attempts (and ``send_test``);
- ``dispatcher``: the loop that follows the event stream, and its thread in worker processes;
- ``webhook``, ``mail``, ``delivery``: the channels, and attempts with retries;
- ``store``: preferences, in-app notifications, the delivery log and the cursor, in the registry;
- ``summary``, ``lock``, ``settings``, ``cli``.

This package exports what starts and drives the service (worker processes, ``quantlab notify
run``); everything a user calls is in :mod:`quantlab.notifications`.
"""

from __future__ import annotations

from quantlab.notify.deliverer import send_test
from quantlab.notify.dispatcher import Dispatcher, DispatcherThread, start_dispatcher_thread
from quantlab.notify.planning import plan_deliveries

__all__ = [
    "Dispatcher",
    "DispatcherThread",
    "plan_deliveries",
    "send_test",
    "start_dispatcher_thread",
]
