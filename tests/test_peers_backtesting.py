"""QuantLab reproduces backtesting.py (0.6.x) in its compatible settings.

``fill="next_open", units="whole"`` against ``Backtest(data, SmaCross, cash, commission)``:
the same closed trades (sizes, entry/exit bars and prices, PnL), final equity to 1e-9 relative
and the same maximum drawdown, on backtesting.py's own data sets.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import BTCUSD, EURUSD, GOOG, SMA

import quantlab as ql

DATA = {"GOOG": (GOOG, 10_000), "EURUSD": (EURUSD, 10_000), "BTCUSD": (BTCUSD, 1_000_000)}


def sma_cross(fast: int, slow: int, short: bool) -> type[Strategy]:
    """backtesting.py's canonical SmaCross; a signal in the direction already held is a no-op."""

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, fast)
            self.slow = self.I(SMA, self.data.Close, slow)

        def next(self) -> None:
            if crossover(self.fast, self.slow) and not self.position.is_long:
                self.position.close()
                self.buy()
            elif crossover(self.slow, self.fast) and not self.position.is_short:
                self.position.close()
                if short:
                    self.sell()

    return SmaCross


def run_peer(data: pd.DataFrame, cash: float, commission: float, fast: int, slow: int,
             short: bool, **kwargs: object) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(data, sma_cross(fast, slow, short), cash=cash, commission=commission,
                      **kwargs)
        return bt.run()


def assert_same(stats: pd.Series, res: ql.Result) -> None:
    peer = stats["_trades"]
    ours = res.trades
    assert len(ours) == len(peer) == stats["# Trades"]
    np.testing.assert_array_equal(ours["size"].to_numpy(), peer["Size"].to_numpy(float))
    np.testing.assert_array_equal(ours["entry_bar"].to_numpy(), peer["EntryBar"].to_numpy())
    np.testing.assert_array_equal(ours["exit_bar"].to_numpy(), peer["ExitBar"].to_numpy())
    np.testing.assert_array_equal(ours["entry_price"].to_numpy(), peer["EntryPrice"].to_numpy())
    np.testing.assert_array_equal(ours["exit_price"].to_numpy(), peer["ExitPrice"].to_numpy())
    np.testing.assert_allclose(ours["pnl"].to_numpy(), peer["PnL"].to_numpy(), rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(ours["return_pct"].to_numpy(),
                               100 * peer["ReturnPct"].to_numpy(), rtol=1e-9, atol=1e-12)
    assert list(ours["entry_time"]) == list(peer["EntryTime"])
    assert math.isclose(res.metrics["equity_final"], stats["Equity Final [$]"], rel_tol=1e-9,
                        abs_tol=1e-9)
    assert math.isclose(res.metrics["max_drawdown_pct"], stats["Max. Drawdown [%]"],
                        rel_tol=1e-9, abs_tol=1e-9)
    np.testing.assert_allclose(res.equity.to_numpy(), stats["_equity_curve"]["Equity"],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dataset", sorted(DATA))
@pytest.mark.parametrize("short", [False, True], ids=["long_only", "long_short"])
@pytest.mark.parametrize("commission", [0.0, 0.002])
@pytest.mark.parametrize(("fast", "slow"), [(10, 20), (5, 30), (3, 8)])
def test_sma_crossover_matches_backtesting_py(dataset: str, short: bool, commission: float,
                                              fast: int, slow: int) -> None:
    data, cash = DATA[dataset]
    stats = run_peer(data, cash, commission, fast, slow, short)
    res = ql.backtest(data, "sma_crossover", {"fast": fast, "slow": slow}, cash=cash,
                      commission=commission, fill="next_open", units="whole",
                      allow_short=short)
    assert_same(stats, res)


def test_a_window_of_data_and_a_small_account() -> None:
    # a 1,000-unit account on GOOG rejects some entries in both; slice by dates as well
    data = GOOG.loc["2008-01-01":"2011-12-31"]
    stats = run_peer(data, 1_000, 0.001, 7, 25, True)
    res = ql.backtest(GOOG, "sma_crossover", {"fast": 7, "slow": 25}, cash=1_000,
                      commission=0.001, allow_short=True, start="2008-01-01", end="2011-12-31")
    assert_same(stats, res)


def test_the_account_is_ruined_as_in_backtesting_py() -> None:
    # shorting bitcoin through 2017 empties the account: both stop trading at equity 0
    data, cash = DATA["BTCUSD"]
    stats = run_peer(data, cash, 0.0, 10, 20, True)
    res = ql.backtest(data, "sma_crossover", {"fast": 10, "slow": 20}, cash=cash,
                      allow_short=True)
    assert stats["Equity Final [$]"] == 0.0 == res.metrics["equity_final"]
    assert_same(stats, res)
    assert res.trades["exit_reason"].iloc[-1] == "ruin"


@pytest.mark.parametrize("dataset", sorted(DATA))
@pytest.mark.parametrize("short", [False, True], ids=["long_only", "long_short"])
@pytest.mark.parametrize("commission", [0.0, 0.002])
def test_close_fill_matches_trade_on_close(dataset: str, short: bool, commission: float) -> None:
    # backtesting.py's trade_on_close=True fills market orders at the signal bar's close
    data, cash = DATA[dataset]
    stats = run_peer(data, cash, commission, 10, 20, short, trade_on_close=True)
    res = ql.backtest(data, "sma_crossover", {"fast": 10, "slow": 20}, cash=cash,
                      commission=commission, allow_short=short, fill="close")
    peer = stats["_trades"]
    np.testing.assert_array_equal(res.trades["size"].to_numpy(), peer["Size"].to_numpy(float))
    np.testing.assert_array_equal(res.trades["entry_bar"].to_numpy(), peer["EntryBar"])
    np.testing.assert_array_equal(res.trades["exit_bar"].to_numpy(), peer["ExitBar"])
    np.testing.assert_allclose(res.trades["pnl"].to_numpy(), peer["PnL"].to_numpy(), rtol=1e-9)
    assert math.isclose(res.metrics["equity_final"], stats["Equity Final [$]"], rel_tol=1e-9,
                        abs_tol=1e-9)
    assert math.isclose(res.metrics["max_drawdown_pct"], stats["Max. Drawdown [%]"],
                        rel_tol=1e-9)
