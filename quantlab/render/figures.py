"""The figures of QuantLab, drawn with plotly: one code path for ``Result.plot()``, the notebook's
results view, the run reports, the Voila dashboards and the comparison/statistics views.

plotly ships its JavaScript inside the Python package, so every figure renders offline: pages
put it inline once (:func:`plotly_js_html`), figures after it refer to it (:func:`figure_html`).

Long series are reduced per pixel before they reach the browser: each of ~:data:`MAX_BUCKETS`
buckets of consecutive points keeps its minimum and maximum (:func:`extreme_positions`), so a
million bars draw as a few thousand points with every peak and trough still there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from quantlab.errors import ConfigError
from quantlab.indicators import ema, rolling_std, sma
from quantlab.metrics import LOWER_IS_BETTER, metric_info, metric_label

# buckets of a reduced series (each keeps its min and max: at most 2 points per bucket)
MAX_BUCKETS = 2_000
# candlesticks up to this many bars; a close line (reduced) past it
CANDLE_LIMIT = 3_000
# trade markers drawn at most (the largest |P&L| first): a marker per trade of a million-bar
# intraday run would freeze the page
MAX_TRADE_MARKERS = 5_000
LONG_COLOR, SHORT_COLOR = "#1a9850", "#d73027"
EQUITY_COLOR, BENCHMARK_COLOR, DRAWDOWN_COLOR = "#0072B2", "#888888", "#d62728"
# Colour-blind-safe palette (Okabe-Ito) for several runs on one axis.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
INDICATOR_COLORS = ("#E69F00", "#56B4E9", "#CC79A7", "#009E73", "#999999")
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True}
HEAT_SCALE = "RdYlGn"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def heat_color(value: float, low: float, high: float) -> str:
    """The heatmaps' colour of ``value`` on ``low..high`` (red, yellow, green) as a CSS colour;
    white for NaN. Tables (monthly returns, correlations) colour their cells with it."""
    if value is None or not np.isfinite(value):
        return "#ffffff"
    span = high - low
    where = 0.5 if span <= 0 else min(1.0, max(0.0, (float(value) - low) / span))
    # the scale's pale middle keeps dark text readable on every cell
    return str(sample_colorscale(HEAT_SCALE, [0.1 + 0.8 * where])[0])


# --------------------------------------------------------------------------- reduction


def extreme_positions(values: np.ndarray, buckets: int = MAX_BUCKETS) -> np.ndarray:
    """Sorted positions to draw of ``values``: all of them when there are at most
    ``2 * buckets``; else the first, the last, and each bucket's minimum and maximum (NaN
    ignored), so that the drawn line reaches every peak and trough of the full one."""
    n = len(values)
    if n <= 2 * buckets:
        return np.arange(n)
    size = -(-n // buckets)
    padded = np.full(size * buckets, np.nan)
    padded[:n] = values
    grid = padded.reshape(buckets, size)
    finite = np.isfinite(grid)
    low = np.where(finite, grid, np.inf).argmin(axis=1)
    high = np.where(finite, grid, -np.inf).argmax(axis=1)
    starts = np.arange(buckets) * size
    keep = np.concatenate(([0, n - 1], starts + low, starts + high))
    return np.unique(keep[keep < n])


def reduce_series(series: pd.Series, buckets: int = MAX_BUCKETS) -> pd.Series:
    return series.iloc[extreme_positions(series.to_numpy(np.float64), buckets)]


def reduce_frame(frame: pd.DataFrame, buckets: int = MAX_BUCKETS) -> pd.DataFrame:
    """The rows holding any column's bucket extremes (several curves on one axis)."""
    if len(frame) <= 2 * buckets:
        return frame
    keep = np.unique(np.concatenate([extreme_positions(frame[c].to_numpy(np.float64), buckets)
                                     for c in frame.columns]))
    return frame.iloc[keep]


# --------------------------------------------------------------------------- time axis


