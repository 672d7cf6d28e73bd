"""Where notification state lives: all of it in the run registry.

- preferences: under the ``"notifications"`` key of the user's preferences document
  (``registry.get_preferences(user)``), so other features can keep their own keys beside it;
- in-app notifications: the registry's notifications collection;
- the delivery log: one document per delivery in the ``notify_deliveries`` collection (each with
  its attempts: status code, latency, error);
- the dispatcher's cursor in the event stream: the ``notify_state`` collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantlab import settings as settings_mod
from quantlab.errors import ConfigError, NotOwner, RunError
from quantlab.jobs.ownership import ADMINS_VARIABLE, check_owner, may_act
from quantlab.notifyspec import (
    PREFERENCE_KEYS,
    default_preferences,
    validate_preferences,
)
from quantlab.registry import Registry, open_registry

PREFS_KEY = "notifications"
DELIVERIES = "notify_deliveries"
STATE = "notify_state"
CURSOR_ID = "cursor"
_UNSET: Any = object()


def _user(user: str | None) -> str:
    return user or settings_mod.current().user


def load_preferences(reg: Registry, user: str) -> dict[str, Any]:
    """The user's notification preferences with defaults filled in, as stored (no re-validation:
    reading must never resolve DNS or fail on a preference saved by an older version)."""
    stored = reg.get_preferences(user).get(PREFS_KEY) or {}
    prefs = default_preferences()
    if isinstance(stored, Mapping):
        prefs.update({k: v for k, v in stored.items() if k in PREFERENCE_KEYS})
    return prefs


def get_preferences(user: str | None = None, *, reg: Registry | None = None) -> dict[str, Any]:
    """A user's notification preferences (default: the current user): ``email``,
    ``email_enabled``, ``in_app``, ``webhooks`` ([{url, secret}]), ``events``, ``when``."""
    return load_preferences(reg or open_registry(), _user(user))


def set_preferences(
    user: str | None = None,
    *,
    email: Any = _UNSET,
    email_enabled: Any = _UNSET,
    in_app: Any = _UNSET,
    webhooks: Any = _UNSET,
    events: Any = _UNSET,
    when: Any = _UNSET,
    reg: Registry | None = None,
) -> dict[str, Any]:
    """Change some of a user's notification preferences; the others keep their value.

    ``email=None`` removes the address and ``when=None`` the condition. Everything is validated
    (webhook URLs must be public http(s) URLs with a secret of 16+ characters; ``when`` must
    parse; ``events`` from completed, failed, cancelled, sweep_finished) before anything is
    saved; returns the preferences now in force.
    """
    reg = reg or open_registry()
    name = _user(user)
    changes = {key: value for key, value in {
        "email": email, "email_enabled": email_enabled, "in_app": in_app,
        "webhooks": webhooks, "events": events, "when": when,
    }.items() if value is not _UNSET}
    merged = {**load_preferences(reg, name), **changes}
    checked = validate_preferences(merged)
    document = dict(reg.get_preferences(name))
    document[PREFS_KEY] = checked
    reg.set_preferences(name, document)
    return checked


def edited_webhooks(user: str | None = None, *, add: str | None = None, secret: str = "",
                    remove: str | None = None, reg: Registry | None = None) -> list[dict[str, Any]]:
    """The user's webhook list with ``remove`` taken out (ConfigError if it is not there) and
    ``add`` put in with ``secret`` (replacing the secret if the URL is there). Nothing is
    saved: pass the list to :func:`set_preferences` with any other change, so that one check
    accepts or refuses the whole edit."""
    hooks = load_preferences(reg or open_registry(), _user(user))["webhooks"]
    if remove is not None:
        # the URL in full, or as `quantlab notify show` prints it (redacted) when only one matches
        kept = [h for h in hooks if h.get("url") != remove]
        if len(kept) == len(hooks):
            kept = [h for h in hooks if settings_mod.redact(str(h.get("url"))) != remove]
        known = ", ".join(settings_mod.redact(str(h.get("url", "?"))) for h in hooks) or "none"
        if len(kept) == len(hooks):
            raise ConfigError(f"no webhook {settings_mod.redact(remove)!r} in your preferences (yours: "
                              f"{known}); give the URL as `quantlab notify show` prints it, or "
                              f"in full", field="webhooks")
        if len(kept) < len(hooks) - 1:
            raise ConfigError(f"{remove!r} matches {len(hooks) - len(kept)} of your webhooks "
                              f"({known}); give the URL in full (`quantlab notify show "
                              f"--secrets` prints it)", field="webhooks")
        hooks = kept
    if add is not None:
        hooks = [*(h for h in hooks if h.get("url") != add), {"url": add, "secret": secret}]
    return hooks


def add_webhook(url: str, secret: str, user: str | None = None, *, reg: Registry | None = None
                ) -> dict[str, Any]:
    """Add a webhook to the user's preferences (replacing the secret if the URL is there)."""
    reg = reg or open_registry()
    return set_preferences(user, webhooks=edited_webhooks(user, add=url, secret=secret, reg=reg),
                           reg=reg)


