"""The dispatcher: the loop that follows the all-runs event stream and sends the notifications.

The engine and the workers never call a notifier: they publish events, and the dispatcher — a
thread of a worker process (:func:`start_dispatcher_thread`) or ``quantlab notify run`` —
follows the stream, and for every ``completed``/``failed``/``cancelled`` event decides who is
told (the run's user's preferences, plus the run config's own ``notify`` block) and delivers on a
small thread pool. A notifier that fails, hangs or retries therefore never fails, slows or
blocks a run; its errors land in the delivery log.

Nothing is notified twice and nothing is missed across restarts:

- the cursor (the seq of the last event fully handled) is kept in the registry and only moves
  past an event once all of its deliveries are finished (delivered, or failed for good);
- every delivery has a deterministic id (run, event, channel, target), and its log document is
  checked before sending, so an event replayed after a crash is not delivered again. (A crash
  between a receiver's "200 OK" and the log write can still repeat that one webhook: receivers
  deduplicate on the ``X-QuantLab-Delivery`` header, which is the same on every retry.)

Only one dispatcher per home (or per team, over Redis) delivers: see :mod:`quantlab.notify.lock`.
Which deliveries an event calls for is decided in :mod:`quantlab.notify.planning`; sending them
and logging their attempts in :mod:`quantlab.notify.deliverer`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from quantlab import settings as settings_mod
from quantlab.errors import RunNotFound
from quantlab.events import EventStream, open_events
from quantlab.events.lock import LeaderThread, lead
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.notify import settings as notify_settings
from quantlab.notify import store
from quantlab.notify.deliverer import Deliverer
from quantlab.notify.delivery import FAILED, FINAL_STATUSES
from quantlab.notify.lock import lock_for
from quantlab.notify.planning import Delivery, plan_deliveries
from quantlab.notify.summary import RunSummary, summarize
from quantlab.registry import Registry, open_registry
from quantlab.registry.schema import as_run_record

log = logging.getLogger("quantlab.notify")

PLAN_RETRY_WAITS: tuple[float | None, ...] = (0.5, 2.0, 5.0, None)


# --------------------------------------------------------------------------------------------
# Cursor bookkeeping


class _Progress:
    """Which events are fully handled; the cursor is the last seq before the first open one."""

    def __init__(self, start: int) -> None:
        self.cursor = start
        self._open: OrderedDict[int, int] = OrderedDict()  # seq -> deliveries not finished
        self._lock = threading.Lock()

    def begin(self, seq: int, count: int) -> None:
        with self._lock:
            self._open[seq] = count
            self._advance()

    def finish(self, seq: int) -> None:
        with self._lock:
            if seq in self._open:
                self._open[seq] -= 1
                self._advance()

    def _advance(self) -> None:
        while self._open:
            seq, remaining = next(iter(self._open.items()))
            if remaining > 0:
                return
            self._open.popitem(last=False)
            self.cursor = seq


class _EmailBatcher:
    """Holds emails per recipient for ``window`` seconds from the first one, then sends them as
    one message (a digest when there are several)."""

    def __init__(self, window: float, send: Callable[[str, list[tuple[Delivery, RunSummary, int]]],
                                                      None]) -> None:
        self.window = window
        self._send = send
        self._pending: dict[str, list[tuple[Delivery, RunSummary, int]]] = {}
        self._first: dict[str, float] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="quantlab-notify-email",
                                        daemon=True)
        self._thread.start()

    def add(self, delivery: Delivery, summary: RunSummary, seq: int) -> None:
        with self._cond:
            self._pending.setdefault(delivery.target, []).append((delivery, summary, seq))
            self._first.setdefault(delivery.target, time.monotonic())
            self._cond.notify()

    def _due(self) -> tuple[list[tuple[str, list[Any]]], float | None]:
        now = time.monotonic()
        due = [r for r, first in self._first.items() if now - first >= self.window]
        batches = [(r, self._pending.pop(r)) for r in due]
        for recipient in due:
            del self._first[recipient]
        wait = min((first + self.window - now for first in self._first.values()), default=None)
        return batches, wait

    def _loop(self) -> None:
        while True:
            with self._cond:
                batches, wait = self._due()
                if not batches:
                    if self._closed:
                        return
                    self._cond.wait(wait)
                    continue
            for recipient, items in batches:
                self._send(recipient, items)

    def close(self) -> None:
        """Stop; emails still waiting for their window are not sent (the cursor has not moved
        past their events, so the next dispatcher sends them)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._first.clear()
            self._cond.notify()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# The dispatcher


