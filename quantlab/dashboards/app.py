"""The widgets of the Voila dashboards: comparing runs, and statistics over all runs.

Each dashboard is one ipywidgets box that the notebook displays; the views are the same HTML
as ``ql.compare(...)`` and ``ql.stats(...)`` show in a notebook (:mod:`quantlab.render.html`),
so a stakeholder sees exactly the researcher's numbers. Pages take their initial state from the
URL's query string (``?comparison=<id>``, ``?runs=<id>,<id>``, ``?period=6M&strategy=x``).
"""

from __future__ import annotations

import html
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import ipywidgets as widgets

from quantlab.analytics import COMPARISONS, compare, dashboard_url, stats
from quantlab.dashboards.picker import RunPicker, selection_message
from quantlab.dashboards.serve import LAB_ROUTE
from quantlab.errors import QuantlabError, did_you_mean, nearest
from quantlab.registry import open_registry
from quantlab.render.figures import plotly_js_html
from quantlab.render.html import comparison_html, stats_html


class HTMLView(widgets.Output):
    """An HTML view whose scripts run (a widgets.HTML's do not): the plotly figures of the
    comparison and statistics views. ``value`` is the HTML shown; plotly.js is put inline once,
    ahead of the first view, so the dashboard needs no network."""

    def __init__(self) -> None:
        super().__init__()
        self._value = ""
        self._js_sent = False

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, text: str) -> None:
        self._value = text
        outputs = []
        if text and not self._js_sent:
            outputs.append(_html_output(plotly_js_html()))
        outputs.append(_html_output(text))
        self._js_sent = self._js_sent or bool(text)
        # the page keeps plotly.js from the first view: later views send only their own HTML
        self.outputs = tuple(outputs) if text else ()


def _html_output(text: str) -> dict[str, Any]:
    return {"output_type": "display_data", "data": {"text/html": text}, "metadata": {}}

RUN_CHOICES = 1000  # the most recent completed runs the picker searches (it draws 30)
ALL = "(all)"
PERIODS = (("last 30 days", "30D"), ("last 3 months", "3M"), ("last 6 months", "6M"),
           ("last year", "1Y"), ("year to date", "YTD"), ("all time", "all"))
MESSAGE_STYLE = "font-family:sans-serif;font-size:13px;color:#555;margin:6px 0"
ERROR_STYLE = "font-family:sans-serif;font-size:13px;color:#b00020;margin:6px 0"


def parse_query(query: str | None) -> dict[str, str]:
    """``"comparison=abc&x=1"`` -> ``{"comparison": "abc", "x": "1"}`` (last value wins)."""
    parsed = parse_qs((query or "").lstrip("?"), keep_blank_values=False)
    return {key: values[-1] for key, values in parsed.items() if values}


def _message(text: str, error: bool = False) -> str:
    return f'<p class="ql-dashboard-message" style="{ERROR_STYLE if error else MESSAGE_STYLE}">' \
           f"{html.escape(text)}</p>"


# --------------------------------------------------------------------------- compare