def time_breaks(index: pd.DatetimeIndex) -> list[dict[str, Any]]:
    """plotly rangebreaks hiding the time the data has no bars in: weekends when no bar falls
    on one, and for intraday bars the hours between the session's last and first bar, so
    nights and weekends do not show as flat gaps."""
    if len(index) < 3:
        return []
    breaks: list[dict[str, Any]] = []
    if index.day_of_week.max() < 5:
        breaks.append({"bounds": ["sat", "mon"]})
    step = pd.Series(index[1:] - index[:-1]).median()
    if step < pd.Timedelta(days=1):
        hours = index.hour + index.minute / 60.0
        first, last = float(hours.min()), float(hours.max())
        step_hours = step / pd.Timedelta(hours=1)
        close = last + step_hours
        if first > 0 or close < 24:  # a session shorter than the day: hide the night
            breaks.append({"bounds": [close % 24, first], "pattern": "hour"})
    return breaks


# --------------------------------------------------------------------------- indicators

IndicatorLines = Callable[[Any, Mapping[str, Any]], Mapping[str, np.ndarray]]


def _on_row(average: Callable[[np.ndarray, int], np.ndarray], close: np.ndarray, n: int
            ) -> np.ndarray:
    # the indicators work on (symbols, bars) arrays
    return average(np.ascontiguousarray(close, np.float64)[None, :], n)[0]


