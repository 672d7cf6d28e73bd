"""Every numeric execution option is a sweep dimension (issue 15, part 1): ``stop_loss``,
``take_profit``, ``commission``, ``commission_fixed``, ``slippage`` and ``size`` take a list or a
range as params do; the grid is params x options; each row of ``.table`` is exactly the single
run with those values; stops run on the one-symbol fast kernel with the general kernel's
results; bad swept values are refused naming the option and the fix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.config import BacktestConfig
from quantlab.engine import Simulation
from quantlab.engine.options import SWEEPABLE
from quantlab.errors import ConfigError
from quantlab.metrics import METRICS
from tests.support import jobs as support
from tests.support.engine import frame, random_walk

# fixtures (pytest finds them in the module's namespace)
home = support.home
workers = support.workers

OPTIONS = ("commission", "commission_fixed", "slippage", "size", "stop_loss", "take_profit")


def same_metrics(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Every metric equal, NaN equal to NaN: exactness, not closeness."""
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]
        for k in a)


def row_options(row: pd.Series, names: list[str]) -> dict[str, Any]:
    return {name: None if pd.isna(row[name]) else float(row[name]) for name in names}


def gappy_walk(n_bars: int, seed: int) -> pd.DataFrame:
    """A random walk whose opens often jump away from the previous close (up to +-6%): stops
    are touched inside bars and gapped through at opens, long and short."""
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, n_bars))
    jump = np.where(rng.random(n_bars) < 0.15, rng.normal(0, 0.03, n_bars), 0.0)
    opens = np.concatenate(([100.0], close[:-1])) * (1 + jump)
    high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0, 0.012, n_bars)))
    low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0, 0.012, n_bars)))
    return frame(opens, close, high, low, start="2020-01-01")


def test_the_sweepable_options_are_declared_once() -> None:
    assert SWEEPABLE == OPTIONS
    from quantlab.engine.options import options_table

    table = options_table()
    for name in OPTIONS:
        assert f"| `{name}` |" in table and "list or range" in table.split(f"`{name}`")[1][:80]
    assert "| `cash` | 10,000 | cash | - |" in table


def test_each_row_of_an_options_sweep_equals_the_single_run_exactly() -> None:
    data = gappy_walk(700, seed=1)
    swept = {"commission": [0.0, 0.002], "commission_fixed": [0.0, 1.5],
             "slippage": [0.0, 7.0], "size": [1.0, 0.5], "stop_loss": [None, 0.03],
             "take_profit": [None, 0.08]}
    params = {"fast": [5, 12], "slow": [20, 40]}
    res = ql.backtest(data, "sma_crossover", params, allow_short=True, **swept)
    assert len(res.table) == 4 * 2 ** 6
    # a column per swept option, after the params, before the metrics
    assert list(res.table.columns[:8]) == ["fast", "slow", *OPTIONS]
    assert res.config["stop_loss"] == [None, 0.03]
    for i in (0, 1, 37, 63, 64, 101, 150, 200, 255):
        row = res.table.iloc[i]
        single = ql.backtest(data, "sma_crossover", {"fast": int(row.fast), "slow": int(row.slow)},
                             allow_short=True, **row_options(row, list(OPTIONS)))
        table_row = {k: (v.item() if hasattr(v, "item") else v)
                     for k, v in row.drop(["fast", "slow", *OPTIONS]).items()}
        assert same_metrics({k: single.metrics[k] for k in table_row}, table_row), i
    # the options vary: this is not one run repeated
    assert res.table["total_return_pct"].nunique() > 100


