"""Notification settings, read from the environment (``QUANTLAB_SMTP_*``, ``QUANTLAB_WEBHOOK_*``).

Like :func:`quantlab.settings.current`, :func:`current` reads the environment on every call so a
test or a notebook that changes ``os.environ`` is seen at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from quantlab.errors import ConfigError
from quantlab.notifyspec import private_webhooks_allowed
from quantlab.settings import _safe_repr, env_flag, env_number


@dataclass(frozen=True)
class NotifySettings:
    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_starttls: bool
    smtp_ssl: bool
    smtp_from: str
    smtp_timeout: float
    webhook_allow_private: bool
    webhook_timeout: float
    webhook_retries: int
    webhook_backoff: float
    webhook_backoff_max: float
    digest_window: float
    max_age: float
    public_url: str | None

    def __repr__(self) -> str:  # no SMTP password in a notebook or a log
        return _safe_repr(self)

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host)


def _sender(smtp_user: str | None) -> str:
    explicit = os.environ.get("QUANTLAB_SMTP_FROM", "").strip()
    if explicit:
        return explicit
    if smtp_user and "@" in smtp_user:  # most providers insist on sending as the login
        return smtp_user
    return "quantlab@localhost"


def current() -> NotifySettings:
    """The notification settings in force now.

    ``QUANTLAB_SMTP_HOST`` (no email without it), ``QUANTLAB_SMTP_PORT`` (465 with SSL, 587 with
    STARTTLS, else 25), ``QUANTLAB_SMTP_USER``/``QUANTLAB_SMTP_PASSWORD``,
    ``QUANTLAB_SMTP_STARTTLS``, ``QUANTLAB_SMTP_SSL``, ``QUANTLAB_SMTP_FROM``;
    ``QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1`` lets webhooks reach loopback/private addresses;
    ``QUANTLAB_WEBHOOK_TIMEOUT`` (s, 10), ``QUANTLAB_WEBHOOK_RETRIES`` (4 retries after the first
    attempt), ``QUANTLAB_WEBHOOK_BACKOFF`` (first wait, 1 s, doubling up to
    ``QUANTLAB_WEBHOOK_BACKOFF_MAX``, 60 s); ``QUANTLAB_NOTIFY_DIGEST_WINDOW`` (s, 60): emails to
    one recipient within this window become one digest; ``QUANTLAB_NOTIFY_MAX_AGE`` (s, one day):
    runs that ended longer ago than this (a dispatcher down for days) are not notified any more;
    ``QUANTLAB_PUBLIC_URL`` for links.
    """
    ssl = env_flag("QUANTLAB_SMTP_SSL", False)
    starttls = env_flag("QUANTLAB_SMTP_STARTTLS", False)
    if ssl and starttls:
        raise ConfigError(
            "QUANTLAB_SMTP_SSL and QUANTLAB_SMTP_STARTTLS are both on; use SSL (port 465) or "
            "STARTTLS (port 587), not both — unset one of them", field="QUANTLAB_SMTP_SSL",
        )
    default_port = 465 if ssl else 587 if starttls else 25
    host = os.environ.get("QUANTLAB_SMTP_HOST", "").strip() or None
    user = os.environ.get("QUANTLAB_SMTP_USER", "").strip() or None
    public_url = os.environ.get("QUANTLAB_PUBLIC_URL", "").strip().rstrip("/") or None
    return NotifySettings(
        smtp_host=host,
        smtp_port=int(env_number("QUANTLAB_SMTP_PORT", default_port, integer=True, minimum=1)),
        smtp_user=user,
        smtp_password=os.environ.get("QUANTLAB_SMTP_PASSWORD") or None,
        smtp_starttls=starttls,
        smtp_ssl=ssl,
        smtp_from=_sender(user),
        smtp_timeout=env_number("QUANTLAB_SMTP_TIMEOUT", 20.0, minimum=0.01),
        webhook_allow_private=private_webhooks_allowed(),
        webhook_timeout=env_number("QUANTLAB_WEBHOOK_TIMEOUT", 10.0, minimum=0.01),
        webhook_retries=int(env_number("QUANTLAB_WEBHOOK_RETRIES", 4, integer=True, minimum=0)),
        webhook_backoff=env_number("QUANTLAB_WEBHOOK_BACKOFF", 1.0, minimum=0),
        webhook_backoff_max=env_number("QUANTLAB_WEBHOOK_BACKOFF_MAX", 60.0, minimum=0),
        digest_window=env_number("QUANTLAB_NOTIFY_DIGEST_WINDOW", 60.0, minimum=0),
        max_age=env_number("QUANTLAB_NOTIFY_MAX_AGE", 86400.0, minimum=0),
        public_url=public_url,
    )
