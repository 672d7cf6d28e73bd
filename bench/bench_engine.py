"""Engine benchmarks: QuantLab against backtesting.py, vectorbt and a minimal Numba loop.

Run:  .venv/bin/python bench/bench_engine.py [--quick] [--threads N]

All libraries run on the same data in one process; the script prints times and ratios. The
figures in bench/README.md come from this script. It is a benchmark, not a test: nothing here
fails on a slow machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bars
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent


def row(label: str, timing: common.Timing | float, note: str = "") -> None:
    shown = str(timing) if isinstance(timing, common.Timing) else common.fmt_seconds(timing)
    print(f"  {label:<34} {shown:<34} {note}")


# --- peers ------------------------------------------------------------------------------------

def backtesting_py_sma(df: pd.DataFrame, fast: int, slow: int, commission: float) -> float:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        n1 = fast
        n2 = slow

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    stats = Backtest(df, SmaCross, cash=10_000, commission=commission).run()
    return float(stats["Equity Final [$]"])


def vectorbt_single(close: pd.Series, fast: int, slow: int, commission: float) -> float:
    import vectorbt as vbt

    f = vbt.MA.run(close, fast)
    s = vbt.MA.run(close, slow)
    pf = vbt.Portfolio.from_signals(close, f.ma_crossed_above(s), f.ma_crossed_below(s),
                                    init_cash=10_000, fees=commission, freq="1D")
    pf.sharpe_ratio()
    pf.max_drawdown()
    return float(np.asarray(pf.final_value()).sum())  # one column per symbol


def vectorbt_sweep(close: pd.Series, fast_range: range, slow_range: range,
                   commission: float) -> np.ndarray:
    import vectorbt as vbt

    combos = [(f, s) for f in fast_range for s in slow_range if f < s]
    fast = vbt.MA.run(close, [c[0] for c in combos], short_name="fast")
    slow = vbt.MA.run(close, [c[1] for c in combos], short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(close, entries, exits, init_cash=10_000, fees=commission,
                                    freq="1D")
    pf.sharpe_ratio()
    return np.asarray(pf.final_value())


# --- workloads ----------------------------------------------------------------------------------

def bench_single(ql, df: pd.DataFrame) -> None:
    print("\n1. One SMA-crossover backtest (10/20) on GOOG, 2,148 daily bars, commission 0.2%")
    params = {"fast": 10, "slow": 20}
    ours = common.timeit(lambda: ql.backtest(df, strategy="sma_crossover", params=params,
                                             cash=10_000, commission=0.002, allow_short=True))
    row("QuantLab ql.backtest (+metrics)", ours)
    minimal = common.timeit(lambda: common.minimal_single(df, 10, 20))
    row("minimal Numba loop", minimal, f"QuantLab {common.ratio(ours.median, minimal.median)}")
    vbt = common.timeit(lambda: vectorbt_single(df["Close"], 10, 20, 0.002), max_runs=50)
    row("vectorbt from_signals", vbt, f"QuantLab {common.ratio(ours.median, vbt.median)}")
    btp = common.timeit(lambda: backtesting_py_sma(df, 10, 20, 0.002), max_runs=30)
    row("backtesting.py", btp, f"QuantLab {common.ratio(ours.median, btp.median)}")


def bench_sweep(ql, df: pd.DataFrame, quick: bool, threads_max: int) -> None:
    fr, sr = range(5, 51), range(10, 201)
    n = sum(1 for f in fr for s in sr if f < s)
    print(f"\n2. Sweep fast 5..50 x slow 10..200 on GOOG: {n:,} valid combinations, per-combination metrics")
    params = {"fast": fr, "slow": sr}
    for threads in sorted({1, threads_max}):
        run = lambda t=threads: ql.backtest(df, strategy="sma_crossover", params=params,  # noqa: E731
                                            cash=10_000, commission=0.002, threads=t)
        res, mem = common.peak_extra_memory(run)
        assert len(res.table) == n, len(res.table)
        t = common.timeit(run, min_runs=3, budget=3)
        row(f"QuantLab, {threads} thread(s)", t, f"peak extra memory {mem:.0f} MB")
        if threads == 1:
            ours_1 = t.median
    minimal = common.timeit(lambda: common.minimal_sweep(df, fr, sr), min_runs=3, budget=3)
    row("minimal Numba loop, 1 thread", minimal,
        f"QuantLab (1 thread) {common.ratio(ours_1, minimal.median)}")
    if quick:
        print("  (vectorbt and backtesting.py sweeps skipped with --quick)")
        return
    _, vmem = common.peak_extra_memory(lambda: vectorbt_sweep(df["Close"], fr, sr, 0.002))
    t0 = time.perf_counter()
    vectorbt_sweep(df["Close"], fr, sr, 0.002)
    vt = time.perf_counter() - t0
    row("vectorbt", vt, f"peak extra memory {vmem:.0f} MB; QuantLab {common.ratio(ours_1, vt)}")
    sample = [(f, s) for f in fr for s in sr if f < s][:: n // 40][:40]
    t0 = time.perf_counter()
    for f, s in sample:
        backtesting_py_sma(df, f, s, 0.002)
    per = (time.perf_counter() - t0) / len(sample)
    row("backtesting.py (extrapolated)", per * n,
        f"{len(sample)} combos timed; QuantLab {common.ratio(ours_1, per * n)}")


def bench_stops(ql, df: pd.DataFrame, rounds: int = 15) -> None:
    """The cost of stops in a sweep: the GOOG crossover sweep with and without stop-loss /
    take-profit, one thread (issue 15: with both, at most 2x the sweep without). The variants
    are timed in turns, round after round, so that a load on the machine falls on all of them
    alike; the ratio is of the best times."""
    fr, sr = range(5, 51), range(10, 201)
    print("\n2b. Stops in a sweep: fast 5..50 x slow 10..200 on GOOG, 1 thread")
    params = {"fast": fr, "slow": sr}

    def sweep(**stops: Any) -> Callable[[], Any]:
        return lambda: ql.backtest(df, strategy="sma_crossover", params=params, cash=10_000,
                                   commission=0.002, threads=1, **stops)

    variants: dict[str, dict[str, Any]] = {
        "no stops": {}, "stop_loss=0.05": {"stop_loss": 0.05},
        "take_profit=0.1": {"take_profit": 0.1},
        "stop_loss=0.05, take_profit=0.1": {"stop_loss": 0.05, "take_profit": 0.1},
        "stop_loss=[None, .02, .05, .1] (4x)": {"stop_loss": [None, 0.02, 0.05, 0.1]}}
    runs = {label: sweep(**stops) for label, stops in variants.items()}
    for run in runs.values():
        run()  # compile/warm
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t0)
    base = min(times["no stops"])
    for label, seen in times.items():
        best = min(seen) / (4 if "(4x)" in label else 1)  # per sweep of 7,925 combinations
        note = "" if label == "no stops" else f"{best / base:.2f}x the sweep without (best)"
        row(label, best, f"median {common.fmt_seconds(float(np.median(seen)))}; {note}")


def bench_portfolio(ql) -> None:
    print("\n3. 100 symbols x 2,520 daily bars, SMA crossover 10/50")
    frames = {f"S{i:03d}": common.synthetic_ohlcv(2520, seed=i) for i in range(100)}
    from quantlab.bars import from_frames

    bars = from_frames(frames)
    params = {"fast": 10, "slow": 50}
    ours = common.timeit(lambda: ql.backtest(bars, strategy="sma_crossover", params=params,
                                             cash=1_000_000, commission=0.001), min_runs=5)
    row("QuantLab, one shared-cash portfolio", ours, "(aligned Bars given)")
    ours_frames = common.timeit(lambda: ql.backtest(frames, strategy="sma_crossover",
                                                    params=params, cash=1_000_000,
                                                    commission=0.001), min_runs=3)
    row("QuantLab, from 100 DataFrames", ours_frames, "(validation + alignment included)")
    minimal = common.timeit(lambda: [common.minimal_single(df, 10, 50, 10_000, 0.001)
                                     for df in frames.values()], min_runs=5)
    row("minimal Numba loop, 100 x 1 symbol", minimal,
        f"QuantLab {common.ratio(ours.median, minimal.median)}")
    close = pd.DataFrame({k: v["Close"] for k, v in frames.items()})
    vbt = common.timeit(lambda: vectorbt_single(close, 10, 50, 0.001), min_runs=3)
    row("vectorbt, 100 columns", vbt, f"QuantLab {common.ratio(ours.median, vbt.median)}")
    sub = list(frames.values())[:5]
    t0 = time.perf_counter()
    for df in sub:
        backtesting_py_sma(df, 10, 50, 0.001)
    btp = (time.perf_counter() - t0) / len(sub) * 100
    row("backtesting.py, 100 runs (extrap.)", btp, f"QuantLab {common.ratio(ours.median, btp)}")


def bench_minutes(ql) -> None:
    print("\n4. 1 symbol x 1,000,000 minute bars, SMA crossover 50/200")
    df = common.synthetic_ohlcv(1_000_000, seed=7, freq="min", vol=0.0008, drift=0.0)
    from quantlab.bars import from_frame

    bars = from_frame(df)
    params = {"fast": 50, "slow": 200}
    run = lambda: ql.backtest(bars, strategy="sma_crossover", params=params,  # noqa: E731
                              cash=10_000, commission=0.0)
    trades = run().metrics["n_trades"]
    ours = common.timeit(run, min_runs=5)
    row("QuantLab", ours, f"(aligned Bars given; {trades:,} trades)")
    ours_df = common.timeit(lambda: ql.backtest(df, strategy="sma_crossover", params=params,
                                                cash=10_000, commission=0.0), min_runs=3)
    row("QuantLab from a DataFrame", ours_df, "(validation included)")
    minimal = common.timeit(lambda: common.minimal_single(df, 50, 200, 10_000, 0.0), min_runs=5)
    row("minimal Numba loop", minimal, f"QuantLab {common.ratio(ours.median, minimal.median)}")
    vbt = common.timeit(lambda: vectorbt_single(df["Close"], 50, 200, 0.0), min_runs=3)
    row("vectorbt", vbt, f"QuantLab {common.ratio(ours.median, vbt.median)}")
    t0 = time.perf_counter()
    backtesting_py_sma(df.iloc[:100_000], 50, 200, 0.0)
    btp = (time.perf_counter() - t0) * 10
    row("backtesting.py (100k bars x 10)", btp, f"QuantLab {common.ratio(ours.median, btp)}")


# The data is read from the CSV backtesting.py ships (GOOG.csv), with pandas, which QuantLab
# imports anyway; importing backtesting.test would add ~0.9 s of its own plotting stack.
FRESH = """
import time; t0 = time.perf_counter()
import quantlab as ql
import pandas as pd
GOOG = pd.read_csv(__import__("sys").argv[1], index_col=0, parse_dates=True)
t1 = time.perf_counter()
ql.backtest(GOOG, strategy="sma_crossover", params={"fast": 10, "slow": 20})
t2 = time.perf_counter()
print(f"{t2 - t0:.3f} {t1 - t0:.3f}")
"""


def bench_startup() -> None:
    print("\n5. A fresh process: import quantlab, read GOOG.csv, first backtest")
    csv = os.path.join(os.path.dirname(importlib.util.find_spec("backtesting").origin or ""),
                       "test", "GOOG.csv")
    fresh = [sys.executable, "-c", FRESH, csv]
    colds = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            colds.append(subprocess.run(fresh, env=env, capture_output=True, text=True,
                                        check=True).stdout.split())
            if len(colds) == 1:
                warm = [float(subprocess.run(fresh, env=env, capture_output=True, text=True,
                                             check=True).stdout.split()[0]) for _ in range(3)]
    cold = sorted(float(c[0]) for c in colds)
    row("cold (empty Numba cache)", cold[1],
        f"median of 3 (all: {', '.join(f'{c:.2f}' for c in cold)} s); compiles the kernels")
    row("warm Numba cache", min(warm), f"best of 3; import + read alone {colds[0][1]} s")


# The first sweep of a kind on an empty Numba cache: what a fresh install's (or a fresh
# worker's) first such run waits for. GOOG's bars, once as one symbol and once as three.
FIRST_SWEEP = """
import time
import pandas as pd
import quantlab as ql
GOOG = pd.read_csv(__import__("sys").argv[1], index_col=0, parse_dates=True)
data = {"one": GOOG, "many": {s: GOOG for s in ("A", "B", "C")}}[__import__("sys").argv[2]]
strategy, params = __import__("sys").argv[3], __import__("json").loads(__import__("sys").argv[4])
t0 = time.perf_counter()
ql.backtest(data, strategy=strategy, params=params)
print(f"{time.perf_counter() - t0:.3f}")
"""
FIRST_SWEEPS = (("one", "rsi_reversion", {"period": [10, 14]}),
                ("many", "rsi_reversion", {"period": [10, 14]}),
                ("many", "sma_crossover", {"fast": [5, 10], "slow": 20}))


def bench_first_sweeps() -> None:
    print("\n5b. The first sweep of a kind in a fresh process, on an empty Numba cache")
    csv = os.path.join(os.path.dirname(importlib.util.find_spec("backtesting").origin or ""),
                       "test", "GOOG.csv")
    for symbols, strategy, params in FIRST_SWEEPS:
        times = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as cache:
                command = [sys.executable, "-c", FIRST_SWEEP, csv, symbols, strategy,
                           json.dumps(params)]
                times.append(float(subprocess.run(
                    command, env=dict(os.environ, NUMBA_CACHE_DIR=cache), capture_output=True,
                    text=True, check=True).stdout.split()[-1]))
        times.sort()
        row(f"{strategy} sweep, {symbols} symbol(s)", times[1],
            f"median of 3 (all: {', '.join(f'{t:.2f}' for t in times)} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the slowest peer runs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="the multi-threaded sweep's thread count (default: all cores)")
    parser.add_argument("--only", choices=("stops", "startup"), help="run one workload only")
    args = parser.parse_args()
    import quantlab as ql

    print("QuantLab engine benchmark —", common.machine())
    df = common.goog()
    ql.backtest(df, strategy="sma_crossover", params={"fast": 10, "slow": 20})  # compile/warm
    if args.only == "stops":
        bench_stops(ql, df)
        return
    if args.only == "startup":
        bench_startup()
        bench_first_sweeps()
        return
    bench_single(ql, df)
    bench_sweep(ql, df, args.quick, args.threads)
    bench_stops(ql, df)
    bench_portfolio(ql)
    bench_minutes(ql)
    bench_startup()
    bench_first_sweeps()


if __name__ == "__main__":
    main()