def _crossover_lines(average: Callable[[np.ndarray, int], np.ndarray], kind: str
                     ) -> IndicatorLines:
    def lines(close: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        fast, slow = int(params["fast"]), int(params["slow"])
        return {f"{kind}({fast})": _on_row(average, close, fast),
                f"{kind}({slow})": _on_row(average, close, slow)}
    return lines


def _bollinger_lines(close: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    period, k = int(params["period"]), float(params["k"])
    middle, spread = _on_row(sma, close, period), _on_row(rolling_std, close, period)
    return {f"SMA({period})": middle, f"upper band (+{k:g}σ)": middle + k * spread,
            f"lower band (−{k:g}σ)": middle - k * spread}


# The price-scale lines of the built-in strategies (RSI is on its own scale: not overlaid).
# A user strategy shows its own by setting ``indicator_lines`` on the registered strategy:
# ``my_strategy.indicator_lines = lambda close, params: {"SMA(50)": ...}`` (arrays the length of
# the close; ``close`` is one symbol's closes as a float array).
BUILTIN_LINES: dict[str, IndicatorLines] = {
    "sma_crossover": _crossover_lines(sma, "SMA"),
    "ema_crossover": _crossover_lines(ema, "EMA"),
    "bollinger_breakout": _bollinger_lines,
}


def indicator_lines(strategy: Any, close: np.ndarray, params: Mapping[str, Any]
                    ) -> dict[str, np.ndarray]:
    """The lines to overlay on the price of one symbol: the strategy's own
    (``strategy.indicator_lines``), else the built-in's, else none."""
    lines = getattr(strategy, "indicator_lines", None)
    name = getattr(strategy, "name", strategy)
    if lines is None:
        lines = BUILTIN_LINES.get(str(name))
    if lines is None or not params:
        return {}
    try:
        return {str(k): np.asarray(v, np.float64) for k, v in lines(close, params).items()}
    except (KeyError, TypeError, ValueError):
        return {}  # params the lines cannot read (a partial sweep's empty choice)


# --------------------------------------------------------------------------- one result


def _trade_hover(trades: pd.DataFrame, units: str) -> tuple[np.ndarray, str]:
    size = trades["size"].to_numpy(np.float64)
    whole = units == "whole"
    sizes = [f"{abs(s):,.0f}" if whole else f"{abs(s):,.4g}" for s in size]
    custom = np.column_stack([
        sizes,
        np.where(size > 0, "long", "short"),
        [f"{p:,.2f}" for p in trades["entry_price"]],
        [f"{p:,.2f}" for p in trades["exit_price"]],
        [f"{p:+,.2f}" for p in trades["pnl"]],
        [f"{r:+.2f} %" for r in trades["return_pct"]],
        trades["exit_reason"].astype(str).to_numpy(),
        trades["symbol"].astype(str).to_numpy(),
    ])
    template = ("<b>%{customdata[1]} %{customdata[0]} %{customdata[7]}</b><br>"
                "entry %{customdata[2]} → exit %{customdata[3]}<br>"
                "P&amp;L %{customdata[4]} (%{customdata[5]})<br>exit: %{customdata[6]}")
    return custom, template


def _shown_trades(trades: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if len(trades) <= MAX_TRADE_MARKERS:
        return trades, ""
    keep = np.sort(np.argsort(-np.abs(trades["pnl"].to_numpy()))[:MAX_TRADE_MARKERS])
    return (trades.iloc[keep],
            f" ({MAX_TRADE_MARKERS:,} largest |P&L| of {len(trades):,})")


def _add_trade_markers(fig: go.Figure, trades: pd.DataFrame, units: str, row: int) -> None:
    shown, note = _shown_trades(trades)
    if shown.empty:
        return
    custom, template = _trade_hover(shown, units)
    long = shown["size"].to_numpy() > 0
    for side, mask, color_, symbol in (("Long", long, LONG_COLOR, "triangle-up"),
                                       ("Short", ~long, SHORT_COLOR, "triangle-down")):
        if not mask.any():
            continue
        part = shown[mask]
        fig.add_trace(go.Scatter(
            x=part["entry_time"], y=part["entry_price"], mode="markers",
            name=f"{side} entry{note}", legendgroup=side.lower(),
            marker={"symbol": symbol, "size": 10, "color": color_,
                    "line": {"width": 1, "color": "#222"}},
            customdata=custom[mask], hovertemplate=template + "<extra>entry</extra>",
        ), row=row, col=1)
        fig.add_trace(go.Scatter(
            x=part["exit_time"], y=part["exit_price"], mode="markers",
            name=f"{side} exit", legendgroup=side.lower(),
            marker={"symbol": "x", "size": 8, "color": color_},
            customdata=custom[mask], hovertemplate=template + "<extra>exit</extra>",
        ), row=row, col=1)


def _add_price(fig: go.Figure, bars: Any, symbol_at: int, lines: Mapping[str, np.ndarray],
               row: int) -> None:
    index = pd.DatetimeIndex(bars.index)
    name = str(bars.symbols[symbol_at])
    close = np.asarray(bars.close[symbol_at], np.float64)
    if len(index) <= CANDLE_LIMIT:
        fig.add_trace(go.Candlestick(
            x=index, open=bars.open[symbol_at], high=bars.high[symbol_at],
            low=bars.low[symbol_at], close=close, name=name,
            increasing_line_color=LONG_COLOR, decreasing_line_color=SHORT_COLOR,
        ), row=row, col=1)
    else:
        keep = extreme_positions(close)
        fig.add_trace(go.Scatter(x=index[keep], y=close[keep], mode="lines", name=f"{name} close",
                                 line={"color": "#333", "width": 1}), row=row, col=1)
    for i, (label, values) in enumerate(lines.items()):
        keep = extreme_positions(values)
        fig.add_trace(go.Scatter(
            x=index[keep], y=values[keep], mode="lines", name=label,
            line={"width": 1.2, "color": INDICATOR_COLORS[i % len(INDICATOR_COLORS)]},
        ), row=row, col=1)


def buy_hold_equity(bars: Any, cash: float) -> pd.Series:
    """``cash`` put into every symbol equally at its first valid close and held (the
    benchmark of ``metrics.buy_hold_return_pct``, bar by bar)."""
    close = pd.DataFrame(np.asarray(bars.close, np.float64).T, index=bars.index)
    growth = (close.ffill() / close.bfill().iloc[0]).fillna(1.0)
    return pd.Series(cash * growth.mean(axis=1).to_numpy(), index=pd.DatetimeIndex(bars.index),
                     name="buy & hold")


def result_figure(result: Any, *, bars: Any = None, symbol: str | None = None,
                  indicators: Mapping[str, Any] | None = None, strategy: Any = None,
                  title: str | None = None, height: int = 820) -> go.Figure:
    """Price with trades and indicators, equity against buy & hold, drawdown and per-trade P&L
    of one result, on one shared zoomable time axis with a unified hover.

    ``bars``: the run's data (``None``: no price panel); ``symbol``: which symbol's price to
    draw (default the first; its trades are marked); ``indicators``: extra lines (name ->
    array or Series over the bars) overlaid on the price, after the strategy's own.
    """
    config = dict(getattr(result, "config", {}) or {})
    equity: pd.Series = result.equity
    trades: pd.DataFrame = result.trades
    has_price = bars is not None and getattr(bars, "n_bars", 0) > 0
    rows = ["Equity", "Drawdown (%)", "Trade P&L"]
    if has_price:
        rows.insert(0, "Price")
    heights = {"Price": 0.44, "Equity": 0.26, "Drawdown (%)": 0.14, "Trade P&L": 0.16}
    # each panel is named by its y axis title: subplot titles would sit where the legend is
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[heights[r] for r in rows])
    row_of = {name: i + 1 for i, name in enumerate(rows)}
    for name, row in row_of.items():
        fig.update_yaxes(title_text=name, row=row, col=1)
    units = str(config.get("units", "whole"))
    if has_price:
        at = 0 if symbol is None else list(bars.symbols).index(symbol)
        close = np.asarray(bars.close[at], np.float64)
        lines = indicator_lines(strategy or config.get("strategy"), close,
                                dict(getattr(result, "params", {}) or {}))
        for name, values in (indicators or {}).items():
            lines[str(name)] = np.asarray(values, np.float64)
        _add_price(fig, bars, at, lines, row_of["Price"])
        _add_trade_markers(fig, trades[trades["symbol"] == bars.symbols[at]], units,
                           row_of["Price"])
        fig.update_yaxes(title_text=str(bars.symbols[at]), row=row_of["Price"], col=1)
    shown = reduce_series(equity)
    fig.add_trace(go.Scatter(x=shown.index, y=shown.to_numpy(), mode="lines", name="Equity",
                             line={"color": EQUITY_COLOR, "width": 1.6},
                             hovertemplate="%{y:,.2f}"), row=row_of["Equity"], col=1)
    if has_price:
        bench = reduce_series(buy_hold_equity(bars, float(config.get("cash") or equity.iloc[0])))
        fig.add_trace(go.Scatter(x=bench.index, y=bench.to_numpy(), mode="lines",
                                 name="Buy & hold", hovertemplate="%{y:,.2f}",
                                 line={"color": BENCHMARK_COLOR, "width": 1.2, "dash": "dot"}),
                      row=row_of["Equity"], col=1)
    drawdown = reduce_series(result.drawdown)
    fig.add_trace(go.Scatter(x=drawdown.index, y=drawdown.to_numpy(), mode="lines",
                             name="Drawdown", fill="tozeroy", hovertemplate="%{y:.2f} %",
                             line={"color": DRAWDOWN_COLOR, "width": 1}),
                  row=row_of["Drawdown (%)"], col=1)
    _add_trade_pnl(fig, trades, units, row_of["Trade P&L"])
    equity_axis = "yaxis" if row_of["Equity"] == 1 else f"yaxis{row_of['Equity']}"
    # Top to bottom, none over another: the title in the top margin, then the legend just
    # above the first panel.
    top, plot_height = 120, height - 120 - 40
    equity_top = fig.layout[equity_axis].domain[1]
    fig.update_layout(
        title={"text": title or _result_title(result), "x": 0.01, "y": 1.0, "yref": "container",
               "yanchor": "top", "pad": {"t": 12}},
        height=height, hovermode="x unified", margin={"l": 70, "r": 20, "t": top, "b": 40},
        legend={"orientation": "h", "y": 1.0 + 6 / plot_height, "yanchor": "bottom", "x": 0,
                "xanchor": "left"},
        updatemenus=[{
            # in the equity panel's top left corner: the legend above may wrap to any width
            "type": "buttons", "direction": "left", "x": 0.0, "xanchor": "left",
            "y": equity_top, "yanchor": "top", "pad": {"t": 2, "l": 2},
            "bgcolor": "rgba(255,255,255,0.8)", "font": {"size": 10}, "showactive": True,
            "buttons": [
                {"label": "Equity: linear", "method": "relayout",
                 "args": [{f"{equity_axis}.type": "linear"}]},
                {"label": "Equity: log", "method": "relayout",
                 "args": [{f"{equity_axis}.type": "log"}]},
            ],
        }],
    )
    fig.update_xaxes(rangebreaks=time_breaks(pd.DatetimeIndex(equity.index)), showspikes=True,
                     spikemode="across", spikesnap="cursor")
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(automargin=True)
    return fig


def _add_trade_pnl(fig: go.Figure, trades: pd.DataFrame, units: str, row: int) -> None:
    shown, note = _shown_trades(trades)
    if shown.empty:
        return
    custom, template = _trade_hover(shown, units)
    pnl = shown["pnl"].to_numpy(np.float64)
    fig.add_trace(go.Scatter(
        x=shown["exit_time"], y=pnl, mode="markers", name=f"Trade P&L{note}",
        marker={"color": np.where(pnl >= 0, LONG_COLOR, SHORT_COLOR), "size": 6},
        customdata=custom, hovertemplate=template + "<extra>trade</extra>",
    ), row=row, col=1)


def _result_title(result: Any) -> str:
    config = dict(getattr(result, "config", {}) or {})
    params = ", ".join(f"{k}={v}" for k, v in (getattr(result, "params", {}) or {}).items())
    symbols = ", ".join(config.get("symbols") or [])
    return f"{config.get('strategy', 'backtest')}({params}) on {symbols}".strip()


def equity_figure(equity: pd.Series, drawdown: pd.Series | None = None, *,
                  title: str = "Equity", height: int = 380) -> go.Figure:
    """Equity above drawdown (a sweep cell's detail, a record without bars)."""
    rows = 1 if drawdown is None else 2
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[0.7, 0.3][:rows] if rows == 2 else [1.0])
    shown = reduce_series(equity)
    fig.add_trace(go.Scatter(x=shown.index, y=shown.to_numpy(), name="Equity", mode="lines",
                             line={"color": EQUITY_COLOR}), row=1, col=1)
    if drawdown is not None:
        dd = reduce_series(drawdown)
        fig.add_trace(go.Scatter(x=dd.index, y=dd.to_numpy(), name="Drawdown (%)", mode="lines",
                                 fill="tozeroy", line={"color": DRAWDOWN_COLOR}), row=2, col=1)
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 50, "b": 30}, showlegend=False)
    fig.update_xaxes(rangebreaks=time_breaks(pd.DatetimeIndex(equity.index)))
    return fig


