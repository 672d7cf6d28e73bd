"""The sections of a run report, as HTML built from a run's record and result.

``run_report.ipynb`` calls these one per cell, so the notebook stays a readable outline and
the content is tested as plain functions. The look (metric labels, number formats, charts) is
the results view's (:mod:`quantlab.render`), so a report shows a run as the notebook did.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantlab.durations import format_duration
from quantlab.render.figures import figure_html, heat_color, plotly_js_html
from quantlab.render.format import audit_badge, metrics_table_html, status_badge
from quantlab.render.html import NOTE, h
from quantlab.render.results import result_trades_html, sweep_views_html
from quantlab.render.resultviews import plot

MONTHS = [calendar.month_abbr[m] for m in range(1, 13)]
# Config keys shown first in the report, in reading order; the rest follow alphabetically.
CONFIG_ORDER = ("strategy", "params", "symbols", "start", "end", "interval", "cash", "commission",
                "commission_fixed", "slippage", "fill", "units", "size", "weights", "allow_short",
                "stop_loss", "take_profit", "close_at_end")


def _when(epoch: Any) -> str:
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(float(epoch), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def header_html(record: Mapping[str, Any]) -> str:
    """Name, id, status, author, times, versions."""
    name = record.get("name") or record["id"]
    duration = ""
    if record.get("started_at") and record.get("finished_at"):
        ran = float(record["finished_at"]) - float(record["started_at"])
        duration = f" · ran {format_duration(ran)}"
    cached = (f" · answered from the cache of run {h(record['cached_from'])}"
              if record.get("cached_from") else "")
    partial = " · <b>partial result</b> (cancelled sweep)" if record.get("partial") else ""
    tags = ", ".join(record.get("tags") or []) or "—"
    return (
        f'<div class="ql-report-header"><h2 style="font-family:sans-serif;margin:4px 0">'
        f"{h(name)}</h2>"
        f'<p {NOTE}>run <code class="ql-run-id">{h(record["id"])}</code> '
        f'{status_badge(str(record.get("status")))}{audit_badge(record.get("config"))} · by '
        f'{h(record.get("user") or "—")} · '
        f"tags {h(tags)}</p>"
        f'<p {NOTE}>queued {_when(record.get("queued_at"))} · finished '
        f'{_when(record.get("finished_at"))}{duration}{cached}{partial}</p>'
        f'<p {NOTE}>engine {h(record.get("engine_version") or "—")} · data fingerprint '
        f'<code>{h(str(record.get("data_fingerprint") or "—")[:16])}</code> · config hash '
        f'<code>{h(str(record.get("config_hash") or "—")[:16])}</code></p></div>'
    )


def _config_value(value: Any) -> str:
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str)
    return "—" if value is None else str(value)


def config_html(config: Mapping[str, Any]) -> str:
    """The config as a two-column table (the user strategy's code, if any, in full below)."""
    keys = [k for k in CONFIG_ORDER if k in config]
    keys += sorted(k for k in config if k not in keys and k != "strategy_source")
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0">{h(k)}</th>'
        f'<td class="ql-config-{h(k)}" style="font-family:monospace">{h(_config_value(config[k]))}'
        f"</td></tr>" for k in keys
    )
    table = f'<table class="ql-report-config" style="font-size:12px">{rows}</table>'
    source = config.get("strategy_source")
    if source:
        table += (f'<details><summary {NOTE}>strategy code</summary><pre style="font-size:11px">'
                  f"{h(source)}</pre></details>")
    return table


def metrics_html(metrics: Mapping[str, Any]) -> str:
    """The run's metrics, grouped (Returns, Risk, Trades) as in the notebook."""
    if not metrics:
        return f'<p {NOTE}>this run recorded no metrics</p>'
    return metrics_table_html(dict(metrics))


def plotly_js() -> str:
    """plotly.js, inline: the report's first output, so that its figures draw with no
    network."""
    return plotly_js_html()


def charts_html(result: Any) -> str:
    """The result's interactive figure (price and trades when the data store still holds the
    run's bars, equity against buy & hold, drawdown, per-trade P&L); plotly.js must be on the
    page (:func:`plotly_js`)."""
    return figure_html(plot(result, kind="result"), div_id="ql-result-figure")


def trades_html(result: Any, max_rows: int = 50) -> str:
    """Every closed trade (sortable, filterable, ``max_rows`` a page) and the positions still
    open at the end."""
    return result_trades_html(result, page_size=max_rows)


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Returns in percent by year (rows) and month (columns Jan..Dec), plus ``Year``.

    A month's return is its last equity over the previous month's last equity, minus one; the
    first month is measured from the first equity value, and a year compounds its months
    (= its last equity over the previous year's last). Months without data are NaN.
    """
    clean = equity.dropna().astype(np.float64)
    columns = [*MONTHS, "Year"]
    if len(clean) < 2:
        return pd.DataFrame(columns=columns, dtype=np.float64)
    index = pd.DatetimeIndex(clean.index)
    month_end = clean.groupby(index.to_period("M")).last()
    previous = month_end.shift(1)
    previous.iloc[0] = clean.iloc[0]
    monthly = (month_end / previous - 1.0) * 100.0
    year_end = clean.groupby(index.year).last()
    year_prev = year_end.shift(1)
    year_prev.iloc[0] = clean.iloc[0]
    yearly = (year_end / year_prev - 1.0) * 100.0
    table = pd.DataFrame(np.nan, index=pd.Index(year_end.index, name="year"), columns=columns)
    for period, value in monthly.items():
        table.loc[period.year, MONTHS[period.month - 1]] = value  # type: ignore[attr-defined]
    table["Year"] = yearly.to_numpy()
    return table


def monthly_returns_html(equity: pd.Series) -> str:
    table = monthly_returns(equity)
    if table.empty:
        return f'<p {NOTE}>too few bars for monthly returns</p>'
    values = table[MONTHS].to_numpy()
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    head = "".join(f'<th style="padding:2px 6px;text-align:right">{m}</th>'
                   for m in table.columns)
    rows = []
    for year, row in table.iterrows():
        cells = [f'<th style="padding:2px 6px;text-align:left">{year}</th>']
        for column, value in row.items():
            text = "" if math.isnan(value) else f"{value:.2f}"
            color = heat_color(value, -bound, bound) if column != "Year" and text else "#fff"
            weight = "font-weight:bold;" if column == "Year" else ""
            cells.append(f'<td style="padding:2px 6px;text-align:right;background:{color};'
                         f'{weight}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="ql-monthly-returns" style="border-collapse:collapse;font-size:12px;'
            f'font-family:sans-serif"><thead><tr><th>year</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<p {NOTE}>returns in %, from month-end equity</p>')


def sweep_html(result: Any, metric: str | None = None) -> str:
    """For a sweep: the heatmap of ``metric`` (the run's selection metric by default) whose
    cells show their combination's equity and trades when clicked, the parallel-coordinates
    (more than two parameters) and parameter-stability views, and the best combinations.
    Empty for a single backtest."""
    table = getattr(result, "table", None)
    if table is None or len(table) == 0:
        return ""
    return sweep_views_html(result, metric=metric)


def metrics_json(metrics: Mapping[str, Any]) -> str:
    """The metrics as JSON, kept in the report so that programs can read its numbers."""
    return json.dumps({k: v for k, v in metrics.items()}, default=str, sort_keys=True)

