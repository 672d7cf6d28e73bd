"""Delivering: sending one planned delivery on its channel and recording its attempts.

A :class:`Deliverer` checks the delivery-log document of a delivery before sending (a delivery
already finished is not sent again: that is what makes a replayed event harmless), sends through
the channel's module (:mod:`~quantlab.notify.webhook`, :mod:`~quantlab.notify.mail`, or an
in-app notification in the registry) and writes every attempt to the log as it happens.
:func:`send_test` uses it to send a test notification at once, without the dispatcher.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from quantlab import settings as settings_mod
from quantlab.notify import mail, store, webhook
from quantlab.notify import settings as notify_settings
from quantlab.notify.delivery import FAILED, FINAL_STATUSES, Attempt, DeliveryResult
from quantlab.notify.planning import Delivery, plan_deliveries
from quantlab.notify.summary import RunSummary, summarize
from quantlab.registry import Registry, RunRecord, open_registry

log = logging.getLogger("quantlab.notify")


class Deliverer:
    """Sends one delivery on its channel and keeps its log document up to date."""

    def __init__(self, reg: Registry, settings: notify_settings.NotifySettings) -> None:
        self.reg = reg
        self.settings = settings

    def _open_record(self, delivery: Delivery) -> dict[str, Any] | None:
        """The log document to continue, or None when the delivery is already finished."""
        existing = store.get_delivery(delivery.id, reg=self.reg)
        if existing is not None and existing.get("status") in FINAL_STATUSES:
            return None
        return existing or delivery.record()

    def _logger(self, record: dict[str, Any]) -> Callable[[Attempt], None]:
        def on_attempt(attempt: Attempt) -> None:
            entry = attempt.to_dict()
            if entry.get("error"):  # a message may quote the webhook's URL
                entry["error"] = settings_mod.redact_text(str(entry["error"]))
            record["attempts"].append(entry)
            record["updated_at"] = time.time()
            self._save(record)
        return on_attempt

    def _save(self, record: dict[str, Any]) -> None:
        try:
            store.save_delivery(record, reg=self.reg)
        except Exception:  # the log is best effort: a registry hiccup must not stop delivery
            log.exception("could not write delivery log %s", record.get("id"))

    def _finish(self, record: dict[str, Any], result: DeliveryResult) -> dict[str, Any]:
        record["status"] = result.status
        record["updated_at"] = time.time()
        if result.error and result.status != "delivered":
            record["error"] = settings_mod.redact_text(result.error)
        self._save(record)
        return record

    def deliver(self, delivery: Delivery, summary: RunSummary,
                stop: threading.Event | None = None) -> dict[str, Any] | None:
        """Deliver a webhook or in-app notification; None when it was already done."""
        record = self._open_record(delivery)
        if record is None:
            return None
        on_attempt = self._logger(record)
        if delivery.channel == "webhook":
            payload = {**summary.to_payload(), "delivery_id": delivery.id}
            result = webhook.send_webhook(
                delivery.target, delivery.secret or "", payload, delivery_id=delivery.id,
                event=delivery.event, settings=self.settings, on_attempt=on_attempt, stop=stop,
                first_attempt=len(record["attempts"]) + 1,
            )
        elif delivery.channel == "in_app":
            result = self._in_app(delivery, summary, on_attempt)
        else:
            raise ValueError(f"deliver() does not send {delivery.channel}; use deliver_email")
        return self._finish(record, result)

    def _in_app(self, delivery: Delivery, summary: RunSummary,
                on_attempt: Callable[[Attempt], None]) -> DeliveryResult:
        started = time.time()
        error: str | None = None
        notification_id = "n." + delivery.id
        try:
            self.reg.add_notification({
                "id": notification_id, "user": delivery.target, "run_id": summary.run_id,
                "kind": summary.event, "title": summary.title, "body": summary.headline(),
                "level": "error" if summary.event == "failed" else "info",
                "metrics": summary.to_payload()["metrics"], "links": summary.links,
            })
        except Exception as exc:
            # Already there (a replay after a crash between the insert and the log write)?
            known = self.reg.list_notifications(delivery.target, limit=500)
            if not any(n.get("id") == notification_id for n in known):
                error = f"{type(exc).__name__}: {exc}"
        attempt = Attempt(1, started, round((time.time() - started) * 1000, 3), None, error)
        on_attempt(attempt)
        return DeliveryResult("delivered" if error is None else FAILED, [attempt])

    def deliver_email(self, recipient: str, items: list[tuple[Delivery, RunSummary]],
                      stop: threading.Event | None = None) -> list[dict[str, Any]]:
        """One email to ``recipient`` about every not-yet-finished item: a digest if several."""
        open_items = []
        for delivery, summary in items:
            record = self._open_record(delivery)
            if record is not None:
                open_items.append((record, summary))
        if not open_items:
            return []
        records = [record for record, _ in open_items]
        for record in records:
            record["digest_size"] = len(records)

        def on_attempt(attempt: Attempt) -> None:
            for record in records:
                record["attempts"].append(attempt.to_dict())
                record["updated_at"] = time.time()
                self._save(record)

        result = mail.send_email(recipient, [s for _, s in open_items], settings=self.settings,
                                 on_attempt=on_attempt, stop=stop)
        return [self._finish(record, result) for record in records]


def send_test(user: str | None = None, *, settings: settings_mod.Settings | None = None,
              notify: notify_settings.NotifySettings | None = None) -> list[dict[str, Any]]:
    """Send a test notification to every channel of the user's preferences, now, and return
    the delivery-log documents (status, attempts with status codes, latency and errors)."""
    s = settings or settings_mod.current()
    n = notify or notify_settings.current()
    reg = open_registry(s)
    name = user or s.user
    prefs = store.load_preferences(reg, name)
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    fake: RunRecord = {"id": run_id, "name": "test", "user": name,
                       "status": "completed", "config": {"notify": None}}
    summary = summarize(fake, "test", public_url=n.public_url)
    deliveries = plan_deliveries(fake, "completed", {**prefs, "events": ["completed"],
                                                     "when": None})
    deliveries = [Delivery(d.id.replace(".completed.", ".test."), d.channel, d.target, run_id,
                           "test", name, d.source, d.secret) for d in deliveries]
    deliverer = Deliverer(reg, n)
    records: list[dict[str, Any]] = []
    for delivery in deliveries:
        if delivery.channel == "email":
            records += deliverer.deliver_email(delivery.target, [(delivery, summary)])
        else:
            record = deliverer.deliver(delivery, summary)
            if record is not None:
                records.append(record)
    return records
