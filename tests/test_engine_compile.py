"""What a first backtest compiles: the cold start (import + first backtest on an empty Numba
cache, <= 5 s) is mostly compiling, so the kernels a common run needs must compile once each,
and the machinery it does not need (stops, portfolios) not at all. Counted in a fresh process
(specialisations are deterministic; time is not, and is measured in bench/ instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json
import quantlab as ql
from quantlab import indicators, metrics
from quantlab.engine import kernel
from tests.support.engine import random_walk

data = random_walk(300, seed=1)
ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 20})              # single crossover
ql.backtest(data, "sma_crossover", {"fast": [5, 8], "slow": [20, 30]})   # crossover sweep
ql.backtest(data, "rsi_reversion")                                        # signal strategy
ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 20}, fill="close", allow_short=True,
            close_at_end=True, commission=0.001)                          # other options
counts = {name: len(getattr(kernel, name).signatures)
          for name in ("simulate1", "simulate", "sweep_cross1", "sweep_batch", "_log_exit",
                       "_exit_fill", "_entry_size", "_tally", "_drawdown_step", "_close")}
counts["_sma_pair"] = len(indicators._sma_pair.signatures)
counts["finalize"] = len(metrics.finalize.signatures)
print(json.dumps(counts))
"""


def test_common_runs_compile_each_kernel_once_and_nothing_they_do_not_use(
        tmp_path: Path) -> None:
    # an empty Numba cache: everything is compiled (a kernel loaded from the cache does not
    # list the callees compiled into it)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == {
        # one specialisation per kind of signal: crossed lines, a signal array
        "simulate1": 2,
        # stops and portfolios are not compiled by runs that do not use them
        "simulate": 0, "sweep_batch": 0, "_close": 0,
        "sweep_cross1": 1,
        # a literal argument would compile a callee twice
        "_log_exit": 1, "_exit_fill": 1, "_entry_size": 1, "_tally": 1, "_drawdown_step": 1,
        "_sma_pair": 1,
        # compiled for the sweep only: a single run takes finalize.py_func
        "finalize": 1,
    }


KIND_SCRIPT = """
import json
import sys

import quantlab as ql
from quantlab.engine import kernel
from quantlab.research import blocksums
from tests.support.engine import random_walk

one = random_walk(300, seed=1)
data = {"A": one, "B": random_walk(300, seed=2)} if sys.argv[1] == "many" else one
stops = {"stop_loss": [None, 0.05]} if sys.argv[1] == "one, stops" else {}
ql.backtest(data, "rsi_reversion", {"period": [10, 14]}, **stops).overfitting(blocks=4)
print(json.dumps({name: len(getattr(kernel, name).signatures)
                  for name in ("simulate1", "simulate", "sweep_batch")}
                 | {"block sums": len(blocksums._one.signatures)}))
"""


def test_a_sweep_compiles_the_kernels_of_its_kind_only(tmp_path: Path) -> None:
    # A sweep (and its overfitting statistics) of one symbol compiles simulate1, of several
    # simulate, not both, and simulate1's stops only when a combination has one: a cold
    # cache's first sweep is 3-6 s shorter. Each kind in a fresh process with an empty cache,
    # all at once.
    runs = {
        kind: subprocess.Popen(
            [sys.executable, "-c", KIND_SCRIPT, kind], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / kind.replace(", ", "-"))})
        for kind in ("one", "one, stops", "many")}
    counts = {}
    for kind, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        counts[kind] = json.loads(out.strip().splitlines()[-1])
    assert counts == {
        "one": {"simulate1": 1, "simulate": 0, "sweep_batch": 1, "block sums": 1},
        # with and without the bars' high and low (stops are per combination)
        "one, stops": {"simulate1": 2, "simulate": 0, "sweep_batch": 1, "block sums": 1},
        "many": {"simulate1": 0, "simulate": 1, "sweep_batch": 1, "block sums": 1},
    }
