"""A big sweep's first seconds, and the size of a saved sweep view (issue 17).

    .venv/bin/python bench/bench_sweepstart.py [--symbols AAA,BBB,CCC,DDD,EEE] [--no-notebook]
                                               [--shards N] [--end-only]

1. Timeline: a 20,000-combination SMA-crossover sweep (fast 2..201 x slow 203..302) submitted in
   a throwaway QUANTLAB_HOME (sample data) whose worker QuantLab starts itself with an empty
   Numba cache (``NUMBA_CACHE_DIR`` in a temporary folder): every progress event, with the
   seconds since submit, step, bar position and the step's own count. Not split into shards
   (``QUANTLAB_SHARD_COMBINATIONS`` above the grid), as a sweep on fewer workers runs.
2. ``--end-only``: the end of the same sweep in this process, step by step, warm (the
   sweep run first, each part timed after a first call) and on a cold Numba cache.
3. Size: a notebook with one sweep view (600 bars, 3 x 3 combinations) executed by nbclient with
   its widget state stored, as papermill and the reports do, then written to disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))  # the repository's tests.support and quantlab
from tests.support.notebook import SWEEP_CELL  # the notebook the tests check

GRID = {"fast": list(range(2, 202)), "slow": list(range(203, 303))}


def timeline(symbols: list[str], tmp: Path, shards: int) -> None:
    os.environ["QUANTLAB_HOME"] = str(tmp / "home")
    os.environ["NUMBA_CACHE_DIR"] = str(tmp / "numba")  # the worker compiles from nothing
    os.environ["QUANTLAB_SHARD_COMBINATIONS"] = str(20_000 // shards if shards > 1 else 1000000)
    import quantlab as ql

    ql.data.sample(minute=False)
    config = {"strategy": "sma_crossover", "symbols": symbols, "start": "2015-01-01",
              "params": GRID}
    t0 = time.monotonic()
    run = ql.submit(config)
    print(f"run {run.id}: 20,000 combinations on {len(symbols)} symbol(s), cold Numba cache"
          + (f", {shards} shards" if shards > 1 else ""))
    last_step = None
    simulated_at = None
    for event in run.follow():
        data = event.data
        at = time.monotonic() - t0
        if event.type != "progress":
            print(f"{at:7.2f} s  {event.type}")
            if simulated_at is not None and event.type == "completed":
                print(f"the end (last combination simulated -> completed): "
                      f"{at - simulated_at:.2f} s")
            continue
        if data["step"] == "simulating" and data["done_units"] == data["total_units"]:
            simulated_at = at
        if data["step"] == last_step and (
                (data["step"] == "simulating" and data["done_units"] < data["total_units"])
                or (data["step"] == "computing indicators"
                    and data.get("step_done", 0) < data.get("step_total", 0))):
            continue  # one line per simulating (or indicators) stretch is enough
        last_step = data["step"]
        count = f" {data.get('step_done')}/{data.get('step_total')}" if data.get(
            "step_total") else ""
        print(f"{at:7.2f} s  {data['progress'] * 100:5.1f} %  {data['step']}{count}  "
              f"{data['done_units']}/{data['total_units']} units")


def end_only(symbols: list[str], tmp: Path) -> None:
    """The end of the sweep in this process: cold (an empty Numba cache) then warm."""
    os.environ["QUANTLAB_HOME"] = str(tmp / "home")
    os.environ["NUMBA_CACHE_DIR"] = str(tmp / "numba-end")
    import quantlab as ql
    from quantlab import data, research
    from quantlab.config import BacktestConfig
    from quantlab.jobs.execution import simulation
    from quantlab.registry import open_registry

    ql.data.sample(minute=False)
    cfg = BacktestConfig.from_any({"strategy": "sma_crossover", "symbols": symbols,
                                   "start": "2015-01-01", "params": GRID})
    bars = data.load(symbols, "2015-01-01", None, cfg.interval)
    sim = simulation(bars, cfg)
    sim.prepare()
    sim.run(sim.total_units)
    result = sim.result()
    registry = open_registry()
    for label in ("cold Numba cache", "warm", "warm"):
        t = time.perf_counter()
        research.run_end_fields(registry, sim, result)
        fields = time.perf_counter() - t
        t = time.perf_counter()
        blobs = result.to_blobs()
        saved = time.perf_counter() - t
        print(f"{label:>16}: run_end_fields (ledger + overfitting) {fields:6.2f} s, "
              f"to_blobs {saved:5.2f} s ({sum(map(len, blobs.values())):,} bytes)")


def notebook_size(tmp: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SWEEP_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, kernel_name="python3", timeout=600, store_widget_state=True).execute()
    path = tmp / "sweep.ipynb"
    nbformat.write(nb, path)
    print(f"saved notebook with one sweep view: {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="AAA,BBB,CCC,DDD,EEE")
    parser.add_argument("--no-notebook", action="store_true")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--end-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ql-bench-sweepstart-") as tmp:
        if args.end_only:
            end_only(args.symbols.split(","), Path(tmp))
            return
        timeline(args.symbols.split(","), Path(tmp), args.shards)
        if not args.no_notebook:
            notebook_size(Path(tmp))
        pid_file = Path(tmp) / "home" / "worker.pid"
        if pid_file.exists():  # the worker QuantLab started for this home (its own session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)


if __name__ == "__main__":
    main()