def test_the_grid_is_params_then_options_the_last_fastest_and_the_best_reruns() -> None:
    data = random_walk(400, seed=3)
    res = ql.backtest(data, "sma_crossover", {"fast": [5, 8], "slow": 30},
                      stop_loss=[0.02, 0.05], commission=[0.0, 0.001])
    got = list(zip(res.table.fast, res.table.commission, res.table.stop_loss))
    assert got == [(5, 0.0, 0.02), (5, 0.0, 0.05), (5, 0.001, 0.02), (5, 0.001, 0.05),
                   (8, 0.0, 0.02), (8, 0.0, 0.05), (8, 0.001, 0.02), (8, 0.001, 0.05)]
    # the best combination carries its options: rerun as one backtest, it is the same run
    assert set(res.params) == {"fast", "slow", "commission", "stop_loss"}
    again = ql.backtest(data, "sma_crossover", res.params)
    assert same_metrics(again.metrics, res.metrics)
    pd.testing.assert_series_equal(again.equity, res.equity)
    # ... also with the sweep's own keywords (the combination's values take precedence)
    again = ql.backtest(data, "sma_crossover", res.params, stop_loss=[0.02, 0.05])
    assert again.table is None and same_metrics(again.metrics, res.metrics)


def test_options_alone_sweep_and_a_list_of_combinations_can_carry_them() -> None:
    data = random_walk(300, seed=4)
    res = ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 20}, size=[0.25, 0.5, 1.0])
    assert list(res.table["size"]) == [0.25, 0.5, 1.0]
    exposure = [ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 20}, size=s)
                .metrics["equity_final"] for s in (0.25, 0.5, 1.0)]
    assert list(res.table["equity_final"]) == exposure
    listed = ql.backtest(data, "sma_crossover",
                         [{"fast": 5, "slow": 20, "size": 0.5}, {"fast": 5, "slow": 20}],
                         size=[0.25, 1.0])
    # the first carries its size, the second is crossed with the keyword's list
    assert list(listed.table["size"]) == [0.5, 0.25, 1.0]
    assert list(listed.table["equity_final"]) == [exposure[1], exposure[0], exposure[2]]


def test_a_chunked_and_resumed_options_sweep_equals_the_whole_one() -> None:
    data = gappy_walk(500, seed=5)
    kwargs: dict[str, Any] = {"stop_loss": [None, 0.02, 0.04], "take_profit": [0.05, 0.1]}
    whole = ql.backtest(data, "rsi_reversion", {"period": [7, 14]}, **kwargs)
    sim = Simulation(data, "rsi_reversion", {"period": [7, 14]}, **kwargs)
    sim.prepare()
    sim.run(5)
    state = sim.state_bytes()
    resumed = Simulation(data, "rsi_reversion", {"period": [7, 14]}, **kwargs)
    resumed.prepare()
    resumed.load_state(state)
    while not resumed.finished:
        resumed.run(3)
    pd.testing.assert_frame_equal(resumed.result().table, whole.table)
    # a checkpoint of another option grid is refused
    other = Simulation(data, "rsi_reversion", {"period": [7, 14]},
                       stop_loss=[None, 0.02, 0.05], take_profit=[0.05, 0.1])
    other.prepare()
    with pytest.raises(ql.RunError, match="different run"):
        other.load_state(state)


# -- stops on the fast kernel -----------------------------------------------------------------

STOP_CASES = [
    {"stop_loss": 0.02},
    {"take_profit": 0.03},
    {"stop_loss": 0.015, "take_profit": 0.04},
    {"stop_loss": 0.03, "take_profit": 0.02, "allow_short": True},
    {"stop_loss": 0.02, "allow_short": True, "fill": "close"},
    {"take_profit": 0.05, "fill": "close", "units": "fractional", "commission": 0.001},
    {"stop_loss": 0.01, "take_profit": 0.01, "allow_short": True, "slippage": 10.0,
     "close_at_end": True},
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", STOP_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_a_run_with_stops_on_the_fast_kernel_equals_the_general_kernel(
        case: dict[str, Any], seed: int) -> None:
    data = gappy_walk(500 + 100 * seed, seed=10 + seed)
    params = {"fast": 3 + seed, "slow": 12 + 3 * seed}
    results = []
    for fast_path in (True, False):
        sim = Simulation(data, "sma_crossover", params, **case)
        sim.fast_path = fast_path
        sim.prepare()
        while not sim.finished:
            sim.run(41)  # in chunks: the stop levels travel in the state
        assert (sim.lines is not None) is fast_path  # which kernel really ran
        results.append(sim.result())
    fast, general = results
    pd.testing.assert_frame_equal(fast.trades, general.trades)
    pd.testing.assert_series_equal(fast.equity, general.equity)
    assert same_metrics(fast.metrics, general.metrics)
    reasons = set(fast.trades.exit_reason)
    assert reasons & {"stop_loss", "take_profit"}, reasons


