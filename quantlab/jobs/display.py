"""How a run and a list of runs look in a notebook and a terminal.

This is the one place that renders them: ``Run`` and ``RunList`` call :data:`RENDERERS`, so the
layers above jobs plug in without jobs importing them: the notebook's live widget is
``RENDERERS.live_view`` and the papermill report of a run is ``RENDERERS.report`` (both set by
the ``quantlab`` package when it is imported); any method can be replaced or subclassed.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quantlab.durations import format_duration

LIST_COLUMNS = ("id", "name", "status", "progress", "strategy", "symbols", "user", "queued_at",
                "sharpe", "total_return_pct")


def _bar(progress: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, progress)) * width)
    return "█" * filled + "░" * (width - filled)


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def summary(doc: Mapping[str, Any]) -> str:
    """``run 01J… · running · simulating · ██████░░░░ 62% · 0:03 elapsed · ~0:02 left``."""
    status = doc.get("status", "?")
    parts = [f"run {doc.get('id')}", str(doc.get("name") or ""), status]
    progress = float(doc.get("progress") or 0.0)
    if status == "queued":
        if doc.get("position"):
            parts.append(f"position {doc['position']}")
        if doc.get("estimated_seconds") is not None:
            parts.append(f"~{format_duration(doc['estimated_seconds'])} estimated")
    elif status == "running":
        parts += [str(doc.get("step") or ""), f"{_bar(progress)} {progress:.0%}"]
        if doc.get("started_at"):
            parts.append(f"{format_duration(time.time() - doc['started_at'])} elapsed")
        if doc.get("eta_seconds") is not None:
            parts.append(f"~{format_duration(doc['eta_seconds'])} left")
    elif status == "completed":
        if doc.get("cached_from"):
            parts.append(f"cached from {doc['cached_from']}")
        metrics = doc.get("metrics") or {}
        for key in ("total_return_pct", "sharpe", "max_drawdown_pct"):
            if metrics.get(key) is not None:
                parts.append(f"{key} {metrics[key]:.4g}")
    elif status in ("failed", "cancelled"):
        if doc.get("partial"):
            parts.append("partial result kept")
        if doc.get("error"):
            parts.append(str(doc["error"]).splitlines()[0][:200])
    return " · ".join(p for p in parts if p)


class Renderers:
    """Text and HTML of a run and of a run list; override any method to change the display."""

    #: shows a ``Run`` live in a Jupyter kernel (the notebook's widget); None: the HTML summary
    live_view: Callable[[Any], Any] | None = None
    #: executes the report of a run: ``report(run_id, output, html)`` -> the files written
    report: Callable[[str, str | None, bool], Any] | None = None

    def run_text(self, doc: Mapping[str, Any]) -> str:
        return summary(doc)

    def run_html(self, doc: Mapping[str, Any]) -> str:
        status = html.escape(str(doc.get("status", "")))
        progress = float(doc.get("progress") or 0.0)
        return (
            f'<div class="quantlab-run" data-run-id="{html.escape(str(doc.get("id")))}" '
            f'data-status="{status}"><code>{html.escape(summary(doc))}</code>'
            f'<progress max="1" value="{progress:.4f}" style="width:12em;margin-left:1em">'
            f"</progress></div>"
        )

    def list_rows(self, docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for doc in docs:
            metrics = doc.get("metrics") or {}
            rows.append({
                "id": doc.get("id"), "name": doc.get("name"), "status": doc.get("status"),
                "progress": round(float(doc.get("progress") or 0.0), 4),
                "strategy": doc.get("strategy"), "symbols": ",".join(doc.get("symbols") or []),
                "user": doc.get("user"), "queued_at": _when(doc.get("queued_at")),
                "sharpe": metrics.get("sharpe"), "total_return_pct": metrics.get("total_return_pct"),
            })
        return rows

    def list_text(self, docs: Sequence[Mapping[str, Any]]) -> str:
        if not docs:
            return "no runs"
        rows = self.list_rows(docs)
        cells = [[("" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else
                   str(r[c])) for c in LIST_COLUMNS] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(LIST_COLUMNS)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(LIST_COLUMNS, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def list_html(self, docs: Sequence[Mapping[str, Any]]) -> str:
        head = "".join(f"<th>{c}</th>" for c in LIST_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>"
                             for c in LIST_COLUMNS) + "</tr>"
            for r in self.list_rows(docs)
        )
        return f'<table class="quantlab-runs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


RENDERERS = Renderers()
