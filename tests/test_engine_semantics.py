"""Each fill rule on tiny hand-made bars, against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import quantlab as ql
from tests.support.engine import fixed_signals, frame

OPENS = [10.0, 11.0, 12.0, 13.0, 14.0]
CLOSES = [10.5, 11.5, 12.5, 13.5, 14.5]
BUY1_SELL3 = [0, 1, 0, -1, 0]


def test_next_open_fills_at_the_following_bars_open() -> None:
    name = fixed_signals("t_next_open", BUY1_SELL3)
    res = ql.backtest(frame(OPENS, CLOSES), name, cash=100)
    # buy signal on bar 1 -> 8 units at open[2]=12 (100 // 12); sell on bar 3 -> open[4]=14
    t = res.trades.iloc[0]
    assert (t["size"], t["entry_price"], t["exit_price"]) == (8.0, 12.0, 14.0)
    assert (t["entry_bar"], t["exit_bar"]) == (2, 4)
    assert t["pnl"] == 16.0
    assert res.equity.tolist() == [100.0, 100.0, 104.0, 112.0, 116.0]
    assert res.metrics["equity_final"] == 116.0
    assert res.metrics["n_trades"] == 1 and res.metrics["open_trades"] == 0


def test_close_fill_is_at_the_signal_bars_close() -> None:
    name = fixed_signals("t_close_fill", BUY1_SELL3)
    res = ql.backtest(frame(OPENS, CLOSES), name, cash=100, fill="close")
    t = res.trades.iloc[0]
    # 8 units at close[1]=11.5 (92 spent, 8 left), sold at close[3]=13.5
    assert (t["size"], t["entry_price"], t["exit_price"]) == (8.0, 11.5, 13.5)
    assert res.equity.tolist() == [100.0, 100.0, 108.0, 116.0, 116.0]


def test_whole_units_are_sized_after_commission_and_charged_both_ways() -> None:
    name = fixed_signals("t_commission", BUY1_SELL3)
    res = ql.backtest(frame(OPENS, CLOSES), name, cash=100, commission=0.01)
    t = res.trades.iloc[0]
    # a unit costs 12 * 1.01 = 12.12 -> 8 units (96.96); exit commission 8*14*0.01 = 1.12
    assert t["size"] == 8.0
    assert t["commission"] == pytest.approx(0.96 + 1.12)
    assert t["pnl"] == pytest.approx(16 - 2.08)
    assert t["return_pct"] == pytest.approx(100 * 13.92 / 96)
    assert res.metrics["commissions"] == pytest.approx(2.08)
    assert res.metrics["equity_final"] == pytest.approx(100 - 96 - 0.96 + 112 - 1.12)


def test_commission_reduces_the_unit_count_when_it_must() -> None:
    name = fixed_signals("t_comm_units", [1, 0, 0])
    # 120 buys exactly 10 units at 12 without commission, only 9 with 1% (10 * 12.12 > 120);
    # without commission backtesting.py's 1-epsilon size rule still gives 9 (119.99.. // 12)
    with_comm = ql.backtest(frame([12.0] * 3), name, cash=121, commission=0.01)
    assert with_comm.open_trades["size"].tolist() == [9.0]
    no_comm = ql.backtest(frame([12.0] * 3), name, cash=121)
    assert no_comm.open_trades["size"].tolist() == [10.0]
    exact = ql.backtest(frame([12.0] * 3), name, cash=120)
    assert exact.open_trades["size"].tolist() == [9.0]


def test_fixed_commission_per_order() -> None:
    name = fixed_signals("t_fixed_fee", BUY1_SELL3)
    res = ql.backtest(frame(OPENS, CLOSES), name, cash=100, commission_fixed=5.0)
    t = res.trades.iloc[0]
    # (100 - 5) // 12 = 7 units; two fees of 5
    assert t["size"] == 7.0
    assert t["commission"] == 10.0
    assert res.metrics["equity_final"] == pytest.approx(100 - 84 - 5 + 98 - 5)


def test_an_order_that_cannot_buy_one_unit_is_rejected_and_counted() -> None:
    name = fixed_signals("t_reject", [1, 0, 1, 0, 0])
    res = ql.backtest(frame([50.0] * 5), name, cash=40)
    assert res.metrics["rejected_orders"] == 2
    assert res.metrics["n_trades"] == 0 and res.metrics["open_trades"] == 0
    assert res.equity.tolist() == [40.0] * 5


def test_fractional_units_invest_all_of_equity_after_commission() -> None:
    name = fixed_signals("t_fractional", [1, 0, 0])
    res = ql.backtest(frame([8.0] * 3), name, cash=100, units="fractional", commission=0.01,
                      fill="close")
    units = 100 / (8 * 1.01)
    assert res.open_trades["size"].iloc[0] == pytest.approx(units, rel=1e-15)
    assert res.equity.iloc[-1] == pytest.approx(units * 8, rel=1e-12)


def test_short_reversal_closes_then_opens_the_other_side() -> None:
    name = fixed_signals("t_reverse", [-1, 0, 1, 0, 0])
    data = frame([10.0, 10.0, 10.0, 8.0, 8.0], [10.0, 10.0, 9.0, 8.0, 9.0])
    res = ql.backtest(data, name, cash=100, allow_short=True)
    short = res.trades.iloc[0]
    # short 9 at 10 (cash 190), covered at 8: +18; then long (118 // 8) = 14 at 8
    assert (short["size"], short["entry_price"], short["exit_price"]) == (-9.0, 10.0, 8.0)
    assert short["pnl"] == 18.0
    assert res.open_trades["size"].tolist() == [14.0]
    assert res.equity.tolist() == [100.0, 100.0, 109.0, 118.0, 132.0]


def test_long_only_ignores_sell_signals_when_flat() -> None:
    name = fixed_signals("t_long_only", [-1, 0, 1, 0, 0])
    data = frame([10.0, 10.0, 10.0, 8.0, 8.0], [10.0, 10.0, 9.0, 8.0, 9.0])
    res = ql.backtest(data, name, cash=100)
    assert res.trades.empty
    assert res.open_trades["entry_price"].tolist() == [8.0]


def test_stop_loss_is_taken_first_when_both_levels_are_touched() -> None:
    name = fixed_signals("t_both_touched", [1, 0, 0])
    data = frame([100.0, 100.0, 100.0], [100.0, 100.0, 100.0],
                 highs=[100.0, 106.0, 100.0], lows=[100.0, 94.0, 100.0])
    res = ql.backtest(data, name, cash=1000, stop_loss=0.05, take_profit=0.05)
    t = res.trades.iloc[0]
    assert t["exit_reason"] == "stop_loss"
    assert (t["exit_price"], t["exit_bar"], t["size"]) == (95.0, 1, 9.0)
    assert t["pnl"] == -45.0


def test_take_profit_at_its_level_and_stop_at_the_open_on_a_gap() -> None:
    name = fixed_signals("t_gap", [1, 0, 0, 0, 0, 1, 0, 0])
    data = frame([100.0, 100.0, 101.0, 102.0, 100.0, 100.0, 100.0, 90.0],
                 highs=[100.0, 101.0, 106.0, 102.0, 100.0, 100.0, 101.0, 91.0],
                 lows=[100.0, 99.0, 100.0, 101.0, 100.0, 100.0, 99.0, 89.0])
    res = ql.backtest(data, name, cash=1000, stop_loss=0.05, take_profit=0.05)
    tp, sl = res.trades.iloc[0], res.trades.iloc[1]
    assert (tp["exit_reason"], tp["exit_price"], tp["exit_bar"]) == ("take_profit", 105.0, 2)
    # held since bar 6; bar 7 opens at 90, below the 95 stop: filled at the open
    assert (sl["exit_reason"], sl["exit_price"], sl["exit_bar"]) == ("stop_loss", 90.0, 7)


def test_open_trade_at_end_is_marked_but_not_counted_unless_closed_at_end() -> None:
    name = fixed_signals("t_open_end", [1, 0, 0, 0])
    data = frame([10.0, 10.0, 11.0, 12.0], [10.0, 10.5, 11.5, 13.0])
    res = ql.backtest(data, name, cash=100)
    assert res.metrics["n_trades"] == 0 and res.metrics["open_trades"] == 1
    assert math.isnan(res.metrics["win_rate_pct"])
    # 9 units at open[1]=10 (99.99.. // 10), marked at the last close 13
    assert res.open_trades["unrealized_pnl"].tolist() == [27.0]
    assert res.metrics["equity_final"] == 127.0
    closed = ql.backtest(data, name, cash=100, close_at_end=True)
    assert closed.metrics["n_trades"] == 1 and closed.metrics["open_trades"] == 0
    t = closed.trades.iloc[0]
    assert (t["exit_price"], t["exit_bar"], t["exit_reason"]) == (13.0, 3, "end")
    assert closed.metrics["equity_final"] == 127.0
    assert closed.metrics["win_rate_pct"] == 100.0


def test_slippage_moves_every_fill_against_the_trader() -> None:
    name = fixed_signals("t_slippage", [1, 0, -1, 0])
    data = frame([100.0, 100.0, 110.0, 110.0])
    res = ql.backtest(data, name, cash=1000, slippage=100)  # 1%
    t = res.trades.iloc[0]
    assert t["entry_price"] == pytest.approx(101.0)  # buy above the open
    assert t["exit_price"] == pytest.approx(108.9)  # sell below it
    assert t["size"] == 9.0
    short = ql.backtest(data, fixed_signals("t_slip_short", [-1, 0, 1, 0]), cash=1000,
                        slippage=100, allow_short=True)
    s = short.trades.iloc[0]
    assert s["entry_price"] == pytest.approx(99.0) and s["exit_price"] == pytest.approx(111.1)


def test_symbols_share_cash_by_weight_and_a_missing_bar_delays_the_fill() -> None:
    a = frame([10.0] * 5, [10.0, 10.0, 11.0, 12.0, 12.0])
    b = frame([20.0] * 5, [20.0, 20.0, 20.0, 22.0, 24.0]).drop(a.index[2])
    sig = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    name = fixed_signals("t_two_symbols", sig)
    res = ql.backtest({"A": a, "B": b}, name, cash=1000)
    opened = res.open_trades.set_index("symbol")
    # A: half of 1000 at open[1]=10 -> 49 units (499.99.. // 10)
    assert opened.loc["A", "size"] == 49.0 and opened.loc["A", "entry_bar"] == 1
    # B's signal on bar 1 cannot fill on bar 2 (no bar): it fills at its next open, bar 3
    assert opened.loc["B", "entry_bar"] == 3 and opened.loc["B", "entry_price"] == 20.0
    # at bar 3's open A is marked at that open (10): equity 1000 -> B gets 499.99.. // 20
    assert opened.loc["B", "size"] == 24.0
    # bar 2: B has no bar; A marked at 11 -> 510 + 49*11
    assert res.equity.iloc[2] == 510.0 + 49 * 11.0
    assert res.equity.iloc[-1] == 510 - 24 * 20 + 49 * 12 + 24 * 24


def test_explicit_weights_and_size_fraction() -> None:
    a = frame([10.0] * 3)
    b = frame([10.0] * 3)
    name = fixed_signals("t_weights", np.array([[1, 0, 0], [1, 0, 0]]))
    res = ql.backtest({"A": a, "B": b}, name, cash=1000, weights={"A": 0.8, "B": 0.2},
                      size=0.5)
    sizes = res.open_trades.set_index("symbol")["size"]
    # a size below 1 is used as given: 0.8 * 1000 * 0.5 // 10 and 0.2 * 1000 * 0.5 // 10
    assert sizes["A"] == 40.0 and sizes["B"] == 10.0


def test_ruin_closes_everything_and_stops_trading() -> None:
    name = fixed_signals("t_ruin", [-1, 0, 0, 1, 0])
    data = frame([10.0, 10.0, 25.0, 30.0, 30.0])
    res = ql.backtest(data, name, cash=100, allow_short=True)
    # short 9 at 10 (cash 190); at 25 equity = 190 - 225 < 0: closed, account empty
    assert res.trades.iloc[0]["exit_reason"] == "ruin"
    assert res.equity.tolist() == [100.0, 100.0, 0.0, 0.0, 0.0]
    assert res.metrics["max_drawdown_pct"] == -100.0
    assert res.open_trades.empty
