"""The compare dashboard's run picker: a text filter, a sort order and a check box per run.

A bare multi-select of hundreds of rows needed Ctrl-click and scrolling; this one finds a run by
any word of its name, strategy, symbols, tags or id, sorts by date or by a metric, and draws only
the first :data:`PICKER_ROWS` matches (the ticked runs always stay listed first, so they can be
unticked whatever the filter). It holds 2 to 5 runs: ticking a sixth is refused with a message.
The filtering and sorting are plain functions (:func:`filter_runs`, :func:`sort_runs`) so that they
are tested without a browser; the widget is ipywidgets only (no JavaScript of its own, no CDN).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from quantlab.analytics import MAX_RUNS, MIN_RUNS
from quantlab.metrics import METRIC_INFO

PICKER_ROWS = 30  # check boxes drawn at once: each is a widget; the filter finds the rest
NEWEST_FIRST = "-finished_at"
# The metrics a researcher sorts runs by; labels and directions come from METRIC_INFO.
SORT_METRICS = ("sharpe", "total_return_pct", "cagr_pct", "max_drawdown_pct")
MESSAGE_STYLE = "font-family:sans-serif;font-size:12px;color:#555;margin:2px 0"
REFUSED_STYLE = "font-family:sans-serif;font-size:12px;color:#b00020;margin:2px 0"

Run = Mapping[str, Any]


def sort_options() -> list[tuple[str, str]]:
    """(label, key) of each order: dates, the name, and each of SORT_METRICS best first
    (``-key`` is descending)."""
    options = [("newest first", NEWEST_FIRST), ("oldest first", "finished_at"),
               ("name A→Z", "name")]
    for name in SORT_METRICS:
        info = METRIC_INFO[name]
        options.append((f"{info.label}, best first",
                        name if info.lower_is_better else f"-{name}"))
    return options


def _searchable(run: Run) -> str:
    words = [run.get("name"), run.get("strategy"), run.get("id"), run.get("user"),
             *(run.get("symbols") or ()), *(run.get("tags") or ())]
    return " ".join(str(w) for w in words if w).lower()


def filter_runs(runs: Sequence[Run], text: str) -> list[Run]:
    """The runs whose name, strategy, symbols, tags, user or id contain every word of ``text``
    (case-insensitive; an empty text keeps them all)."""
    words = text.lower().split()
    return [run for run in runs if all(word in _searchable(run) for word in words)]


def _sort_value(run: Run, field: str) -> Any:
    if field == "name":
        return str(run.get("name") or "").lower() or None
    value = run.get(field) if field in ("finished_at", "queued_at") else \
        (run.get("metrics") or {}).get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def sort_runs(runs: Sequence[Run], key: str) -> list[Run]:
    """``runs`` ordered by ``key`` (a field of :func:`sort_options`; ``-`` for descending);
    runs without a value for it come last, in either direction."""
    field, descending = key.lstrip("-"), key.startswith("-")
    valued = [run for run in runs if _sort_value(run, field) is not None]
    missing = [run for run in runs if _sort_value(run, field) is None]
    valued.sort(key=lambda run: _sort_value(run, field), reverse=descending)
    return valued + missing


def run_label(run: Run) -> str:
    """One line per run: name, strategy and symbols, return, Sharpe, id."""
    metrics = run.get("metrics") or {}

    def shown(name: str, fmt: str) -> str:
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return format(value, fmt)

    symbols = ", ".join(str(s) for s in (run.get("symbols") or ())[:3])
    more = len(run.get("symbols") or ()) - 3
    symbols += f" +{more}" if more > 0 else ""
    strategy = f"{run.get('strategy') or '?'}" + (f" on {symbols}" if symbols else "")
    return (f"{run.get('name') or '(unnamed)'} · {strategy} · return "
            f"{shown('total_return_pct', '+.2f')} % · Sharpe {shown('sharpe', '.2f')} · "
            f"{run['id']}")


def selection_message(count: int) -> str | None:
    """What to do when ``count`` ticked runs are not a comparison; None when they are."""
    if MIN_RUNS <= count <= MAX_RUNS:
        return None
    return (f"select {MIN_RUNS} to {MAX_RUNS} runs to compare ({count} selected; tick "
            f"{'more' if count < MIN_RUNS else 'fewer'} boxes)")


class RunPicker(widgets.VBox):
    """Check boxes over the runs given to :meth:`set_runs`; ``value`` is the ticked ids in the
    order they were ticked (observe it, as a ``SelectMultiple``'s)."""

    value = traitlets.Tuple()

    def __init__(self) -> None:
        self.search = widgets.Text(placeholder="name, strategy, symbol, tag or id",
                                   description="Find", continuous_update=True,
                                   layout=widgets.Layout(width="420px"))
        self.search.add_class("ql-run-search")
        self.order = widgets.Dropdown(options=sort_options(), value=NEWEST_FIRST,
                                      description="Sort")
        self.order.add_class("ql-run-sort")
        self.summary = widgets.HTML()
        self.summary.add_class("ql-run-summary")
        self.rows = widgets.VBox(layout=widgets.Layout(max_height="330px", overflow="auto",
                                                       width="95%"))
        self.rows.add_class("ql-run-rows")
        self.refused: str | None = None  # why the last tick was refused, until the next change
        self._runs: list[Run] = []
        self._boxes: dict[str, widgets.Checkbox] = {}
        self._drawing = False
        super().__init__([widgets.HBox([self.search, self.order]), self.rows, self.summary])
        self.add_class("ql-run-picker")
        self.search.observe(lambda _: self.redraw(), names="value")
        self.order.observe(lambda _: self.redraw(), names="value")
        self.observe(lambda _: self.redraw(), names="value")

    # -- state ---------------------------------------------------------------------------------

    def set_runs(self, runs: Sequence[Run]) -> None:
        """Offer ``runs``; ticked runs no longer offered are unticked."""
        self._runs = list(runs)
        known = self.run_ids()
        self.value = tuple(run_id for run_id in self.value if run_id in known)
        self.redraw()

    def run_ids(self) -> set[str]:
        return {str(run["id"]) for run in self._runs}

    def matches(self) -> list[Run]:
        """The runs the filter keeps, in the chosen order."""
        return sort_runs(filter_runs(self._runs, self.search.value), self.order.value)

    def _ticked_and_rest(self) -> tuple[list[Run], list[Run]]:
        by_id = {str(run["id"]): run for run in self._runs}
        ticked = [by_id[run_id] for run_id in self.value if run_id in by_id]
        rest = [run for run in self.matches() if str(run["id"]) not in self.value]
        return ticked, rest

    def shown(self) -> list[Run]:
        """The rows drawn: the ticked runs first, then the first matches."""
        ticked, rest = self._ticked_and_rest()
        return ticked + rest[:max(0, PICKER_ROWS - len(ticked))]

    def tick(self, run_id: str, on: bool = True) -> bool:
        """Tick (or untick) ``run_id``; a tick past MAX_RUNS is refused (False) with a message."""
        self.refused = None
        if not on:
            self.value = tuple(r for r in self.value if r != run_id)
            return True
        if run_id in self.value:
            return True
        if len(self.value) >= MAX_RUNS:
            self.refused = (f"at most {MAX_RUNS} runs can be compared: untick one before adding "
                            f"another")
            self.redraw()
            return False
        self.value = (*self.value, run_id)
        return True

    # -- drawing -------------------------------------------------------------------------------

    def _box(self, run: Run) -> widgets.Checkbox:
        run_id = str(run["id"])
        box = self._boxes.get(run_id)
        if box is None:
            box = widgets.Checkbox(value=False, indent=False,
                                   layout=widgets.Layout(width="100%"))
            box.add_class("ql-run-choice")
            box.observe(lambda change, run_id=run_id: self._on_box(run_id, change["new"]),
                        names="value")
            self._boxes[run_id] = box
        box.description = run_label(run)
        return box

    def _on_box(self, run_id: str, on: bool) -> None:
        if not self._drawing:
            self.tick(run_id, on)  # a refused tick redraws: its box goes back to unticked

    def redraw(self) -> None:
        shown = self.shown()
        self._drawing = True
        try:
            boxes = [self._box(run) for run in shown]
            for run, box in zip(shown, boxes):
                box.value = str(run["id"]) in self.value
            self.rows.children = tuple(boxes)
        finally:
            self._drawing = False
        self.summary.value = self._summary()

    def _summary(self) -> str:
        ticked, rest = self._ticked_and_rest()
        parts = [f"{len(self.value)} selected (compare {MIN_RUNS} to {MAX_RUNS})",
                 f"{len(self.matches())} of {len(self._runs)} runs match"]
        hidden = len(rest) - max(0, PICKER_ROWS - len(ticked))
        if hidden > 0:
            parts.append(f"{hidden} more not shown: narrow the filter")
        text = f'<p style="{MESSAGE_STYLE}">{html.escape(" · ".join(parts))}</p>'
        if self.refused:
            text += f'<p class="ql-run-refused" style="{REFUSED_STYLE}">' \
                    f"{html.escape(self.refused)}</p>"
        return text
