"""Planning: which deliveries an event of a run calls for (who is told, on which channel).

Pure decisions from the run, the event and the user's preferences: nothing is sent and nothing
is stored here. Every delivery gets a deterministic id (run, event, channel, target), which is
how a replayed event is recognised as already delivered (see :mod:`quantlab.notify.deliverer`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantlab.errors import ConfigError
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.notify.delivery import PENDING
from quantlab.notify.summary import is_sweep
from quantlab.notifyspec import parse_condition, validate_notify_config
from quantlab.registry import RunRecord
from quantlab.settings import redact

log = logging.getLogger("quantlab.notify")

CHANNELS = ("in_app", "email", "webhook")


@dataclass(frozen=True)
class Delivery:
    """One notification to one target."""

    id: str
    channel: str  # in_app | email | webhook
    target: str  # the user (in_app), the address (email) or the URL (webhook)
    run_id: str
    event: str
    user: str | None
    source: str  # "preferences" or "config"
    secret: str | None = None

    def record(self) -> dict[str, Any]:
        """A fresh delivery-log document: the secret is never logged, and a webhook's URL is
        logged redacted (its path is often a token)."""
        now = time.time()
        target = redact(self.target) if self.channel == "webhook" else self.target
        return {"id": self.id, "channel": self.channel, "target": target,
                "run_id": self.run_id, "event": self.event, "user": self.user,
                "source": self.source, "status": PENDING, "attempts": [], "created_at": now,
                "updated_at": now}


def delivery_id(run_id: str, event: str, channel: str, target: str) -> str:
    digest = hashlib.sha256(target.encode()).hexdigest()[:16]
    return f"{run_id}.{event}.{channel}.{digest}"


def run_notify_block(run: RunRecord) -> dict[str, Any]:
    """The run config's ``notify`` block, normalised. It was validated at submit time, so DNS is
    not consulted again here (the send-time check guards the addresses)."""
    config = run.get("config")
    block = config.get("notify") if isinstance(config, Mapping) else None
    try:
        return validate_notify_config(block, allow_private=True)
    except ConfigError as exc:
        log.warning("run %s: ignoring its notify block: %s", run.get("id"), exc)
        return validate_notify_config(None)


def event_kinds(run: RunRecord, event: str) -> set[str]:
    """The subscription names an event answers to (a completed sweep is also sweep_finished)."""
    kinds = {event}
    if event == "completed" and is_sweep(run):
        kinds.add("sweep_finished")
    return kinds


def plan_deliveries(
    run: RunRecord, event: str, prefs: Mapping[str, Any] | None
) -> list[Delivery]:
    """Everything to send for ``event`` of ``run``.

    ``prefs`` are the run's user's preferences (None when the run has no user). The run config's
    ``notify`` block adds its webhooks and addresses, and its ``events``/``when`` — when given —
    replace the user's for this run. ``when`` gates only ``completed`` (a failed or cancelled run
    has no result to test; if you subscribed to failures you hear of every one). A condition on
    a metric the run does not have is not met.
    """
    if event not in TERMINAL:
        return []
    block = run_notify_block(run)
    prefs = dict(prefs or {})
    events = block["events"] if block["events"] is not None else prefs.get("events") or []
    when = block["when"] if block["when"] is not None else prefs.get("when")
    if not event_kinds(run, event) & set(events):
        return []
    if event == "completed" and when:
        try:
            condition = parse_condition(when)
        except ConfigError as exc:
            log.warning("run %s: condition %r does not parse, nothing sent: %s",
                        run.get("id"), when, exc)
            return []
        if not condition.matches(run.get("metrics") or {}):
            return []
    run_id = str(run.get("id"))
    user = run.get("user")
    planned: dict[str, Delivery] = {}

    def add(channel: str, target: str, source: str, secret: str | None = None) -> None:
        key = delivery_id(run_id, event, channel, target)
        planned.setdefault(key, Delivery(key, channel, target, run_id, event, user, source,
                                         secret))

    if user and prefs.get("in_app"):
        add("in_app", str(user), "preferences")
    if prefs.get("email") and prefs.get("email_enabled"):
        add("email", str(prefs["email"]), "preferences")
    for hook in prefs.get("webhooks") or []:
        add("webhook", hook["url"], "preferences", hook.get("secret"))
    for address in block["email"]:
        add("email", address, "config")
    for hook in block["webhooks"]:
        add("webhook", hook["url"], "config", hook["secret"])
    return list(planned.values())
