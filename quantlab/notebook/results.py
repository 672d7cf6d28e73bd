"""The results view: metrics, equity and drawdown, trades, and for a sweep a heatmap.

Built from a ``Result`` (``ql.backtest`` or ``run.result()``) as plain ipywidgets holding HTML
and self-contained SVG (see :mod:`quantlab.render`), so it renders offline in JupyterLab,
Voila and executed notebooks, and its state (what it shows) is saved with the notebook.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from quantlab.render import svg
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
    better,
    equity_svg,
    sweep_columns,
    sweep_matrix,
    trades_html,
)

# Slider stops for zooming the equity chart; a few hundred is plenty to pick a period.
MAX_ZOOM_STOPS = 240
NONE_PARAM = "(none)"


def _zoom_stops(index: pd.DatetimeIndex) -> list[tuple[str, int]]:
    n = len(index)
    positions = np.unique(np.linspace(0, n - 1, min(n, MAX_ZOOM_STOPS)).astype(np.int64))
    fmt = "%Y-%m-%d" if (index[-1] - index[0]) > pd.Timedelta(days=3) else "%m-%d %H:%M"
    return [(index[p].strftime(fmt), int(p)) for p in positions]


class EquityPanel(widgets.VBox):
    """Equity and drawdown charts with a date-range slider to zoom on a period."""

    def __init__(self, equity: pd.Series, drawdown: pd.Series | None) -> None:
        self._equity = equity
        self._drawdown = drawdown
        self.chart = widgets.HTML(equity_svg(equity, drawdown))
        children: list[widgets.Widget] = []
        if len(equity) > 2:
            stops = _zoom_stops(pd.DatetimeIndex(equity.index))
            self.zoom = widgets.SelectionRangeSlider(
                options=stops, index=(0, len(stops) - 1), description="Period",
                continuous_update=False, layout=widgets.Layout(width="760px"),
            )
            self.zoom.observe(self._on_zoom, names="value")
            children.append(self.zoom)
        children.append(self.chart)
        super().__init__(children)

    def _on_zoom(self, change: dict[str, Any]) -> None:
        start, stop = change["new"]
        self.show_period(start, stop)

    def show_period(self, start: int, stop: int) -> None:
        """Redraw for bars ``start..stop`` (positions, inclusive)."""
        equity = self._equity.iloc[start:stop + 1]
        drawdown = None
        if self._drawdown is not None:
            # Drawdown within the period: measured from the period's own running peak.
            peak = equity.cummax()
            drawdown = (equity / peak - 1.0) * 100.0
        self.chart.value = equity_svg(equity, drawdown)


class SweepPanel(widgets.VBox):
    """Heatmap of a metric over two parameters (dropdowns) and the best combinations."""

    def __init__(self, result: Any) -> None:
        self.params, self.metrics = sweep_columns(result)
        # ranked by deflated Sharpe by default, PBO beside the heatmap (quantlab.research)
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
        self.heatmap = widgets.HTML()
        self.best = widgets.HTML()
        self.summary = widgets.HTML(self._summary(result))
        for control in (self.metric, self.x_param, self.y_param):
            control.observe(self._redraw, names="value")
        self._redraw()
        super().__init__([
            self.summary,
            widgets.HBox([self.metric, self.x_param, self.y_param]),
            widgets.HBox([self.heatmap, widgets.HTML(overfit_badge)]),
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
                f"headline metrics are those of the best: <b>{html.escape(text)}</b></div>")

    def _redraw(self, _change: dict[str, Any] | None = None) -> None:
        metric = self.metric.value
        x = self.x_param.value
        y = None if self.y_param.value == NONE_PARAM else self.y_param.value
        if not metric or x is None:
            self.heatmap.value = "<i>this sweep has no parameter or metric column to map</i>"
            self.best.value = ""
            return
        matrix = sweep_matrix(self.table, metric, x, y)
        reduced = [p for p in self.params if p not in {x, y}]
        note = (f" (best over {', '.join(reduced)})" if reduced else "")
        self.heatmap.value = svg.heatmap(
            matrix, title=f"{metric_label(metric)} by {x}" + (f" × {y}" if y else "") + note,
            x_name=x, y_name=y or "", metric=metric_label(metric), best=better(metric))
        columns = [*self.params] + [m for m in (metric, *HEADLINE_METRICS)
                                    if m in self.metrics and m not in self.params]
        columns = list(dict.fromkeys(columns))
        top = best_rows(self.table, metric)[columns]
        rows = [[*(row[p] for p in self.params),
                 *(format_metric(m, row[m]) for m in columns[len(self.params):])]
                for _, row in top.iterrows()]
        header = [*self.params, *(metric_label(m) for m in columns[len(self.params):])]
        self.best.value = html_table(header, rows, left_columns=len(self.params))


class ResultsView(widgets.VBox):
    """Metrics, equity/drawdown, trades and (for a sweep) the sweep panel, in tabs."""

    def __init__(self, result: Any, *, heading: str | None = None) -> None:
        self.result = result
        metrics = dict(getattr(result, "metrics", {}) or {})
        self.metrics_html = widgets.HTML(metrics_table_html(metrics))
        self.metrics_html.add_class("ql-metrics")
        tabs: list[tuple[str, widgets.Widget]] = []
        table = getattr(result, "table", None)
        self.sweep: SweepPanel | None = None
        if isinstance(table, pd.DataFrame) and not table.empty:
            self.sweep = SweepPanel(result)
            tabs.append(("Sweep", self.sweep))
        equity = getattr(result, "equity", None)
        self.equity_panel: EquityPanel | None = None
        if isinstance(equity, pd.Series) and len(equity):
            self.equity_panel = EquityPanel(equity, getattr(result, "drawdown", None))
            tabs.append(("Equity & drawdown", self.equity_panel))
        self.trades_html = widgets.HTML(trades_html(getattr(result, "trades", None),
                                                    getattr(result, "open_trades", None)))
        tabs.append(("Trades", self.trades_html))
        self.tabs = widgets.Tab(children=[w for _, w in tabs], titles=[t for t, _ in tabs])
        children: list[widgets.Widget] = []
        if heading:
            children.append(widgets.HTML(heading))
        children.extend([self.metrics_html, self.tabs])
        super().__init__(children)
        self.add_class("ql-results")