def test_stops_hit_inside_bars_and_gapped_through_long_and_short_on_the_fast_kernel() -> None:
    data = gappy_walk(2000, seed=21)
    stops = {"stop_loss": 0.02, "take_profit": 0.03, "allow_short": True}
    res = ql.backtest(data, "sma_crossover", {"fast": 4, "slow": 15}, **stops)
    trades = res.trades
    opens = data["Open"].to_numpy()
    level = np.where(trades.exit_reason == "stop_loss",
                     trades.entry_price * (1 - 0.02 * np.sign(trades["size"])),
                     trades.entry_price * (1 + 0.03 * np.sign(trades["size"])))
    stopped = trades.exit_reason.isin(["stop_loss", "take_profit"]).to_numpy()
    at_open = np.isclose(trades.exit_price, opens[trades.exit_bar])
    at_level = np.isclose(trades.exit_price, level)
    long = (trades["size"] > 0).to_numpy()
    for side in (long, ~long):
        assert (stopped & side & at_level & ~at_open).any()  # touched inside the bar
        assert (stopped & side & at_open & ~at_level).any()  # gapped through at the open
    general = Simulation(data, "sma_crossover", {"fast": 4, "slow": 15}, **stops)
    general.fast_path = False
    general.prepare()
    general.run(general.total_units)
    pd.testing.assert_frame_equal(general.result().trades, trades)


@pytest.mark.parametrize("strategy", ["sma_crossover", "rsi_reversion"])
def test_every_row_of_a_sweep_with_stops_equals_the_general_kernel(strategy: str) -> None:
    data = gappy_walk(600, seed=31)
    params = ({"fast": [3, 5, 8], "slow": [15, 25]} if strategy == "sma_crossover"
              else {"period": [5, 9, 14], "lower": [25.0, 30.0]})
    options = {"stop_loss": [None, 0.01, 0.025], "take_profit": [None, 0.02, 0.06]}
    res = ql.backtest(data, strategy, params, allow_short=True, **options)
    assert len(res.table) == 6 * 9
    names = [c for c in res.table.columns if c not in METRICS and c not in OPTIONS]
    for i in range(len(res.table)):
        row = res.table.iloc[i]
        sim = Simulation(data, strategy, {k: res.table[k].iloc[i].item() for k in names},
                         allow_short=True,
                         **row_options(row, ["stop_loss", "take_profit"]))
        sim.fast_path = False  # the general kernel
        sim.prepare()
        sim.run(sim.total_units)
        general = sim.result().metrics
        table_row = {k: (v.item() if hasattr(v, "item") else v)
                     for k, v in row.drop([*names, "stop_loss", "take_profit"]).items()}
        assert same_metrics({k: general[k] for k in table_row}, table_row), i


