"""``ql.submit``, ``ql.get_run``, ``ql.runs`` and ``ql.Run``: runs as objects in a notebook.

A :class:`Run` is a handle on a registry document: it holds the run id and the settings it was
created under, and reads the registry when asked, so it is as valid after a kernel restart
(``ql.get_run(id)``) as it was when submitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from quantlab import settings as settings_mod
from quantlab.engine import Result
from quantlab.errors import ConfigError, RunError
from quantlab.events import Event, EventStream, StreamOutage, follow_through_outages, open_events
from quantlab.events.outage import RETRY_CAP_SECONDS, unreachable
from quantlab.jobs import orchestrator, validation
from quantlab.jobs.display import RENDERERS
from quantlab.jobs.lifecycle import TERMINAL, Log
from quantlab.jobs.supervisor import watch_worker
from quantlab.registry import Registry, RunRecord, open_registry
from quantlab.research import CrossValidation, WalkForward
from quantlab.settings import Settings

__all__ = ["TERMINAL", "Run", "RunList", "get_run", "runs", "submit"]

log = logging.getLogger("quantlab.jobs")


class Run:
    """A submitted run. ``record`` is its registry document, read fresh on every access."""

    def __init__(self, run_id: str, *, settings: Settings | None = None,
                 record: RunRecord | None = None) -> None:
        self.id = run_id
        self.settings = settings or settings_mod.current()
        self._record = record
        self._result: Result | WalkForward | CrossValidation | None = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def _registry(self) -> Registry:
        return open_registry(self.settings)

    @property
    def _events(self) -> EventStream:
        return open_events(self.settings)

    @property
    def record(self) -> RunRecord:
        """The run's registry document: status, progress, step, attempts, worker, error, times,
        metrics ... (read now)."""
        self._record = self._registry.get_run(self.id)
        return self._record.copy()

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def progress(self) -> float:
        return float(self.record.get("progress") or 0.0)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def position(self) -> int | None:
        """1-based place in the queue while queued (higher priority first), else None."""
        return orchestrator.queue_position(self.record, self.settings)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.record.get("metrics") or {})

    # -- actions ---------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run is completed, failed or cancelled; returns the run.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the run goes on). The
        registry decides when the run has ended; events only wake the wait early, so an outage
        of the event store (Redis restarting) costs nothing but a warning in the log.
        """
        watch_worker(self.settings)  # a dead embedded worker is replaced meanwhile
        events = self._events
        deadline = None if timeout is None else time.monotonic() + timeout
        after: int | None = None  # read once the stream answers
        down = False
        while self.status not in TERMINAL:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"run {self.id} is still {self._record and self._record.get('status')} "
                    f"after {timeout} s; wait longer, or run.cancel() it"
                )
            try:
                if after is None:
                    after = int(events.last_seq(self.id))
                found = events.wait(self.id, after=after, timeout=min(remaining, 1.0))
            except Exception as exc:
                if not unreachable(exc):
                    raise
                if not down:
                    log.warning("run %s: %s", self.id, StreamOutage(str(exc), after or 0).message)
                down = True
                time.sleep(min(RETRY_CAP_SECONDS, max(remaining, 0.0)))
                continue
            down = False
            for event in found:
                after = max(after, int(event.seq))
        return self

    def result(self, timeout: float | None = None) -> Result | WalkForward | CrossValidation:
        """The run's ``Result`` (the same as ``ql.backtest`` gives; a sweep's has ``.table``);
        a run with ``walk_forward:`` or ``cross_validate:`` gives the ``WalkForward`` /
        ``CrossValidation`` that ``ql.walk_forward`` / ``ql.cross_validate`` give.

        Waits for the run to end. A sweep cancelled or stopped by the time limit gives its
        finished combinations (``.partial`` is True); any other failed run, or one cancelled
        before any result, raises ``RunError``.
        """
        if self._result is not None:
            return self._result
        self.wait(timeout)
        doc = self.record
        blobs = doc.get("result_blobs") or []
        if doc["status"] == "failed" and not doc.get("partial"):
            raise RunError(
                f"run {self.id} failed: {doc.get('error')}; the traceback is in "
                f"run.record['traceback'] and run.logs()", run_id=self.id,
            )
        if not doc.get("result_ref") or not blobs:
            raise RunError(
                f"run {self.id} was {doc['status']} before it produced a result; submit it "
                f"again to get one", run_id=self.id,
            )
        prefix = str(doc["result_ref"])  # checked above
        stored = {name: self._registry.get_blob(prefix + name) for name in blobs}
        found = validation.from_blobs(stored) or Result.from_blobs(stored)
        self._result = found
        return found

    def cancel(self) -> Run:
        """Cancel: a queued run ends at once; a running one stops at its next chunk (a sweep
        keeps its finished combinations). Does nothing to a finished run. Only the run's owner
        (this process's ``QUANTLAB_USER``) or an admin (``QUANTLAB_ADMINS``) may cancel it:
        another user's run raises ``NotOwner``."""
        self._record = orchestrator.cancel(self.id, self.settings)
        return self

    def report(self, output: str | None = None, html: bool = True) -> Any:
        """Execute the papermill report of this run; the notebook and its HTML are kept and
        linked from the run's record (``report_ref``). Returns the files written."""
        if RENDERERS.report is None:
            raise RunError("reports are not available in this process (import quantlab, which "
                           "plugs in quantlab.reports)", run_id=self.id)
        return RENDERERS.report(self.id, output, html)

    def events(self, after: int = 0, limit: int = 1000) -> list[Any]:
        """This run's events after sequence number ``after`` (replayable from any point)."""
        return list(self._events.read(self.id, after=after, limit=limit))

    def follow(self, after: int = 0, idle_timeout: float | None = None) -> Iterator[Any]:
        """Iterate over this run's events as they come, ending after its final event.

        An outage of the event store (Redis stopped or restarting) does not end it: it yields a
        ``log`` event of level ``warning`` whose message says "reconnecting…", retries every
        second or so, yields a second one when the stream is back, and carries on from the last
        event it gave. These notices are not stored; their ``seq`` is that of the last event
        given (0 before any), so resuming with ``after=event.seq`` misses nothing. A run that
        ended during the outage still ends the iteration: its worker publishes the final event
        when it reaches the store again."""
        for item in follow_through_outages(self._events, self.id, after=after,
                                           idle_timeout=idle_timeout):
            if isinstance(item, StreamOutage):
                log.warning("run %s: %s", self.id, item.message)
                yield self._notice(item)
                continue
            yield item
            if item.type in TERMINAL:
                return

    def _notice(self, outage: StreamOutage) -> Event:
        """A stream outage told as an (unstored) ``log`` event."""
        payload = Log(outage.message, "info" if outage.back else "warning")
        return Event(outage.after, self.id, payload.type, time.time(), payload.data())

    def logs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The run's log lines ``{ts, level, message}``, oldest first."""
        return list(self._registry.logs(self.id, limit=limit))

    # -- display ---------------------------------------------------------------------------------

    def _cached_record(self) -> RunRecord:
        try:
            record = self.record
        except RunError:
            return self._record or {"id": self.id, "status": "unknown"}
        if record.get("status") == "queued":
            record["position"] = orchestrator.queue_position(record, self.settings)
        return record

    def __repr__(self) -> str:
        return RENDERERS.run_text(self._cached_record())

    def _repr_html_(self) -> str:
        return RENDERERS.run_html(self._cached_record())

    def _ipython_display_(self) -> None:
        """In a Jupyter kernel, the live widget (even without ``%load_ext quantlab``); in a
        terminal IPython, the text summary."""
        # imported here: IPython is only ever loaded by a display, and costs a second to import
        from IPython import get_ipython
        from IPython.display import display

        if getattr(get_ipython(), "kernel", None) is not None and RENDERERS.live_view is not None:
            watch_worker(self.settings)  # the widget never waits behind a dead embedded worker
            RENDERERS.live_view(self)
        else:
            display({"text/plain": repr(self), "text/html": self._repr_html_()}, raw=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class RunList(list[Run]):
    """Runs found by ``ql.runs(...)``: a list with a table display and ``.to_frame()``."""

    def __init__(self, runs: list[Run], docs: list[RunRecord]) -> None:
        super().__init__(runs)
        self.docs = docs

    def to_frame(self) -> pd.DataFrame:
        """One row per run: the document's fields plus one column per metric."""
        rows = []
        for doc in self.docs:
            row = {k: v for k, v in doc.items() if k not in ("metrics", "config", "traceback")}
            row.update({f"metric.{k}": v for k, v in (doc.get("metrics") or {}).items()})
            rows.append(row)
        frame = pd.DataFrame(rows)
        if "id" in frame.columns:
            frame = frame.set_index("id")
        for column in ("queued_at", "started_at", "finished_at", "heartbeat_at"):
            if column in frame.columns:
                frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def __repr__(self) -> str:
        return RENDERERS.list_text(self.docs)

    def _repr_html_(self) -> str:
        return RENDERERS.list_html(self.docs)


def submit(config: Any, cache: bool = True, *, priority: int = 0, name: str | None = None,
           tags: Any = None, user: str | None = None) -> Run:
    """Validate ``config`` (a dict, a ``ql.BacktestConfig`` or YAML text) here, then queue it.

    Returns at once with a :class:`Run`. With ``cache=True`` a config whose hash matches a
    completed run is answered from that run's result (a new run marked ``cached_from``).
    Raises ``ConfigError`` for an invalid config and ``QueueFull`` when QUANTLAB_QUEUE_MAX runs
    are waiting; in both cases nothing is created.
    """
    if not isinstance(cache, bool):
        raise ConfigError(f"cache must be True or False, got {cache!r}", field="cache")
    settings = settings_mod.current()
    doc = orchestrator.submit(config, cache=cache, priority=priority, name=name, tags=tags,
                              user=user, settings=settings)
    return Run(doc["id"], settings=settings, record=doc)


def get_run(run_id: str) -> Run:
    """The run with that id (``RunNotFound`` if there is none), e.g. after a kernel restart."""
    settings = settings_mod.current()
    doc = open_registry(settings).get_run(str(run_id))
    return Run(doc["id"], settings=settings, record=doc)


def runs(*, status: Any = None, strategy: Any = None, symbol: Any = None, tag: Any = None,
         user: Any = None, since: Any = None, until: Any = None, text: str | None = None,
         where: Any = None, sort: str = "-queued_at", limit: int | None = 50,
         offset: int = 0) -> RunList:
    """Search the registry: ``ql.runs(status="completed", where="sharpe>1", sort="-sharpe")``."""
    settings = settings_mod.current()
    docs = open_registry(settings).find_runs(
        status=status, strategy=strategy, symbol=symbol, tag=tag, user=user, since=since,
        until=until, text=text, where=where, sort=sort, limit=limit, offset=offset,
    )
    return RunList([Run(d["id"], settings=settings, record=d) for d in docs], docs)
