"""Memoised indicators (issue 15 §2): a user strategy's sweep with and without ``@ql.indicator``.

Run:  .venv/bin/python bench/bench_indicators.py [--repeats N] [--breakdown]

The strategy is the quickstart's z-score reversion, its z-score in a helper function as a
researcher writes it, swept over lookback 10..100 x entry 0.5..3.0 step 0.1 (91 x 26 = 2,366
combinations) on GOOG's 2,148 daily bars. Each pair of versions differs only by the
``@ql.indicator`` line on the helper: with it, each z-score is computed once per lookback
instead of once per combination. Two helpers are measured, because the gain is the helper's
cost over everything else a combination costs (the strategy's own lines, the check of its
signals, the simulation):

- ``pandas``: ``rolling(n).mean()`` and ``rolling(n).std()`` (~0.2-0.3 ms a call here);
- ``window``: mean and std over ``numpy.lib.stride_tricks.sliding_window_view`` (~2 ms a call,
  the cost of the 2.15 ms per combination the issue measured).

All sweeps run in this process, alternately (a busy moment hits every version), on one Numba
thread (``threads=1``), so that the process's CPU time is the work done: the ratios are given on
wall time and on CPU time (on a machine shared with other jobs, wall time also counts the waits
for a core). Each pair's tables must be identical. Also timed: the built-in
``ql.ind.zscore`` (Numba). A benchmark, not a test: nothing here fails on a slow machine (the
identical tables are asserted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

import quantlab as ql


def zscore(close: np.ndarray, lookback: int) -> np.ndarray:
    series = pd.Series(close)
    mean = series.rolling(lookback).mean()
    return ((series - mean) / series.rolling(lookback).std()).to_numpy()


def zscore_window(close: np.ndarray, lookback: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(close, lookback)
    z = np.full(close.shape, np.nan)
    z[lookback - 1:] = ((close[lookback - 1:] - windows.mean(axis=1))
                        / windows.std(axis=1, ddof=1))
    return z


memo_zscore = ql.indicator(zscore)  # the same functions, decorated
memo_zscore_window = ql.indicator(zscore_window)


def _reversion(z: np.ndarray, entry: float, signals: np.ndarray, i: int) -> None:
    signals[i, z < -entry] = 1
    signals[i, z > entry] = -1


@ql.strategy(name="bench_zscore_plain")
def zscore_plain(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(zscore(close, lookback), entry, signals, i)
    return signals


@ql.strategy(name="bench_zscore_memo")
def zscore_memo(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(memo_zscore(close, lookback), entry, signals, i)
    return signals


@ql.strategy(name="bench_window_plain")
def window_plain(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(zscore_window(close, lookback), entry, signals, i)
    return signals


@ql.strategy(name="bench_window_memo")
def window_memo(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(memo_zscore_window(close, lookback), entry, signals, i)
    return signals


@ql.strategy(name="bench_zscore_ind")
def zscore_ind(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(ql.ind.zscore(close, lookback), entry, signals, i)
    return signals


SIGNALS: dict[str, np.ndarray] = {}  # "fixed": the signals of one combination, precomputed


@ql.strategy(name="bench_fixed_signals")
def fixed_signals(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    return SIGNALS["fixed"]  # the engine's own cost: no work in the strategy


GRID = {"lookback": list(range(10, 101)),
        "entry": [round(0.5 + 0.1 * k, 1) for k in range(26)]}


VERSIONS = {  # name -> (label, the name of its version without @ql.indicator)
    "bench_zscore_plain": ("pandas helper, plain", None),
    "bench_zscore_memo": ("pandas helper, @ql.indicator", "bench_zscore_plain"),
    "bench_window_plain": ("window helper, plain", None),
    "bench_window_memo": ("window helper, @ql.indicator", "bench_window_plain"),
    "bench_zscore_ind": ("ql.ind.zscore (built-in)", "bench_zscore_plain"),
}


def _cpu_per_combination(run: Any, n: int, repeats: int) -> float:
    """Median CPU time of ``run()`` over ``repeats`` runs, per combination."""
    spent = []
    for _ in range(repeats):
        c0 = time.process_time()
        run()
        spent.append(time.process_time() - c0)
    return statistics.median(spent) / n


def breakdown(df: pd.DataFrame, repeats: int) -> None:
    """Where a combination's time goes in the pandas helper's memoised sweep (CPU, µs a
    combination, each part measured apart in this process)."""
    from quantlab.bars import as_bars
    from quantlab.engine import simulation

    bars = as_bars(df)
    n = len(GRID["lookback"]) * len(GRID["entry"])
    combos = [(lb, e) for lb in GRID["lookback"] for e in GRID["entry"]]
    SIGNALS["fixed"] = np.zeros(bars.close.shape, np.int8)
    _reversion(zscore(bars.close[0], 20), 1.5, SIGNALS["fixed"], 0)

    def sweep(name: str) -> None:
        ql.backtest(df, strategy=name, params=GRID, commission=0.002, threads=1)

    sweep("bench_fixed_signals")
    parts: dict[str, float] = {}
    parts["memoised sweep, in all"] = _cpu_per_combination(
        lambda: sweep("bench_zscore_memo"), n, repeats)
    parts["engine: a sweep of fixed signals, in all"] = _cpu_per_combination(
        lambda: sweep("bench_fixed_signals"), n, repeats)
    kernel_time: list[float] = []
    kernel = simulation.K.sweep_batch

    def timed_kernel(*a: Any) -> Any:
        c0 = time.process_time()
        out = kernel(*a)
        kernel_time.append(time.process_time() - c0)
        return out

    simulation.K.sweep_batch = timed_kernel  # type: ignore[assignment]
    try:
        for _ in range(repeats):
            sweep("bench_fixed_signals")
    finally:
        simulation.K.sweep_batch = kernel
    parts["  of which the simulation (kernel)"] = statistics.median(kernel_time) / n
    hits: list[float] = []
    clock = time.perf_counter

    @ql.strategy(name="bench_hit_timed")
    def hit_timed(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
        for close in bars.close:
            t0 = clock()
            memo_zscore(close, lookback)
            hits.append(clock() - t0)
        return SIGNALS["fixed"]

    for _ in range(repeats):
        sweep("bench_hit_timed")
    parts["@ql.indicator's lookup (median call in the sweep)"] = statistics.median(hits)
    parts["pandas z-scores, once per lookback"] = _cpu_per_combination(
        lambda: [zscore(bars.close[0], lb) for lb in GRID["lookback"]], n, repeats)
    z = {lb: zscore(bars.close[0], lb) for lb in GRID["lookback"]}

    def own_lines() -> None:
        for lb, entry in combos:
            signals = np.zeros(bars.close.shape, dtype=np.int8)
            for i, _close in enumerate(bars.close):
                _reversion(z[lb], entry, signals, i)

    parts["the strategy's own lines (zeros, loop, 2 compares, 2 masked sets)"] = \
        _cpu_per_combination(own_lines, n, repeats)
    print(f"\nWhere a combination's time goes (pandas helper, @ql.indicator; CPU, median of "
          f"{repeats}, each part measured apart):")
    for label, seconds in parts.items():
        print(f"  {label:<68} {seconds * 1e6:7.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="sweeps of each version")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure where the memoised sweep's time goes")
    args = parser.parse_args()
    print("QuantLab memoised indicators benchmark —", common.machine())
    df = common.goog()
    n = len(GRID["lookback"]) * len(GRID["entry"])
    for name in VERSIONS:  # compile and warm
        ql.backtest(df, strategy=name, params={"lookback": [20, 30], "entry": [1.0]})
    times: dict[str, list[float]] = {name: [] for name in VERSIONS}
    cpu: dict[str, list[float]] = {name: [] for name in VERSIONS}
    tables: dict[str, pd.DataFrame] = {}
    for _ in range(args.repeats):
        for name in VERSIONS:  # alternately, so that a busy moment hits every version
            t0, c0 = time.perf_counter(), time.process_time()
            res = ql.backtest(df, strategy=name, params=GRID, commission=0.002, threads=1)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            tables[name] = res.table
    print(f"\nSweep lookback 10..100 x entry 0.5..3.0 on GOOG ({len(df):,} bars): "
          f"{n:,} combinations, median of {args.repeats}")
    print(f"  {'':<30} {'wall':>10} {'per comb.':>10} {'ratio':>6}   {'CPU':>10} "
          f"{'per comb.':>10} {'ratio':>6}")
    for name, (label, plain_name) in VERSIONS.items():
        wall, work = statistics.median(times[name]), statistics.median(cpu[name])
        ratios = ("", "")
        if plain_name is not None:
            if name != "bench_zscore_ind":
                pd.testing.assert_frame_equal(tables[plain_name], tables[name])
            ratios = (f"{statistics.median(times[plain_name]) / wall:5.1f}x",
                      f"{statistics.median(cpu[plain_name]) / work:5.1f}x")
        print(f"  {label:<30} {common.fmt_seconds(wall):>10} {common.fmt_seconds(wall / n):>10} "
              f"{ratios[0]:>6}   {common.fmt_seconds(work):>10} "
              f"{common.fmt_seconds(work / n):>10} {ratios[1]:>6}")
    print("  each helper's tables with and without @ql.indicator: identical")
    if args.breakdown:
        breakdown(df, args.repeats)


if __name__ == "__main__":
    main()