@pytest.mark.parametrize(("strategy", "params"), [
    ("sma_crossover", {"fast": [4, 6], "slow": 20}),
    ("momentum", {"lookback": [10, 20], "top_n": [1, 2]}),  # weights follow the params
])
def test_a_portfolio_sweep_over_options_equals_its_single_runs(strategy: str,
                                                               params: dict[str, Any]) -> None:
    frames = {"A": gappy_walk(400, seed=41), "B": gappy_walk(400, seed=42),
              "C": gappy_walk(400, seed=43)}
    options = {"stop_loss": [None, 0.03], "commission": [0.0, 0.002], "size": [0.5, 1.0]}
    res = ql.backtest(frames, strategy, params, cash=100_000, **options)
    names = [c for c in res.table.columns if c not in METRICS and c not in OPTIONS]
    n_params = math.prod(len(v) for v in params.values() if isinstance(v, list))
    assert len(res.table) == n_params * 8
    assert set(OPTIONS) & set(res.table.columns) == set(options)
    for i in range(0, len(res.table), 3):
        row = res.table.iloc[i]
        single = ql.backtest(frames, strategy, {k: res.table[k].iloc[i].item() for k in names},
                             cash=100_000, **row_options(row, list(options)))
        table_row = {k: (v.item() if hasattr(v, "item") else v)
                     for k, v in row.drop([*names, *options]).items()}
        assert same_metrics({k: single.metrics[k] for k in table_row}, table_row), i


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "field", "message"), [
    ({"commission": [0.001, -0.01]}, "commission",
     "commission=[0.001, -0.01] sweeps a value it cannot take: commission must not be "
     "negative, got -0.01"),
    ({"stop_loss": [0.02, 1.0]}, "stop_loss",
     "stop_loss=[0.02, 1.0] sweeps a value it cannot take: stop_loss must be a fraction of the "
     "entry price between 0 and 1, got 1.0; e.g. stop_loss=0.05 for 5%; remove or fix that value"),
    ({"take_profit": []}, "take_profit",
     "take_profit sweeps over an empty list; give at least one value, e.g. take_profit=[0.1]"),
    ({"size": [0.5, 2.0]}, "size", "size must be a fraction of equity in (0, 1], got 2.0"),
    ({"cash": [1_000, 2_000]}, "cash",
     "cash cannot be swept (only commission, commission_fixed, slippage, size, stop_loss, "
     "take_profit can); give one value"),
    ({"commission": [0.0, 0.001], "slippage": np.arange(0.0, 10.0, 0.5)}, "params",
     "the sweep spans 20,020,000 combinations (500 fast x 1,001 slow x 2 commission x "
     "20 slippage), more than the 1,000,000 one run may hold"),
])
def test_bad_swept_options_name_the_option_and_the_fix(options: dict[str, Any], field: str,
                                                        message: str) -> None:
    data = random_walk(100, seed=1)
    params: dict[str, Any] = {"fast": [5, 6], "slow": 20}
    if field == "params":  # the limit on combinations counts the options' values too
        params = {"fast": list(range(1, 501)), "slow": list(range(501, 1502))}
    with pytest.raises(ConfigError) as info:
        ql.backtest(data, "sma_crossover", params, **options)
    assert info.value.field == field
    assert message in str(info.value)


