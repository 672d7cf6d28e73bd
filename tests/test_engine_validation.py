"""Every bad input gets a ConfigError that names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.engine import validate as V
from quantlab.errors import ConfigError, DataError
from tests.support.engine import frame, random_walk

DATA = random_walk(60, seed=1)


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"strategy": "sma_crosover"}, "strategy", "did you mean 'sma_crossover'"),
    ({"params": {"fats": 5}}, "params.fats", "unknown parameter 'fats'.*did you mean 'fast'"),
    ({"params": {"fast": 20, "slow": 10}}, "params", "requires fast < slow"),
    ({"params": {"fast": 20, "slow": 20}}, "params", "requires fast < slow"),
    ({"params": {"fast": 2.5, "slow": 10}}, "params.fast", "whole number of bars"),
    ({"params": {"fast": 0, "slow": 10}}, "params.fast", "at least 1"),
    ({"cash": -5}, "cash", "cash must be positive"),
    ({"cash": "lots"}, "cash", "cash must be a number"),
    ({"commission": -0.001}, "commission", "must not be negative"),
    ({"commission": 2}, "commission", "write 0.002 for 0.2%"),
    ({"commission_fixed": -1}, "commission_fixed", "must not be negative"),
    ({"slippage": -1}, "slippage", "must not be negative"),
    ({"fill": "clsoe"}, "fill", "did you mean 'close'"),
    ({"fill": "nextopen"}, "fill", "did you mean 'next_open'"),
    ({"units": "partial"}, "units", "choose one of 'whole', 'fractional'"),
    ({"size": 1.5}, "size", r"fraction of equity in \(0, 1\]"),
    ({"stop_loss": 5}, "stop_loss", "e.g. stop_loss=0.05"),
    ({"take_profit": -0.1}, "take_profit", "between 0 and 1"),
    ({"allow_short": "yes"}, "allow_short", "True or False"),
    ({"weights": {"XYZ": 0.5}}, "weights", "not among the symbols"),
    ({"weights": {"data": 1.5}}, "weights", "between 0 and 1"),
    ({"threads": 0}, "threads", "positive whole number"),
    ({"comission": 0.1}, "comission", "did you mean 'commission'"),
    ({"start": "2030-01-01"}, "start", "no bars between"),
    ({"start": "2020-02-01", "end": "2020-01-01"}, "start", "after end"),
])
def test_bad_arguments(kwargs: dict, field: str, message: str) -> None:
    kwargs = {"strategy": "sma_crossover", "params": {"fast": 3, "slow": 10}, **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        ql.backtest(DATA, **kwargs)
    assert info.value.field == field


def test_unknown_strategy_suggestion_is_a_field() -> None:
    with pytest.raises(ConfigError) as info:
        ql.backtest(DATA, "ema_crosover")
    assert info.value.suggestion == "ema_crossover"
    assert "register your own with @ql.strategy" in str(info.value)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda df: df.drop(columns=["Close"]), "missing column"),
    (lambda df: df.iloc[::-1], "not sorted"),
    (lambda df: pd.concat([df.iloc[:3], df.iloc[2:]]), "duplicate timestamp"),
    (lambda df: df.assign(Open=np.where(np.arange(len(df)) == 4, np.nan, df["Open"])),
     "missing \\(NaN\\)"),
    (lambda df: df.assign(Low=np.where(np.arange(len(df)) == 4, -1.0, df["Low"])),
     "must be positive"),
    (lambda df: df.reset_index(drop=True), "DatetimeIndex"),
])
def test_bad_data(mutate: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ql.backtest(mutate(DATA), "sma_crossover", {"fast": 3, "slow": 10})  # type: ignore[operator]


def test_not_data_at_all() -> None:
    with pytest.raises(DataError, match="pass a DataFrame of OHLCV bars"):
        ql.backtest(42, "sma_crossover")


def test_the_checks_are_reusable_functions() -> None:
    assert V.check_params("sma_crossover", {"fast": 5}) == {"fast": 5, "slow": 20}
    assert V.check_commission(0.001, 1) == (0.001, 1.0)
    assert V.check_choice("close", "fill", V.FILLS) == "close"
    assert V.is_sweep({"fast": range(3)}) and not V.is_sweep({"fast": 3})
    with pytest.raises(ConfigError, match="needs parameter"):
        @ql.strategy(name="needs_window")
        def needs(bars, window):  # type: ignore[no-untyped-def]
            return np.zeros(bars.n_bars)

        V.check_params("needs_window", {})


def test_date_slicing_keeps_the_inclusive_range() -> None:
    res = ql.backtest(DATA, "buy_and_hold", start="2020-01-10", end="2020-01-20")
    assert res.equity.index[0] == pd.Timestamp("2020-01-10")
    assert res.equity.index[-1] == pd.Timestamp("2020-01-20")
    assert res.config["n_bars"] == 11


def test_an_empty_frame() -> None:
    with pytest.raises(DataError, match="no bars"):
        ql.backtest(frame([1.0]).iloc[:0], "buy_and_hold")


def test_a_date_only_end_includes_that_whole_day_of_intraday_bars() -> None:
    data = random_walk(48, seed=3)
    data.index = pd.date_range("2024-03-01", periods=48, freq="h")
    res = ql.backtest(data, "buy_and_hold", start="2024-03-01", end="2024-03-01")
    assert len(res.equity) == 24 and res.equity.index[-1] == pd.Timestamp("2024-03-01 23:00")
    timed = ql.backtest(data, "buy_and_hold", end="2024-03-01 05:00")
    assert len(timed.equity) == 6


def test_symbols_from_the_data_store(ql_home: object) -> None:
    ql.data.import_frame("AAA", random_walk(300, seed=1))
    ql.data.import_frame("BBB", random_walk(300, seed=2))
    one = ql.backtest("AAA", "sma_crossover", {"fast": 5, "slow": 20})
    direct = ql.backtest(random_walk(300, seed=1), "sma_crossover", {"fast": 5, "slow": 20})
    assert one.metrics["equity_final"] == pytest.approx(direct.metrics["equity_final"], rel=1e-12)
    both = ql.backtest(["AAA", "BBB"], "buy_and_hold", start="2020-03-01", end="2020-06-30")
    assert both.config["symbols"] == ["AAA", "BBB"]
    assert both.equity.index[0] >= pd.Timestamp("2020-03-01")
    assert both.equity.index[-1] <= pd.Timestamp("2020-06-30")
    with pytest.raises(DataError, match="AAA"):
        ql.backtest("AAB", "buy_and_hold")


def test_an_extra_text_column_is_ignored_and_keeps_the_fast_path() -> None:
    from quantlab.bars import _fast_bars, from_frame

    data = random_walk(300, seed=11)
    tagged = data.assign(ticker="AAA", note="from a CSV export")
    assert _fast_bars(tagged, "data", None) is not None  # converted column by column
    bars, plain = from_frame(tagged), from_frame(data)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(bars, name), getattr(plain, name))
    assert ql.backtest(tagged, "sma_crossover").metrics == ql.backtest(data, "sma_crossover").metrics


def test_an_unknown_option_is_named_before_any_data_is_loaded(ql_home: Path) -> None:
    # the misspelt option, not the (also unknown) symbol: nothing is read from the store
    with pytest.raises(ConfigError, match="unknown option 'comission' — did you mean "
                                          "'commission'"):
        ql.backtest("NOSUCHSYMBOL", "sma_crossover", comission=0.001)
