"""Load: N simulated researchers submit backtests and follow their runs' event streams.

    .venv/bin/python bench/bench_load.py [--researchers 20] [--runs-each 6] [--workers 1 2 4]

Team mode on loopback only: a private redis-server on a free port (queue and event streams), the
SQLite registry in a throwaway QUANTLAB_HOME, and real ``quantlab worker -w N`` processes. Each
researcher is a process that submits its runs at once (so 20 x 6 = 120 runs: up to
QUANTLAB_MAX_CONCURRENT=20 running and the rest queued) and follows each run's events until it
ends. Bounded: every wait has a timeout, and the script stops by itself.

It prints, for each worker count: throughput, submit -> first progress event and event delivery
latency percentiles (publication by the worker -> receipt by the researcher), and checks that no
run was lost (every run ends completed, with one started and one completed event) or run twice
(attempts == 1). Targets (issue 9): 20 running and 100 queued without loss; event latency p99
< 100 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_jobs import ROOT, pct, start_redis, start_worker, stop

CONFIG = {"strategy": "sma_crossover", "symbols": ["AAA", "BBB"], "start": "2018-01-01",
          "end": "2022-12-31", "params": {"fast": 10, "slow": 60}, "tags": ["load"]}
FOLLOW_TIMEOUT = 600.0  # seconds a researcher waits for one run at most


class Researcher:
    """One researcher: a process of its own, as a notebook kernel is."""

    def __init__(self, index: int, runs_each: int) -> None:
        self.index, self.runs_each = index, runs_each
        self.submitted: list[tuple[str, float]] = []
        self.first_progress: list[float] = []
        self.latencies: list[float] = []
        self.ends: dict[str, str] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        """Submit the runs while a background thread follows the event stream, as the
        notebook widget does: an event is timed when the follower receives it."""
        import quantlab as ql
        from quantlab.events import open_events

        events = open_events()
        received: list[tuple[Any, float]] = []
        submitting = threading.Event()
        submitting.set()
        follower = threading.Thread(
            target=self._follow, args=(events, events.last_seq(), received, submitting),
            daemon=True)
        follower.start()
        try:
            for k in range(self.runs_each):
                fast = 2 + (self.index * self.runs_each + k) % 45
                t0 = time.time()
                run = ql.submit({**CONFIG, "params": {"fast": fast, "slow": 60}}, cache=False)
                self.submitted.append((run.id, t0))
        except Exception as exc:  # reported by the main process
            self.error = exc
        submitting.clear()
        follower.join(FOLLOW_TIMEOUT)
        self._tally(received)

    def _follow(self, events: Any, after: int, received: list[tuple[Any, float]],
                submitting: threading.Event) -> None:
        """Everything published after ``after``, with its time of receipt, until this
        researcher's runs have all ended (their ids are known once submitting is over)."""
        ended: set[str] = set()
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        while time.monotonic() < deadline:
            mine = {run_id for run_id, _ in self.submitted}
            if not submitting.is_set() and mine <= ended:
                return
            batch = events.wait(None, after=after, timeout=0.5)
            now = time.time()
            for event in batch:
                after = event.seq
                received.append((event, now))
                if event.type in ("completed", "failed", "cancelled"):
                    ended.add(event.run_id)

    def _tally(self, received: list[tuple[Any, float]]) -> None:
        mine = dict(self.submitted)
        progressed: set[str] = set()
        for event, at in received:
            if event.run_id not in mine:
                continue
            self.latencies.append(at - event.ts)
            if event.type == "progress" and event.run_id not in progressed:
                progressed.add(event.run_id)
                self.first_progress.append(event.ts - mine[event.run_id])
            if event.type in ("completed", "failed", "cancelled"):
                self.ends[event.run_id] = event.type
        for run_id in mine:
            self.ends.setdefault(run_id, "lost")


def _ready(_: int) -> None:
    """A researcher's kernel has quantlab loaded before it submits: pay the imports (and the
    validation code's first use, and the submission's store check) before the clock starts."""
    from quantlab.config import BacktestConfig
    from quantlab.jobs.fingerprint import check_symbols

    config = BacktestConfig.from_any(CONFIG)
    check_symbols(config.symbols, config.interval)


