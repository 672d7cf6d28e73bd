"""Queue latency and throughput of runs as jobs, in team mode on a private redis-server.

    .venv/bin/python bench/bench_jobs.py [--rounds 30] [--burst 100] [--cancels 5] [--embedded]

Everything runs in a throwaway QUANTLAB_HOME (sample data, SQLite registry) with Redis (queue
and events) on a free port; workers are real ``python -m quantlab worker`` processes,
warmed up before measuring. Latencies use the event timestamps written by the worker, so the
client's polling does not count.

Targets (issue 4): submit -> first progress event 30 ms; one-year daily backtest submit ->
completed 100 ms (p50); cached submit 20 ms; 100 runs at once to 4 workers with
QUANTLAB_MAX_CONCURRENT=20: all complete, none lost or run twice.

Cancel latency (issue 13: under 1 s for every run): request -> ``cancelled`` event (for a queued
run, the whole ``cancel()`` call), p50 over ``--cancels`` runs of each kind: a queued run, a
running unsplit sweep (10,000 combinations) and a running sweep split into 4 shards (40,000; one
worker: it coordinates, the other shards wait on the queue). The worker's engine is capped at
one combination per call (QUANTLAB_JOBS_MAX_CHUNK=1, no added delay) so that the sweeps run
long enough to be cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


def start_worker(home: Path, threads: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker process, returned once it holds the worker lock (so that ``submit`` in
    embedded mode does not start one of its own)."""
    from quantlab.jobs.supervisor import worker_alive

    log = open(home / f"bench-worker-{threads}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantlab", "worker", "--workers", str(threads)],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 120
    while not worker_alive() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_event(events: Any, run_id: str, kind: str, timeout: float = 30.0) -> Any:
    after = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events.wait(run_id, after=after, timeout=0.5):
            after = event.seq
            if event.type == kind:
                return event
    raise RuntimeError(f"no {kind} event for run {run_id} within {timeout} s")


def config(fast: int, year: int = 2020) -> dict[str, Any]:
    return {"strategy": "sma_crossover", "symbols": ["AAA"], "start": f"{year}-01-01",
            "end": f"{year}-12-31", "params": {"fast": fast, "slow": 60}}


# The cancel section's worker: sweeps of over 10,000 combinations split into shards of 10,000,
# one combination per engine call.
CANCEL_ENV = {"QUANTLAB_SHARD_COMBINATIONS": "10000", "QUANTLAB_JOBS_MAX_CHUNK": "1"}


def sweep(slows: int, year: int = 2015) -> dict[str, Any]:
    """A sweep of 100 x ``slows`` combinations (all valid) over 5 years of daily bars."""
    return {"strategy": "sma_crossover", "symbols": ["AAA"], "start": f"{year}-01-01",
            "end": f"{year + 4}-12-31",
            "params": {"fast": list(range(2, 102)), "slow": list(range(120, 120 + slows))}}


def simulating(events: Any, run_id: str, timeout: float = 120.0) -> None:
    """Wait for the run's first progress event with a combination done."""
    after = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events.wait(run_id, after=after, timeout=0.5):
            after = event.seq
            if event.type == "progress" and event.data.get("done_units", 0) > 0 \
                    and event.data.get("step") == "simulating":
                return
    raise RuntimeError(f"run {run_id} simulated nothing within {timeout} s")


