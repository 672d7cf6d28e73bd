"""Shared helpers for the benchmarks: timing, peak-memory sampling, data, a minimal Numba loop.

The minimal loop is the physical limit QuantLab is measured against: an SMA crossover, long
only, next-open fills, whole units after commission, final equity — nothing else (no stops, no
trades table, no metrics beyond equity, no progress). QuantLab does more, and should stay within
a small factor of it.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psutil
from numba import njit


@dataclass
class Timing:
    median: float
    best: float
    runs: int

    def __str__(self) -> str:
        return f"{fmt_seconds(self.median)} (best {fmt_seconds(self.best)}, n={self.runs})"


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def timeit(fn: Callable[[], Any], *, min_runs: int = 5, max_runs: int = 1000,
           budget: float = 2.0, warmup: int = 1) -> Timing:
    """Median and best wall time of ``fn()`` over as many runs as fit in ``budget`` seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), len(times))


def peak_extra_memory(fn: Callable[[], Any], interval: float = 0.0005) -> tuple[Any, float]:
    """Run ``fn`` once; return its value and the peak RSS above the starting RSS, in MB.

    RSS is sampled by a thread (Numba's allocations are invisible to tracemalloc).
    """
    gc.collect()
    proc = psutil.Process(os.getpid())
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        value = fn()
    finally:
        done.set()
        sampler.join()
    peak = max(peak, proc.memory_info().rss)
    return value, (peak - base) / 2**20


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def goog() -> pd.DataFrame:
    from backtesting.test import GOOG

    return GOOG.copy()


def synthetic_ohlcv(n_bars: int, seed: int, freq: str = "B", start: str = "2010-01-01",
                    vol: float = 0.015, drift: float = 0.0003) -> pd.DataFrame:
    """A seeded geometric random walk with consistent OHLC (``drift``: mean log return per
    bar; keep it 0 for long minute series, or the trend is so strong nothing ever crosses)."""
    rng = np.random.default_rng(seed)
    rets = rng.normal(drift, vol, n_bars)
    close = 100 * np.exp(np.cumsum(rets))
    open_ = close * np.exp(rng.normal(0, vol / 4, n_bars))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 3, n_bars)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 3, n_bars)))
    index = pd.date_range(start, periods=n_bars, freq=freq)
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close,
                         "Volume": rng.integers(1_000, 100_000, n_bars).astype(float)}, index=index)


# --- the minimal Numba loop --------------------------------------------------------------------

@njit(cache=True)
def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
        if i >= w:
            s -= x[i - w]
        if i >= w - 1:
            out[i] = s / w
    return out


@njit(cache=True)
def minimal_cross_loop(open_: np.ndarray, close: np.ndarray, fast: np.ndarray, slow: np.ndarray,
                       cash: float, commission: float) -> float:
    """Long-only SMA crossover, next-open fills, whole units after commission; final equity."""
    units = 0.0
    pending = 0  # +1 buy at next open, -1 sell at next open
    for i in range(1, close.shape[0]):
        if pending == 1 and units == 0.0:
            n = np.floor(cash / (open_[i] * (1 + commission)))
            if n >= 1:
                cash -= n * open_[i] * (1 + commission)
                units = n
        elif pending == -1 and units > 0.0:
            cash += units * open_[i] * (1 - commission)
            units = 0.0
        pending = 0
        if fast[i - 1] < slow[i - 1] and fast[i] > slow[i]:
            pending = 1
        elif fast[i - 1] > slow[i - 1] and fast[i] < slow[i]:
            pending = -1
    return cash + units * close[-1]


def minimal_single(df: pd.DataFrame, fast: int, slow: int, cash: float = 10_000,
                   commission: float = 0.002) -> float:
    close = df["Close"].to_numpy(np.float64)
    open_ = df["Open"].to_numpy(np.float64)
    return minimal_cross_loop(open_, close, rolling_mean(close, fast), rolling_mean(close, slow),
                              cash, commission)


@njit(cache=True)
def minimal_sweep_loop(open_: np.ndarray, close: np.ndarray, smas: np.ndarray, first_window: int,
                       fasts: np.ndarray, slows: np.ndarray, cash: float,
                       commission: float) -> np.ndarray:
    out = np.empty(fasts.shape[0])
    for k in range(fasts.shape[0]):
        out[k] = minimal_cross_loop(open_, close, smas[fasts[k] - first_window],
                                    smas[slows[k] - first_window], cash, commission)
    return out


def minimal_sweep(df: pd.DataFrame, fast_range: range, slow_range: range, cash: float = 10_000,
                  commission: float = 0.002) -> np.ndarray:
    """Every valid (fast < slow) combination; each window's SMA computed once."""
    close = df["Close"].to_numpy(np.float64)
    open_ = df["Open"].to_numpy(np.float64)
    lo = min(fast_range.start, slow_range.start)
    hi = max(fast_range.stop, slow_range.stop)
    smas = np.stack([rolling_mean(close, w) for w in range(lo, hi)])
    combos = [(f, s) for f in fast_range for s in slow_range if f < s]
    fasts = np.array([c[0] for c in combos], dtype=np.int64)
    slows = np.array([c[1] for c in combos], dtype=np.int64)
    return minimal_sweep_loop(open_, close, smas, lo, fasts, slows, cash, commission)


def ratio(ours: float, theirs: float) -> str:
    """'3.2x faster' / '1.4x slower' for QuantLab time ``ours`` against a peer's ``theirs``."""
    if ours <= 0:
        return "n/a"
    r = theirs / ours
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