def _research(args: tuple[int, int]) -> Researcher:
    researcher = Researcher(*args)
    researcher.run()
    return researcher


def one_round(home: Path, env: dict[str, str], n_workers: int, researchers: int,
              runs_each: int) -> None:
    from quantlab.events import open_events
    from quantlab.jobs.supervisor import worker_alive
    from quantlab.registry import open_registry

    worker = start_worker(home, n_workers, {**env, "QUANTLAB_MAX_CONCURRENT": "20"})
    try:
        import quantlab as ql

        for fast in range(3, 3 + n_workers):  # every worker process warm before the crowd comes
            ql.submit({"strategy": "sma_crossover", "symbols": ["CCC"], "start": "2020-01-01",
                       "params": {"fast": fast, "slow": 30}}, cache=False).wait(timeout=120)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(researchers) as pool:
            pool.map(_ready, range(researchers))  # processes started and quantlab imported
            t0 = time.perf_counter()
            crowd = pool.map(_research, [(i, runs_each) for i in range(researchers)])
            elapsed = time.perf_counter() - t0
    finally:
        stop(worker)
        while worker_alive():
            time.sleep(0.01)
    errors = [r.error for r in crowd if r.error is not None]
    ids = [run_id for r in crowd for run_id, _ in r.submitted]
    registry, events = open_registry(), open_events()
    records = [registry.get_run(i) for i in ids]
    completed = sum(d["status"] == "completed" for d in records)
    twice = sum((d.get("attempts") or 0) > 1 for d in records)
    one_each = sum(
        [e.type for e in events.read(i, limit=10_000)].count("completed") == 1 and
        [e.type for e in events.read(i, limit=10_000)].count("started") == 1 for i in ids)
    lat = [x for r in crowd for x in r.latencies]
    first = [x for r in crowd for x in r.first_progress]
    ms = 1e3
    print(f"\n{n_workers} worker process(es), {researchers} researchers x {runs_each} runs "
          f"= {len(ids)} runs (5 years x 2 symbols each), QUANTLAB_MAX_CONCURRENT=20")
    print(f"  throughput: {len(ids) / elapsed:.1f} runs/s ({elapsed:.1f} s for all)")
    if first:
        print(f"  submit -> first progress: p50 {statistics.median(first) * ms:.0f} ms, "
              f"p99 {pct(first, .99) * ms:.0f} ms (grows with the queue ahead of a run)")
    if lat:
        print(f"  event delivery latency: p50 {statistics.median(lat) * ms:.1f} ms, "
              f"p99 {pct(lat, .99) * ms:.1f} ms over {len(lat)} events (target p99 < 100 ms)")
    lost = len(ids) - completed
    print(f"  completed {completed}/{len(ids)}; lost {lost}; run twice {twice}; "
          f"exactly one started+completed event: {one_each}/{len(ids)}"
          + (f"; researcher errors: {errors[:3]}" if errors else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--researchers", type=int, default=20)
    parser.add_argument("--runs-each", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ql-bench-load-"))
    home = tmp / "home"
    home.mkdir()
    redis_proc, redis_url = start_redis(tmp)
    env = {"QUANTLAB_HOME": str(home), "QUANTLAB_USER": "bench", "PYTHONPATH": str(ROOT),
           "QUANTLAB_REDIS_URL": redis_url, "QUANTLAB_NOTIFY_DISPATCHER": "0"}
    os.environ.update(env)
    for var in ("QUANTLAB_MONGO_URL", "QUANTLAB_QUEUE_MAX", "QUANTLAB_MAX_CONCURRENT"):
        os.environ.pop(var, None)
    try:
        import quantlab as ql

        ql.data.sample(minute=False)
        print("QuantLab load benchmark: Redis queue + streams on loopback, SQLite registry")
        for n in args.workers:
            one_round(home, env, n, args.researchers, args.runs_each)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