BASE = {"strategy": "sma_crossover", "symbols": ["AAA"], "params": {"fast": [5, 10], "slow": 30}}


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"stop_loss": "0.05..0.01"}, "stop_loss",
     "stop_loss: the range 0.05..0.01 is empty (it goes from 0.05 towards 0.01 with step 1); "
     "swap the ends or change the step's sign"),
    ({"commission": "0.001..0.002:0.0"}, "commission", "has a step of 0"),
    ({"commission": [0.001, -0.001]}, "commission", "commission must not be negative"),
    ({"stop_loss": [0.5, 1.5]}, "stop_loss", "stop_loss must be a fraction of the entry price"),
    ({"slippage": []}, "slippage", "slippage sweeps over an empty list"),
    ({"take_profit": "lots"}, "take_profit",
     "take_profit: expected a number, or a list or range of numbers to sweep, got 'lots'"),
    ({"params": {"fast": list(range(1, 1001)), "slow": list(range(2, 503))},
      "commission": [0.0, 0.001]}, "params",
     "the sweep spans 1,002,000 combinations (1,000 fast x 501 slow x 2 commission)"),
])
def test_bad_swept_options_in_a_config_name_the_option_and_the_fix(
        extra: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BacktestConfig.from_any({**BASE, **extra})
    assert info.value.field == field
    assert message in str(info.value)
    assert "pydantic" not in str(info.value) and "Value error" not in str(info.value)


def test_a_yaml_config_sweeps_options_with_the_params_range_syntax() -> None:
    config = BacktestConfig.from_any(
        "strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: [5, 10], slow: 30}\n"
        "stop_loss: 0.01..0.03:0.01\ntake_profit: {start: 0.05, stop: 0.15, step: 0.05}\n"
        "commission: [0.0, 0.001]\nslippage: 5\n")
    assert config.stop_loss == [0.01, 0.02, 0.03]
    assert config.take_profit == [0.05, 0.1]
    assert config.commission == [0.0, 0.001] and config.slippage == 5.0
    assert config.is_sweep
    assert config.combinations() == 2 * 3 * 2 * 2
    canonical = config.canonical()
    assert canonical["stop_loss"] == [0.01, 0.02, 0.03]
    # options alone make a sweep
    alone = BacktestConfig.from_any({**BASE, "params": {"fast": 5, "slow": 30},
                                     "size": [0.5, 1.0]})
    assert alone.is_sweep and alone.combinations() == 2


def test_the_config_hash_follows_the_swept_values(home: Path) -> None:
    from quantlab.jobs.fingerprint import config_hash

    base = {**BASE, "start": "2020-01-01", "end": "2021-12-31"}
    one = config_hash({**base, "stop_loss": [0.02, 0.05]})
    assert one == config_hash({**base, "stop_loss": "0.02..0.05:0.03"})  # the same values
    assert one != config_hash({**base, "stop_loss": [0.02, 0.06]})
    assert one != config_hash({**base, "stop_loss": 0.02})
    assert config_hash({**base, "stop_loss": 0.02}) == config_hash({**base, "stop_loss": 0.02})



# -- a queued sweep over options ---------------------------------------------------------------

def test_a_queued_split_sweep_over_options_equals_the_backtest(home: Path, workers: Any) -> None:
    """The shards split the combinations of params x options: each carries its option values
    to the worker that runs it, and the merged table is the in-process sweep's."""
    config = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2019-01-01",
              "end": "2021-12-31", "params": {"fast": [5, 10, 20], "slow": 50},
              "stop_loss": [0.02, 0.05], "commission": "0.0..0.002:0.002"}
    workers.start(env={"QUANTLAB_SHARD_COMBINATIONS": "5", "QUANTLAB_JOBS_MAX_CHUNK": "2"})
    run = ql.submit(config).wait(timeout=support.WAIT)
    record = run.record
    assert record["status"] == "completed", record.get("error")
    assert any("split into 3 shards" in line["message"] for line in run.logs())
    expected = ql.backtest(["AAA"], "sma_crossover", {"fast": [5, 10, 20], "slow": 50},
                           start="2019-01-01", end="2021-12-31", stop_loss=[0.02, 0.05],
                           commission=[0.0, 0.002])
    result = run.result()
    assert len(result.table) == 12
    pd.testing.assert_frame_equal(result.table, expected.table)
    assert result.params == expected.params
    assert same_metrics(result.metrics, expected.metrics)


# -- break-even cost ----------------------------------------------------------------------------

def _winning_run(**options: Any) -> tuple[pd.DataFrame, ql.Result]:
    for seed in range(20):
        data = random_walk(1000, seed=seed)
        res = ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 30}, **options)
        if res.metrics["total_return_pct"] > 20:
            return data, res
    raise AssertionError("no winning run among the seeds")


@pytest.mark.parametrize("options", [{}, {"commission_fixed": 1.0, "slippage": 5.0},
                                     {"stop_loss": 0.03, "allow_short": True}],
                         ids=["plain", "fixed-and-slippage", "stops-short"])
def test_break_even_cost_is_where_total_return_crosses_zero(options: dict[str, Any]) -> None:
    data, res = _winning_run(**options)
    cost = res.break_even_cost(tol=1e-8)
    assert 0 < cost < 0.5

    def total_return(commission: float) -> float:
        return ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 30},
                           **{**options, "commission": commission}).metrics["total_return_pct"]

    assert total_return(cost - 1e-6) > 0 > total_return(cost + 1e-6)
    # the run's own commission does not move the answer: the commission is replaced
    costly = ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 30},
                         **{**options, "commission": 0.001})
    assert costly.break_even_cost(tol=1e-8) == pytest.approx(cost, abs=2e-8)


