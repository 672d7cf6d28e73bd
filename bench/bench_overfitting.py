"""Overfitting statistics of a sweep: what ``sweep.overfitting()`` costs on the engine bench's
GOOG sweep (fast 5..50 x slow 10..200, 7,925 combinations, 2,148 daily bars), one thread.

```
.venv/bin/python bench/bench_overfitting.py
```

Parts timed: the sweep itself (the baseline, in the same process), the re-simulation that
gives every combination's per-block sums of r, r^2, r^3, r^4 (S = 16 blocks), CSCV over the
C(16, 8) = 12,870 splits from those sums (target <= 2 s), and the whole ``overfitting()``
call (block sums + CSCV + PSR/DSR/minTRL table). A benchmark, not a test: nothing fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main() -> None:
    import quantlab as ql
    from quantlab import sharpe_stats as ss
    from quantlab.research.blocksums import block_sums

    print("QuantLab overfitting statistics benchmark —", common.machine())
    df = common.goog()
    params = {"fast": range(5, 51), "slow": range(10, 201)}

    def sweep() -> ql.Result:
        return ql.backtest(df, strategy="sma_crossover", params=params, cash=10_000,
                           commission=0.002, threads=1)

    res = sweep()
    n = len(res.table)
    res.overfitting(blocks=16)  # compile / warm
    sim = res._source
    bounds = ss.block_bounds(sim.bars.n_bars, 16)
    sums = block_sums(sim, bounds)
    t_sweep = common.timeit(sweep, min_runs=3, budget=3)
    sim.threads = 1
    t_sums = common.timeit(lambda: block_sums(sim, bounds), min_runs=3, budget=3)
    t_cscv = common.timeit(lambda: ss.cscv(sums.n, sums.sums[:, :, 0], sums.sums[:, :, 1]),
                           min_runs=3, budget=5)
    t_all = common.timeit(lambda: res.overfitting(blocks=16), min_runs=3, budget=5)
    ov = res.overfitting(blocks=16)
    print(f"\nGOOG sweep, {n:,} combinations x {sim.bars.n_bars:,} bars, S = 16 "
          f"({len(ov.logits):,} splits), 1 thread")
    print(f"  sweep (baseline)               {common.fmt_seconds(t_sweep.median)}")
    print(f"  re-simulation: block sums      {common.fmt_seconds(t_sums.median)} "
          f"= {t_sums.median / t_sweep.median:.1f}x the sweep")
    print(f"  CSCV from the sums             {common.fmt_seconds(t_cscv.median)} (target <= 2 s)")
    print(f"  overfitting() in all           {common.fmt_seconds(t_all.median)} "
          f"= {t_all.median / t_sweep.median:.1f}x the sweep")
    print(f"  memory of the sums             {sums.sums.nbytes / 1e6:.1f} MB "
          f"(a T x N float matrix would be {n * sim.bars.n_bars * 8 / 1e6:.0f} MB)")
    print(f"  {ov!r}")


if __name__ == "__main__":
    main()
