"""Result: lazy pandas views, drawdown, blobs round trip, display."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.engine import ENGINE_VERSION, Result
from tests.support.engine import random_walk

DATA = random_walk(500, seed=11)


def _roundtrip(res: Result) -> Result:
    blobs = res.to_blobs()
    assert all(isinstance(v, bytes) for v in blobs.values())
    return Result.from_blobs(blobs)


def _same(a: Result, b: Result) -> None:
    assert a.metrics == b.metrics or all(
        a.metrics[k] == b.metrics[k] or (np.isnan(a.metrics[k]) and np.isnan(b.metrics[k]))
        for k in a.metrics)
    assert a.params == b.params and a.config == b.config and a.partial == b.partial
    pd.testing.assert_series_equal(a.equity, b.equity)
    pd.testing.assert_frame_equal(a.trades, b.trades)
    pd.testing.assert_frame_equal(a.open_trades, b.open_trades)
    pd.testing.assert_series_equal(a.drawdown, b.drawdown)


def test_single_run_round_trips_exactly() -> None:
    res = ql.backtest(DATA, "sma_crossover", {"fast": 5, "slow": 15}, commission=0.001,
                      allow_short=True)
    assert res.metrics["n_trades"] > 5 and res.metrics["open_trades"] == 1
    back = _roundtrip(res)
    _same(res, back)
    assert back.table is None


def test_sweep_round_trips_with_its_table_and_inf_nan_metrics() -> None:
    res = ql.backtest(DATA, "sma_crossover", {"fast": [3, 5], "slow": [8, 499]})
    assert np.isnan(res.table["win_rate_pct"]).any()  # slow=499 never trades
    back = _roundtrip(res)
    _same(res, back)
    pd.testing.assert_frame_equal(res.table, back.table)


def test_views_and_config() -> None:
    res = ql.backtest(DATA, "sma_crossover", {"fast": 5, "slow": 15}, cash=5_000)
    assert res.equity.index.equals(DATA.index) and res.equity.name == "equity"
    dd = res.drawdown
    assert (dd <= 0).all() and dd.min() == pytest.approx(res.metrics["max_drawdown_pct"])
    assert list(res.trades.columns[:9]) == ["symbol", "size", "entry_time", "exit_time",
                                            "entry_price", "exit_price", "pnl", "return_pct",
                                            "commission"]
    assert res.trades["pnl"].sum() + res.open_trades["unrealized_pnl"].sum() == pytest.approx(
        res.metrics["equity_final"] - 5_000)
    assert res.config["engine_version"] == ENGINE_VERSION == ql.ENGINE_VERSION
    assert res.config["cash"] == 5_000 and res.config["fill"] == "next_open"
    assert len(res.config["strategy_source_hash"]) == 64
    text = repr(res)
    assert "sma_crossover" in text and "sharpe" in text
    assert "<table>" in res._repr_html_()
