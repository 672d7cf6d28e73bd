"""Attempts, retries with exponential backoff, and the outcome of one delivery.

Every channel (webhook, email) delivers through :func:`deliver_with_retries`: it calls the
channel's single attempt, records each attempt (status code, latency, error) and waits
``backoff * 2**n`` (capped, with a little jitter so many dispatchers do not retry in lockstep)
between retriable failures. A stop event cuts the wait short and leaves the delivery *pending*,
so a dispatcher that is shutting down resumes it after its restart instead of dropping it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DELIVERED = "delivered"
FAILED = "failed"
PENDING = "pending"
FINAL_STATUSES = frozenset({DELIVERED, FAILED})


@dataclass(frozen=True)
class Outcome:
    """What a single attempt produced."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retriable: bool = False
    retry_after: float | None = None  # the receiver's Retry-After, when it gave one
    response: str | None = None  # the start of the receiver's answer, for the log


@dataclass(frozen=True)
class Attempt:
    """One line of the delivery log."""

    attempt: int
    at: float  # epoch seconds when the attempt started
    latency_ms: float
    status_code: int | None
    error: str | None
    response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeliveryResult:
    status: str  # delivered | failed | pending (interrupted by a stop, to be resumed)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == DELIVERED

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else None


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # after the first attempt
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 60.0
    jitter: float = 0.1  # fraction of the wait added at random

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        wait = min(self.backoff * 2 ** (retry_number - 1), self.backoff_max)
        if retry_after is not None:
            wait = min(max(wait, retry_after), self.backoff_max)
        return wait * (1 + self.jitter * random.random())


def deliver_with_retries(
    attempt_once: Callable[[], Outcome],
    policy: RetryPolicy,
    *,
    on_attempt: Callable[[Attempt], None] | None = None,
    stop: threading.Event | None = None,
    first_attempt: int = 1,
) -> DeliveryResult:
    """Run ``attempt_once`` until it succeeds, fails for good, or retries run out.

    ``attempt_once`` must not raise for delivery problems (it returns an :class:`Outcome`);
    anything it does raise is recorded as a non-retriable error, so a bug in one channel can
    never take the dispatcher down. ``first_attempt`` numbers the attempts of a resumed delivery.
    """
    result = DeliveryResult(status=PENDING)
    total = policy.retries + 1
    for number in range(first_attempt, first_attempt + total):
        started = time.time()
        clock = time.perf_counter()
        try:
            outcome = attempt_once()
        except Exception as exc:  # a bug, not a delivery problem: log it and give up
            outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}", retriable=False)
        attempt = Attempt(number, started, round((time.perf_counter() - clock) * 1000, 3),
                          outcome.status_code, outcome.error, outcome.response)
        result.attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)
        if outcome.ok:
            result.status = DELIVERED
            return result
        last = number == first_attempt + total - 1
        if not outcome.retriable or last:
            result.status = FAILED
            return result
        wait = policy.delay(number - first_attempt + 1, outcome.retry_after)
        if stop is not None:
            if stop.wait(wait):
                return result  # still pending: the next dispatcher resumes it
        else:
            time.sleep(wait)
    return result
