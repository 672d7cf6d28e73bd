"""Validation of notification settings: a run config's ``notify`` block and user preferences.

Every bad value raises :class:`~quantlab.errors.ConfigError` naming the field and the fix. A
webhook URL must be http(s) and must not resolve to a loopback, private, link-local or otherwise
non-public address (unless ``QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1``): a webhook must not become a
way into the internal network. The same check runs again at send time (DNS can change between
validation and delivery), see :mod:`quantlab.notify.webhook`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from quantlab.errors import ConfigError
from quantlab.notify import settings as notify_settings
from quantlab.notify.conditions import parse_condition

#: The run endings a user can subscribe to. ``sweep_finished``: a sweep (a run over more than
#: one parameter set) completed — for people who want to hear about sweeps but not single runs.
EVENT_KINDS: tuple[str, ...] = ("completed", "failed", "cancelled", "sweep_finished")
DEFAULT_EVENTS: tuple[str, ...] = ("completed", "failed")
MIN_SECRET_LENGTH = 16

NOTIFY_KEYS = ("webhooks", "email", "when", "events")
PREFERENCE_KEYS = ("email", "email_enabled", "in_app", "webhooks", "events", "when")

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]$"
)
_SECRET_HINT = "generate one with: python -c \"import secrets; print(secrets.token_hex(32))\""
AddressInfo = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------------------------
# Addresses


def is_public_address(address: AddressInfo) -> bool:
    """True for a globally routable unicast address; False for loopback, private (10/8,
    172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — cloud metadata lives there),
    carrier-grade NAT, multicast, reserved and unspecified addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve_host(host: str, port: int) -> list[AddressInfo]:
    """Every address ``host`` resolves to (a literal IP resolves to itself, without DNS)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[AddressInfo] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed webhook URL."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path + query, what goes on the request line


def parse_webhook_url(url: Any, *, field: str = "webhooks.url") -> WebhookTarget:
    """Parse and check the form of a webhook URL (no DNS); raises ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"{field}: a webhook URL must be text like 'https://hooks.example.com/quantlab'; "
            f"got {url!r}", field=field,
        )
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{field}: {url!r} is not an http(s) URL; only http:// and https:// webhooks are "
            f"supported — write e.g. 'https://{parts.netloc or 'hooks.example.com'}/...'",
            field=field, url=url,
        )
    if not parts.hostname:
        raise ConfigError(f"{field}: {url!r} has no host name; write e.g. "
                          f"'https://hooks.example.com/quantlab'", field=field, url=url)
    if parts.username or parts.password:
        raise ConfigError(
            f"{field}: {url!r} carries credentials; remove 'user:password@' — receivers "
            f"authenticate QuantLab by the request's HMAC signature (the webhook's secret)",
            field=field, url=url,
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{field}: {url!r} has an invalid port; use a number from 1 to 65535",
                          field=field, url=url) from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return WebhookTarget(url, parts.scheme, parts.hostname, port, path)


def check_webhook_url(
    url: Any, *, field: str = "webhooks.url", allow_private: bool | None = None
) -> WebhookTarget:
    """Parse ``url`` and refuse it if its host resolves to a non-public address.

    ``allow_private`` defaults to ``QUANTLAB_WEBHOOK_ALLOW_PRIVATE``.
    """
    target = parse_webhook_url(url, field=field)
    if allow_private is None:
        allow_private = notify_settings.current().webhook_allow_private
    if allow_private:
        return target
    try:
        addresses = resolve_host(target.host, target.port)
    except OSError as exc:
        raise ConfigError(
            f"{field}: the host of {target.url!r} cannot be resolved ({exc}); check the spelling "
            f"of '{target.host}' and this machine's DNS", field=field, url=target.url,
        ) from None
    refuse_private_addresses(target, addresses, field=field)
    return target


def refuse_private_addresses(target: WebhookTarget, addresses: Sequence[Any], *,
                             field: str = "url") -> None:
    """ConfigError if any of the host's addresses is not public: the check made when a webhook
    is saved and again, against the addresses actually dialled, when it is sent."""
    refused = [a for a in addresses if not is_public_address(a)]
    if refused:
        raise ConfigError(
            f"{field}: {target.url!r} resolves to {refused[0]}, a loopback/private/link-local "
            f"address; webhooks may only reach public addresses, so they cannot be used to reach "
            f"the internal network. Use a public URL, or (on a trusted install) set "
            f"QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1", field=field, url=target.url, address=str(refused[0]),
        )


# --------------------------------------------------------------------------------------------
# Values


def check_email(address: Any, *, field: str = "email") -> str:
    """A plausible email address, trimmed; raises ConfigError naming the field."""
    if not isinstance(address, str) or not _EMAIL_RE.match(address.strip()):
        raise ConfigError(
            f"{field}: {address!r} is not an email address; write it like "
            f"'alice@example.com'", field=field, value=address,
        )
    return address.strip()


def check_secret(secret: Any, *, field: str = "webhooks.secret") -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigError(
            f"{field}: every webhook needs a secret (text) that signs its requests so the "
            f"receiver can verify them; {_SECRET_HINT}", field=field,
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{field}: the webhook secret is {len(secret)} characters long; use at least "
            f"{MIN_SECRET_LENGTH} so signatures cannot be guessed — {_SECRET_HINT}", field=field,
        )
    return secret