def cancel_latency(ql: Any, events: Any, rounds: int) -> None:
    """Cancel request -> cancelled event, for a queued run, a running unsplit sweep (10,000
    combinations) and a running split one (40,000: 4 shards), ``rounds`` of each."""
    queued: list[float] = []
    unsplit: list[float] = []
    split: list[float] = []

    def cancelled_after(run: Any, asked: float) -> float:
        status = run.wait(timeout=120).status
        if status != "cancelled":
            raise RuntimeError(f"run {run.id} ended {status} before its cancel: make it longer")
        return float(first_event(events, run.id, "cancelled", timeout=120).ts - asked)

    for i in range(rounds):
        for slows, into in ((400, split), (100, unsplit)):
            run = ql.submit(sweep(slows, 2015 + i % 5), cache=False)
            simulating(events, run.id)
            waiting = ql.submit(config(10 + i), cache=False)  # behind the sweep: queued
            asked = time.time()
            waiting.cancel()  # the whole call: its message is off the queue when it returns
            queued.append(time.time() - asked)
            first_event(events, waiting.id, "cancelled", timeout=120)
            asked = time.time()
            run.cancel()
            into.append(cancelled_after(run, asked))
    ms = 1e3
    for label, values in (("queued run (the cancel call)", queued), ("running unsplit sweep", unsplit),
                          ("running sweep split into 4 shards", split)):
        print(f"cancel -> cancelled event, {label}: p50 {statistics.median(values) * ms:.1f} ms, "
              f"max {max(values) * ms:.1f} ms over {len(values)}   (target < 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--cancels", type=int, default=5,
                        help="rounds of the cancel latency (0: skip it)")
    parser.add_argument("--embedded", action="store_true",
                        help="SqliteHuey and SQLite events instead of Redis")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ql-bench-jobs-"))
    home = tmp / "home"
    home.mkdir()
    env = {"QUANTLAB_HOME": str(home), "QUANTLAB_USER": "bench", "PYTHONPATH": str(ROOT)}
    redis_proc = None
    if not args.embedded:
        redis_proc, env["QUANTLAB_REDIS_URL"] = start_redis(tmp)
    os.environ.update(env)
    for var in ("QUANTLAB_MONGO_URL", "QUANTLAB_QUEUE_MAX", "QUANTLAB_MAX_CONCURRENT",
                *(("QUANTLAB_REDIS_URL",) if args.embedded else ())):
        os.environ.pop(var, None)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        import quantlab as ql
        from quantlab.events import open_events
        from quantlab.jobs.supervisor import worker_alive

        ql.data.sample(minute=False)
        worker = start_worker(home, 1, env)
        workers.append(worker)
        events = open_events()
        # warm both ends: the worker (its first run loads the data and Parquet paths) and this
        # client (imports, connections, the data store's caches)
        for fast in (5, 6, 7):
            ql.submit(config(fast), cache=False).wait(timeout=120)

        first_progress, completed, submit_cost = [], [], []
        for i in range(args.rounds):
            t0 = time.time()
            run = ql.submit(config(8 + i % 40), cache=False)
            submit_cost.append(time.time() - t0)
            progress = first_event(events, run.id, "progress")
            done = first_event(events, run.id, "completed")
            first_progress.append(progress.ts - t0)
            completed.append(done.ts - t0)

        cached = []
        for i in range(args.rounds):
            cfg = config(8 + i % 40)
            t0 = time.perf_counter()
            run = ql.submit(cfg)
            cached.append(time.perf_counter() - t0)
            assert run.record["cached_from"], "expected a cache hit"

        ms = 1e3
        backend = "SQLite queue + events" if args.embedded else "Redis queue + events"
        print(f"rounds: {args.rounds}, one worker, {backend}, SQLite registry")
        print(f"submit call (validate, hash, record, enqueue): p50 "
              f"{statistics.median(submit_cost) * ms:.1f} ms, p99 {pct(submit_cost, .99) * ms:.1f} ms")
        print(f"submit -> first progress event: p50 {statistics.median(first_progress) * ms:.1f} ms,"
              f" p99 {pct(first_progress, .99) * ms:.1f} ms   (target 30 ms)")
        print(f"one-year daily backtest submit -> completed: p50 "
              f"{statistics.median(completed) * ms:.1f} ms, p99 {pct(completed, .99) * ms:.1f} ms"
              f"   (target 100 ms)")
        print(f"cached config submit: p50 {statistics.median(cached) * ms:.1f} ms, p99 "
              f"{pct(cached, .99) * ms:.1f} ms   (target 20 ms)")

        stop(worker)
        workers.clear()
        while worker_alive():  # the old worker's lock is released when it has exited
            time.sleep(0.01)
        if args.cancels:
            workers.append(start_worker(home, 1, {**env, **CANCEL_ENV}))
            cancel_latency(ql, events, args.cancels)
            stop(workers.pop())
            while worker_alive():
                time.sleep(0.01)
        burst_env = {**env, "QUANTLAB_MAX_CONCURRENT": "20"}
        workers.append(start_worker(home, 4, burst_env))
        time.sleep(0.5)
        ql.submit(config(9, 2021), cache=False).wait(timeout=120)  # the 4 processes are up
        t0 = time.perf_counter()
        runs = [ql.submit(config(2 + i % 50, 2015 + i % 9), cache=False)
                for i in range(args.burst)]
        t_submitted = time.perf_counter() - t0
        for run in runs:
            run.wait(timeout=600)
        t_done = time.perf_counter() - t0
        statuses = [run.status for run in runs]
        completed_events = [sum(e.type == "completed" for e in run.events()) for run in runs]
        ok = statuses.count("completed")
        print(f"burst: {args.burst} runs submitted in {t_submitted:.2f} s, all ended in "
              f"{t_done:.2f} s with 4 worker processes (QUANTLAB_MAX_CONCURRENT=20): "
              f"{ok} completed, {args.burst - ok} not; runs with exactly one completed event: "
              f"{completed_events.count(1)}; attempts > 1: "
              f"{sum(run.record['attempts'] > 1 for run in runs)}")
    finally:
        for proc in workers:
            stop(proc)
        spawned = home / "worker.pid"  # a worker that submit started itself, if any
        if spawned.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(spawned.read_text()), signal.SIGKILL)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
