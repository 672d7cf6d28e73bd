"""The results view: metrics, the interactive figure of the result, trades, and for a sweep its
heatmap (click a cell: that combination's equity and trades), parallel coordinates and
parameter stability.

The figures are :mod:`quantlab.render.figures`' plotly figures, shown as plotly's own output
(``application/vnd.plotly.v1+json``, drawn by the jupyterlab-plotly extension that ships with
plotly: offline, plotly.js loaded once per page by that renderer, and only the figure's data
kept in the notebook). The sweep's heatmap too: its clicks reach Python through
:class:`HeatmapClicks`, a widget of a few hundred bytes that listens to the drawn map (a
plotly ``FigureWidget`` would carry plotly.js, ~5 MB, into the notebook's widget state with
every view). The trades table is the reports' own HTML table (sorts, filters, pages).
"""

from __future__ import annotations

import html
import json
import threading
import uuid
from typing import Any

import anywidget
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import traitlets

from quantlab.render import figures
from quantlab.render.confidence import confidence_html
from quantlab.render.format import (
    HEADLINE_METRICS,
    format_metric,
    html_table,
    metric_label,
    metrics_table_html,
)
from quantlab.render.overfitting import sweep_view
from quantlab.render.results import (
    best_rows,
    break_even_html,
    cell_combinations,
    result_trades_html,
    sweep_columns,
    trades_table_html,
)
from quantlab.render.resultviews import plot
from quantlab.render.validation import validation_parts
from quantlab.research import CrossValidation, WalkForward

NONE_PARAM = "(none)"


def _warm_up_plotly() -> None:
    # plotly's renderers and FigureWidget import nbformat and jupyterlab on first use (1-2 s):
    # done in the background when the notebook package loads, so that the results view of the
    # first run that completes does not wait for them
    import plotly.graph_objs._figurewidget
    import plotly.io  # noqa: F401


threading.Thread(target=_warm_up_plotly, name="quantlab-plotly-warm-up", daemon=True).start()


def html_output(text: str) -> widgets.Output:
    """An Output showing ``text`` as HTML: unlike a widgets.HTML, its scripts run (the trades
    table sorts and pages in the browser)."""
    out = widgets.Output()
    out.outputs = ({"output_type": "display_data", "data": {"text/html": text},
                    "metadata": {}},)
    return out