class CompareDashboard(widgets.VBox):
    """Pick 2 to 5 completed runs; see their metrics, equity overlay, drawdowns, correlation
    and config differences; save the comparison to share its URL."""

    def __init__(self, query: str | None = None) -> None:
        self.picker = RunPicker()
        self.refresh_button = widgets.Button(description="Refresh list", icon="refresh")
        self.save_button = widgets.Button(description="Save comparison", icon="save",
                                          disabled=True)
        self.save_button.add_class("ql-save")
        self.status = widgets.HTML()
        self.status.add_class("ql-status")
        self.view = HTMLView()
        self.view.add_class("ql-view")
        self.comparison: Any = None
        self.comparison_id: str | None = None  # the saved comparison the page shows, if any
        self.title: str | None = None
        self._loading = False
        super().__init__([
            widgets.HTML('<h2 style="font-family:sans-serif;margin:4px 0">Compare runs</h2>'),
            self.picker,
            widgets.HBox([self.refresh_button, self.save_button]),
            self.status,
            self.view,
        ])
        self.add_class("ql-compare-dashboard")
        self.refresh_button.on_click(lambda _: self.load_choices())
        self.save_button.on_click(lambda _: self.save())
        self.picker.observe(self._on_pick, names="value")
        self.load_choices()
        self.open_query(parse_query(query))

    def load_choices(self, extra_ids: Sequence[str] = ()) -> None:
        """Offer the latest completed runs (plus ``extra_ids`` if older), keeping the
        selection."""
        registry = open_registry()
        docs = registry.find_runs(status="completed", sort="-finished_at", limit=RUN_CHOICES)
        known = {d["id"] for d in docs}
        for run_id in extra_ids:
            if run_id not in known:
                try:
                    docs.append(registry.get_run(run_id))
                except QuantlabError:
                    continue
        self._loading = True
        try:
            self.picker.set_runs(docs)
        finally:
            self._loading = False
        if not docs:
            self.status.value = _message("no completed runs yet: submit some with ql.submit or "
                                         "%%backtest, then press Refresh list")

    def open_query(self, params: Mapping[str, str]) -> None:
        """Preselect the runs of ``?comparison=<id>`` (a saved comparison) or ``?runs=a,b``."""
        run_ids: list[str] = []
        if params.get("comparison"):
            try:
                doc = open_registry().get_document(COMPARISONS, params["comparison"])
            except QuantlabError as exc:
                self.status.value = _message(str(exc), error=True)
                return
            run_ids = list(doc.get("run_ids") or [])
            self.comparison_id = params["comparison"]
            self.title = doc.get("title")
        elif params.get("runs"):
            run_ids = [r.strip() for r in params["runs"].split(",") if r.strip()]
        if run_ids:
            self.load_choices(extra_ids=run_ids)
            available = self.picker.run_ids()
            self.picker.value = tuple(r for r in run_ids if r in available)

    def _on_pick(self, change: Mapping[str, Any]) -> None:
        if not self._loading:
            self.update(list(change["new"]))

    def update(self, run_ids: Sequence[str]) -> None:
        """Recompute the comparison for ``run_ids`` and redraw."""
        self.save_button.disabled = True
        problem = selection_message(len(run_ids))
        if problem is not None:
            self.comparison = None
            self.view.value = ""
            self.status.value = _message(problem)
            return
        self.status.value = _message(f"comparing {len(run_ids)} runs…")
        saved = self.comparison_id
        try:
            cmp = compare(list(run_ids))
        except QuantlabError as exc:
            self.comparison = None
            self.view.value = ""
            self.status.value = _message(str(exc), error=True)
            return
        if saved is not None and self._saved_runs(saved) == list(run_ids):
            cmp.id, cmp.title = saved, self.title
        self.comparison = cmp
        self.view.value = comparison_html(cmp, plotly_js=False)
        self.status.value = ""
        self.save_button.disabled = False

    @staticmethod
    def _saved_runs(comparison_id: str) -> list[str]:
        try:
            return list(open_registry().get_document(COMPARISONS, comparison_id)["run_ids"])
        except QuantlabError:
            return []

    def save(self) -> str | None:
        """Save the comparison shown; the status line gives its shareable URL."""
        if self.comparison is None:
            return None
        comparison_id = str(self.comparison.save())
        self.comparison_id, self.title = comparison_id, self.comparison.title
        url = str(self.comparison.url)
        link = f'<a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a>'
        here = lab_page()
        if here is not None:
            # served by the Lab's server: the link that works here first, then the stakeholders'
            lab_url = dashboard_url(comparison_id, here)
            link = (f'<a href="{html.escape(lab_url)}" target="_blank">open in the Lab</a>; for '
                    f"people without the Lab: {link}")
        self.status.value = (
            f'<p class="ql-saved" style="{MESSAGE_STYLE}">saved as <code>{html.escape(comparison_id)}'
            f"</code>: {link}</p>"
        )
        return comparison_id


def lab_page() -> str | None:
    """The page's own path when the Lab's Jupyter server serves it
    (``<base_url>quantlab/dashboards/compare``, from the request Voila gives the kernel), else
    None (``quantlab dashboard``, or no Voila)."""
    path = os.environ.get("SCRIPT_NAME", "").rstrip("/")
    return path if path.endswith(f"/{LAB_ROUTE}/compare") else None


# --------------------------------------------------------------------------- analytics


