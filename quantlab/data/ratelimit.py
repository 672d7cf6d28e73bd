"""A client-side rate limiter and exponential backoff, with an injectable clock.

Providers call :meth:`RateLimiter.acquire` before each request: it *waits* until the request
fits every window (e.g. 5 per minute and 25 per day) instead of failing. Tests pass a fake
``clock``/``sleep`` pair so that an hour of waiting takes no time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from quantlab.fileio import atomic_write_bytes

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """At most ``n`` calls in any ``window`` seconds, for each ``(n, window)`` in ``limits``.

    With ``state_path`` the call times are kept in that JSON file (under an ``fcntl`` lock), so
    every process on the machine shares one budget and a restarted notebook still knows how
    many of the day's calls it has spent. ``clock`` must then be wall time (seconds since the
    epoch), as the default is.
    """

    def __init__(self, limits: Sequence[tuple[int, float]], *, clock: Clock = time.time,
                 sleep: Sleep = time.sleep, state_path: Path | None = None) -> None:
        self.limits = [(int(n), float(window)) for n, window in limits if n and n > 0]
        self.clock = clock
        self.sleep = sleep
        self.state_path = state_path
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting, for reporting

    def _delay(self, now: float) -> float:
        longest = max((window for _, window in self.limits), default=0.0)
        while self._calls and self._calls[0] <= now - longest:
            self._calls.popleft()
        delay = 0.0
        for n, window in self.limits:
            recent = [t for t in self._calls if t > now - window]
            if len(recent) >= n:
                # the call that must age out of the window before another fits
                delay = max(delay, recent[-n] + window - now)
        return delay

    def acquire(self) -> float:
        """Block until one more call fits; record it; return the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                with self._shared():
                    now = self.clock()
                    delay = self._delay(now)
                    if delay <= 0:
                        self._calls.append(now)
                        self.waited += waited
                        return waited
                self.sleep(delay)  # outside the file lock: other processes may check meanwhile
                waited += delay

    @contextlib.contextmanager
    def _shared(self) -> Iterator[None]:
        """Load the shared call times under the file lock, and save them on the way out."""
        if self.state_path is None:
            yield
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    calls = json.loads(self.state_path.read_text())["calls"]
                    self._calls = deque(sorted(float(t) for t in calls))
                except (FileNotFoundError, ValueError, KeyError, TypeError):
                    self._calls = deque()  # no file yet, or one we cannot read: start afresh
                before = list(self._calls)
                yield
                if list(self._calls) != before:
                    longest = max((w for _, w in self.limits), default=0.0)
                    keep = [t for t in self._calls if t > self.clock() - longest]
                    data = json.dumps({"calls": keep}).encode()
                    atomic_write_bytes(self.state_path, lambda fh: fh.write(data))
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def backoff_delays(retries: int, base: float, factor: float = 2.0, cap: float = 300.0
                   ) -> list[float]:
    """The waits before each retry: ``base, base*factor, ...`` capped at ``cap`` seconds."""
    return [min(cap, base * factor**i) for i in range(retries)]