def figure_outputs(fig: go.Figure) -> tuple[dict[str, Any], ...]:
    """An Output's outputs showing ``fig`` as plotly's mime type (what ``fig.show()`` shows
    in Lab): the figure's data only, drawn by plotly's renderer."""
    return ({"output_type": "display_data", "metadata": {},
             "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                      "text/plain": str(fig.layout.title.text or "figure")}},)


def figure_output(fig: go.Figure) -> widgets.Output:
    """An Output showing ``fig`` as plotly's mime type."""
    out = widgets.Output()
    out.outputs = figure_outputs(fig)
    return out


# the plot drawn by plotly's renderer in the Output whose class is `target`: its clicks are sent
# to Python as {x, y} (strings, as the axes print them). The renderer may draw the plot late (a
# hidden tab) or anew (a redraw), so the widget keeps looking for a plot it has not hooked yet.
_CLICKS_ESM = """
function hook(model, el) {
  const holder = document.querySelector('.' + model.get('target'));
  const gd = holder && holder.querySelector('.js-plotly-plot');
  if (!gd || gd.__qlClicks === model || typeof gd.on !== 'function') return;
  gd.__qlClicks = model;
  gd.on('plotly_click', (event) => {
    const point = event && event.points && event.points[0];
    if (!point) return;
    model.send({x: String(point.x), y: point.y === undefined ? null : String(point.y)});
  });
}
export default {
  render({ model, el }) {
    hook(model, el);
    const timer = setInterval(() => hook(model, el), 300);
    return () => clearInterval(timer);
  }
};
"""


class HeatmapClicks(anywidget.AnyWidget):
    """Sends the clicks on the heatmap drawn in the Output of class ``target`` to Python
    (``on_click(x, y)``); its own state is a few hundred bytes, the map is drawn by plotly's
    renderer."""

    _esm = traitlets.Unicode(_CLICKS_ESM).tag(sync=True)
    target = traitlets.Unicode("").tag(sync=True)

    def __init__(self, target: str) -> None:
        super().__init__(target=target)
        self.layout.display = "none"
        self._handlers: list[Any] = []
        self.on_msg(self._message)

    def on_click(self, handler: Any) -> None:
        self._handlers.append(handler)

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and "x" in content:
            for handler in self._handlers:
                handler(content["x"], content.get("y"))


class ChartPanel(widgets.VBox):
    """The result's figure: price with trades and indicators, equity against buy & hold,
    drawdown and per-trade P&L on one zoomable time axis."""

    def __init__(self, result: Any) -> None:
        self.figure = plot(result, kind="result")
        super().__init__([figure_output(self.figure)])


class SweepPanel(widgets.VBox):
    """Heatmap of a metric over two parameters (dropdowns); a click on a cell shows that
    combination's equity and trades; parallel coordinates (more than two parameters), the
    metric along each parameter, and the best combinations."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.params, self.metrics = sweep_columns(result)
        # ranked by deflated Sharpe by default, PBO beside the heatmap (quantlab.research)
        self.table: pd.DataFrame
        self.table, overfit_badge = sweep_view(result)
        if "dsr" in self.table.columns:
            self.metrics = ["dsr", *self.metrics]
        default_metric = next((m for m in ("dsr", "sharpe") if m in self.metrics),
                              (self.metrics or [""])[0])
        self.metric = widgets.Dropdown(
            options=[(metric_label(m), m) for m in self.metrics], value=default_metric,
            description="Metric")
        x_default = self.params[0] if self.params else None
        y_options = [*self.params, NONE_PARAM]
        y_default = self.params[1] if len(self.params) > 1 else NONE_PARAM
        self.x_param = widgets.Dropdown(options=self.params, value=x_default, description="x")
        self.y_param = widgets.Dropdown(options=y_options, value=y_default, description="y")
        self.message = widgets.HTML()
        self.figure: go.Figure | None = None
        # the map: plotly's own output (its renderer brings plotly.js, once per page) and the
        # small widget that brings its clicks here
        # unique on the page, across kernels: two notebooks' sweep views must not find each
        # other's map (a per-kernel counter gave both "ql-heatmap-1")
        target = f"ql-heatmap-{uuid.uuid4().hex}"
        self.map_output = widgets.Output()
        self.map_output.add_class("ql-heatmap")
        self.map_output.add_class(target)
        self.clicks = HeatmapClicks(target)
        self.clicks.on_click(self._on_click)
        self.map_box = widgets.Box([self.map_output, self.clicks])
        self.extra = widgets.VBox()
        self.detail = widgets.VBox()
        self.best = widgets.HTML()
        self.summary = widgets.HTML(self._summary(result))
        for control in (self.metric, self.x_param, self.y_param):
            control.observe(self._redraw, names="value")
        self._redraw()
        super().__init__([
            self.summary,
            widgets.HBox([self.metric, self.x_param, self.y_param]),
            self.message,
            widgets.HBox([self.map_box, widgets.HTML(overfit_badge)]),
            self.detail,
            self.extra,
            widgets.HTML("<b>Best combinations</b>"),
            self.best,
        ])

    def _summary(self, result: Any) -> str:
        chosen = getattr(result, "params", None) or {}
        text = ", ".join(f"{k}={v}" for k, v in chosen.items())
        partial = " (partial: the run was cancelled; finished combinations only)" if getattr(
            result, "partial", False) else ""
        return ('<div style="font-family:sans-serif;font-size:13px">'
                f"{len(self.table):,} combinations{html.escape(partial)}. Equity, trades and "
                f"headline metrics are those of the best: <b>{html.escape(text)}</b>. Click a "
                "cell of the heatmap for its own.</div>")

    def _axes(self) -> tuple[str, str | None]:
        y = None if self.y_param.value == NONE_PARAM else self.y_param.value
        return self.x_param.value, y

    def _redraw(self, _change: dict[str, Any] | None = None) -> None:
        metric = self.metric.value
        x, y = self._axes()
        if not metric or x is None:
            self.message.value = "<i>this sweep has no parameter or metric column to map</i>"
            self.best.value = ""
            return
        try:
            fig = figures.heatmap_figure(self.table, self.params, self.metrics, metric=metric,
                                         x=x, y=y)
        except Exception as exc:  # x == y: say so, keep the last map
            self.message.value = (f'<div class="ql-error" style="color:#b00">'
                                  f"{html.escape(str(exc))}</div>")
            return
        self.message.value = ""
        self.figure = fig
        self.map_output.outputs = figure_outputs(fig)
        extra: list[widgets.Widget] = []
        if len(self.params) > 2:
            extra.append(figure_output(figures.parallel_figure(self.table, self.params, metric)))
        extra.append(figure_output(figures.stability_figure(self.table, self.params, metric)))
        self.extra.children = extra
        columns = [*self.params] + [m for m in (metric, *HEADLINE_METRICS)
                                    if m in self.metrics and m not in self.params]
        columns = list(dict.fromkeys(columns))
        top = best_rows(self.table, metric)[columns]
        rows = [[*(row[p] for p in self.params),
                 *(format_metric(m, row[m]) for m in columns[len(self.params):])]
                for _, row in top.iterrows()]
        header = [*self.params, *(metric_label(m) for m in columns[len(self.params):])]
        self.best.value = html_table(header, rows, left_columns=len(self.params))

    def _on_click(self, x_value: Any, y_value: Any) -> None:
        self.show_cell(x_value, y_value)

    def show_cell(self, x_value: Any, y_value: Any) -> Any:
        """Show the combination of the heatmap cell at (``x_value``, ``y_value``) (as the
        axes print them): its equity, drawdown and trades. Returns its Result."""
        x, y = self._axes()
        cells = cell_combinations(self.table, self.params, self.metric.value, x, y)
        at = cells[x].map(figures._axis_value) == str(x_value)
        if y is not None:
            at &= cells[y].map(figures._axis_value) == str(y_value)
        if not at.any():
            self.detail.children = [widgets.HTML(f"<i>no combination at {x}={x_value}"
                                                 + (f", {y}={y_value}" if y else "") + "</i>")]
            return None
        row = cells[at].to_dict("records")[0]  # records keep int parameters ints
        params = {p: row[p] for p in self.params}
        combo = self.result.combination(**params)
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        units = str(combo.config.get("units", "whole"))
        self.detail.children = [
            figure_output(figures.equity_figure(combo.equity, combo.drawdown,
                                                title=f"Equity of {label}")),
            html_output(trades_table_html(combo.trades, units=units)),
        ]
        return combo


def results_view(result: Any, *, heading: str | None = None) -> widgets.Widget:
    """The view of a run's result: a walk-forward's or cross-validation's own view, else the
    results view of a backtest or sweep."""
    if isinstance(result, WalkForward | CrossValidation):
        return ValidationView(result, heading=heading)
    return ResultsView(result, heading=heading)


class ValidationView(widgets.VBox):
    """A walk-forward's or cross-validation's view (:mod:`quantlab.render.validation`, as their
    ``_repr_html_``): headline and summary, the figure as plotly's output, the folds (splits)."""

    def __init__(self, result: Any, *, heading: str | None = None) -> None:
        self.result = result
        head, fig, table = validation_parts(result)
        self.figure = fig
        children: list[widgets.Widget] = [widgets.HTML(heading)] if heading else []
        children += [widgets.HTML(head), figure_output(fig), html_output(table)]
        super().__init__(children)
        self.add_class("ql-results")


class ResultsView(widgets.VBox):
    """Metrics, equity/drawdown, trades and (for a sweep) the sweep panel, in tabs."""

    def __init__(self, result: Any, *, heading: str | None = None) -> None:
        self.result = result
        metrics = dict(getattr(result, "metrics", {}) or {})
        self.metrics_html = widgets.HTML(metrics_table_html(metrics) + break_even_html(result)
                                         + confidence_html(result))
        self.metrics_html.add_class("ql-metrics")
        tabs: list[tuple[str, widgets.Widget]] = []
        table = getattr(result, "table", None)
        self.sweep: SweepPanel | None = None
        if isinstance(table, pd.DataFrame) and not table.empty:
            self.sweep = SweepPanel(result)
            tabs.append(("Sweep", self.sweep))
        equity = getattr(result, "equity", None)
        self.chart: ChartPanel | None = None
        if isinstance(equity, pd.Series) and len(equity):
            self.chart = ChartPanel(result)
            tabs.append(("Chart", self.chart))
        self.trades_view = html_output(result_trades_html(result))
        tabs.append(("Trades", self.trades_view))
        self.tabs = widgets.Tab(children=[w for _, w in tabs], titles=[t for t, _ in tabs])
        children: list[widgets.Widget] = []
        if heading:
            children.append(widgets.HTML(heading))
        children.extend([self.metrics_html, self.tabs])
        super().__init__(children)
        self.add_class("ql-results")