def _distinct(docs: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    values: set[str] = set()
    for doc in docs:
        value = doc.get(key)
        if isinstance(value, list):
            values.update(str(v) for v in value)
        elif value:
            values.add(str(value))
    return sorted(values)


class AnalyticsDashboard(widgets.VBox):
    """Statistics over the registry's runs with filters: period, strategy, tag, user."""

    def __init__(self, query: str | None = None) -> None:
        params = parse_query(query)
        self.period = widgets.Dropdown(options=list(PERIODS), value="1Y", description="Period")
        self.strategy = widgets.Dropdown(options=[ALL], value=ALL, description="Strategy")
        self.tag = widgets.Dropdown(options=[ALL], value=ALL, description="Tag")
        self.user = widgets.Dropdown(options=[ALL], value=ALL, description="User")
        for name, box in (("period", self.period), ("strategy", self.strategy),
                          ("tag", self.tag), ("user", self.user)):
            box.add_class(f"ql-filter-{name}")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.status = widgets.HTML()
        self.view = HTMLView()
        self.view.add_class("ql-view")
        self._loading = False
        self.query_problems: list[str] = []
        super().__init__([
            widgets.HTML('<h2 style="font-family:sans-serif;margin:4px 0">Backtest analytics'
                         "</h2>"),
            widgets.HBox([self.period, self.strategy]),
            widgets.HBox([self.tag, self.user, self.refresh_button]),
            self.status,
            self.view,
        ])
        self.add_class("ql-analytics-dashboard")
        self.load_choices()
        self._apply_query(params)
        for box in (self.period, self.strategy, self.tag, self.user):
            box.observe(self._on_filter, names="value")
        self.refresh_button.on_click(self._refresh)
        self.update()

    def _on_filter(self, _: Any = None) -> None:
        # the visitor chose a filter: what the URL asked for no longer stands above the view
        if not self._loading:
            self.query_problems = []
        self.update()

    def _refresh(self, _: Any = None) -> None:
        self.load_choices()
        self.update()

    def load_choices(self) -> None:
        """Fill the strategy, tag and user filters from the runs in the registry."""
        docs = open_registry().find_runs(limit=None)
        self._loading = True
        try:
            for box, key in ((self.strategy, "strategy"), (self.tag, "tags"),
                             (self.user, "user")):
                current = box.value
                options = [ALL, *_distinct(docs, key)]
                box.options = options
                box.value = current if current in options else ALL
        finally:
            self._loading = False

    def _apply_query(self, params: Mapping[str, str]) -> None:
        self._loading = True
        try:
            self.query_problems = analytics_query_problems(params, {
                "strategy": self.strategy.options, "tag": self.tag.options,
                "user": self.user.options})
            periods = {value for _, value in PERIODS}
            if params.get("period") in periods:
                self.period.value = params["period"]
            for box, key in ((self.strategy, "strategy"), (self.tag, "tag"), (self.user, "user")):
                if params.get(key) in box.options:
                    box.value = params[key]
        finally:
            self._loading = False

    def filters(self) -> dict[str, Any]:
        return {
            "period": self.period.value,
            "strategy": None if self.strategy.value == ALL else self.strategy.value,
            "tag": None if self.tag.value == ALL else self.tag.value,
            "user": None if self.user.value == ALL else self.user.value,
        }

    def update(self) -> None:
        if self._loading:
            return
        try:
            result = stats(**self.filters())
        except QuantlabError as exc:
            self.status.value = _message(str(exc), error=True)
            return
        # what the URL asked for and could not be applied stays said above the statistics
        self.status.value = "".join(_message(p, error=True) for p in self.query_problems)
        self.view.value = stats_html(result, plotly_js=False)


def analytics_query_problems(params: Mapping[str, str],
                             choices: Mapping[str, Sequence[str]]) -> list[str]:
    """What is wrong with an analytics URL's filters (``?period=bogus``, a strategy no run
    has), each with the valid values and the closest one; empty when all apply."""
    problems = []
    period = params.get("period")
    periods = [value for _, value in PERIODS]
    if period is not None and period not in periods:
        close = nearest(period, periods, 0.3) or nearest(period.upper(), periods, 0.3)
        hint = f" — did you mean '{close}'?" if close else ""
        problems.append(f"period {period!r} is not a period{hint}; use one of "
                        f"{', '.join(periods)} (showing the last year)")
    for key, options in choices.items():
        value = params.get(key)
        if value is not None and value not in options:
            known = [o for o in options if o != ALL]
            listed = f"; known: {', '.join(known[:10])}" if known else ""
            problems.append(f"no run has {key} {value!r}{did_you_mean(value, known)} (showing "
                            f"all runs{listed})")
    return problems


def query_string(retry_every: float = 0.5) -> str:
    """The page's query string inside Voila, or "" outside Voila.

    A pre-heated kernel runs the notebook before anyone asks, then waits here for the request
    that takes it. Voila's helper gives up when its websocket to the server does not open
    within 5 s (a busy server) and the page would then ignore its query string
    (``?comparison=...``), so this keeps asking until the request info arrives.
    """
    if os.environ.get("VOILA_PREHEAT", "False") == "False":
        return os.environ.get("QUERY_STRING", "")
    # only a pre-heated Voila kernel gets here; elsewhere Voila's heavy import is not needed
    from voila.utils import wait_for_request

    while "QUERY_STRING" not in os.environ:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Failed to connect": we try again
            wait_for_request()
        if "QUERY_STRING" not in os.environ:
            time.sleep(retry_every)
    return os.environ["QUERY_STRING"]
