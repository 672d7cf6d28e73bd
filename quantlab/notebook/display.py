"""How runs and results display in a notebook: the one place to hook.

``display_run(run)`` shows the live :class:`~quantlab.notebook.widget.RunWidget`;
``display_result(result)`` the :class:`~quantlab.notebook.results.ResultsView`. Both publish,
next to the widget, a static HTML snapshot (status, metrics, equity chart) so that a notebook
viewed where widgets do not run (GitHub, nbviewer, an HTML export without widget state) still
shows what happened.

``%load_ext quantlab`` registers these with IPython's display formatter for ``Run`` and
``Result``; ``Run._ipython_display_`` can call :func:`display_run` for kernels that did not load
the extension.
"""

from __future__ import annotations

import html
from typing import Any

from IPython.display import display

from quantlab.notebook.failure import failure_text
from quantlab.notebook.results import ResultsView
from quantlab.notebook.state import RunState, summary_line
from quantlab.notebook.widget import RunWidget
from quantlab.render.format import audit_badge, metrics_table_html, status_badge


def run_widget(run: Any, *, follow: bool = True) -> Any:
    return RunWidget(run, follow=follow)


def display_run(run: Any) -> Any:
    """Display the live widget of ``run`` (with a static fallback); returns the widget."""
    widget = run_widget(run)
    bundle = dict(widget._repr_mimebundle_() or {})
    bundle["text/html"] = run_snapshot_html(widget.record, widget.state)
    bundle["text/plain"] = run_snapshot_text(widget.record, widget.state)
    display(bundle, raw=True)
    return widget


def display_result(result: Any) -> Any:
    """Display the results view of ``result`` (with a static fallback); returns the view."""
    view = ResultsView(result)
    bundle = dict(view._repr_mimebundle_() or {})
    bundle["text/html"] = metrics_table_html(dict(getattr(result, "metrics", {}) or {}))
    bundle["text/plain"] = repr(result)
    display(bundle, raw=True)
    return view


def run_snapshot_text(record: dict[str, Any], state: RunState) -> str:
    lines = [f"run {state.run_id} · {state.name or ''} · {state.status} · "
             f"{state.progress:.0%} · {summary_line(state)}"]
    if state.status == "failed":
        lines.append(failure_text(state.error, state.traceback, record.get("config")))
    return "\n".join(lines)


def run_snapshot_html(record: dict[str, Any], state: RunState) -> str:
    parts = [
        f'<div class="quantlab-run" data-run-id="{html.escape(state.run_id)}" '
        f'data-status="{html.escape(state.status)}">run <code>{html.escape(state.run_id)}'
        f"</code> · {html.escape(state.name or '')} · {status_badge(state.status)}"
        f"{audit_badge(record.get('config'))} · "
        f"{html.escape(summary_line(state))}</div>"
    ]
    metrics = record.get("metrics") or {}
    if state.status == "completed" and metrics:
        parts.append(metrics_table_html(metrics))
    if state.status == "failed":
        parts.append(f"<pre>{html.escape(failure_text(state.error, state.traceback, record.get('config')))}</pre>")
    return "".join(parts)
