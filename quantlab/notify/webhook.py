"""Signed webhooks: a JSON POST that receivers can verify and refuse when replayed.

Each request carries::

    X-QuantLab-Timestamp: <unix seconds>
    X-QuantLab-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>
    X-QuantLab-Delivery:  <delivery id>     (the same on every retry: receivers can deduplicate)
    X-QuantLab-Event:     completed | failed | cancelled | test

A receiver checks it with :func:`verify_signature`. Retries are signed afresh (a new timestamp),
so a late retry is not refused as a replay.

The host is resolved at send time and every address it resolves to must be public (unless
``QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1``); the connection then goes to the address that was checked,
not to a second lookup, so DNS rebinding cannot slip an internal address in between. Redirects
are not followed (a redirect could point anywhere): a 3xx answer is a failed delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from quantlab.errors import ConfigError
from quantlab.notify import settings as notify_settings
from quantlab.notify.delivery import (
    Attempt,
    DeliveryResult,
    Outcome,
    RetryPolicy,
    deliver_with_retries,
)
from quantlab.notifyspec import (
    AddressInfo,
    WebhookTarget,
    parse_webhook_url,
    refuse_private_addresses,
    resolve_host,
)

TIMESTAMP_HEADER = "X-QuantLab-Timestamp"
SIGNATURE_HEADER = "X-QuantLab-Signature"
DELIVERY_HEADER = "X-QuantLab-Delivery"
EVENT_HEADER = "X-QuantLab-Event"
USER_AGENT = "QuantLab-Webhook/1"
_RESPONSE_SNIPPET = 300


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    raw = body.encode() if isinstance(body, str) else body
    message = str(timestamp).encode() + b"." + raw
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``signature`` signs ``body`` at ``timestamp`` under ``secret``
    and the timestamp is within ``tolerance`` seconds of now (older ones are replays).

    Pass the raw request body (bytes, exactly as received) and the two headers
    ``X-QuantLab-Timestamp`` and ``X-QuantLab-Signature``. Compares in constant time.
    """
    try:
        stamp = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature.strip())


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The request body: compact JSON (what is signed is exactly what is sent)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str,
                      allow_nan=False).encode()


# --------------------------------------------------------------------------------------------
# Connections pinned to a checked address


def _connect_any(addresses: list[AddressInfo], port: int, timeout: float | None
                 ) -> socket.socket:
    """Connect to the first reachable of the checked addresses (IPv6 then IPv4, say)."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: WebhookTarget, addresses: list[AddressInfo],
                 timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: WebhookTarget, addresses: list[AddressInfo], timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls = context

    def connect(self) -> None:
        raw = _connect_any(self._addresses, self.port, self.timeout)
        # Certificate and SNI are checked against the URL's host name, not the address.
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def _checked_addresses(target: WebhookTarget, allow_private: bool) -> list[AddressInfo]:
    """Resolve now; the connection goes only to these addresses. Refuse non-public ones.

    Raises OSError when the name does not resolve (worth retrying) and ConfigError when it
    resolves to a refused address (not worth retrying).
    """
    addresses = resolve_host(target.host, target.port)
    if not addresses:
        raise OSError(f"{target.host} resolved to no address")
    if not allow_private:
        refuse_private_addresses(target, addresses)
    return addresses


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    value = response.getheader("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def post_once(
    target: WebhookTarget,
    secret: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    allow_private: bool,
    context: ssl.SSLContext | None = None,
) -> Outcome:
    """One signed POST. Never raises for network or HTTP problems: returns an Outcome."""
    try:
        addresses = _checked_addresses(target, allow_private)
    except ConfigError as exc:
        return Outcome(ok=False, error=str(exc), retriable=False)
    except OSError as exc:
        return Outcome(ok=False, error=f"cannot resolve {target.host}: {exc}", retriable=True)
    timestamp = str(int(time.time()))
    request_headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        **headers,
    }
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(target, addresses, timeout,
                                            context or ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(target, addresses, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=request_headers)
        response = connection.getresponse()
        snippet = response.read(_RESPONSE_SNIPPET).decode("utf-8", "replace")
        code = response.status
    except TimeoutError:
        return Outcome(ok=False, error=f"timed out after {timeout:g} s", retriable=True)
    except ssl.SSLCertVerificationError as exc:  # retrying will not fix a certificate
        return Outcome(ok=False, error=f"TLS certificate refused: {exc.verify_message}",
                       retriable=False)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}", retriable=True)
    finally:
        connection.close()
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code, response=snippet or None)
    retriable = code >= 500 or code in (408, 429)
    if 300 <= code < 400:
        error = f"HTTP {code}: redirects are not followed; point the webhook at the final URL"
    else:
        error = f"HTTP {code} {response.reason}".strip()
    return Outcome(ok=False, status_code=code, error=error, retriable=retriable,
                   retry_after=_retry_after(response) if retriable else None,
                   response=snippet or None)


def send_webhook(
    url: str,
    secret: str,
    payload: Mapping[str, Any],
    *,
    delivery_id: str,
    event: str,
    settings: notify_settings.NotifySettings | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    stop: threading.Event | None = None,
    first_attempt: int = 1,
    context: ssl.SSLContext | None = None,
) -> DeliveryResult:
    """POST ``payload`` to ``url`` signed with ``secret``, retrying errors, 5xx and timeouts.

    ``on_attempt`` is called after every attempt (the dispatcher writes its delivery log from
    it). Timeout, retries and backoff come from ``settings`` (``QUANTLAB_WEBHOOK_*``).
    """
    settings = settings or notify_settings.current()
    try:
        target = parse_webhook_url(url)
    except ConfigError as exc:
        refusal = Outcome(ok=False, error=str(exc))
        return deliver_with_retries(lambda: refusal, RetryPolicy(0), on_attempt=on_attempt,
                                    first_attempt=first_attempt)
    body = encode_body(payload)
    headers = {DELIVERY_HEADER: delivery_id, EVENT_HEADER: event}
    policy = RetryPolicy(settings.webhook_retries, settings.webhook_backoff,
                         settings.webhook_backoff_max)
    return deliver_with_retries(
        lambda: post_once(target, secret, body, headers=headers, timeout=settings.webhook_timeout,
                          allow_private=settings.webhook_allow_private, context=context),
        policy, on_attempt=on_attempt, stop=stop, first_attempt=first_attempt,
    )
