"""Signed webhooks against a real local HTTP server: signature, retries, timeouts, refusals.

The receiver listens on 127.0.0.1, so these tests allow private addresses explicitly (as a
trusted install would with QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1), except the refusal tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from quantlab.notify.delivery import RetryPolicy
from quantlab.notify.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    send_webhook,
    sign,
    verify_signature,
)
from tests.support.notify import SECRET, Receiver, fast_settings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


PAYLOAD = {"type": "run.completed", "run": {"id": "R1", "name": "golden cross"},
           "metrics": {"sharpe": 1.7}}


def test_a_signed_post_that_the_receiver_can_verify(receiver: Receiver) -> None:
    log: list[Any] = []
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="R1.completed.webhook.x",
                          event="completed", settings=fast_settings(), on_attempt=log.append)
    assert result.ok and result.status == "delivered"
    (request,) = receiver.requests
    assert request.path == "/hook?team=quant"
    assert request.json() == PAYLOAD
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[DELIVERY_HEADER] == "R1.completed.webhook.x"
    assert request.headers[EVENT_HEADER] == "completed"
    assert request.headers[SIGNATURE_HEADER] == sign(SECRET, request.headers[TIMESTAMP_HEADER],
                                                     request.body)
    assert request.verified()
    assert not request.verified("another-secret-entirely")
    assert abs(int(request.headers[TIMESTAMP_HEADER]) - time.time()) < 60
    assert [(a.attempt, a.status_code, a.error) for a in log] == [(1, 200, None)]
    assert log[0].latency_ms > 0


def test_retries_after_server_errors_until_delivered(receiver: Receiver) -> None:
    receiver.script = [500, 503]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d1", event="completed",
                          settings=fast_settings())
    assert result.ok
    assert [(a.attempt, a.status_code) for a in result.attempts] == [(1, 500), (2, 503), (3, 200)]
    assert result.attempts[0].error == "HTTP 500 Internal Server Error"
    # every retry carries the same delivery id and a valid signature of its own
    assert len(receiver.requests) == 3
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {"d1"}
    assert all(r.verified() for r in receiver.requests)


def test_gives_up_after_the_last_retry(receiver: Receiver) -> None:
    receiver.script = [500] * 10
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d2", event="failed",
                          settings=fast_settings(webhook_retries=2))
    assert result.status == "failed"
    assert [a.status_code for a in result.attempts] == [500, 500, 500]
    assert len(receiver.requests) == 3
    assert result.error == "HTTP 500 Internal Server Error"


def test_a_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [("sleep", 1.5, 200)]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d3", event="completed",
                          settings=fast_settings(webhook_timeout=0.3))
    assert result.ok
    first, second = result.attempts
    assert first.status_code is None and first.error == "timed out after 0.3 s"
    assert second.status_code == 200
    assert len(receiver.requests) == 2


def test_too_many_requests_is_retried(receiver: Receiver) -> None:
    receiver.script = [429]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d4", event="completed",
                          settings=fast_settings())
    assert [a.status_code for a in result.attempts] == [429, 200]


def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.script = [400]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d5", event="completed",
                          settings=fast_settings())
    assert result.status == "failed"
    assert [(a.status_code, a.error) for a in result.attempts] == [(400, "HTTP 400 Bad Request")]
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script = [302]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d6", event="completed",
                          settings=fast_settings())
    assert result.status == "failed"
    assert "redirects are not followed" in (result.error or "")
    assert len(receiver.requests) == 1


def test_private_address_is_refused_at_send_time(receiver: Receiver) -> None:
    """A URL accepted earlier (or a name re-pointed by DNS) is checked again when sending."""
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        result = send_webhook(url, SECRET, PAYLOAD, delivery_id="d7", event="completed",
                              settings=fast_settings(webhook_allow_private=False))
        assert result.status == "failed"
        assert len(result.attempts) == 1  # refusals are final, not retried
        assert "loopback/private/link-local address" in (result.error or "") and "127.0.0.1" in (result.error or "")
        assert "QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1" in (result.error or "")
    assert receiver.requests == []


def test_connection_refused_is_retried_then_logged() -> None:
    from tests.support.procs import free_port

    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    result = send_webhook(url, SECRET, PAYLOAD, delivery_id="d8", event="completed",
                          settings=fast_settings(webhook_retries=1))
    assert result.status == "failed"
    assert len(result.attempts) == 2
    assert all(a.status_code is None and "ConnectionRefusedError" in (a.error or "")
               for a in result.attempts)


def test_non_http_url_fails_without_sending() -> None:
    result = send_webhook("ftp://127.0.0.1/x", SECRET, PAYLOAD, delivery_id="d9",
                          event="completed", settings=fast_settings())
    assert result.status == "failed"
    assert "only http:// and https://" in (result.error or "")


def test_stop_interrupts_the_backoff_and_leaves_the_delivery_pending(receiver: Receiver) -> None:
    receiver.script = [500]
    stop = threading.Event()
    stop.set()
    result = send_webhook(receiver.url, SECRET, PAYLOAD, delivery_id="d10", event="completed",
                          settings=fast_settings(webhook_backoff=30, webhook_backoff_max=30),
                          stop=stop)
    assert result.status == "pending"
    assert [a.status_code for a in result.attempts] == [500]


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=6, backoff=1.0, backoff_max=10.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(1, retry_after=5.0) == 5.0
    assert policy.delay(1, retry_after=500.0) == 10.0
    jittered = RetryPolicy(backoff=1.0, jitter=0.1).delay(1)
    assert 1.0 <= jittered <= 1.1


def test_verify_signature_refuses_tampering_and_replays() -> None:
    body = b'{"run":{"id":"R1"}}'
    now = 1_700_000_000
    signature = sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, str(now), body, signature, now=now + 10)
    assert verify_signature(SECRET, now, body.decode(), signature, now=now)
    assert not verify_signature(SECRET, now, body + b" ", signature, now=now)  # tampered
    assert not verify_signature("wrong-secret-wrong-secret", now, body, signature, now=now)
    assert not verify_signature(SECRET, now + 1, body, signature, now=now)  # other timestamp
    assert not verify_signature(SECRET, now, body, signature, now=now + 301)  # replay
    assert verify_signature(SECRET, now, body, signature, tolerance=600, now=now + 301)
    assert not verify_signature(SECRET, now, body, signature, now=now - 301)  # from the future
    assert not verify_signature(SECRET, "yesterday", body, signature, now=now)
    assert not verify_signature(SECRET, now, body, "sha256=" + "0" * 64, now=now)
