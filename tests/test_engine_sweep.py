"""Parameter sweeps: grid order, validity skipping, the table, best selection, chunks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from backtesting.test import GOOG

import quantlab as ql
from quantlab.engine import Simulation, sweep_combinations
from quantlab.engine import validate as V
from quantlab.errors import ConfigError
from quantlab.metrics import METRICS
from quantlab.strategies import Indicators
from tests.support.engine import random_walk


def test_grid_order_and_skipped_combinations() -> None:
    combos, skipped = sweep_combinations("sma_crossover", {"fast": [5, 10, 20], "slow": [10, 20]})
    assert combos == [{"fast": 5, "slow": 10}, {"fast": 5, "slow": 20},
                      {"fast": 10, "slow": 20}]
    assert skipped == 3  # (10,10), (20,10), (20,20)


def test_the_issue_grid_has_7925_valid_combinations() -> None:
    combos, skipped = sweep_combinations("sma_crossover",
                                         {"fast": range(5, 51), "slow": range(10, 201)})
    assert len(combos) == 7925 and skipped == 46 * 191 - 7925


def test_explicit_list_of_combinations_keeps_its_order() -> None:
    combos, skipped = sweep_combinations(
        "sma_crossover", [{"fast": 20, "slow": 50}, {"fast": 60, "slow": 50}, {"fast": 5}])
    assert combos == [{"fast": 20, "slow": 50}, {"fast": 5, "slow": 20}]
    assert skipped == 1


@pytest.mark.parametrize(("strategy", "params"), [
    ("sma_crossover", {"fast": range(5, 51), "slow": range(10, 201)}),
    ("sma_crossover", {"fast": [5, 10, 20], "slow": 20}),
    ("ema_crossover", {"fast": np.arange(3, 9), "slow": [5, 7]}),
    ("rsi_reversion", {"period": [7, 14], "lower": [20, 30.5, 80], "upper": range(50, 90, 10)}),
    ("bollinger_breakout", {"period": [10, 20], "k": [1, 2.5]}),
    ("momentum", {"lookback": [5, 10], "top_n": [1, 2]}),
])
def test_lazy_grid_equals_the_list_of_combinations(strategy: str, params: dict) -> None:
    # the engine keeps a built-in grid as columns; it must be the same combinations, in the
    # same order, with the same Python scalar types, as the public list of dicts
    lazy, lazy_skipped = V.sweep_grid(strategy, params)
    combos, skipped = sweep_combinations(strategy, params)
    assert isinstance(lazy, V.Combinations)
    assert lazy_skipped == skipped and len(lazy) == len(combos)
    assert list(lazy) == combos
    assert [type(v) for c in lazy for v in c.values()] == [
        type(v) for c in combos for v in c.values()]
    middle = slice(len(combos) // 3, 2 * len(combos) // 3 + 1)
    for name in combos[0]:
        assert V.column(lazy[middle], name) == [c[name] for c in combos[middle]]
    assert lazy[-1] == combos[-1]


@pytest.mark.parametrize(("params", "message"), [
    ({"fast": [], "slow": 20}, "empty list"),
    ({"fast": range(30, 40), "slow": range(10, 20)}, "no valid combination"),
    ([], "empty list of combinations"),
    ({"fats": [1, 2]}, "did you mean 'fast'"),
    ({"fast": [0, 5], "slow": 20}, "at least 1"),
])
def test_bad_sweeps_say_what_to_fix(params: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep_combinations("sma_crossover", params)
    with pytest.raises(ConfigError, match=message):  # the engine's lazy grid says the same
        V.sweep_grid("sma_crossover", params)


def test_sweep_table_best_row_and_single_run_agree() -> None:
    res = ql.backtest(GOOG, "sma_crossover", {"fast": range(5, 15), "slow": range(10, 40, 5)},
                      commission=0.001)
    table = res.table
    assert table is not None and len(table) == 10 * 6 - 5  # fast >= slow skipped for slow=10
    assert list(table.columns) == ["fast", "slow", *METRICS]
    assert res.config["skipped"] == 5
    best = int(np.nanargmax(table["sharpe"].to_numpy()))
    assert res.params == {"fast": int(table["fast"][best]), "slow": int(table["slow"][best])}
    single = ql.backtest(GOOG, "sma_crossover", res.params, commission=0.001)
    assert single.metrics == res.metrics
    row = table.iloc[best]
    for name in METRICS:
        assert row[name] == single.metrics[name] or np.isnan(row[name]), name
    assert len(res.trades) == single.metrics["n_trades"]
    # every row is the single run of its combination
    other = table.iloc[7]
    again = ql.backtest(GOOG, "sma_crossover", {"fast": int(other["fast"]),
                                                "slow": int(other["slow"])}, commission=0.001)
    assert again.metrics["equity_final"] == other["equity_final"]


def test_select_another_metric() -> None:
    res = ql.backtest(GOOG, "sma_crossover", {"fast": [5, 10], "slow": [20, 40]},
                      select="total_return_pct")
    assert res.metrics["total_return_pct"] == res.table["total_return_pct"].max()
    with pytest.raises(ConfigError, match="did you mean 'sharpe'"):
        ql.backtest(GOOG, "sma_crossover", {"fast": [5, 10], "slow": 20}, select="sharp")


def test_generic_strategies_sweep_through_the_same_engine() -> None:
    res = ql.backtest(GOOG, "rsi_reversion", {"period": [7, 14], "lower": [20, 30],
                                              "upper": [70, 80]})
    assert len(res.table) == 8
    single = ql.backtest(GOOG, "rsi_reversion", res.params)
    assert single.metrics == res.metrics


def test_sweep_chunks_and_partial_result() -> None:
    params = {"fast": range(3, 12), "slow": range(8, 30, 3)}
    whole = ql.backtest(GOOG, "sma_crossover", params)
    sim = Simulation(GOOG, "sma_crossover", params)
    assert sim.is_sweep and sim.total_units == len(whole.table)
    sim.prepare()
    sim.run(10)
    partial = sim.result(partial=True)
    assert partial.partial and len(partial.table) == 10
    pd.testing.assert_frame_equal(partial.table, whole.table.iloc[:10])
    blob = sim.state_bytes()
    resumed = Simulation(GOOG, "sma_crossover", params)
    resumed.prepare()
    resumed.load_state(blob)
    while not resumed.finished:
        resumed.run(7)
    final = resumed.result()
    assert not final.partial
    pd.testing.assert_frame_equal(final.table, whole.table)
    assert final.params == whole.params and final.metrics == whole.metrics


def test_a_cancelled_sweep_with_nothing_finished() -> None:
    sim = Simulation(GOOG, "sma_crossover", {"fast": [5, 6], "slow": 20})
    sim.prepare()
    res = sim.result(partial=True)
    assert res.partial and res.table is not None and res.table.empty and res.metrics == {}


def test_sweep_memory_does_not_grow_with_combinations() -> None:
    data = random_walk(5000, seed=3)
    ql.backtest(data, "sma_crossover", {"fast": [5, 6], "slow": [20, 21]})  # warm up
    tracemalloc.start()
    res = ql.backtest(data, "sma_crossover", {"fast": range(2, 42), "slow": range(10, 60)})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(res.table)
    assert n > 1400
    # one equity curve per combination would be n * 5000 * 8 bytes = 60+ MB
    assert peak < 20 * 2**20
    assert peak < n * 5000 * 8 / 3


def test_momentum_rotates_across_symbols() -> None:
    frames = {f"S{i}": random_walk(300, seed=10 + i) for i in range(4)}
    res = ql.backtest(frames, "momentum", {"lookback": 20, "top_n": 2}, commission=0.001)
    assert res.metrics["n_trades"] > 10
    held = res.open_trades
    assert len(held) <= 2
    # each holding was sized with a 1/top_n weight: about half of equity at entry
    t = res.trades
    entry_value = (t["size"] * t["entry_price"]).to_numpy()
    assert entry_value.max() < 0.75 * res.equity.max()
    sweep = ql.backtest(frames, "momentum", {"lookback": [10, 20], "top_n": [1, 2]})
    assert len(sweep.table) == 4
    again = ql.backtest(frames, "momentum", sweep.params)
    assert again.metrics == sweep.metrics


@pytest.mark.parametrize("strategy", ["sma_crossover", "ema_crossover"])
def test_crossover_fast_path_rows_equal_single_runs(strategy: str) -> None:
    # crossover sweeps cross precomputed lines inside the parallel kernel; every row must be
    # the single run of its combination, for one symbol and for a portfolio
    frames = {f"S{i}": random_walk(400, seed=30 + i) for i in range(3)}
    frames["S1"] = frames["S1"].drop(frames["S1"].index[50:60])
    for data in (frames["S0"], frames):
        res = ql.backtest(data, strategy, {"fast": [3, 8], "slow": [12, 30]}, commission=0.001,
                          allow_short=True, stop_loss=0.05)
        for _, row in res.table.iterrows():
            single = ql.backtest(data, strategy, {"fast": int(row["fast"]),
                                                  "slow": int(row["slow"])},
                                 commission=0.001, allow_short=True, stop_loss=0.05)
            for name in METRICS:
                assert row[name] == single.metrics[name] or (
                    np.isnan(row[name]) and np.isnan(single.metrics[name])), name


def test_a_small_indicator_budget_splits_the_grid_without_changing_it() -> None:
    data = random_walk(1000, seed=8)
    params = {"fast": range(2, 12), "slow": range(5, 40, 2)}
    whole = ql.backtest(data, "sma_crossover", params)
    sim = Simulation(data, "sma_crossover", params)
    # room for 6 averages: many groups, many evictions (and none computed ahead by prepare)
    sim.prepare(Indicators(sim.bars, max_bytes=6 * 1000 * 8))
    sim.run(sim.total_units)
    assert sim.ind._bytes <= sim.ind.max_bytes
    pd.testing.assert_frame_equal(sim.result().table, whole.table)


def _random_options(rng: np.random.Generator) -> dict:
    options: dict = {
        "cash": float(rng.choice([300.0, 2_000.0, 10_000.0, 1e6])),
        "commission": float(rng.choice([0.0, 0.001, 0.01])),
        "commission_fixed": float(rng.choice([0.0, 0.0, 1.5])),
        "slippage": float(rng.choice([0.0, 0.0, 5.0])),
        "fill": str(rng.choice(["next_open", "close"])),
        "units": str(rng.choice(["whole", "fractional"])),
        "allow_short": bool(rng.random() < 0.5),
        "size": float(rng.choice([1.0, 0.5, 0.9])),
        "close_at_end": bool(rng.random() < 0.5),
    }
    return options


@pytest.mark.parametrize("seed", range(12))
def test_fused_crossover_sweep_equals_the_general_kernel(seed: int) -> None:
    # one-symbol crossover sweeps without stops run on a fused kernel (crossing, filling and
    # measuring in one loop, skipping work whose result is known); every row must equal the
    # general kernel's bit for bit, whatever the options
    rng = np.random.default_rng(seed)
    data = random_walk(int(rng.integers(150, 700)), seed=100 + seed)
    if seed % 4 == 3:  # a rally against a short: ruin
        data = data.copy()
        data.iloc[len(data) // 2:, :4] *= np.linspace(1, 40, len(data) - len(data) // 2)[:, None]
    options = _random_options(rng)
    strategy = "sma_crossover" if seed % 3 else "ema_crossover"
    params = {"fast": list(range(2, 14, 2)), "slow": list(range(5, 60, 6))}
    tables = []
    for fused in (True, False):
        sim = Simulation(data, strategy, params, **options)
        sim.fast_path = fused
        assert sim._fused_crossover() is fused
        sim.prepare()
        sim.run(sim.total_units)
        tables.append(sim.result().table)
    assert tables[0]["n_trades"].sum() > 0
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_fused_sweep_covers_ruin_and_rejections() -> None:
    data = random_walk(400, seed=5)
    data.iloc[200:, :4] *= 30.0  # a gap up: a short held through it is wiped out
    params = {"fast": [2, 3, 5], "slow": [8, 13, 21]}
    tables = []
    for fused in (True, False):
        sim = Simulation(data, "sma_crossover", params, cash=150.0, allow_short=True,
                         commission_fixed=1.0)
        sim.fast_path = fused
        sim.prepare()
        sim.run(sim.total_units)
        tables.append(sim.result().table)
    assert (tables[0]["equity_final"] == 0.0).any()  # some combination was ruined
    assert tables[0]["rejected_orders"].sum() > 0
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_moving_averages_computed_in_pairs_equal_single_ones() -> None:
    from quantlab.indicators import sma, sma_pair

    rng = np.random.default_rng(4)
    x = np.cumsum(rng.normal(0, 1, (3, 500)), axis=1) + 20
    x[1, 100:120] = np.nan
    x[2, :40] = np.nan
    x[0, 300:320] = 5.0  # a run of equal values: pandas returns the value itself
    for n0, n1 in [(1, 2), (3, 50), (200, 7), (499, 600)]:
        a, b = sma_pair(x, n0, n1)
        np.testing.assert_array_equal(a, sma(x, n0))
        np.testing.assert_array_equal(b, sma(x, n1))
        for r in range(3):
            valid = ~np.isnan(x[r])
            expected = pd.Series(x[r][valid]).rolling(n0).mean().to_numpy()
            np.testing.assert_array_equal(a[r][valid], expected)


def test_averages_of_a_close_without_gaps_are_nan_only_in_their_warm_up() -> None:
    # what lets simulate1 read a cross from two bars alone (Simulation._fused_crossover)
    from quantlab.bars import from_frame
    from quantlab.strategies.base import CROSSABLE, Indicators

    ind = Indicators(from_frame(random_walk(300, seed=6)))
    for kind in CROSSABLE:
        for window in (1, 2, 7, 50, 299, 300, 400):
            line = ind.many(kind, [window])[0][0]
            warm_up = min(window - 1, len(line))
            assert np.isnan(line[:warm_up]).all() and not np.isnan(line[warm_up:]).any(), \
                (kind, window)


def test_only_built_in_averages_can_be_crossed_inside_the_kernel() -> None:
    from quantlab.errors import ConfigError
    from quantlab.strategies.base import Strategy

    with pytest.raises(ConfigError, match="crossover_of must be one of sma, ema, got 'rsi'"):
        Strategy(lambda bars, fast=1, slow=2: None, name="x", crossover_of="rsi")


def test_a_sweeps_thread_count_does_not_stay_with_later_runs(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import numba

    from quantlab.errors import ConfigError

    before = numba.get_num_threads()
    data = random_walk(200, seed=2)
    ql.backtest(data, "sma_crossover", {"fast": [3, 5], "slow": [10, 20]}, threads=1)
    assert numba.get_num_threads() == before
    monkeypatch.setenv("QUANTLAB_THREADS", "two")
    with pytest.raises(ConfigError, match="QUANTLAB_THREADS"):
        ql.backtest(data, "sma_crossover", {"fast": [3, 5], "slow": [10, 20]})


def test_prepare_computes_a_crossover_sweeps_averages_ahead_and_counts_them() -> None:
    """Each distinct look-back of the grid, computed before the first chunk, told as done of
    total; the chunks then compute none (the memo holds them), and the table is the same."""
    data = random_walk(600, seed=9)
    params = {"fast": [3, 5, 8], "slow": [20, 30]}
    told: list[tuple[int, int]] = []
    sim = Simulation(data, "sma_crossover", params)
    sim.prepare(progress=lambda done, total: told.append((done, total)))
    assert told[0] == (0, 5) and told[-1] == (5, 5)
    assert [d for d, _ in told] == sorted(d for d, _ in told)
    computed = sim.ind.computed
    assert computed == 5
    sim.run(sim.total_units)
    assert sim.ind.computed == computed
    pd.testing.assert_frame_equal(sim.result().table,
                                  ql.backtest(data, "sma_crossover", params).table)
    # too many look-backs for the memo's budget: computed chunk by chunk, told as 0 of 0
    told.clear()
    small = Simulation(data, "sma_crossover", params)
    small.prepare(Indicators(small.bars, max_bytes=2 * 600 * 8), progress=lambda d, t:
                  told.append((d, t)))
    assert told == [(0, 0)] and small.ind.computed == 0
