"""Cost of the look-ahead audit (quantlab.research.audit) on 2,500 daily bars.

    .venv/bin/python bench/bench_audit.py [--repeat N]

Times, in one process over a temporary QUANTLAB_HOME holding one symbol of 2,500 bars:
- ``ql.audit`` of a typical notebook strategy (pandas rolling z-score with an EWM trend filter)
  and of a heavier one (five rolling windows), single parameter combination;
- what the first ``submit`` of that strategy adds (``audit_before_queue``: load the bars, audit,
  store the verdict), for a single run and for a 2-parameter sweep (3 edge combinations);
- the second submit (the verdict from the cache);
- the same audit of a strategy that is only shipped source (a REST submit), in a sandbox
  (``isolation.audit_in_sandbox``): the first in the process (which starts and warms the sandbox
  server) and the next ones (a fork per audit).
A benchmark, not a test: nothing fails on a slow machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BARS = 2_500


def frame(n: int = BARS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.012, n)))
    open_ = close * (1 + rng.normal(0, 0.003, n))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.004,
                         "low": np.minimum(open_, close) * 0.996, "close": close,
                         "volume": 1e6}, index=pd.bdate_range("2012-01-02", periods=n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ql-bench-audit-"))
    os.environ["QUANTLAB_HOME"] = str(home)
    os.environ.pop("QUANTLAB_REDIS_URL", None)
    os.environ.pop("QUANTLAB_MONGO_URL", None)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import strategies_for_bench as strategies  # the "notebook" strategies, with source

    import quantlab as ql
    from quantlab.config import BacktestConfig
    from quantlab.jobs.fingerprint import data_fingerprint
    from quantlab.research.audit import audit_before_queue, cut_points
    from quantlab.strategies.usercode import attach_strategy_source

    data = frame()
    ql.data.import_frame("BENCH", data)
    print(f"{BARS:,} bars, {len(cut_points(BARS))} cuts x 2 strategy calls per combination")

    def timed(func: object, repeat: int) -> list[float]:
        out = []
        for _ in range(repeat):
            started = time.perf_counter()
            func()  # type: ignore[operator]
            out.append(time.perf_counter() - started)
        return out

    bars = ql.data.load("BENCH")
    for strat in (strategies.zscore_trend, strategies.five_windows):
        one = timed(lambda s=strat: s.signals(bars, s.params), args.repeat)
        runs = timed(lambda s=strat: ql.audit(s, data), args.repeat)
        print(f"ql.audit {strat.name}: median {statistics.median(runs):.3f} s "
              f"(min {min(runs):.3f}, max {max(runs):.3f}); one signal call "
              f"{statistics.median(one) * 1e3:.1f} ms")

    for label, params in (("single run", {"lookback": 20}),
                          ("sweep lookback 10..60 x band 0.5..2", {"lookback": [10, 20, 40, 60],
                                                                   "band": [0.5, 1.0, 2.0]})):
        config = attach_strategy_source({"strategy": "zscore_trend", "symbols": ["BENCH"],
                                         "params": params})
        cfg = BacktestConfig.from_any(config, check=False)
        fingerprint = data_fingerprint(cfg)
        (home / "audits.sqlite").unlink(missing_ok=True)
        first = timed(lambda c=cfg, f=fingerprint: audit_before_queue(c, f), 1)[0]
        again = timed(lambda c=cfg, f=fingerprint: audit_before_queue(c, f), args.repeat)
        print(f"submit adds ({label}): first {first:.3f} s, then (cached) "
              f"{statistics.median(again) * 1e3:.1f} ms")

    from quantlab.jobs.isolation import audit_in_sandbox

    config = attach_strategy_source({"strategy": "zscore_trend", "symbols": ["BENCH"],
                                     "params": {"lookback": 20}})
    cfg = BacktestConfig.from_any(config, check=False)
    in_kernel = timed(lambda: ql.audit(strategies.zscore_trend, bars, {"lookback": 20}),
                      args.repeat)
    first = timed(lambda: audit_in_sandbox(cfg, bars, timeout=600), 1)[0]
    boxed = timed(lambda: audit_in_sandbox(cfg, bars, timeout=600), args.repeat)
    print(f"shipped source audited in a sandbox (single run): first in the process {first:.3f} s "
          f"(sandbox server start and warm-up), then median {statistics.median(boxed):.3f} s "
          f"vs {statistics.median(in_kernel):.3f} s in-process")


if __name__ == "__main__":
    main()
