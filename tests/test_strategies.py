"""Built-in strategies and user strategies registered with @ql.strategy."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.errors import ConfigError, StrategyError
from quantlab.strategies import get_strategy
from tests.support.engine import random_walk

DATA = random_walk(300, seed=4)


def test_builtins_are_listed_with_their_parameters() -> None:
    names = ql.list_strategies()
    for name in ("sma_crossover", "ema_crossover", "rsi_reversion", "bollinger_breakout",
                 "momentum", "buy_and_hold"):
        assert name in names
    sma = get_strategy("sma_crossover")
    assert sma.params == {"fast": 10, "slow": 20}
    assert sma.is_valid({"fast": 5, "slow": 10}) and not sma.is_valid({"fast": 10, "slow": 5})
    assert sma.rule == "fast < slow"
    assert sma.source.lstrip().startswith("def sma_crossover")
    assert sma.source_hash == hashlib.sha256(sma.source.encode()).hexdigest()


@pytest.mark.parametrize(("name", "params"), [
    ("sma_crossover", {"fast": 5, "slow": 20}),
    ("ema_crossover", {"fast": 5, "slow": 20}),
    ("rsi_reversion", {"period": 10, "lower": 35, "upper": 65}),
    ("bollinger_breakout", {"period": 15, "k": 1.5}),
    ("buy_and_hold", {}),
])
def test_each_builtin_trades(name: str, params: dict) -> None:
    res = ql.backtest(DATA, name, params)
    assert res.metrics["n_trades"] + res.metrics["open_trades"] >= 1
    assert res.equity.iloc[-1] == res.metrics["equity_final"]


def test_buy_and_hold_matches_the_buy_hold_metric_without_costs() -> None:
    res = ql.backtest(DATA, "buy_and_hold", units="fractional", fill="close")
    assert res.metrics["total_return_pct"] == pytest.approx(res.metrics["buy_hold_return_pct"])


def test_ema_matches_pandas_and_sma_matches_rolling_mean_bitwise() -> None:
    from quantlab.indicators import ema, sma

    close = DATA["Close"]
    ours = ema(close.to_numpy()[None, :], 12)[0]
    theirs = close.ewm(span=12, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ours[11:], theirs[11:], rtol=1e-12)
    assert np.isnan(ours[:11]).all()
    np.testing.assert_array_equal(sma(close.to_numpy()[None, :], 17)[0],
                                  close.rolling(17).mean().to_numpy())


def test_user_strategy_via_decorator() -> None:
    @ql.strategy
    def breakout(bars, lookback=10):  # type: ignore[no-untyped-def]
        close = pd.Series(bars.close[0])
        high = close.rolling(lookback).max().shift()
        low = close.rolling(lookback).min().shift()
        return np.where(close > high, 1, np.where(close < low, -1, 0))

    assert "breakout" in ql.list_strategies()
    assert breakout.params == {"lookback": 10}
    assert "rolling(lookback).max()" in breakout.source
    res = ql.backtest(DATA, "breakout", {"lookback": 15})
    assert res.params == {"lookback": 15}
    assert res.metrics["n_trades"] >= 1
    sweep = ql.backtest(DATA, "breakout", {"lookback": [5, 10, 20]})
    assert sweep.table["lookback"].tolist() == [5, 10, 20]


def test_user_strategy_with_a_validity_rule_and_indicators() -> None:
    @ql.strategy(name="two_emas", valid=lambda p: p["a"] < p["b"], rule="a < b")
    def two_emas(bars, a=5, b=10, *, ind):  # type: ignore[no-untyped-def]
        from quantlab.indicators import crossover

        return crossover(ind.ema(a), ind.ema(b))

    with pytest.raises(ConfigError, match="requires a < b"):
        ql.backtest(DATA, "two_emas", {"a": 10, "b": 5})
    res = ql.backtest(DATA, "two_emas", {"a": [3, 5, 12], "b": [10]})
    assert len(res.table) == 2 and res.config["skipped"] == 1


def test_user_strategy_that_raises_keeps_its_traceback() -> None:
    @ql.strategy(name="broken")
    def broken(bars, x=1):  # type: ignore[no-untyped-def]
        return 1 / 0

    with pytest.raises(StrategyError, match="'broken' raised ZeroDivisionError") as info:
        ql.backtest(DATA, "broken")
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(("returned", "message"), [
    (lambda n: np.zeros(n - 1), r"shape \(299,\); expected \(300,\)"),
    (lambda n: [0] * n, "returned list; it must return a NumPy array"),
    (lambda n: np.full(n, 2), "signal value 2"),
    (lambda n: np.full(n, np.nan), "signal value nan"),
    (lambda n: np.array(["buy"] * n), "dtype"),
])
def test_wrong_signals_are_a_strategy_error(returned: object, message: str) -> None:
    @ql.strategy(name="wrong_shape")
    def wrong(bars):  # type: ignore[no-untyped-def]
        return returned(bars.n_bars)  # type: ignore[operator]

    with pytest.raises(StrategyError, match=message):
        ql.backtest(DATA, "wrong_shape")


def test_bool_and_series_signals_are_accepted() -> None:
    @ql.strategy(name="series_signals")
    def series_signals(bars):  # type: ignore[no-untyped-def]
        return pd.Series(np.r_[True, np.zeros(bars.n_bars - 1, bool)])

    res = ql.backtest(DATA, "series_signals")
    assert res.metrics["open_trades"] == 1


def test_a_builtin_name_cannot_be_taken() -> None:
    with pytest.raises(ConfigError, match="built-in strategy"):
        @ql.strategy(name="sma_crossover")
        def mine(bars):  # type: ignore[no-untyped-def]
            return np.zeros(bars.n_bars)


def test_source_hash_changes_with_the_source() -> None:
    @ql.strategy(name="versioned")
    def v1(bars, n=1):  # type: ignore[no-untyped-def]
        return np.zeros(bars.n_bars)

    first = get_strategy("versioned").source_hash

    @ql.strategy(name="versioned")
    def v2(bars, n=2):  # type: ignore[no-untyped-def]
        return np.zeros(bars.n_bars)

    assert get_strategy("versioned").source_hash != first
    assert get_strategy("versioned").params == {"n": 2}


def test_rsi_is_wilders_and_std_is_the_sample_deviation() -> None:
    from quantlab.indicators import rolling_std, rsi

    close = DATA["Close"].to_numpy()
    n = 14
    delta = np.diff(close)
    up, down = np.maximum(delta, 0), np.maximum(-delta, 0)
    gain, loss = up[:n].mean(), down[:n].mean()
    expected = [100 - 100 / (1 + gain / loss)]
    for u, d in zip(up[n:], down[n:]):
        gain = (gain * (n - 1) + u) / n
        loss = (loss * (n - 1) + d) / n
        expected.append(100 - 100 / (1 + gain / loss))
    ours = rsi(close[None, :], n)[0]
    assert np.isnan(ours[:n]).all()
    np.testing.assert_allclose(ours[n:], expected, rtol=1e-10)
    np.testing.assert_allclose(rolling_std(close[None, :], 20)[0][19:],
                               pd.Series(close).rolling(20).std().to_numpy()[19:], rtol=1e-10)


def test_indicators_skip_bars_a_symbol_does_not_have() -> None:
    from quantlab.indicators import crossover, sma

    x = np.array([[1.0, 2.0, np.nan, 3.0, 4.0, np.nan, 5.0]])
    assert np.array_equal(sma(x, 2)[0], [np.nan, 1.5, np.nan, 2.5, 3.5, np.nan, 4.5],
                          equal_nan=True)
    a = np.array([[1.0, 1.0, np.nan, 3.0]])
    b = np.array([[2.0, 2.0, np.nan, 2.0]])
    # the cross is measured from the previous bar the symbol had (bar 1), not the gap
    assert crossover(a, b).tolist() == [[0, 0, 0, 1]]
