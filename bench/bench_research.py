"""What the research tools cost: the chunk fingerprints a submit records for the run diff
(against the data fingerprint a submit already computes, in the same process), and bootstrap
confidence intervals.

    python bench/bench_research.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

import quantlab as ql
from quantlab.bars import Bars
from quantlab.data.chunks import chunk_fingerprints
from quantlab.data.loading import fingerprint_bars


def best_of(repeats: int, work: Callable[[], object]) -> float:
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def synthetic_bars(symbols: int, n: int) -> Bars:
    rng = np.random.default_rng(0)
    index = pd.DatetimeIndex(pd.bdate_range("2015-01-01", periods=n))
    arrays = {name: rng.normal(100, 1, (symbols, n))
              for name in ("open", "high", "low", "close", "volume")}
    return Bars(index, tuple(f"S{i}" for i in range(symbols)), **arrays)


def main() -> None:
    bars = synthetic_bars(10, 2500)
    chunks = best_of(20, lambda: chunk_fingerprints(bars))
    whole = best_of(20, lambda: fingerprint_bars(bars))
    print(f"chunk fingerprints, 10 symbols x 2,500 bars: {chunks * 1e3:.2f} ms "
          f"({chunks / whole:.1f} x the data fingerprint, {whole * 1e3:.2f} ms)")
    rng = np.random.default_rng(1)
    index = pd.bdate_range("2015-01-01", periods=1500)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, len(index))))
    frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                          "close": close, "volume": 1e6}, index=index)
    result = ql.backtest(frame, "sma_crossover", {"fast": 10, "slow": 40})
    stationary = best_of(3, lambda: result.confidence(n=1000))
    trades = best_of(3, lambda: result.confidence(("max_drawdown_pct",), method="trades",
                                                  n=1000))
    print(f"confidence, 1,500 bars, 3 metrics, 1,000 stationary resamples: "
          f"{stationary:.3f} s; 1,000 trade resamples ({len(result.trades)} trades): "
          f"{trades:.3f} s")


if __name__ == "__main__":
    main()