def test_break_even_cost_is_found_once_per_run() -> None:
    # the results view, its re-renders and the user's own call share the ~20 re-simulations
    _, res = _winning_run()
    simulate = res._total_return_at
    assert simulate is not None
    calls: list[float] = []
    res._total_return_at = lambda commission: calls.append(commission) or simulate(commission)
    first = res.break_even_cost()
    made = len(calls)
    assert made > 10
    assert res.break_even_cost() == first and res.break_even_cost(strict=True) == first
    assert len(calls) == made
    res.break_even_cost(tol=1e-3)  # another precision is another search
    assert len(calls) > made


def test_break_even_cost_of_a_sweep_is_its_chosen_combination() -> None:
    data, _ = _winning_run()
    sweep = ql.backtest(data, "sma_crossover", {"fast": [5, 8], "slow": 30},
                        commission=[0.0, 0.001], select="total_return_pct")
    alone = ql.backtest(data, "sma_crossover", sweep.params)
    assert sweep.break_even_cost() == alone.break_even_cost()


def test_no_break_even_is_nan_and_strict_says_why() -> None:
    from tests.support.engine import fixed_signals

    data = random_walk(300, seed=1)
    never = ql.backtest(data, fixed_signals("h15_never", np.zeros(300)))
    assert math.isnan(never.break_even_cost())
    with pytest.raises(ql.RunError, match="never trades, so no commission changes its return"):
        never.break_even_cost(strict=True)
    losing = next(r for r in (ql.backtest(random_walk(1000, seed=s), "sma_crossover",
                                          {"fast": 5, "slow": 30}) for s in range(20))
                  if r.metrics["total_return_pct"] < 0)
    assert math.isnan(losing.break_even_cost())
    with pytest.raises(ql.RunError, match="does not make money even at zero commission"):
        losing.break_even_cost(strict=True)


def test_the_results_view_shows_the_break_even_line(home: Path) -> None:
    from quantlab.engine.result import Result
    from quantlab.render.results import break_even_html

    _, res = _winning_run()
    line = break_even_html(res)
    assert line.startswith('<div class="ql-break-even">Break-even commission: ')
    assert f"{res.break_even_cost():.4%} of traded value per fill" in line
    never = ql.backtest(random_walk(100, seed=1), "sma_crossover", {"fast": 5, "slow": 99})
    assert "none (the run never trades" in break_even_html(never)
    # a stored run's result re-simulates from the data store
    stored = ql.backtest("AAA", "sma_crossover", {"fast": 5, "slow": 30}, start="2019-01-01",
                         end="2021-12-31", allow_short=True)
    again = Result.from_blobs(stored.to_blobs())
    assert again._total_return_at is None
    if stored.metrics["total_return_pct"] > 0:
        assert again.break_even_cost() == stored.break_even_cost()
    else:
        assert math.isnan(again.break_even_cost()) and math.isnan(stored.break_even_cost())


def test_the_backtest_cell_of_the_docs_sweeps_params_and_options() -> None:
    """docs/notebook.md's cell, through the magic's own parsing (``build_config``) and the
    config that ``ql.submit`` validates with."""
    from quantlab.notebook.magics import build_config

    body = ('strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: "10..30:10", slow: [100, 150]}\n'
            "stop_loss: 0.01..0.05:0.01          # 5 values\n"
            "take_profit: [null, 0.1]            # null: no target\n"
            "commission: [0.0005, 0.001, 0.002]\n")
    assert body.splitlines()[2:] == [
        line for line in Path(__file__).resolve().parents[1].joinpath("docs", "notebook.md")
        .read_text().split('%%backtest --name "crossover: stops and costs"\n')[1]
        .split("```")[0].splitlines()[2:]]
    config = BacktestConfig.from_any(build_config(body))
    assert config.params == {"fast": [10, 20, 30], "slow": [100, 150]}
    assert config.stop_loss == [0.01, 0.02, 0.03, 0.04, 0.05]
    assert config.take_profit == [None, 0.1]
    assert config.combinations() == 180
    with pytest.raises(ConfigError, match=r"stop_loss: the range 0\.05\.\.0\.01 is empty") as info:
        BacktestConfig.from_any(build_config(body.replace("0.01..0.05:0.01", "0.05..0.01")))
    assert info.value.field == "stop_loss"
