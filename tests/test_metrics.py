"""Metric formulas against direct computations on the equity curve and the trades."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.metrics import METRICS, periods_per_year
from tests.support.engine import fixed_signals, frame, random_walk


def test_every_metric_is_reported_and_documented() -> None:
    res = ql.backtest(random_walk(300, seed=1), "sma_crossover", {"fast": 5, "slow": 20})
    assert tuple(res.metrics) == METRICS
    doc = ql.metrics.__doc__ or ""
    with open("docs/metrics.md") as fh:
        page = fh.read()
    for name in METRICS:
        assert f"``{name}``" in doc
        assert f"`{name}`" in page


def test_metrics_match_their_formulas() -> None:
    data = random_walk(800, seed=21)
    res = ql.backtest(data, "sma_crossover", {"fast": 4, "slow": 12}, commission=0.001,
                      allow_short=True)
    m = res.metrics
    cash = 10_000.0
    eq = res.equity.to_numpy()
    r = np.diff(np.concatenate(([cash], eq))) / np.concatenate(([cash], eq[:-1]))
    ppy = 252.0
    assert m["total_return_pct"] == pytest.approx(100 * (eq[-1] / cash - 1))
    assert m["volatility_ann_pct"] == pytest.approx(100 * r.std(ddof=1) * math.sqrt(ppy))
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy))
    down = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert m["sortino"] == pytest.approx(r.mean() / down * math.sqrt(ppy))
    cagr = 100 * ((eq[-1] / cash) ** (ppy / len(eq)) - 1)
    assert m["cagr_pct"] == pytest.approx(cagr)
    peak = np.maximum.accumulate(np.concatenate(([cash], eq)))[1:]
    assert m["max_drawdown_pct"] == pytest.approx(100 * (eq / peak - 1).min())
    assert m["calmar"] == pytest.approx(cagr / abs(m["max_drawdown_pct"]))
    below = eq < peak
    longest = max((len(run) for run in "".join("1" if b else "0" for b in below).split("0")),
                  default=0)
    assert m["max_drawdown_duration"] == longest
    t = res.trades
    q = t["return_pct"].to_numpy() / 100
    assert m["n_trades"] == len(t)
    assert m["win_rate_pct"] == pytest.approx(100 * (t["pnl"] > 0).mean())
    assert m["profit_factor"] == pytest.approx(t["pnl"][t["pnl"] > 0].sum()
                                               / -t["pnl"][t["pnl"] < 0].sum())
    assert m["expectancy_pct"] == pytest.approx(100 * q.mean())
    assert m["avg_trade_pct"] == pytest.approx(100 * (np.prod(1 + q) ** (1 / len(q)) - 1))
    assert m["best_trade_pct"] == pytest.approx(100 * q.max())
    assert m["worst_trade_pct"] == pytest.approx(100 * q.min())
    # always in the market from the first entry on (long/short reversals)
    assert m["exposure_pct"] == pytest.approx(
        100 * (1 - np.mean(np.arange(len(eq)) < t["entry_bar"].min())))
    close = data["Close"].to_numpy()
    assert m["buy_hold_return_pct"] == pytest.approx(100 * (close[-1] / close[0] - 1))
    assert m["commissions"] == pytest.approx(t["commission"].sum()
                                             + res.open_trades["commission"].sum())


def test_undefined_metrics_are_nan_or_inf_as_documented() -> None:
    flat = ql.backtest(frame([10.0] * 5), fixed_signals("m_none", [0] * 5))
    assert flat.metrics["n_trades"] == 0
    for name in ("win_rate_pct", "profit_factor", "expectancy_pct", "avg_trade_pct",
                 "sharpe", "calmar"):
        assert math.isnan(flat.metrics[name]), name
    assert flat.metrics["max_drawdown_pct"] == 0.0 and flat.metrics["exposure_pct"] == 0.0
    winner = ql.backtest(frame([10.0, 10.0, 11.0, 12.0]), fixed_signals("m_win", [1, 0, -1, 0]))
    assert winner.metrics["profit_factor"] == math.inf
    assert winner.metrics["sortino"] == math.inf
    assert winner.metrics["win_rate_pct"] == 100.0


def test_periods_per_year() -> None:
    assert periods_per_year("1d") == 252 and periods_per_year("1w") == 52
    assert periods_per_year("1mo") == 12
    session = pd.date_range("2024-01-02 09:30", periods=390, freq="min")
    two_days = session.append(session + pd.Timedelta(days=1))
    assert periods_per_year("1min", two_days) == 390 * 252
    fx = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    assert periods_per_year("1h", fx) == 24 * 252
    assert periods_per_year("1h") == 6.5 * 252


def test_intraday_annualisation_follows_the_data() -> None:
    data = random_walk(390 * 3, seed=2)
    data.index = pd.DatetimeIndex(np.concatenate([
        pd.date_range(f"2024-01-0{d} 09:30", periods=390, freq="min") for d in (2, 3, 4)]))
    res = ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 30})
    assert res.config["interval"] == "1min" and res.config["periods_per_year"] == 390 * 252


def test_metric_labels_units_and_directions_are_declared_once_in_metrics() -> None:
    """What the widget, the reports and the comparison views show of a metric (its label, its
    unit, which value is best) is read from quantlab.metrics, never declared again."""
    from quantlab import metrics
    from quantlab.analytics import Comparison
    from quantlab.notebook import results as widget_results
    from quantlab.render import figures
    from quantlab.render import format as fmt
    from quantlab.render import html as views
    from quantlab.reports import sections

    assert set(metrics.METRIC_INFO) == set(METRICS)
    # one label function, one direction set, everywhere
    assert fmt.metric_label is metrics.metric_label
    assert widget_results.metric_label is metrics.metric_label
    assert views.LOWER_IS_BETTER is metrics.LOWER_IS_BETTER
    assert figures.LOWER_IS_BETTER is metrics.LOWER_IS_BETTER
    assert not hasattr(fmt, "METRIC_LABELS") and not hasattr(fmt, "LOWER_IS_BETTER")
    for name, info in metrics.METRIC_INFO.items():
        assert metrics.METRIC_LABELS[name] == info.label
        assert (name in metrics.LOWER_IS_BETTER) == info.lower_is_better
        assert figures.better(name) == ("min" if info.lower_is_better else "max")
        shown = fmt.format_metric(name, 1234.5)
        if info.unit == metrics.PERCENT:
            assert shown == "1,234.50 %"
        elif info.whole:
            assert shown == "1,234"
        elif info.unit == metrics.CASH:
            assert shown == "1,234.50"
        else:
            assert shown == "1,234.500"
    # the report's metrics table and the results view: the declared labels, grouped
    values = {name: 1.0 for name in METRICS}
    for page in (sections.metrics_html(values), fmt.metrics_table_html(values)):
        for info in metrics.METRIC_INFO.values():
            assert f">{info.label}<" in page.replace("&amp;", "&")
    # a comparison picks its best run by the declared direction
    index = pd.date_range("2024-01-01", periods=3)
    runs = {key: type("R", (), {"metrics": {"volatility_ann_pct": vol, "sharpe": sharpe},
                                "config": {}, "equity": pd.Series([1.0, 2.0, 3.0], index)})()
            for key, vol, sharpe in (("a", 10.0, 1.0), ("b", 20.0, 2.0))}
    cmp = Comparison.from_results(runs)
    assert cmp.best("volatility_ann_pct") == "a" and cmp.best("sharpe") == "b"


def test_a_metric_not_declared_gets_a_label_from_its_name() -> None:
    from quantlab.metrics import PERCENT, RATIO, metric_info

    assert metric_info("omega").label == "Omega" and metric_info("omega").unit == RATIO
    assert metric_info("alpha_pct").label == "Alpha" and metric_info("alpha_pct").unit == PERCENT
