"""WebSocket ``/quantlab/api/events``: run events, live, resumable by sequence number.

``ws(s)://…/quantlab/api/events?after=<seq>&run_id=<id>``: every event with ``seq > after`` (of
one run, or of all runs), oldest first, then new ones as they are published. Each message is one
event as JSON: ``{"seq", "run_id", "type", "ts", "data"}``. A client that lost the connection
reconnects with ``after=<the last seq it got>`` and misses nothing; without ``after`` it gets
only what happens from now on (GET /quantlab/api/runs answers a ``seq`` to follow from).

One :class:`EventHub` per server process follows the event stream in one thread and fans events
out to the sockets, so a hundred open panels cost one follower. It stops following when the last
socket closes (a hidden panel closes its socket). A socket first replays its backlog from the
store, then drains what the hub pushed meanwhile, dropping what it already sent (seqs are global
and increasing, so "already sent" is ``seq <= last sent``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from quantlab import telemetry
from quantlab.errors import QuantlabError
from quantlab.events import open_events

log = logging.getLogger("quantlab.server")

# The hub's follower blocks in events.wait(); it gets a thread of its own so that REST calls
# never wait behind it, and backlog reads get theirs.
_follower = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantlab-events")
_reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quantlab-events-read")
WAIT_SECONDS = 1.0
PAGE = 500
RETRY_SECONDS = 1.0
# A socket whose client does not keep up is closed past this many queued events; the client
# reconnects with after=<last seq> and reads the rest from the store at its own pace.
MAX_BACKLOG = 20_000
CLOSE_TOO_SLOW = 4008


def _wait(after: int) -> list[Any]:
    return list(open_events().wait(None, after, timeout=WAIT_SECONDS, limit=PAGE))


def _read(run_id: str | None, after: int) -> list[Any]:
    return list(open_events().read(run_id, after, limit=PAGE))


def _last_seq() -> int:
    return int(open_events().last_seq())


def event_dict(event: Any) -> dict[str, Any]:
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return {"seq": event.seq, "run_id": event.run_id, "type": event.type, "ts": event.ts,
            "data": dict(event.data)}


class Subscriber:
    """One socket's view of the stream: its run filter and the events waiting to be sent."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def offer(self, event: Any) -> None:
        if self.run_id is None or event.run_id == self.run_id:
            self.queue.put_nowait(event)


class EventHub:
    """Follows the all-runs stream while at least one socket listens, and fans it out."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.position = 0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, subscriber: Subscriber, start: int) -> None:
        """Add a socket. ``start``: a seq the store is known to have reached, used to begin
        following when the hub is idle (the socket replays anything older itself)."""
        self.subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self.position = start
            self._task = asyncio.get_running_loop().create_task(self._follow())

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    @property
    def following(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        down = False
        while self.subscribers:
            try:
                events = await loop.run_in_executor(_follower, _wait, self.position)
            except Exception as exc:  # the store restarting (Redis); keep the sockets, retry
                if not down:  # once per outage, not every second of it
                    log.warning("quantlab events: cannot read the event stream (%s); "
                                "reconnecting every %s s, the sockets stay open", exc,
                                RETRY_SECONDS)
                down = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if down:
                log.warning("quantlab events: the event stream is back; resuming after event %s",
                            self.position)
                down = False
            # No await between here and the end of the fan-out: a socket subscribing now either
            # sees these events in its queue or reads them from the store, never neither.
            for event in events:
                self.position = max(self.position, int(event.seq))
                for subscriber in list(self.subscribers):
                    subscriber.offer(event)


HUB = EventHub()


class EventsSocket(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """The events WebSocket; authenticated and authorized like Jupyter's own sockets."""

    auth_resource = "quantlab"

    subscriber: Subscriber | None = None
    sender: asyncio.Task[None] | None = None
    after: int | None = None
    run_id: str | None = None

    def set_default_headers(self) -> None:
        """Jupyter's API headers make no sense on a WebSocket upgrade."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or "the events WebSocket refused the request"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def _arguments(self) -> tuple[int | None, str | None]:
        raw_after = self.get_query_argument("after", None)
        after: int | None = None
        if raw_after not in (None, ""):
            assert raw_after is not None
            if not raw_after.isdigit():
                raise web.HTTPError(400, f"'after' must be the seq of the last event received "
                                         f"(a whole number >= 0), got {raw_after!r}")
            after = int(raw_after)
        run_id = self.get_query_argument("run_id", None) or None
        return after, run_id

    @ws_authenticated
    @authorized
    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.after, self.run_id = self._arguments()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()  # Jupyter's keep-alive pings
        loop = asyncio.get_running_loop()
        try:
            start = await loop.run_in_executor(_reader, _last_seq)
        except (QuantlabError, Exception) as exc:
            log.warning("quantlab events: event store unreachable: %s", exc)
            self.close(1011, "the event store is unreachable; retry in a moment")
            return
        self.subscriber = Subscriber(self.run_id)
        HUB.subscribe(self.subscriber, start)
        after = start if self.after is None else min(self.after, start)
        self.sender = loop.create_task(self._send(after))

    async def _send(self, after: int) -> None:
        assert self.subscriber is not None
        loop = asyncio.get_running_loop()
        last_sent = after
        try:
            while True:  # the backlog, page by page, straight from the store
                page = await loop.run_in_executor(_reader, _read, self.run_id, last_sent)
                for event in page:
                    await self._write(event)
                    last_sent = int(event.seq)
                if len(page) < PAGE:
                    break
            while True:  # then live events from the hub
                event = await self.subscriber.queue.get()
                if self.subscriber.queue.qsize() > MAX_BACKLOG:
                    self.close(CLOSE_TOO_SLOW, "client too slow; reconnect with after=<last seq>")
                    return
                if int(event.seq) <= last_sent:
                    continue
                await self._write(event)
                last_sent = int(event.seq)
                telemetry.observe_delivery(event, "lab")  # live only: a replay is no delay
        except WebSocketClosedError:
            return
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.warning("quantlab events: stream to a client failed: %s", exc, exc_info=True)
            self.close(1011, "the event stream failed; reconnect with after=<last seq>")

    async def _write(self, event: Any) -> None:
        if self.ws_connection is None:
            raise WebSocketClosedError()
        await self.write_message(json.dumps(event_dict(event), allow_nan=False))

    def on_message(self, message: str | bytes) -> None:
        """The stream is one-way; a client message is ignored (clients may send keep-alives)."""

    def on_close(self) -> None:
        if self.subscriber is not None:
            HUB.unsubscribe(self.subscriber)
        if self.sender is not None:
            self.sender.cancel()
