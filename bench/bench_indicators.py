"""Memoised indicators (issue 15 §2): a user strategy's sweep with and without ``@ql.indicator``.

Run:  .venv/bin/python bench/bench_indicators.py [--repeats N]

The strategy is the quickstart's z-score reversion, its z-score in a helper function as a
researcher writes it (pandas rolling mean and std), swept over lookback 10..100 x entry
0.5..3.0 step 0.1 (91 x 26 = 2,366 combinations) on GOOG's 2,148 daily bars. The two versions
differ only by the ``@ql.indicator`` line on the helper: with it, each z-score is computed once
per lookback instead of once per combination. Both sweeps run in this process, alternately, and
the ratio of their medians is printed; their tables must be identical. Also timed: the same
sweep with the built-in ``ql.ind.zscore`` (Numba). A benchmark, not a test: nothing here fails
on a slow machine (the identical tables are asserted).
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


memo_zscore = ql.indicator(zscore)  # the same function, decorated


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


@ql.strategy(name="bench_zscore_ind")
def zscore_ind(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    signals = np.zeros(bars.close.shape, dtype=np.int8)
    for i, close in enumerate(bars.close):
        _reversion(ql.ind.zscore(close, lookback), entry, signals, i)
    return signals


GRID = {"lookback": list(range(10, 101)),
        "entry": [round(0.5 + 0.1 * k, 1) for k in range(26)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="sweeps of each version")
    args = parser.parse_args()
    print("QuantLab memoised indicators benchmark —", common.machine())
    df = common.goog()
    n = len(GRID["lookback"]) * len(GRID["entry"])
    names = ("bench_zscore_plain", "bench_zscore_memo", "bench_zscore_ind")
    for name in names:  # compile and warm
        ql.backtest(df, strategy=name, params={"lookback": [20, 30], "entry": [1.0]})
    times: dict[str, list[float]] = {name: [] for name in names}
    tables: dict[str, pd.DataFrame] = {}
    for _ in range(args.repeats):
        for name in names:  # alternately, so that a busy moment hits every version
            t0 = time.perf_counter()
            res = ql.backtest(df, strategy=name, params=GRID, commission=0.002)
            times[name].append(time.perf_counter() - t0)
            tables[name] = res.table
    pd.testing.assert_frame_equal(tables["bench_zscore_plain"], tables["bench_zscore_memo"])
    plain = statistics.median(times["bench_zscore_plain"])
    print(f"\nSweep lookback 10..100 x entry 0.5..3.0 on GOOG ({len(df):,} bars): "
          f"{n:,} combinations, median of {args.repeats}")
    for name, label in zip(names, ("without @ql.indicator", "with @ql.indicator",
                                   "ql.ind.zscore (built-in)"), strict=True):
        median = statistics.median(times[name])
        print(f"  {label:<28} {common.fmt_seconds(median):>10}  "
              f"({common.fmt_seconds(median / n)} per combination)  "
              f"{plain / median:5.1f}x  (all: {', '.join(f'{t:.2f}' for t in times[name])} s)")
    print("  tables with and without @ql.indicator: identical")


if __name__ == "__main__":
    main()