class Dispatcher:
    """Follows every run's events and delivers the notifications they call for.

    ``run(stop)`` blocks until ``stop`` is set: it waits for the dispatcher lock (another
    dispatcher of the same home/team may hold it), then follows the event stream from the cursor
    saved in the registry. Any error of the stream or the registry is logged and retried; it
    never ends the loop.
    """

    def __init__(self, settings: settings_mod.Settings | None = None, *,
                 notify: notify_settings.NotifySettings | None = None, workers: int = 4) -> None:
        self.settings = settings or settings_mod.current()
        self.notify = notify or notify_settings.current()
        self.workers = workers
        self.delivering = threading.Event()  # set while this dispatcher holds the lock
        self._progress: _Progress | None = None
        self._saved_cursor: int | None = None
        self._cursor_lock = threading.Lock()
        self._last_save = 0.0

    @property
    def registry(self) -> Registry:
        return open_registry(self.settings)

    def events(self) -> EventStream:
        return open_events(self.settings)

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        lock = lock_for(self.settings.home, self.settings.redis_url)
        lead(lock, stop, lambda lost: self._serve(stop, lost), self.delivering,
             "notification dispatcher")

    def _serve(self, stop: threading.Event, lost: threading.Event) -> None:
        inner = threading.Event()  # set on stop, or when the lock is lost

        def watch() -> None:  # also saves the cursor a throttled _commit() left behind
            while not inner.wait(0.1):
                if stop.is_set() or lost.is_set():
                    inner.set()
                self._commit()

        reg = self.registry
        deliverer = Deliverer(reg, self.notify)
        stream = self.events()
        cursor = int(store.load_cursor(reg=reg) or 0)
        if cursor > stream.last_seq():
            # The event store was emptied or replaced (numbering restarts): start over; the
            # delivery log keeps anything already sent from being sent again.
            log.warning("notification cursor %s is past the last event %s; starting over",
                        cursor, stream.last_seq())
            cursor = 0
        progress = _Progress(cursor)
        self._progress, self._saved_cursor = progress, progress.cursor

        def send_batch(recipient: str, items: list[tuple[Delivery, RunSummary, int]]) -> None:
            # RuntimeError: shutting down; the cursor has not passed these events.
            with contextlib.suppress(RuntimeError):
                pool.submit(self._email_task, deliverer, recipient, items, inner)

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="quantlab-notify")
        batcher = _EmailBatcher(self.notify.digest_window, send_batch)
        watcher = threading.Thread(target=watch, name="quantlab-notify-watch", daemon=True)
        watcher.start()
        try:
            for event in stream.follow(None, progress.cursor, stop=inner):
                if inner.is_set():  # follow() finishes its batch; events left are not ours
                    break
                self._handle(event, reg, deliverer, pool, batcher, inner)
                self._commit()
        finally:
            inner.set()
            batcher.close()
            pool.shutdown(wait=True, cancel_futures=True)
            self._commit(force=True)
            watcher.join(timeout=1)

    # -- one event ---------------------------------------------------------------------------

    def _handle(self, event: Any, reg: Registry, deliverer: Deliverer, pool: ThreadPoolExecutor,
                batcher: _EmailBatcher, stop: threading.Event) -> None:
        progress = self._progress
        assert progress is not None
        planned: list[tuple[Delivery, RunSummary]] = []
        for wait in PLAN_RETRY_WAITS:  # a registry hiccup should not cost a notification
            try:
                planned = self._plan(event, reg)
                break
            except Exception:
                if wait is None:
                    log.exception("could not plan notifications for event %s of run %s; "
                                  "skipping it", event.seq, event.run_id)
                    break
                if stop.wait(wait):
                    return  # stopping: the cursor stays before this event for the next one
        progress.begin(event.seq, len(planned))
        for delivery, summary in planned:
            if delivery.channel == "email":
                batcher.add(delivery, summary, event.seq)
            else:
                pool.submit(self._task, deliverer, delivery, summary, event.seq, stop)

    def _plan(self, event: Any, reg: Registry) -> list[tuple[Delivery, RunSummary]]:
        if event.type not in TERMINAL:
            return []
        if time.time() - float(event.ts) > self.notify.max_age:
            return []
        try:
            run = reg.get_run(event.run_id)
        except RunNotFound:  # deleted since: tell what the event itself says
            run = as_run_record({"id": event.run_id, "status": event.type, **{
                k: event.data[k] for k in ("metrics", "error") if k in event.data}})
        user = run.get("user")
        prefs = store.load_preferences(reg, user) if user else None
        deliveries = plan_deliveries(run, event.type, prefs)
        summary = summarize(run, event.type, public_url=self.notify.public_url)
        return [(d, summary) for d in deliveries]

    def _task(self, deliverer: Deliverer, delivery: Delivery, summary: RunSummary, seq: int,
              stop: threading.Event) -> None:
        try:
            record = deliverer.deliver(delivery, summary, stop)
        except Exception:
            log.exception("delivery %s failed unexpectedly", delivery.id)
            record = {"status": FAILED}
        if record is None or record.get("status") in FINAL_STATUSES:
            self._finish(seq)  # a pending one (interrupted by stop) keeps the cursor back

    def _email_task(self, deliverer: Deliverer, recipient: str,
                    items: list[tuple[Delivery, RunSummary, int]], stop: threading.Event) -> None:
        try:
            records = deliverer.deliver_email(recipient, [(d, s) for d, s, _ in items], stop)
            statuses = {r["id"]: r["status"] for r in records}
        except Exception:
            log.exception("email to %s failed unexpectedly", recipient)
            statuses = {d.id: FAILED for d, _, _ in items}
        for delivery, _, seq in items:
            if statuses.get(delivery.id, FAILED) in FINAL_STATUSES or delivery.id not in statuses:
                self._finish(seq)

    def _finish(self, seq: int) -> None:
        if self._progress is not None:
            self._progress.finish(seq)
            self._commit()

    def _commit(self, force: bool = False) -> None:
        """Save the cursor when it moved (at most twice a second unless ``force``)."""
        progress = self._progress
        if progress is None:
            return
        with self._cursor_lock:
            cursor = progress.cursor
            if cursor == self._saved_cursor:
                return
            now = time.monotonic()
            if not force and now - self._last_save < 0.5:
                return
            try:
                store.save_cursor(cursor, reg=self.registry, updated_at=time.time())
            except Exception:
                log.exception("could not save the notification cursor")
                return
            self._saved_cursor, self._last_save = cursor, now