# --------------------------------------------------------------------------- sweeps


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


def better(metric: str) -> str:
    """``"min"`` for metrics where smaller is better, else ``"max"``."""
    return "min" if metric in LOWER_IS_BETTER else "max"


def sweep_matrix(table: pd.DataFrame, metric: str, x: str, y: str | None) -> pd.DataFrame:
    """The heatmap's values: ``metric`` over ``y`` (rows) x ``x`` (columns).

    Other parameters are reduced by taking their best value of the metric (for each (x, y)
    cell: the best combination with that x and y), so the map answers "how good can it get
    here". Combinations the strategy skipped as invalid are NaN.
    """
    if y is None:
        best = table.groupby(x, sort=True, dropna=False)[metric].agg(better(metric))
        return pd.DataFrame([best.to_numpy()], index=pd.Index([metric]), columns=best.index)
    grouped = table.groupby([y, x], sort=True, dropna=False)[metric].agg(better(metric))
    return grouped.unstack(x).sort_index()


def check_heatmap_axes(params: Sequence[str], metrics: Sequence[str], metric: str, x: str,
                       y: str | None) -> None:
    """ConfigError naming the problem and the fix for a heatmap that cannot be drawn."""
    if x not in params:
        raise ConfigError(f"x={x!r} is not a parameter of this sweep; choose one of "
                          f"{', '.join(params)}", field="x")
    if y is not None and y not in params:
        raise ConfigError(f"y={y!r} is not a parameter of this sweep; choose one of "
                          f"{', '.join(params)}", field="y")
    if y is not None and x == y:
        others = [p for p in params if p != x]
        hint = f", e.g. x={x!r}, y={others[0]!r}" if others else " (or y=None: one axis)"
        raise ConfigError(f"x and y are both {x!r}: a heatmap needs two different parameters"
                          f"{hint}", field="y")
    if metric not in metrics:
        raise ConfigError(f"metric={metric!r} is not a column of this sweep; choose one of "
                          f"{', '.join(metrics)}", field="metric")


