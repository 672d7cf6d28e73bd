"""Market-data store speed: load into ``Bars`` (median of N warm runs), in a throwaway home.

    .venv/bin/python bench/bench_data.py [--runs 30]

Targets (issue 3): 10 symbols x 10 years daily <= 20 ms warm; 1,000,000 minute bars <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def median_ms(func: Callable[[], object], runs: int) -> float:
    func()  # warm: page cache, manifest cache, imports
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def minute_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    days = pd.bdate_range("2010-01-04", periods=n // 390 + 1)
    stamps = (days.values[:, None] + (np.arange(390) * 60 + 9.5 * 3600).astype("timedelta64[s]")
              ).ravel()[:n]
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.0005,
                         "low": np.minimum(open_, close) * 0.9995, "close": close,
                         "volume": rng.integers(100, 10_000, n).astype(float)},
                        index=pd.DatetimeIndex(stamps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["QUANTLAB_HOME"] = home
        import quantlab as ql

        t0 = time.perf_counter()
        ql.data.sample()
        sample_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ql.data.sample()
        again_ms = (time.perf_counter() - t0) * 1e3
        names = [f"{c}{c}{c}" for c in "ABCDEFGHIJ"]
        daily = median_ms(lambda: ql.data.load(names), args.runs)
        daily_range = median_ms(lambda: ql.data.load(names, "2018-01-01", "2020-12-31"),
                                args.runs)
        fp = median_ms(lambda: ql.data.fingerprint(names), args.runs)
        frame = minute_frame(1_000_000)
        t0 = time.perf_counter()
        ql.data.import_frame("MIN", frame, interval="1min")
        import_s = time.perf_counter() - t0
        minute = median_ms(lambda: ql.data.load("MIN", interval="1min"), max(5, args.runs // 3))
        minute_fp = median_ms(lambda: ql.data.fingerprint("MIN", interval="1min"),
                              max(5, args.runs // 3))
        bars = ql.data.load(names)
        # the same loads with the in-process series cache off: every load decodes the Parquet
        from quantlab.data.store import _SERIES_CACHE

        os.environ["QUANTLAB_DATA_CACHE_MB"] = "0"
        _SERIES_CACHE.clear()
        daily_nc = median_ms(lambda: ql.data.load(names), args.runs)
        minute_nc = median_ms(lambda: ql.data.load("MIN", interval="1min"),
                              max(5, args.runs // 3))
    print(f"sample() first install            {sample_s * 1e3:8.1f} ms")
    print(f"sample() again (idempotent)       {again_ms:8.2f} ms")
    print(f"load 10 symbols x {bars.n_bars} daily bars  {daily:8.2f} ms   (target <= 20 ms)")
    print(f"load 10 symbols, 3-year range     {daily_range:8.2f} ms")
    print(f"fingerprint 10 symbols daily      {fp:8.2f} ms")
    print(f"import_frame 1,000,000 minute bars {import_s * 1e3:7.1f} ms")
    print(f"load 1,000,000 minute bars        {minute:8.2f} ms   (target <= 100 ms)")
    print(f"fingerprint 1,000,000 minute bars {minute_fp:8.2f} ms")
    print("without the in-process series cache (QUANTLAB_DATA_CACHE_MB=0), page cache warm:")
    print(f"load 10 symbols daily             {daily_nc:8.2f} ms   (target <= 20 ms)")
    print(f"load 1,000,000 minute bars        {minute_nc:8.2f} ms   (target <= 100 ms)")


if __name__ == "__main__":
    main()
