"""Chunk size never changes a result; a checkpoint resumes to the same result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.bars import Bars, from_frames
from quantlab.engine import Simulation
from quantlab.errors import RunError
from tests.support.engine import random_walk


def _portfolio() -> dict[str, pd.DataFrame]:
    frames = {f"S{i}": random_walk(400, seed=i) for i in range(3)}
    # holes: S1 misses a stretch, S2 starts late
    frames["S1"] = frames["S1"].drop(frames["S1"].index[100:110])
    frames["S2"] = frames["S2"].iloc[50:]
    return frames


@pytest.fixture(scope="module")
def noisy_strategy() -> str:
    @ql.strategy(name="chunk_noise")
    def noise(bars, seed=1, p=0.08):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(seed)
        out = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=bars.close.shape,
                         p=[p, 1 - 2 * p, p])
        return out

    return "chunk_noise"


OPTIONS = [
    {},
    {"allow_short": True, "commission": 0.001, "slippage": 3},
    {"stop_loss": 0.03, "take_profit": 0.04, "allow_short": True},
    {"fill": "close", "units": "fractional", "stop_loss": 0.02, "close_at_end": True},
    {"commission_fixed": 2.0, "size": 0.7, "close_at_end": True},
]


def _run_in_chunks(sim: Simulation, chunk: int) -> ql.Result:
    sim.prepare()
    while not sim.finished:
        done = sim.run(chunk)
        assert 1 <= done <= chunk
    return sim.result()


def _assert_equal(a: ql.Result, b: ql.Result) -> None:
    assert a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        assert a.metrics[key] == b.metrics[key] or (np.isnan(a.metrics[key])
                                                     and np.isnan(b.metrics[key])), key
    pd.testing.assert_series_equal(a.equity, b.equity)
    pd.testing.assert_frame_equal(a.trades, b.trades)
    pd.testing.assert_frame_equal(a.open_trades, b.open_trades)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_chunk_size_never_changes_the_result(noisy_strategy: str, options: dict) -> None:
    bars = from_frames(_portfolio())
    whole = ql.backtest(bars, noisy_strategy, cash=50_000, **options)
    assert whole.metrics["n_trades"] > 20  # the scenario really trades
    for chunk in (1, 7, 64, 399):
        _assert_equal(_run_in_chunks(Simulation(bars, noisy_strategy, cash=50_000, **options),
                                     chunk), whole)


def test_a_checkpoint_resumes_to_the_uninterrupted_result(noisy_strategy: str) -> None:
    bars = from_frames(_portfolio())
    options = {"allow_short": True, "stop_loss": 0.03, "commission": 0.001}
    whole = ql.backtest(bars, noisy_strategy, cash=50_000, **options)
    first = Simulation(bars, noisy_strategy, cash=50_000, **options)
    first.prepare()
    first.run(123)
    blob = first.state_bytes()
    assert len(blob) < 100_000
    resumed = Simulation(bars, noisy_strategy, cash=50_000, **options)
    resumed.prepare()
    resumed.load_state(blob)
    assert resumed.done_units == 123
    while not resumed.finished:
        resumed.run(50)
    _assert_equal(resumed.result(), whole)


def test_a_tiny_trade_log_grows_without_changing_anything(noisy_strategy: str) -> None:
    bars = from_frames({"X": random_walk(3000, seed=5)})
    sim = Simulation(bars, noisy_strategy, {"p": 0.3}, cash=10_000, allow_short=True)
    res = _run_in_chunks(sim, 3000)
    assert res.metrics["n_trades"] > 500
    assert len(res.trades) == res.metrics["n_trades"]


def test_a_checkpoint_of_another_run_is_refused(noisy_strategy: str) -> None:
    a = Simulation(from_frames(_portfolio()), noisy_strategy)
    a.prepare()
    a.run(10)
    b = Simulation(from_frames({"X": random_walk(50, seed=1)}), noisy_strategy)
    b.prepare()
    with pytest.raises(RunError, match="different run"):
        b.load_state(a.state_bytes())
    with pytest.raises(RunError, match="not a QuantLab engine state"):
        b.load_state(b"garbage")


def test_a_checkpoint_taken_under_other_options_is_refused(noisy_strategy: str) -> None:
    bars = from_frames({"X": random_walk(200, seed=3)})
    a = Simulation(bars, noisy_strategy, commission=0.001)
    a.prepare()
    a.run(50)
    b = Simulation(bars, noisy_strategy, commission=0.002)
    b.prepare()
    with pytest.raises(RunError, match="different run"):
        b.load_state(a.state_bytes())
    same = Simulation(bars, noisy_strategy, commission=0.001)
    same.prepare()
    same.load_state(a.state_bytes())
    assert same.done_units == 50


def test_result_before_the_end_is_refused() -> None:
    sim = Simulation(random_walk(100, seed=2), "sma_crossover", {"fast": 3, "slow": 9})
    with pytest.raises(RunError, match="prepare"):
        sim.run(5)
    sim.prepare()
    sim.run(10)
    assert (sim.done_units, sim.total_units, sim.finished) == (10, 100, False)
    with pytest.raises(RunError, match="not finished"):
        sim.result()


@pytest.mark.parametrize("options", [*OPTIONS, {"allow_short": True, "cash": 300.0}],
                         ids=lambda o: ",".join(o) or "defaults")
def test_the_single_symbol_kernel_equals_the_general_one(noisy_strategy: str,
                                                         options: dict) -> None:
    # one symbol runs on a leaner kernel; it must give exactly what the general one gives,
    # including a missing bar, stops, shorts, ruin and the end of data
    data = random_walk(600, seed=9)
    aligned = from_frames({"X": data.drop(data.index[200:205]), "Y": data})
    # one symbol whose row has NaN bars (no bar on those dates), as in a portfolio
    bars = Bars(aligned.index, ("X",), open=aligned.open[:1], high=aligned.high[:1],
                low=aligned.low[:1], close=aligned.close[:1], volume=aligned.volume[:1])
    assert np.isnan(bars.close).sum() == 5
    options = {"cash": 20_000.0, **options}
    results = []
    for fast in (True, False):
        sim = Simulation(bars, noisy_strategy, {"p": 0.1}, **options)
        sim.fast_path = fast
        results.append(_run_in_chunks(sim, 97))
    assert results[0].metrics["n_trades"] > 10
    _assert_equal(results[0], results[1])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("options", [o for o in OPTIONS if "stop_loss" not in o]
                         + [{"fill": "close", "units": "fractional", "allow_short": True},
                            {"allow_short": True, "cash": 300.0, "commission": 0.01}],
                         ids=lambda o: ",".join(o) or "defaults")
def test_a_crossover_run_crossing_its_lines_in_the_kernel_equals_the_general_one(
        options: dict, seed: int) -> None:
    # a one-symbol crossover crosses its two averages inside simulate1 (no signal array),
    # looking ahead many bars at a time; chunked or not, it must give exactly what the
    # general kernel gives on the signal array, whether the run ends flat or in a trade
    data = random_walk(int(400 + 150 * seed), seed=40 + seed)
    if seed % 2:  # a slide at the end: long-only runs end flat
        data = data.copy()
        tail = len(data) // 5
        data.iloc[-tail:, :4] *= np.linspace(1.0, 0.5, tail)[:, None]
    strategy = "ema_crossover" if seed == 5 else "sma_crossover"
    params = {"fast": 3 + seed, "slow": 11 + 2 * seed}
    results = []
    for fast_path in (True, False):
        sim = Simulation(data, strategy, params, **options)
        sim.fast_path = fast_path
        res = _run_in_chunks(sim, 37 if fast_path else len(data))
        assert (sim.lines is not None) is fast_path  # which kernel really ran
        results.append(res)
    assert results[0].metrics["n_trades"] > 3
    _assert_equal(results[0], results[1])
    if seed % 2 and not options.get("allow_short"):
        assert results[0].metrics["open_trades"] == 0  # the case of a run that ends flat


def test_prepare_with_shared_indicators_gives_the_same_result_and_reuses_them() -> None:
    from quantlab.bars import from_frame
    from quantlab.engine import Simulation
    from quantlab.errors import ConfigError
    from quantlab.strategies.base import Indicators

    frame = _shared_frame()
    bars = from_frame(frame)
    shared = Indicators(bars)
    results = []
    for _ in range(2):
        sim = Simulation(bars, strategy="sma_crossover", params={"fast": 5, "slow": 20})
        sim.prepare(shared)
        while not sim.finished:
            sim.run(100)
        results.append(sim.result())
    assert shared.computed == 2  # computed by the first run only
    fresh = Simulation(bars, strategy="sma_crossover", params={"fast": 5, "slow": 20})
    fresh.prepare()
    fresh.run(fresh.total_units)
    pd.testing.assert_series_equal(results[1].equity, fresh.result().equity)
    other = Simulation(from_frame(frame), strategy="sma_crossover", params={"fast": 5, "slow": 20})
    with pytest.raises(ConfigError, match="indicators over other bars"):
        other.prepare(shared)


def _shared_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close}, index=pd.date_range("2020-01-01", periods=400, freq="B"))
