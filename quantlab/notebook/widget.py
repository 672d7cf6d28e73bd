"""The live run widget: progress while a run is queued or running, then its results.

Updates come from the run's event stream on a background thread. That thread never prints
(output from a thread lands in whichever cell happens to be executing): it only sets widget
traits, which ipykernel sends to the front end whether or not a cell is running, and any error
it meets is shown inside the widget. The thread also re-reads the registry record every few
seconds, so a view survives a lost event (e.g. Redis restarted without persistence) and the
elapsed time keeps ticking between events. While the stream cannot be read (Redis stopped or
restarting) the view says "reconnecting…", tries again every second, keeps following the run
through the registry, and carries on from its last event when the stream is back.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from quantlab import settings as settings_mod
from quantlab.errors import RunNotFound
from quantlab.events import open_events
from quantlab.events.outage import RETRY_CAP_SECONDS, unreachable
from quantlab.jobs.orchestrator import queue_position
from quantlab.notebook.failure import failure_html
from quantlab.notebook.results import results_view
from quantlab.notebook.state import RunState, summary_line
from quantlab.registry import open_registry
from quantlab.render.format import audit_badge, headline, status_badge, status_color
from quantlab.settings import Settings

# How long one wait on the event stream blocks: also the tick of the elapsed-time display.
TICK_SECONDS = 1.0
# (RETRY_CAP_SECONDS, from events.outage: the longest pause between two tries at an unreadable
# event stream, e.g. Redis restarting.)
# How often the registry record is re-read to reconcile with the events.
RECONCILE_SECONDS = 5.0


class RunWidget(widgets.VBox):
    """The view of one run. ``follow=False`` builds it from the present state only (tests
    drive it with :meth:`apply`); otherwise a daemon thread follows the run until it ends."""

    def __init__(self, run: Any, *, follow: bool = True, registry: Any = None,
                 events: Any = None) -> None:
        self.run = run
        self.run_id = str(run.id)
        # the settings the run was created under, fixed now: the follower thread must keep
        # reading that home (or team) whatever the environment says later
        self.settings: Settings = getattr(run, "settings", None) or settings_mod.current()
        self._registry = registry
        self._events = events
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._finished_view_built = False  # guards against building the outcome twice
        self._outcome_ready = threading.Event()  # set once the outcome is on screen
        self._thread: threading.Thread | None = None
        self._retrying = False  # the follower's note is about a stream it is still retrying
        self._cancelling = False  # Cancel clicked: said until the run has ended
        self._retry_delay = TICK_SECONDS
        self.record: dict[str, Any] = {}
        self.result: Any = None
        # Take the event cursor BEFORE reading the record: events published in between are
        # replayed, never missed (RunState.apply ignores what the record already says).
        start_seq = self._safe(lambda: int(self.events.last_seq(self.run_id)), 0)
        self.record = self._read_record() or dict(getattr(run, "record", {}) or {"id": run.id})
        logs = self._safe(lambda: self.registry.logs(self.run_id, limit=20), [])
        self.state = RunState.from_record(self.record, logs)
        self.state.last_seq = start_seq
        if self.state.status == "queued":
            self._update_queue_position(self.record)

        self.header = widgets.HTML()
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              layout=widgets.Layout(width="420px"))
        self.info = widgets.HTML()
        self.log_html = widgets.HTML()
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            button_style="warning",
                                            tooltip="Stop this run (a sweep keeps its finished "
                                                    "combinations)")
        self.cancel_button.on_click(self._on_cancel)
        self.live = widgets.VBox([widgets.HBox([self.progress, self.cancel_button]), self.info,
                                  self.log_html])
        self.body = widgets.VBox()
        super().__init__([self.header, self.live, self.body])
        self.add_class("ql-run")
        self.render()
        if self.state.terminal:
            self._show_outcome()
        elif follow:
            self.start()

    # -- backends (opened lazily so that tests can pass their own) ----------------------------

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = open_registry(self.settings)
        return self._registry

    @property
    def events(self) -> Any:
        if self._events is None:
            self._events = open_events(self.settings)
        return self._events

    def _read_record(self) -> dict[str, Any] | None:
        """The registry record now; None when the registry cannot be read at the moment (the
        view keeps what it has). A deleted run stops the follower."""
        try:
            return dict(self.registry.get_run(self.run_id))
        except RunNotFound:
            self._stop.set()
            self._note_problem(f"run {self.run_id} is no longer in the registry (deleted)")
            return None
        except Exception:
            return None

    def _note_problem(self, message: str | None, *, retrying: bool = False) -> None:
        """Shown under the progress line (a follower thread reports here, never by printing).
        ``retrying``: the follower keeps trying, so the note says so; None clears the note."""
        state = getattr(self, "state", None)
        if state is not None:
            with self._lock:
                state.follow_error = message
                self._retrying = retrying

    @staticmethod
    def _safe(func: Callable[[], Any], default: Any) -> Any:
        try:
            return func()
        except Exception:
            return default

    # -- following --------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the run's events on a daemon thread until it ends or :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._follow, name=f"quantlab-run-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        super().close()

    @property
    def reconnecting(self) -> bool:
        """Whether the view waits for an unreachable event stream (it says so meanwhile)."""
        with self._lock:
            return self._retrying and self.state.follow_error is not None

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _follow(self) -> None:
        last_reconcile = time.monotonic()
        try:
            while not self._stop.is_set() and not self.state.terminal:
                batch = self._wait_for_events()
                with self._lock:
                    for event in batch:
                        self.state.apply(event)
                if time.monotonic() - last_reconcile >= RECONCILE_SECONDS or self._is_queued():
                    last_reconcile = time.monotonic()
                    self.reconcile()
                self.render()
            if self.state.terminal:
                self._note_problem(None)  # the registry told the end: nothing is missing
                self._show_outcome()
        except Exception as exc:  # shown in the widget: a thread must never print
            self._note_problem(f"{type(exc).__name__}: {exc}")
        self.render()

    def _wait_for_events(self) -> list[Any]:
        """The next events, or none while the stream cannot be read: a store restarting
        (Redis in team mode) must not end the view, so the follower notes the problem, backs
        off and keeps going (the reconcile still reads the registry meanwhile)."""
        try:
            batch = list(self.events.wait(self.run_id, after=self.state.last_seq,
                                          timeout=TICK_SECONDS))
        except Exception as exc:  # shown in the widget: never printed
            if not unreachable(exc):
                raise
            self._note_problem(f"{type(exc).__name__}: {exc}", retrying=True)
            self.render()
            self._stop.wait(self._retry_delay)  # wakes at once on stop()
            self._retry_delay = min(self._retry_delay * 2, RETRY_CAP_SECONDS)
            return []
        if self._retrying:  # the stream is back: drop the note about it
            self._note_problem(None)
        self._retry_delay = TICK_SECONDS
        return batch

    def _is_queued(self) -> bool:
        return self.state.status == "queued"

    def reconcile(self) -> None:
        """Re-read the registry record (and the queue position while queued)."""
        record = self._read_record()
        if record is None:
            return
        with self._lock:
            self.record = record
            self.state.update_from_record(record)
            if self.state.status == "queued":
                self._update_queue_position(record)

    def _update_queue_position(self, record: dict[str, Any]) -> None:
        """The live position (the record's ``position`` is the one at submit time)."""
        position = self._safe(lambda: queue_position(record, self.settings), None)
        if position is not None:
            self.state.queue_position = int(position)
        self.state.queue_length = self._safe(
            lambda: int(self.registry.count_runs(status="queued")), self.state.queue_length)

    def apply(self, event: Any) -> bool:
        """Advance the view by one event (what the follower thread does)."""
        with self._lock:
            changed = self.state.apply(event)
        self.render()
        if self.state.terminal:
            self._show_outcome()
        return changed

    # -- actions ----------------------------------------------------------------------------

    def _on_cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        self._cancelling = True
        self.render()  # at once: a running run stops only at its next chunk
        try:
            self.run.cancel()
        except Exception as exc:
            self._cancelling = False
            self.cancel_button.disabled = False
            self.cancel_button.description = "Cancel"
            self.info.value += (f'<div style="color:#d62728">cancel failed: '
                                f"{html.escape(str(exc))}</div>")

    # -- rendering --------------------------------------------------------------------------

    def render(self) -> None:
        with self._lock:
            state = self.state
            self.header.value = self._header_html(state)
            self.progress.value = state.progress
            self.progress.bar_style = {"completed": "success", "failed": "danger",
                                       "cancelled": "warning"}.get(state.status, "info")
            self.progress.description = f"{state.progress * 100:.0f}%"
            info = html.escape(summary_line(state))
            if self._cancelling and not state.terminal:
                info = ('<b class="ql-cancelling">cancelling…</b> (stops at the next chunk) · '
                        + info)
            if state.follow_error and self._retrying:
                info += (f'<div class="ql-reconnecting" style="color:#d62728">live updates '
                         f"paused ({html.escape(state.follow_error)}); reconnecting… (the run "
                         f"goes on)</div>")
            elif state.follow_error:
                info += (f'<div style="color:#d62728">live updates stopped '
                         f"({html.escape(state.follow_error)}); display "
                         f"ql.get_run({self.run_id!r}) again to refresh</div>")
            self.info.value = f'<div class="ql-info" style="font-size:12px">{info}</div>'
            self.log_html.value = self._log_html(state)
            self.cancel_button.layout.display = "none" if state.terminal else None
            self._dom_classes = ("ql-run", f"ql-run-{state.status}")

    def _header_html(self, state: RunState) -> str:
        config = self.record.get("config") or {}
        strategy = config.get("strategy") or self.record.get("strategy") or ""
        symbols = config.get("symbols") or self.record.get("symbols") or []
        shown = ", ".join(symbols[:5]) + (f" +{len(symbols) - 5}" if len(symbols) > 5 else "")
        name = f" · <b>{html.escape(state.name)}</b>" if state.name else ""
        extra = "partial" if state.partial else ""
        what = html.escape(f"{strategy} on {shown}" if strategy else "")
        cached = (f" · result from cache (run {html.escape(state.cached_from)})"
                  if state.cached_from else "")
        return (f'<div class="ql-header" style="font-family:sans-serif;font-size:13px">'
                f"run <code>{html.escape(self.run_id)}</code>{name} · "
                f"{status_badge(state.status, extra)}{audit_badge(config)} · {what}{cached}</div>")

    @staticmethod
    def _log_html(state: RunState) -> str:
        if not state.log:
            return ""
        lines = []
        for line in state.log:
            stamp = time.strftime("%H:%M:%S", time.localtime(line.ts)) if line.ts else ""
            color = {"error": "#d62728", "warning": "#ff7f0e"}.get(line.level, "#444")
            lines.append(f'<span style="color:{color}">{stamp} {html.escape(line.message)}</span>')
        return ('<pre class="ql-log" style="font-size:11px;max-height:9em;overflow:auto;'
                'margin:2px 0;background:#f7f7f7;padding:2px 4px">' + "\n".join(lines) + "</pre>")

    def _show_outcome(self) -> None:
        """Replace the live part by the results (completed, partial) or the error (failed)."""
        with self._lock:
            if self._finished_view_built:
                return
            self._finished_view_built = True
        record = self._read_record() or self.record
        with self._lock:
            self.record = record
            self.state.update_from_record(record)
        self.render()
        state = self.state
        children: list[widgets.Widget] = []
        if state.status == "failed":
            children.append(widgets.HTML(failure_html(state.error, state.traceback,
                                                      record.get("config"))))
        elif state.status == "completed" or (state.status == "cancelled" and state.partial):
            children.append(self._results_or_error())
        else:
            children.append(widgets.HTML(
                '<div style="font-family:sans-serif;font-size:13px;color:'
                f'{status_color(state.status)}">cancelled before any result was kept</div>'))
        self.live.layout.display = "none" if state.status != "failed" or not state.log else None
        self.cancel_button.layout.display = "none"
        self.body.children = tuple(children)
        self._outcome_ready.set()

    def _results_or_error(self) -> widgets.Widget:
        try:
            result = self.run.result()
        except Exception as exc:
            return widgets.HTML(f'<div style="color:#d62728">could not load the result: '
                                f"{html.escape(str(exc))}</div>")
        metrics = dict(getattr(result, "metrics", {}) or {})
        heading = (f'<div class="ql-headline" style="font-family:sans-serif;font-size:13px">'
                   f"{html.escape(headline(metrics))}</div>")
        self.result = result
        return results_view(result, heading=heading)  # a walk-forward, a CV: their own view


def wait_for_outcome(widget: RunWidget, timeout: float) -> bool:
    """Block until the widget shows the run's outcome (results or error); for tests."""
    return widget._outcome_ready.wait(timeout)
