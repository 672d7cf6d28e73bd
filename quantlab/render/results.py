"""Figures and HTML of one result (``ql.backtest`` or ``run.result()``): equity and drawdown,
trades, and for a sweep its heatmap matrix and best rows. The notebook's results view puts them
in widgets; the run reports put them in a page, so both show a run the same way."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from quantlab.errors import QuantlabError
from quantlab.metrics import LOWER_IS_BETTER
from quantlab.render import svg
from quantlab.render.format import frame_html

BEST_ROWS = 10
TRADES_ROWS = 200


def sweep_columns(result: Any) -> tuple[list[str], list[str]]:
    """(parameter columns, metric columns) of a sweep's table."""
    table: pd.DataFrame = result.table
    declared = [str(name) for name in (getattr(result, "params", None) or {})]
    params = [c for c in table.columns if c in declared]
    if not params:  # a result without .params: every non-numeric-metric column before metrics
        metrics = set(getattr(result, "metrics", {}) or {})
        params = [c for c in table.columns if c not in metrics]
    numeric = [c for c in table.columns
               if c not in params and pd.api.types.is_numeric_dtype(table[c])]
    return params, numeric


def break_even_html(result: Any) -> str:
    """The line under the metrics that says at what proportional commission the run stops
    making money (``Result.break_even_cost``), or why there is no such commission."""
    find = getattr(result, "break_even_cost", None)
    if find is None or not getattr(result, "metrics", None):
        return ""
    try:
        cost = find(strict=True)
    except QuantlabError as exc:
        text = f"none ({exc.fields.get('reason') or exc.message})"
    except Exception as exc:  # one line of the view must not break the view
        text = f"not available ({type(exc).__name__}: {exc})"
    else:
        text = (f"{cost:.4%} of traded value per fill" if cost != float("inf")
                else "none below 50% (it makes money at any commission the engine accepts)")
    return (f'<div class="ql-break-even">Break-even commission: {html.escape(text)}</div>')


def better(metric: str) -> str:
    """``"min"`` for metrics where smaller is better, else ``"max"``."""
    return "min" if metric in LOWER_IS_BETTER else "max"


def sweep_matrix(table: pd.DataFrame, metric: str, x: str, y: str | None) -> pd.DataFrame:
    """The heatmap's values: ``metric`` over ``y`` (rows) x ``x`` (columns).

    Other parameters are reduced by taking their best value of the metric (for each (x, y)
    cell: the best combination with that x and y), so the map answers "how good can it get
    here". Combinations the strategy skipped as invalid are NaN.
    """
    if y is None or y == x:
        best = table.groupby(x, sort=True)[metric].agg(better(metric))
        return pd.DataFrame([best.to_numpy()], index=pd.Index([metric]),
                            columns=best.index)
    grouped = table.groupby([y, x], sort=True)[metric].agg(better(metric))
    return grouped.unstack(x).sort_index()


def best_rows(table: pd.DataFrame, metric: str, n: int = BEST_ROWS) -> pd.DataFrame:
    """The ``n`` best combinations by ``metric`` (NaN last)."""
    ascending = better(metric) == "min"
    return table.sort_values(metric, ascending=ascending, na_position="last").head(n)


def equity_svg(equity: pd.Series, drawdown: pd.Series | None, *, width: int = 760) -> str:
    """Equity above drawdown, on the same dates."""
    charts = [svg.line_chart(equity, title="Equity", width=width, height=240,
                             value_format="{:,.0f}")]
    if drawdown is not None and len(drawdown):
        charts.append(svg.line_chart(drawdown, title="Drawdown (%)", width=width, height=150,
                                     color="#d62728", area=True, value_format="{:.1f}"))
    return '<div class="ql-charts">' + "<br>".join(charts) + "</div>"


def trades_html(trades: pd.DataFrame | None, open_trades: pd.DataFrame | None) -> str:
    parts = []
    if trades is None or trades.empty:
        parts.append("<div><i>no closed trades</i></div>")
    else:
        parts.append(f"<div><b>{len(trades):,} closed trades</b></div>")
        parts.append(frame_html(trades, max_rows=TRADES_ROWS, decimals=2))
    if open_trades is not None and not open_trades.empty:
        parts.append(f"<div><b>{len(open_trades):,} open at the end</b> (marked to market, "
                     "left out of trade statistics)</div>")
        parts.append(frame_html(open_trades, max_rows=TRADES_ROWS, decimals=2))
    return "".join(parts)
