"""The figures (quantlab.render.figures): what each trace holds, the per-pixel reduction of long
series, the heatmap's axes, and ``Result.plot``/``combination``/``returns``/``positions``/
``orders``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.engine.result import Result
from quantlab.errors import ConfigError
from quantlab.metrics import METRIC_INFO
from quantlab.render import figures


def _bars(n: int = 600, seed: int = 3, freq: str = "B") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    index = pd.date_range("2019-01-01", periods=n, freq=freq)
    return pd.DataFrame({"open": close * (1 + rng.normal(0, 0.002, n)), "high": close * 1.01,
                         "low": close * 0.99, "close": close, "volume": 1e6}, index=index)


def _traces(fig: object) -> dict[str, object]:
    return {t.name: t for t in fig.data}  # type: ignore[attr-defined]


def test_result_figure_has_price_trades_indicators_equity_benchmark_drawdown_and_pnl() -> None:
    df = _bars()
    res = ql.backtest(df, params={"fast": 10, "slow": 30}, allow_short=True)
    fig = res.plot()
    traces = _traces(fig)
    assert traces["data"].type == "candlestick"  # few bars: candlesticks
    assert {"SMA(10)", "SMA(30)", "Equity", "Buy & hold", "Drawdown", "Trade P&L"} <= set(traces)
    # the strategy's own averages, as the strategy computes them (pandas rolling mean)
    sma10 = df["close"].rolling(10).mean().to_numpy()
    np.testing.assert_allclose(np.asarray(traces["SMA(10)"].y, float), sma10, equal_nan=True)
    # long and short entries are told apart, each marker at its trade's entry
    trades = res.trades
    longs, shorts = trades[trades["size"] > 0], trades[trades["size"] < 0]
    assert len(longs) and len(shorts)
    assert traces["Long entry"].marker.symbol == "triangle-up"
    assert traces["Short entry"].marker.symbol == "triangle-down"
    np.testing.assert_allclose(np.asarray(traces["Long entry"].y, float), longs["entry_price"])
    # the hover of a trade shows its size (whole units), prices, P&L and return
    first = longs.iloc[0]
    custom = traces["Long entry"].customdata[0]
    assert custom[0] == f"{abs(first['size']):,.0f}"
    assert custom[4] == f"{first['pnl']:+,.2f}" and custom[5] == f"{first['return_pct']:+.2f} %"
    assert "P&amp;L" in traces["Long entry"].hovertemplate
    # buy & hold: the cash in the symbol at its first close
    bh = np.asarray(traces["Buy & hold"].y, float)
    np.testing.assert_allclose(bh, 10_000 * df["close"] / df["close"].iloc[0])
    # one shared x axis, a unified hover, and a log-scale toggle for the equity axis
    assert fig.layout.hovermode == "x unified"
    assert {fig.layout[a].matches for a in ("xaxis", "xaxis2", "xaxis3")} == {"x4"}
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["Equity: linear", "Equity: log"]
    assert fig.layout.updatemenus[0].buttons[1].args[0] == {"yaxis2.type": "log"}


def test_a_million_bars_draw_as_a_bounded_number_of_points_keeping_the_extremes() -> None:
    n = 1_000_000
    rng = np.random.default_rng(7)
    equity = pd.Series(1e4 + np.cumsum(rng.normal(0, 1, n)),
                       index=pd.date_range("2020-01-01", periods=n, freq="min"))
    res = Result(metrics={}, params={}, config={"cash": 1e4}, index=pd.DatetimeIndex(equity.index),
                 equity=equity.to_numpy())
    fig = figures.result_figure(res)
    total = sum(len(t.x) for t in fig.data if t.x is not None)
    assert total <= 3 * (2 * figures.MAX_BUCKETS + 2)
    eq = np.asarray(_traces(fig)["Equity"].y, float)
    assert eq.max() == equity.max() and eq.min() == equity.min()
    dd = np.asarray(_traces(fig)["Drawdown"].y, float)
    assert dd.min() == pytest.approx(res.drawdown.min())


def test_reduction_keeps_every_bucket_extreme() -> None:
    values = np.sin(np.linspace(0, 60, 50_001)) + np.linspace(0, 1, 50_001)
    keep = figures.extreme_positions(values, buckets=100)
    assert len(keep) <= 202 and keep[0] == 0 and keep[-1] == 50_000
    size = -(-len(values) // 100)
    for b in range(100):
        chunk = values[b * size:(b + 1) * size]
        kept = values[keep[(keep >= b * size) & (keep < (b + 1) * size)]]
        assert kept.max() == chunk.max() and kept.min() == chunk.min()


def test_many_bars_draw_the_close_as_a_line() -> None:
    res = ql.backtest(_bars(n=4_000), params={"fast": 10, "slow": 30})
    traces = _traces(res.plot())
    assert "data close" in traces and traces["data close"].type == "scatter"


def test_intraday_bars_hide_nights_and_weekends() -> None:
    index = pd.date_range("2024-01-01 09:30", "2024-01-31 16:00", freq="30min")
    index = index[(index.day_of_week < 5) & (index.hour + index.minute / 60 >= 9.5)
                  & (index.hour + index.minute / 60 < 16)]
    breaks = figures.time_breaks(index)
    assert {"bounds": ["sat", "mon"]} in breaks
    assert {"bounds": [16.0, 9.5], "pattern": "hour"} in breaks
    assert figures.time_breaks(pd.date_range("2024-01-01", periods=30, freq="D")) == []


def test_sweep_heatmap_labels_axes_and_colour_bar_and_rejects_the_same_axis_twice() -> None:
    sweep = ql.backtest(_bars(), params={"fast": [5, 10, 20], "slow": [30, 60]})
    fig = sweep.plot(metric="total_return_pct", x="fast", y="slow")
    (heat,) = fig.data
    assert heat.type == "heatmap"
    assert fig.layout.xaxis.title.text == "fast" and fig.layout.yaxis.title.text == "slow"
    assert heat.colorbar.title.text == METRIC_INFO["total_return_pct"].label
    assert list(heat.x) == ["5", "10", "20"] and list(heat.y) == ["30", "60"]
    row = sweep.table[(sweep.table["fast"] == 10) & (sweep.table["slow"] == 60)].iloc[0]
    assert heat.z[1][1] == pytest.approx(row["total_return_pct"])
    with pytest.raises(ConfigError, match=r"x and y are both 'fast'.*x='fast', y='slow'"):
        sweep.plot(x="fast", y="fast")
    with pytest.raises(ConfigError, match="x='fsat' is not a parameter"):
        sweep.plot(x="fsat")


def test_parallel_coordinates_and_stability_views() -> None:
    sweep = ql.backtest(_bars(), strategy="bollinger_breakout",
                        params={"period": [10, 20], "k": [1.0, 2.0]})
    stability = sweep.plot(kind="stability", metric="sharpe")
    best = sweep.table.groupby("period")["sharpe"].max()
    assert list(stability.data[0].y) == pytest.approx(list(best))
    parallel = figures.parallel_figure(sweep.table, ["period", "k"], "sharpe")
    assert [d.label for d in parallel.data[0].dimensions] == ["period", "k", "Sharpe"]


def test_combination_is_the_exact_single_run() -> None:
    df = _bars()
    options = {"commission": 0.001, "allow_short": True, "cash": 50_000}
    sweep = ql.backtest(df, params={"fast": [5, 10, 20], "slow": [30, 60]}, **options)
    combo = sweep.combination(fast=5, slow=60)
    single = ql.backtest(df, params={"fast": 5, "slow": 60}, **options)
    assert combo.metrics == single.metrics
    pd.testing.assert_frame_equal(combo.trades, single.trades)
    pd.testing.assert_series_equal(combo.equity, single.equity)
    with pytest.raises(ConfigError, match=r"not a combination of this sweep.*fast in \{5, 10, 20\}"):
        sweep.combination(fast=7, slow=60)
    with pytest.raises(ConfigError, match="missing slow"):
        sweep.combination(fast=5)
    with pytest.raises(ConfigError, match="single run"):
        single.combination(fast=5, slow=60)


def test_returns_positions_and_orders() -> None:
    df = _bars()
    res = ql.backtest(df, params={"fast": 10, "slow": 30}, allow_short=True)
    eq = res.equity.to_numpy()
    # returns compound back to the equity
    np.testing.assert_allclose(10_000 * np.cumprod(1 + res.returns.to_numpy()), eq)
    # positions: equity moves with the held units times the close change (fill at close: the
    # units held over a bar are those at the previous close)
    pos = res.positions["data"].to_numpy()
    for t in res.trades.itertuples():
        assert pos[t.entry_bar] == t.size
        assert np.all(pos[t.entry_bar:t.exit_bar] == t.size)
    held = np.flatnonzero(pos != 0)
    assert len(held) == sum(t.exit_bar - t.entry_bar for t in res.trades.itertuples()) + sum(
        len(eq) - t.entry_bar for t in res.open_trades.itertuples())
    orders = res.orders
    assert len(orders) == 2 * len(res.trades) + len(res.open_trades)
    first = res.trades.iloc[0]
    entry, exit_ = orders[orders["trade"] == 0].sort_values("kind").to_dict("records")
    assert entry["kind"] == "entry" and entry["price"] == first["entry_price"]
    assert exit_["reason"] == first["exit_reason"] and exit_["size"] == abs(first["size"])
    assert (orders["bar"].diff().dropna() >= 0).all()


def test_result_page_is_self_contained_with_every_trade() -> None:
    sweep = ql.backtest(_bars(), params={"fast": [5, 10], "slow": [30, 60]})
    page = sweep.to_html()
    assert "<script src=" not in page  # plotly.js inline (its own text names URLs: no load)
    assert page.count("Plotly.newPlot") >= 3
    data = page.split('-data">', 1)[1].split("</script>", 1)[0]
    rows = json.loads(data)["rows"]
    assert len(rows) == len(sweep.trades)
    assert rows[0][12][0] in {"signal", "stop_loss", "take_profit", "end", "ruin"}
    # whole units as integers, durations with their unit
    assert "." not in rows[0][3][0] and "bar" in rows[0][6][0]
    # every cell of the explorer embeds its combination's equity
    cells = json.loads(page.split('class="ql-cells">', 1)[1].split("</script>", 1)[0])
    assert set(cells) == {"5|30", "5|60", "10|30", "10|60"}
    combo = sweep.combination(fast=10, slow=60)
    assert cells["10|60"]["v"][-1] == pytest.approx(combo.equity.iloc[-1], abs=1e-3)


def test_heat_colour_runs_red_to_green() -> None:
    low, high = figures.heat_color(-1, -1, 1), figures.heat_color(1, -1, 1)
    assert low != high and figures.heat_color(float("nan"), 0, 1) == "#ffffff"


def test_plot_without_the_render_layer_says_what_to_import(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from quantlab.engine import result as result_module

    res = ql.backtest(_bars(), params={"fast": 10, "slow": 30})
    monkeypatch.setattr(result_module.VIEWS, "plot", None)
    with pytest.raises(ql.MissingDependency, match=r"import quantlab\.render\.resultviews"):
        res.plot()


def test_plot_kinds_are_checked() -> None:
    res = ql.backtest(_bars(), params={"fast": 10, "slow": 30})
    with pytest.raises(ConfigError, match="kind='heatmap' draws a sweep"):
        res.plot(kind="heatmap")
    with pytest.raises(ConfigError, match="kind='pie' is not a figure"):
        res.plot(kind="pie")


def test_a_stored_result_draws_its_price_from_the_data_store(tmp_path: Any,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("QUANTLAB_HOME", str(tmp_path))
    ql.data.sample()
    sweep = ql.backtest("AAA", start="2020-01-01", params={"fast": [5, 10], "slow": [50, 100]})
    stored = Result.from_blobs(sweep.to_blobs())  # as run.result() gives it: no bars kept
    assert stored._bars is None
    traces = _traces(stored.plot(kind="result"))
    assert traces["AAA"].type == "candlestick" and "Long entry" in traces
    combo = stored.combination(fast=10, slow=100)
    assert combo.metrics == ql.backtest("AAA", start="2020-01-01",
                                        params={"fast": 10, "slow": 100}).metrics


def test_a_notebook_strategy_overlays_its_own_lines() -> None:
    @ql.strategy(name="figure_test_breakout")
    def breakout(bars: Any, n: int = 20) -> np.ndarray:
        close = pd.Series(bars.close[0])
        return np.where(close > close.rolling(n).max().shift(1), 1, 0).astype(np.int8)

    breakout.indicator_lines = lambda close, p: {  # type: ignore[attr-defined]
        f"high({p['n']})": pd.Series(close).rolling(p["n"]).max().to_numpy()}
    res = ql.backtest(_bars(), strategy="figure_test_breakout", params={"n": 15})
    line = _traces(res.plot())["high(15)"]
    np.testing.assert_allclose(np.asarray(line.y, float),
                               _bars()["close"].rolling(15).max().to_numpy(), equal_nan=True)
