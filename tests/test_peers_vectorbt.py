"""QuantLab reproduces vectorbt's ``Portfolio.from_signals`` in close-fill, fractional mode."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt
from backtesting.test import BTCUSD, EURUSD, GOOG

import quantlab as ql

DATA = {"GOOG": GOOG, "EURUSD": EURUSD, "BTCUSD": BTCUSD}


def vbt_portfolio(close: pd.Series, entries: pd.Series, exits: pd.Series, cash: float,
                  fees: float) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vbt.Portfolio.from_signals(close, entries, exits, init_cash=cash, fees=fees,
                                          direction="longonly", freq="1D")


@pytest.mark.parametrize("dataset", sorted(DATA))
@pytest.mark.parametrize("commission", [0.0, 0.001])
@pytest.mark.parametrize(("fast", "slow"), [(10, 20), (5, 30), (2, 6)])
def test_sma_crossover_equity_matches_vectorbt(dataset: str, commission: float, fast: int,
                                               slow: int) -> None:
    data = DATA[dataset]
    close = data["Close"]
    f, s = close.rolling(fast).mean(), close.rolling(slow).mean()
    entries = (f.shift() < s.shift()) & (f > s)
    exits = (f.shift() > s.shift()) & (f < s)
    pf = vbt_portfolio(close, entries, exits, 10_000, commission)
    res = ql.backtest(data, "sma_crossover", {"fast": fast, "slow": slow}, cash=10_000,
                      commission=commission, fill="close", units="fractional")
    np.testing.assert_allclose(res.equity.to_numpy(), pf.value().to_numpy(), rtol=1e-9)
    n_peer = int(pf.trades.count())
    assert res.metrics["n_trades"] + res.metrics["open_trades"] == n_peer
    closed = pf.trades.closed.records_readable
    np.testing.assert_allclose(res.trades["pnl"].to_numpy(), closed["PnL"].to_numpy(),
                               rtol=1e-9)
    assert res.metrics["max_drawdown_pct"] == pytest.approx(100 * pf.max_drawdown(), rel=1e-9)


def test_rsi_signals_from_a_user_strategy_match_vectorbt() -> None:
    # any signal source goes through the same fill engine: a user strategy of random signals
    rng = np.random.default_rng(7)
    sig = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=len(GOOG), p=[0.05, 0.9, 0.05])

    @ql.strategy(name="peer_random_signals")
    def random_signals(bars):  # type: ignore[no-untyped-def]
        return sig

    pf = vbt_portfolio(GOOG["Close"], pd.Series(sig == 1, index=GOOG.index),
                       pd.Series(sig == -1, index=GOOG.index), 10_000, 0.002)
    res = ql.backtest(GOOG, "peer_random_signals", cash=10_000, commission=0.002,
                      fill="close", units="fractional")
    np.testing.assert_allclose(res.equity.to_numpy(), pf.value().to_numpy(), rtol=1e-9)