def check_events(events: Any, *, field: str = "events") -> list[str]:
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, list | tuple):
        raise ConfigError(f"{field}: give a list of events from {list(EVENT_KINDS)}, e.g. "
                          f"['completed', 'failed']", field=field)
    checked: list[str] = []
    for raw in events:
        name = str(raw).strip().lower().replace(" ", "_").replace("-", "_")
        if name not in EVENT_KINDS:
            nearest = difflib.get_close_matches(name, EVENT_KINDS, n=1, cutoff=0.5)
            hint = f"did you mean '{nearest[0]}'? " if nearest else ""
            raise ConfigError(f"{field}: unknown event {raw!r}; {hint}choose from "
                              f"{', '.join(EVENT_KINDS)}", field=field, value=raw,
                              suggestion=nearest[0] if nearest else None)
        if name not in checked:
            checked.append(name)
    return checked


def check_condition(text: Any, *, field: str = "when") -> str | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    return str(parse_condition(text, field=field))


def check_bool(value: Any, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: expected true or false, got {value!r}", field=field)
    return value


def check_webhooks(
    webhooks: Any, *, field: str = "webhooks", allow_private: bool | None = None
) -> list[dict[str, str]]:
    if isinstance(webhooks, Mapping):
        webhooks = [webhooks]
    if not isinstance(webhooks, list | tuple):
        raise ConfigError(f"{field}: give a list of {{url, secret}} entries, e.g. "
                          f"[{{url: 'https://hooks.example.com/q', secret: '...'}}]", field=field)
    checked: list[dict[str, str]] = []
    for index, hook in enumerate(webhooks):
        where = f"{field}[{index}]"
        if not isinstance(hook, Mapping):
            raise ConfigError(f"{where}: a webhook is a mapping {{url, secret}}, got {hook!r}",
                              field=where)
        _reject_unknown(hook, ("url", "secret"), where)
        target = check_webhook_url(hook.get("url"), field=f"{where}.url",
                                   allow_private=allow_private)
        secret = check_secret(hook.get("secret"), field=f"{where}.secret")
        checked.append({"url": target.url, "secret": secret})
    return checked


def check_emails(emails: Any, *, field: str = "email") -> list[str]:
    if isinstance(emails, str):
        emails = [emails]
    if not isinstance(emails, list | tuple):
        raise ConfigError(f"{field}: give an address or a list of addresses, e.g. "
                          f"['alice@example.com']", field=field)
    checked: list[str] = []
    for index, address in enumerate(emails):
        value = check_email(address, field=f"{field}[{index}]")
        if value not in checked:
            checked.append(value)
    return checked


def _reject_unknown(mapping: Mapping[str, Any], allowed: tuple[str, ...], field: str) -> None:
    for key in mapping:
        if key not in allowed:
            nearest = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean '{nearest[0]}'?" if nearest else f"use {', '.join(allowed)}"
            raise ConfigError(f"{field}: unknown key {key!r} — {hint}", field=f"{field}.{key}",
                              suggestion=nearest[0] if nearest else None)


# --------------------------------------------------------------------------------------------
# Whole documents


def validate_notify_config(
    notify: Any, *, field: str = "notify", allow_private: bool | None = None
) -> dict[str, Any]:
    """Validate a run config's ``notify`` block and return it normalised.

    Accepts ``{webhooks: [{url, secret}], email: address | [addresses], when: "<condition>",
    events: [...]}`` (every key optional) and returns all four keys: ``webhooks`` and ``email``
    as lists, ``when`` and ``events`` as ``None`` when not given (the run then follows its
    user's preferences). Raises :class:`ConfigError` naming ``notify.<key>`` and the fix.
    """
    if notify is None:
        notify = {}
    if not isinstance(notify, Mapping):
        raise ConfigError(f"{field}: expected a mapping like {{email: ['alice@example.com'], "
                          f"when: 'sharpe > 1'}}, got {notify!r}", field=field)
    _reject_unknown(notify, NOTIFY_KEYS, field)
    events = notify.get("events")
    return {
        "webhooks": check_webhooks(notify.get("webhooks") or [], field=f"{field}.webhooks",
                                   allow_private=allow_private),
        "email": check_emails(notify.get("email") or [], field=f"{field}.email"),
        "when": check_condition(notify.get("when"), field=f"{field}.when"),
        "events": None if events is None else check_events(events, field=f"{field}.events"),
    }


def default_preferences() -> dict[str, Any]:
    return {
        "email": None,
        "email_enabled": True,
        "in_app": True,
        "webhooks": [],
        "events": list(DEFAULT_EVENTS),
        "when": None,
    }


def validate_preferences(
    prefs: Mapping[str, Any] | None, *, allow_private: bool | None = None
) -> dict[str, Any]:
    """A user's notification preferences, checked and completed with the defaults.

    Keys: ``email`` (address or None), ``email_enabled``, ``in_app``, ``webhooks`` ([{url,
    secret}]), ``events`` (from :data:`EVENT_KINDS`), ``when`` (a metric condition or None).
    """
    prefs = dict(prefs or {})
    _reject_unknown(prefs, PREFERENCE_KEYS, "preferences")
    merged = {**default_preferences(), **prefs}
    email = merged["email"]
    return {
        "email": None if not email else check_email(email, field="email"),
        "email_enabled": check_bool(merged["email_enabled"], field="email_enabled"),
        "in_app": check_bool(merged["in_app"], field="in_app"),
        "webhooks": check_webhooks(merged["webhooks"] or [], allow_private=allow_private),
        "events": check_events(merged["events"] or [], field="events"),
        "when": check_condition(merged["when"], field="when"),
    }