# --------------------------------------------------------------------------------------------
# A dispatcher thread for worker processes


class DispatcherThread(LeaderThread):
    """A dispatcher running in a daemon thread; ``stop()`` ends it."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        super().__init__(dispatcher.run, "quantlab-notify-dispatcher")


_threads: dict[tuple[Any, ...], DispatcherThread] = {}
_threads_lock = threading.Lock()


def start_dispatcher_thread(settings: settings_mod.Settings | None = None
                            ) -> DispatcherThread | None:
    """Start this process's dispatcher thread (once per process and home); returns it.

    Meant for the worker process: every worker may call it, and the dispatcher lock makes sure
    only one of them delivers while the others stand by. Returns None when
    ``QUANTLAB_NOTIFY_DISPATCHER=0`` (for installs that run ``quantlab notify run`` elsewhere).
    """
    if os.environ.get("QUANTLAB_NOTIFY_DISPATCHER", "1").strip().lower() in ("0", "false", "no",
                                                                              "off"):
        return None
    s = settings or settings_mod.current()
    key = (os.getpid(), str(s.home), s.redis_url, s.mongo_url, s.mongo_db)
    with _threads_lock:
        existing = _threads.get(key)
        if existing is not None and existing.alive:
            return existing
        started = DispatcherThread(Dispatcher(s))
        _threads[key] = started
        return started
