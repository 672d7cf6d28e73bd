"""HTML of one result (``ql.backtest`` or ``run.result()``): its figure, its trades table, and
for a sweep the heatmap explorer (a click on a cell shows that combination's equity and trades),
the parallel-coordinates and parameter-stability views. The run reports and ``Result.to_html``
put them in a page; the notebook's results view shows the same figures as widgets.

Everything works from a file with no network: plotly.js is inline once per page, the tables
sort, filter and page with a few lines of plain JavaScript.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantlab.errors import QuantlabError
from quantlab.render.figures import (
    _axis_value,
    better,
    equity_figure,
    figure_html,
    heatmap_figure,
    parallel_figure,
    plotly_js_html,
    reduce_series,
    stability_figure,
    sweep_columns,
    sweep_matrix,
)
from quantlab.render.format import frame_html, metrics_table_html

NOTE_STYLE = 'style="font-size:12px;color:#555;font-family:sans-serif;margin:4px 0"'
BEST_ROWS = 10
PAGE_ROWS = 50
# heatmap cells whose combination is recomputed for the explorer (the best ones first)
MAX_EXPLORED_CELLS = 300
EXPLORER_BUCKETS = 150
DETAIL_TRADES = 20


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



__all__ = ["best_rows", "better", "break_even_html", "result_page_html", "sweep_columns", "sweep_explorer_html",
           "sweep_matrix", "trades_table_html"]


def best_rows(table: pd.DataFrame, metric: str, n: int = BEST_ROWS) -> pd.DataFrame:
    """The ``n`` best combinations by ``metric`` (NaN last)."""
    ascending = better(metric) == "min"
    return table.sort_values(metric, ascending=ascending, na_position="last").head(n)


def _script_json(data: Any) -> str:
    # inside <script>: "</" would end the element early
    return json.dumps(data, default=str).replace("</", "<\\/")


# --------------------------------------------------------------------------- trades table

TRADE_HEADERS = ("#", "symbol", "side", "size", "entry", "exit", "held", "entry price",
                 "exit price", "P&L", "return", "commission", "exit reason")


def held_text(bars: int, span: Any) -> str:
    """How long a trade was held, with units: bars, and the calendar time they span."""
    if pd.isna(span):
        return f"{bars:,} bars"
    seconds = span.total_seconds()
    if seconds >= 86_400:
        calendar = f"{seconds / 86_400:,.1f} days".replace(".0 days", " days")
    elif seconds >= 3_600:
        calendar = f"{seconds / 3_600:,.1f} h"
    else:
        calendar = f"{seconds / 60:,.0f} min"
    return f"{bars:,} bar{'s' if bars != 1 else ''} · {calendar}"


def _size_text(size: float, whole: bool) -> str:
    return f"{abs(size):,.0f}" if whole else f"{abs(size):,.6g}"


def _when(stamp: pd.Timestamp) -> str:
    text = f"{stamp:%Y-%m-%d %H:%M}"
    return text.removesuffix(" 00:00")  # daily bars: the date alone


def trade_rows(trades: pd.DataFrame, *, units: str = "whole", end: Any = None
               ) -> list[list[tuple[str, Any]]]:
    """Each trade as (text, sort key) cells in :data:`TRADE_HEADERS` order. Open trades (no
    exit) are held until ``end`` and their exit reason reads ``open``."""
    whole = units == "whole"
    rows = []
    is_open = "exit_time" not in trades.columns
    records: list[dict[str, Any]] = trades.to_dict("records")  # type: ignore[assignment]
    for i, t in enumerate(records):
        size = float(t["size"])
        entry = pd.Timestamp(t["entry_time"])
        exit_: Any = (pd.Timestamp(end) if end is not None else None) if is_open else \
            pd.Timestamp(t["exit_time"])
        bars = 0 if is_open else int(t["exit_bar"]) - int(t["entry_bar"])
        pnl = float(t["unrealized_pnl"] if is_open else t["pnl"])
        ret = float(t["return_pct"])
        exit_price = float(t["last_price"] if is_open else t["exit_price"])
        reason = "open" if is_open else str(t["exit_reason"])
        rows.append([
            (str(i + 1), i),
            (str(t["symbol"]), str(t["symbol"])),
            ("long" if size > 0 else "short", "long" if size > 0 else "short"),
            (_size_text(size, whole), abs(size)),
            (_when(entry), entry.value),
            ("—" if is_open or exit_ is None else _when(exit_),
             exit_.value if exit_ is not None else 0),
            ("open" if is_open else held_text(bars, exit_ - entry), bars),
            (f"{float(t['entry_price']):,.2f}", float(t["entry_price"])),
            (f"{exit_price:,.2f}", exit_price),
            (f"{pnl:+,.2f}", pnl),
            (f"{ret:+.2f} %", ret),
            (f"{float(t['commission']):,.2f}", float(t["commission"])),
            (reason, reason),
        ])
    return rows


_TABLE_JS = """
(function(){
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(document.getElementById(%(id)s + "-data").textContent);
  var rows = data.rows, size = data.page, shown = rows, page = 0, sortCol = -1, asc = true;
  var body = root.querySelector("tbody"), info = root.querySelector(".ql-page-info");
  var filter = root.querySelector(".ql-filter");
  function draw(){
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    var html = [];
    shown.slice(page * size, (page + 1) * size).forEach(function(r){
      html.push("<tr>" + r.map(function(c, j){
        return "<td" + (j === r.length - 1 ? ' class="ql-exit-reason"' : "") + ">"
          + c[0].replace(/&/g, "&amp;").replace(/</g, "&lt;") + "</td>";
      }).join("") + "</tr>");
    });
    body.innerHTML = html.join("");
    info.textContent = shown.length ? ("rows " + (page * size + 1) + "–" +
      Math.min(shown.length, (page + 1) * size) + " of " + shown.length +
      (shown.length < rows.length ? " (filtered from " + rows.length + ")" : "")) : "no rows match";
  }
  root.querySelectorAll("th").forEach(function(th, j){
    th.style.cursor = "pointer";
    th.title = "sort by " + th.textContent;
    th.addEventListener("click", function(){
      asc = sortCol === j ? !asc : true; sortCol = j;
      shown = shown.slice().sort(function(a, b){
        var x = a[j][1], y = b[j][1];
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      root.querySelectorAll("th").forEach(function(h){ h.removeAttribute("data-sort"); });
      th.setAttribute("data-sort", asc ? "asc" : "desc");
      page = 0; draw();
    });
  });
  filter.addEventListener("input", function(){
    var q = filter.value.toLowerCase();
    shown = rows.filter(function(r){
      return r.some(function(c){ return c[0].toLowerCase().indexOf(q) >= 0; });
    });
    page = 0; draw();
  });
  root.querySelector(".ql-prev").addEventListener("click", function(){ page -= 1; draw(); });
  root.querySelector(".ql-next").addEventListener("click", function(){ page += 1; draw(); });
  draw();
})();
"""

_TABLE_CSS = (".ql-trades td,.ql-trades th{padding:2px 8px;border-bottom:1px solid #eee;"
              "text-align:right;white-space:nowrap}.ql-trades th{border-bottom:1px solid #999}"
              ".ql-trades th[data-sort=asc]:after{content:' ▲'}"
              ".ql-trades th[data-sort=desc]:after{content:' ▼'}")


def trades_table_html(trades: pd.DataFrame | None, *, units: str = "whole",
                      page_size: int = PAGE_ROWS, title: str | None = None,
                      end: Any = None) -> str:
    """Every trade in a table that sorts (click a header), filters (type in the box) and pages
    in the browser; its first page is written out too, for viewers that run no scripts."""
    if trades is None or trades.empty:
        return f"<p {NOTE_STYLE}><i>{html.escape(title or 'no closed trades')}: none</i></p>"
    table_id = f"ql-trades-{uuid.uuid4().hex[:10]}"
    rows = trade_rows(trades, units=units, end=end)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TRADE_HEADERS)
    first = "".join("<tr>" + "".join(f"<td>{html.escape(c[0])}</td>" for c in r) + "</tr>"
                    for r in rows[:page_size])
    caption = title or f"{len(rows):,} closed trades"
    return (
        f'<div class="ql-trades-view" id="{table_id}" style="font-family:sans-serif;'
        f'font-size:12px"><style>{_TABLE_CSS}</style>'
        f'<div style="margin:4px 0"><b>{html.escape(caption)}</b> · '
        f'<input class="ql-filter" placeholder="filter (symbol, side, reason…)" '
        f'style="width:16em"> <button class="ql-prev">‹ prev</button> '
        f'<button class="ql-next">next ›</button> <span class="ql-page-info">rows 1–'
        f"{min(page_size, len(rows))} of {len(rows)}</span></div>"
        f'<table class="ql-trades" style="border-collapse:collapse"><thead><tr>{head}</tr>'
        f"</thead><tbody>{first}</tbody></table>"
        f'<script type="application/json" id="{table_id}-data">'
        f'{_script_json({"rows": rows, "page": page_size})}</script>'
        f"<script>{_TABLE_JS % {'id': json.dumps(table_id)}}</script></div>"
    )


def result_trades_html(result: Any, page_size: int = PAGE_ROWS) -> str:
    """Closed trades, then the positions still open at the end (marked to market)."""
    units = str((getattr(result, "config", {}) or {}).get("units", "whole"))
    parts = [trades_table_html(result.trades, units=units, page_size=page_size)]
    open_trades = getattr(result, "open_trades", None)
    if open_trades is not None and not open_trades.empty:
        end = result.equity.index[-1] if len(result.equity) else None
        parts.append(trades_table_html(
            open_trades, units=units, page_size=page_size, end=end,
            title=f"{len(open_trades):,} open at the end (marked to market, left out of trade "
                  "statistics)"))
    return "".join(parts)


# --------------------------------------------------------------------------- sweeps


def default_axes(result: Any, metric: str | None = None, x: str | None = None,
                 y: str | None = None) -> tuple[str, str, str | None]:
    """(metric, x, y) for a sweep's heatmap: the given ones, else the run's selection metric
    and its first two parameters."""
    params, metrics = sweep_columns(result)
    if metric is None:
        metric = str((getattr(result, "config", {}) or {}).get("select") or "sharpe")
        if metric not in metrics:
            metric = "sharpe" if "sharpe" in metrics else metrics[0]
    if x is None:
        x = params[0]
    if y is None and len(params) > 1:
        y = next(p for p in params if p != x)
    return metric, x, y


def cell_combinations(table: pd.DataFrame, params: list[str], metric: str, x: str,
                      y: str | None) -> pd.DataFrame:
    """For each heatmap cell, the row of its best combination (what the cell shows)."""
    finite = table[np.isfinite(table[metric].to_numpy(np.float64))]
    keys = [x] if y is None else [y, x]
    order = finite.sort_values(metric, ascending=better(metric) == "min", kind="stable")
    return order.drop_duplicates(keys)[[*params, metric]]


def _cell_detail(combo: Any, label: str) -> dict[str, Any]:
    equity = reduce_series(combo.equity, EXPLORER_BUCKETS)
    trades = combo.trades
    units = str(combo.config.get("units", "whole"))
    rows = trade_rows(trades.head(DETAIL_TRADES), units=units)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TRADE_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c[0])}</td>" for c in r) + "</tr>"
                   for r in rows)
    more = (f" (the first {DETAIL_TRADES} shown)" if len(trades) > DETAIL_TRADES else "")
    return {
        "title": label,
        "t": [str(t) for t in equity.index],
        "v": [round(float(v), 4) for v in equity.to_numpy()],
        "trades": (f"<p><b>{len(trades):,} closed trades</b>{more}</p>"
                   f'<table class="ql-trades" style="border-collapse:collapse">'
                   f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"),
    }


_EXPLORER_JS = """
var gd = document.getElementById('{plot_id}');
var box = gd.closest('.ql-sweep-explorer');
var cells = JSON.parse(box.querySelector('.ql-cells').textContent);
gd.on('plotly_click', function(ev){
  var p = ev.points[0], key = p.x + '|' + p.y, cell = cells[key];
  var detail = box.querySelector('.ql-cell-detail'), chart = box.querySelector('.ql-cell-equity');
  if (!cell) {
    detail.innerHTML = '<p>' + p.x + ', ' + p.y + ': this cell was not precomputed; '
      + 'recompute it with result.combination(...)</p>';
    return;
  }
  Plotly.react(chart, [{x: cell.t, y: cell.v, type: 'scatter', mode: 'lines', name: 'equity',
                        line: {color: '#0072B2'}}],
               {title: {text: 'Equity of ' + cell.title, x: 0.01}, height: 300,
                margin: {l: 60, r: 20, t: 40, b: 30}, hovermode: 'x unified'},
               {displaylogo: false, responsive: true});
  detail.innerHTML = cell.trades;
});
"""


def sweep_explorer_html(result: Any, *, metric: str | None = None, x: str | None = None,
                        y: str | None = None, max_cells: int = MAX_EXPLORED_CELLS) -> str:
    """The heatmap of a sweep whose cells, clicked, show their combination's equity and
    trades below it. The best ``max_cells`` cells are recomputed (``result.combination``) and
    embedded, so it works from a file; the others say how to recompute them."""
    params, metrics = sweep_columns(result)
    metric, x, y = default_axes(result, metric, x, y)
    fig = heatmap_figure(result.table, params, metrics, metric=metric, x=x, y=y)
    cells: dict[str, Any] = {}
    note = ""
    try:
        chosen = cell_combinations(result.table, params, metric, x, y).head(max_cells)
        # records, not iterrows: a row Series would turn int parameters into floats
        for row in chosen.to_dict("records"):
            combo_params = {p: _plain(row[p]) for p in params}
            combo = result.combination(**combo_params)
            key = f"{_axis_value(row[x])}|{_axis_value(row[y]) if y else fig.data[0].y[0]}"
            label = ", ".join(f"{k}={v}" for k, v in combo_params.items())
            cells[key] = _cell_detail(combo, label)
    except Exception as exc:  # no data to recompute on: the heatmap alone
        note = (f"<p {NOTE_STYLE}>cells cannot show their combination here: "
                f"{html.escape(str(exc).splitlines()[0])}</p>")
    n_cells = int(np.isfinite(sweep_matrix(result.table, metric, x, y).to_numpy(float)).sum())
    hint = ("click a cell to see its combination's equity and trades"
            + (f" (the best {len(cells)} of {n_cells} cells are ready)"
               if 0 < len(cells) < n_cells else "")) if cells else ""
    return (
        '<div class="ql-sweep-explorer">'
        # the cells before the figure: its script reads them as it runs
        + f'<script type="application/json" class="ql-cells">{_script_json(cells)}</script>'
        + figure_html(fig, post_script=_EXPLORER_JS if cells else None)
        + (f"<p {NOTE_STYLE}>{html.escape(hint)}</p>" if hint else note)
        + '<div class="ql-cell-equity"></div><div class="ql-cell-detail" '
          'style="font-family:sans-serif;font-size:12px"></div></div>'
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def sweep_views_html(result: Any, metric: str | None = None) -> str:
    """A sweep's explorer, its parallel coordinates (more than two parameters), its
    parameter-stability view and its best combinations."""
    params, _ = sweep_columns(result)
    metric, x, y = default_axes(result, metric)
    parts = [f"<p {NOTE_STYLE}>{len(result.table):,} combinations · metric {html.escape(metric)} "
             f"({'lower' if better(metric) == 'min' else 'higher'} is better)</p>",
             sweep_explorer_html(result, metric=metric, x=x, y=y)]
    if len(params) > 2:
        parts.append(figure_html(parallel_figure(result.table, params, metric)))
    parts.append(figure_html(stability_figure(result.table, params, metric)))
    top = best_rows(result.table, metric)
    parts.append(f'<div class="ql-sweep-best"><b>Best combinations</b>'
                 f"{frame_html(top.reset_index(drop=True))}</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- a page


def result_page_html(result: Any, figure: Any, *, title: str | None = None) -> str:
    """One self-contained page: metrics, the result's figure, the sweep's views and every
    trade. plotly.js is inline, so it opens from a file with no network."""
    heading = title or str(figure.layout.title.text or "QuantLab result")
    metrics: Mapping[str, Any] = dict(getattr(result, "metrics", {}) or {})
    sweep = getattr(result, "table", None)
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(heading)}</title>{plotly_js_html()}</head>"
        '<body style="font-family:sans-serif;margin:16px">'
        f"<h2>{html.escape(heading)}</h2>{metrics_table_html(dict(metrics))}"
        + (sweep_views_html(result) if isinstance(sweep, pd.DataFrame) and len(sweep) else "")
        + figure_html(figure, div_id="ql-result-figure")
        + result_trades_html(result)
        + "</body></html>"
    )


def equity_detail_html(equity: pd.Series, drawdown: pd.Series | None, title: str) -> str:
    return figure_html(equity_figure(equity, drawdown, title=title))
