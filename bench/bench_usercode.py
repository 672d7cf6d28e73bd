"""What running a notebook strategy apart from the worker costs, and how fast a stuck one stops.

    PYTHONPATH=. .venv/bin/python bench/bench_usercode.py [--rounds 60] [--cancels 5]

1. Added cost per user-code run: the worker's path for a run of a shipped strategy
   (``jobs.execution.simulation`` -> prepare -> chunks -> result -> result blobs) against the
   same strategy loaded and run in this process, on one symbol x 10 years of daily bars.
   Target: p50 <= 30 ms added.
2. A user-strategy sweep (200 combinations) through the same path.
3. A user run stuck in ``while True: pass``, on a real worker in embedded mode: from the cancel
   request to the ``cancelled`` event (the worker's timestamp), and the run time after which
   ``QUANTLAB_MAX_DURATION=3`` ends it. Target: < 1 s after the cancel or the limit.

The script runs unchanged on a checkout from before the sandbox (where the worker executed the
strategy itself): there, 1 and 2 measure the in-worker path and 3 reports that the run was not
stopped.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import quantlab as ql
from quantlab.bars import from_frame
from quantlab.config import BacktestConfig
from quantlab.engine import Simulation
from quantlab.jobs import execution
from quantlab.strategies.usercode import attach_strategy_source, load_shipped_strategy

# the checkout measured: the one on PYTHONPATH (run the same script against another checkout)
ROOT = Path(ql.__file__).resolve().parent.parent


@ql.strategy(name="bench_momentum")
def bench_momentum(bars, n=20):
    close = bars.close[0]
    out = np.zeros(len(close), dtype=np.int8)
    out[n:] = np.where(close[n:] > close[:-n], 1, -1)
    return out


@ql.strategy(name="bench_spinner")
def bench_spinner(bars, n=20):
    while True:
        pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def synthetic_bars(n_bars: int = 2520) -> Any:
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                          "close": close, "volume": 1e6},
                         index=pd.date_range("2010-01-01", periods=n_bars, freq="B"))
    return from_frame(frame, "BENCH")


def worker_path(bars: Any, cfg: BacktestConfig) -> None:
    """What the worker does with a run of a shipped strategy (progress and registry aside)."""
    sim = execution.simulation(bars, cfg)
    try:
        sim.prepare()
        execution.drive(sim, lambda: None)
        sim.result().to_blobs()
    finally:
        close = getattr(sim, "close", None)
        if close is not None:
            close()


def in_process(bars: Any, cfg: BacktestConfig) -> None:
    """The same strategy, loaded and run in this process."""
    strategy = load_shipped_strategy(cfg.strategy, cfg.strategy_source or "")
    sim = Simulation(bars, strategy=strategy, params=cfg.params)
    sim.prepare()
    execution.drive(sim, lambda: None)
    sim.result().to_blobs()


def timings(fn: Any, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def added_cost(bars: Any, params: dict[str, Any], rounds: int) -> None:
    cfg = BacktestConfig.from_any(attach_strategy_source(
        {"strategy": "bench_momentum", "symbols": ["BENCH"], "params": params}), check=False)
    for _ in range(3):  # warm both paths (the sandbox server starts at the first)
        worker_path(bars, cfg)
        in_process(bars, cfg)
    sandboxed, inproc = [], []
    for _ in range(rounds):  # interleaved: machine load hits both alike
        sandboxed += timings(lambda: worker_path(bars, cfg), 1)
        inproc += timings(lambda: in_process(bars, cfg), 1)
    added = [s - i for s, i in zip(sandboxed, inproc, strict=True)]
    print(f"  worker path p50 {1e3 * statistics.median(sandboxed):.1f} ms, p95 "
          f"{1e3 * pct(sandboxed, 0.95):.1f} ms; in process p50 "
          f"{1e3 * statistics.median(inproc):.1f} ms, p95 {1e3 * pct(inproc, 0.95):.1f} ms")
    print(f"  added per run: p50 {1e3 * statistics.median(added):.1f} ms, p95 "
          f"{1e3 * pct(added, 0.95):.1f} ms (n={rounds})")


def start_worker(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    from quantlab.jobs.supervisor import worker_alive

    log = open(home / "bench-worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "quantlab", "worker"],
                              env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    log.close()
    deadline = time.monotonic() + 120
    while not worker_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker


def ending(events: Any, run_id: str, kind: str, within: float) -> Any:
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        found = next((e for e in events.read(run_id) if e.type == kind), None)
        if found is not None:
            return found
        time.sleep(0.01)
    return None


def stuck_runs(cancels: int, limit: float) -> None:
    from quantlab.events import open_events

    tmp = Path(tempfile.mkdtemp(prefix="ql-bench-usercode-"))
    home = tmp / "home"
    home.mkdir()
    os.environ.update({"QUANTLAB_HOME": str(home), "QUANTLAB_USER": "bench",
                       "PYTHONPATH": str(ROOT)})
    for var in ("QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL", "QUANTLAB_MAX_DURATION"):
        os.environ.pop(var, None)
    ql.data.sample(minute=False)
    base = {"symbols": ["AAA"], "start": "2020-01-01", "end": "2020-12-31", "params": {"n": 20}}
    events = open_events()
    worker = start_worker(home, {})
    try:
        ql.submit({**base, "strategy": "bench_momentum"}, cache=False).wait(timeout=120)
        latencies = []
        for _ in range(cancels):
            run = ql.submit({**base, "strategy": "bench_spinner"}, cache=False)
            while run.status != "running":
                time.sleep(0.02)
            # well inside the user code, at a random phase of the worker's 0.1 s checks
            time.sleep(random.uniform(0.5, 0.6))
            asked = time.time()
            run.cancel()
            cancelled = ending(events, run.id, "cancelled", 10)
            if cancelled is None:
                print("  cancel: the stuck run was not stopped within 10 s (user code in the "
                      "worker)")
                return
            latencies.append(cancelled.ts - asked)
        print(f"  cancel -> cancelled event: p50 {1e3 * statistics.median(latencies):.0f} ms, "
              f"max {1e3 * max(latencies):.0f} ms (n={cancels})")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    worker = start_worker(home, {"QUANTLAB_MAX_DURATION": f"{limit:g}"})
    try:
        ql.submit({**base, "strategy": "bench_momentum"}, cache=False).wait(timeout=120)
        run = ql.submit({**base, "strategy": "bench_spinner"}, cache=False)
        failed = ending(events, run.id, "failed", limit + 10)
        if failed is None:
            print(f"  time limit: the stuck run was not stopped within {limit + 10:g} s")
            return
        print(f"  QUANTLAB_MAX_DURATION={limit:g}: failed ({failed.data['reason']}) after "
              f"{failed.data['seconds']:.2f} s of run time")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--cancels", type=int, default=5)
    args = parser.parse_args()
    bars = synthetic_bars()
    print(f"QuantLab at {ROOT}")
    print("1. single run, 1 symbol x 2,520 daily bars:")
    added_cost(bars, {"n": 20}, args.rounds)
    print("2. sweep of 200 combinations, 1 symbol x 2,520 daily bars:")
    added_cost(bars, {"n": list(range(2, 202))}, max(5, args.rounds // 6))
    print("3. a user run stuck in `while True: pass` (real worker, embedded):")
    stuck_runs(args.cancels, limit=3.0)


if __name__ == "__main__":
    main()