def _scale(metric: str) -> str:
    return HEAT_SCALE + ("_r" if metric in LOWER_IS_BETTER else "")


def _axis_value(value: Any) -> str:
    """A parameter value as the heatmap's category axes print it."""
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _axis_values(values: Any) -> list[str]:
    return [_axis_value(v) for v in values]


def heatmap_figure(table: pd.DataFrame, params: Sequence[str], metrics: Sequence[str], *,
                   metric: str, x: str, y: str | None, height: int = 480) -> go.Figure:
    """``metric`` over parameters ``x`` (columns) and ``y`` (rows; None: one row), best over
    the other parameters, its colour bar titled with the metric's label."""
    check_heatmap_axes(params, metrics, metric, x, y)
    matrix = sweep_matrix(table, metric, x, y)
    label = metric_label(metric)
    reduced = [p for p in params if p not in {x, y}]
    title = f"{label} by {x}" + (f" × {y}" if y else "")
    if reduced:
        title += f" (best over {', '.join(reduced)})"
    z = matrix.to_numpy(np.float64)
    text = np.where(np.isfinite(z), np.vectorize(lambda v: f"{v:.2f}")(z), "n/a")
    fig = go.Figure(go.Heatmap(
        z=z, x=_axis_values(matrix.columns), y=_axis_values(matrix.index) if y else [label],
        colorscale=_scale(metric), hoverongaps=True, text=text,
        colorbar={"title": {"text": label, "side": "right"}},
        hovertemplate=(f"{x}=%{{x}}" + (f", {y}=%{{y}}" if y else "")
                       + f"<br>{label} = %{{text}}<extra></extra>"),
    ))
    fig.update_layout(title={"text": title, "x": 0.01}, height=height,
                      margin={"l": 70, "r": 30, "t": 60, "b": 60})
    fig.update_xaxes(title_text=x, type="category", automargin=True)
    fig.update_yaxes(title_text=y or "", type="category", automargin=True)
    return fig