def remove_webhook(url: str, user: str | None = None, *, reg: Registry | None = None) -> dict[str, Any]:
    """Remove a webhook from the user's preferences; ConfigError if it is not there."""
    reg = reg or open_registry()
    return set_preferences(user, webhooks=edited_webhooks(user, remove=url, reg=reg), reg=reg)


def list_notifications(
    user: str | None = None, *, unread_only: bool = False, limit: int = 50, reg: Registry | None = None
) -> list[dict[str, Any]]:
    """The user's in-app notifications, newest first."""
    return list((reg or open_registry()).list_notifications(_user(user), unread_only=unread_only,
                                                       limit=limit))


def mark_read(notification_id: str, *, user: str | None = None,
              reg: Registry | None = None) -> bool:
    """Mark one notification read; False when there is no such notification.

    ``user`` is who asks (default: the current user, ``QUANTLAB_USER``): only the user the
    notification is for, or an admin (``QUANTLAB_ADMINS``), may; anyone else gets ``NotOwner``.
    """
    reg = reg or open_registry()
    found = reg.get_notification(notification_id)
    if found is None:
        return False
    check_owner({**found, "id": notification_id}, _user(user), "mark read",
                kind="notification")
    return bool(reg.mark_read(notification_id))


def mark_all_read(user: str | None = None, *, caller: str | None = None,
                  reg: Registry | None = None) -> int:
    """Mark every unread notification of the user read; returns how many. Another user's
    (``user`` not the caller, default the current user) only by an admin (``QUANTLAB_ADMINS``)."""
    owner, asking = _user(user), _user(caller)
    if not may_act(owner, asking):
        raise NotOwner(f"the notifications of {owner} are {owner}'s: only {owner} or an admin "
                       f"({ADMINS_VARIABLE}) can mark them read; you are {asking}",
                       owner=owner, user=asking, action="mark read")
    reg = reg or open_registry()
    count = 0
    while True:  # the registry pages; loop until none is left
        unread = reg.list_notifications(_user(user), unread_only=True, limit=500)
        if not unread:
            return count
        count += sum(bool(reg.mark_read(n["id"])) for n in unread)


def get_delivery(delivery_id: str, *, reg: Registry | None = None) -> dict[str, Any] | None:
    try:
        return dict((reg or open_registry()).get_document(DELIVERIES, delivery_id))
    except RunError:
        return None


def save_delivery(doc: Mapping[str, Any], *, reg: Registry | None = None) -> None:
    (reg or open_registry()).save_document(DELIVERIES, dict(doc))
    if doc.get("status") == "failed":  # a final failure, after its retries
        # on a failure only: telemetry loads prometheus_client, which nothing else here needs
        from quantlab import telemetry

        telemetry.NOTIFIER_FAILURES.labels(channel=str(doc.get("channel"))).inc()


def list_deliveries(
    *, run_id: str | None = None, user: str | None = None, status: str | None = None,
    limit: int = 50, reg: Registry | None = None,
) -> list[dict[str, Any]]:
    """The delivery log, most recently updated first, optionally for one run, user or status."""
    reg = reg or open_registry()
    scan = limit if run_id is None and user is None and status is None else max(limit * 20, 1000)
    docs = reg.list_documents(DELIVERIES, limit=scan)
    selected = [d for d in docs
                if (run_id is None or d.get("run_id") == run_id)
                and (user is None or d.get("user") == user)
                and (status is None or d.get("status") == status)]
    return selected[:limit]


def load_cursor(*, reg: Registry | None = None) -> Any:
    try:
        return (reg or open_registry()).get_document(STATE, CURSOR_ID).get("seq")
    except RunError:
        return None


def save_cursor(seq: Any, *, reg: Registry | None = None, **extra: Any) -> None:
    (reg or open_registry()).save_document(STATE, {"id": CURSOR_ID, "seq": seq, **extra})