def parallel_figure(table: pd.DataFrame, params: Sequence[str], metric: str,
                    height: int = 420) -> go.Figure:
    """One line per combination through each parameter's axis to the metric's, coloured by
    the metric (for sweeps over more than two parameters)."""
    finite = table[np.isfinite(table[metric].to_numpy(np.float64))]
    label = metric_label(metric)
    dimensions = [{"label": p, "values": finite[p].to_numpy()} for p in params]
    dimensions.append({"label": label, "values": finite[metric].to_numpy()})
    fig = go.Figure(go.Parcoords(
        line={"color": finite[metric].to_numpy(), "colorscale": _scale(metric), "showscale": True,
              "colorbar": {"title": {"text": label}}},
        dimensions=dimensions,
    ))
    fig.update_layout(title={"text": f"{label} across {', '.join(params)}", "x": 0.01},
                      height=height, margin={"l": 60, "r": 60, "t": 80, "b": 30})
    return fig


def stability_figure(table: pd.DataFrame, params: Sequence[str], metric: str,
                     height: int = 320) -> go.Figure:
    """The metric along each parameter: the best and the median over the other parameters at
    each value, so a narrow peak (fragile) reads apart from a plateau (stable)."""
    label = metric_label(metric)
    fig = make_subplots(rows=1, cols=max(1, len(params)), shared_yaxes=True,
                        subplot_titles=list(params), horizontal_spacing=0.04)
    for i, param in enumerate(params):
        grouped = table.groupby(param, sort=True, dropna=False)[metric]
        best, median = grouped.agg(better(metric)), grouped.median()
        xs = _axis_values(best.index)
        fig.add_trace(go.Scatter(x=xs, y=best.to_numpy(), mode="lines+markers", name="best",
                                 legendgroup="best", showlegend=i == 0,
                                 line={"color": EQUITY_COLOR}), row=1, col=i + 1)
        fig.add_trace(go.Scatter(x=xs, y=median.to_numpy(), mode="lines+markers",
                                 name="median", legendgroup="median", showlegend=i == 0,
                                 line={"color": BENCHMARK_COLOR, "dash": "dot"}),
                      row=1, col=i + 1)
        fig.update_xaxes(title_text=param, type="category", row=1, col=i + 1)
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(title={"text": f"{label} along each parameter", "x": 0.01},
                      height=height, hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig


# --------------------------------------------------------------------------- several runs


def lines_figure(frame: pd.DataFrame, *, title: str, labels: Sequence[str] | None = None,
                 baseline: float | None = None, value_format: str = ",.1f",
                 height: int = 340) -> go.Figure:
    """One line per column (DatetimeIndex), named by ``labels``, a dashed ``baseline``."""
    names = [str(c) for c in frame.columns] if labels is None else [str(x) for x in labels]
    data = reduce_frame(frame.astype(np.float64))
    fig = go.Figure()
    for i, (column, name) in enumerate(zip(data.columns, names)):
        fig.add_trace(go.Scatter(x=data.index, y=data[column].to_numpy(), mode="lines",
                                 name=name, line={"color": color(i), "width": 1.5},
                                 hovertemplate=f"%{{y:{value_format}}}"))
    if baseline is not None:
        fig.add_hline(y=baseline, line={"color": "#888", "dash": "dash", "width": 1})
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.15},
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def bar_figure(labels: Sequence[str], values: Sequence[float], *, title: str,
               colors: Sequence[str] | None = None, value_format: str = ",.0f",
               height: int = 300) -> go.Figure:
    """Vertical bars, one per label, each value shown on hover."""
    fig = go.Figure(go.Bar(x=[str(v) for v in labels], y=list(values),
                           marker={"color": list(colors) if colors else color(0)},
                           hovertemplate=f"%{{x}}: %{{y:{value_format}}}<extra></extra>"))
    fig.update_layout(title={"text": title, "x": 0.01}, height=height,
                      margin={"l": 60, "r": 20, "t": 50, "b": 60})
    fig.update_xaxes(type="category", automargin=True)
    return fig


# --------------------------------------------------------------------------- HTML


def plotly_js_html() -> str:
    """plotly.js inline (from the installed plotly package): once per page, before the first
    figure; no network needed."""
    return f'<script type="text/javascript" charset="utf-8">{get_plotlyjs()}</script>'


def figure_html(fig: go.Figure, *, div_id: str | None = None, include_plotlyjs: bool = False,
                post_script: str | None = None) -> str:
    """The figure as a ``<div>`` and its script; plotly.js must be on the page already unless
    ``include_plotlyjs``."""
    return str(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id=div_id,
                           config=PLOT_CONFIG, post_script=post_script))


def unit_of(metric: str) -> str:
    return metric_info(metric).unit


__all__ = ["MAX_BUCKETS", "bar_figure", "buy_hold_equity", "check_heatmap_axes", "color",
           "equity_figure", "extreme_positions", "figure_html", "heat_color", "heatmap_figure",
           "indicator_lines", "lines_figure", "parallel_figure", "plotly_js_html",
           "reduce_series", "result_figure", "stability_figure", "sweep_columns", "sweep_matrix",
           "time_breaks"]
