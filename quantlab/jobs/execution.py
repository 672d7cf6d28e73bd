"""What a whole run and a shard of a split sweep share on a worker: the chunked engine loop
(:func:`drive`), chunk sizing, the exceptions that stop a run between two chunks, the engine's
arguments of a config, bar loading and this worker's caches of bars and indicators.

Chunks are sized by time (about 50 ms) so that a cancel is honoured within a chunk even though
a Numba call cannot be interrupted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from quantlab import data
from quantlab.config import BacktestConfig
from quantlab.engine import Simulation, compiling
from quantlab.engine.compiling import CompileReport
from quantlab.errors import RunError
from quantlab.jobs.isolation import SandboxedSimulation
from quantlab.settings import env_number
from quantlab.strategies.base import Indicators

STEP_DATA = "collecting market data"
STEP_INDICATORS = "computing indicators"
# told only when Numba really compiles (quantlab.engine.compiling): a worker's first run of a
# kind, e.g. its first multi-symbol sweep, or any run on a cold compile cache
STEP_COMPILING = "compiling the engine (first run of this kind on this worker)"
STEP_SIMULATING = "simulating"
# a sweep's end: its trials join the ledger, its combinations are re-simulated block by block
# and CSCV splits them (quantlab.research.run_end_fields), seconds for a big sweep
STEP_OVERFITTING = "overfitting statistics (PBO, deflated Sharpe)"
STEP_SAVING = "saving results"
# Where each step starts on the run's 0..1 progress bar; simulating spans 0.05..0.95.
STEP_PROGRESS = {STEP_DATA: 0.0, STEP_INDICATORS: 0.02, STEP_COMPILING: 0.035,
                 STEP_SIMULATING: 0.05, STEP_OVERFITTING: 0.95, STEP_SAVING: 0.99}
# The steps that count their work (done of total): the bar moves from the step's start point
# to the next one's as they go.
COUNTED_STEPS = (STEP_INDICATORS, STEP_COMPILING, STEP_SIMULATING, STEP_OVERFITTING)


def step_progress(step: str, done: int, total: int) -> float:
    """Where ``done`` of ``total`` of ``step`` puts the run's 0..1 progress bar."""
    start = STEP_PROGRESS[step]
    if step not in COUNTED_STEPS or not total:
        return start
    after = min(p for p in STEP_PROGRESS.values() if p > start)
    return start + min(done / total, 1.0) * (after - start)

CHUNK_TARGET_SECONDS = 0.05
FIRST_CHUNK_UNITS = 64


def stale_after() -> float:
    """Seconds without a heartbeat after which a running run's (or shard's) worker is presumed
    dead (``QUANTLAB_HEARTBEAT_TIMEOUT``)."""
    return env_number("QUANTLAB_HEARTBEAT_TIMEOUT", 10.0, positive=True)


def heartbeat_every() -> float:
    """Seconds between two heartbeats of a running run (``QUANTLAB_HEARTBEAT_SECONDS``)."""
    return env_number("QUANTLAB_HEARTBEAT_SECONDS", 1.0)


# -- why a run stops between two chunks ------------------------------------------------------------


class OwnershipLost(Exception):
    """The run was re-queued (this worker was presumed dead) or finished by someone else."""


class CancelRequested(Exception):
    """The run's cancel was asked for: stop, keeping what is finished."""


class TimedOut(Exception):
    """The run passed ``QUANTLAB_MAX_DURATION``: stop, keeping what is finished."""


@dataclass
class StepProgress:
    """Where a run is within one step: ``done`` of ``total`` units, ``eta`` seconds left."""

    step: str
    done: int = 0
    total: int = 0
    eta: float | None = None


# -- the engine loop -------------------------------------------------------------------------------


def chunk_knobs() -> tuple[int | None, float]:
    """Test/demo knobs: ``QUANTLAB_JOBS_MAX_CHUNK`` caps the units per engine call and
    ``QUANTLAB_JOBS_CHUNK_DELAY`` sleeps between calls (and between a queued
    cross-validation's splits), to make a short run long enough to watch, cancel or kill."""
    cap = int(env_number("QUANTLAB_JOBS_MAX_CHUNK", 0, integer=True, minimum=0))
    return cap or None, env_number("QUANTLAB_JOBS_CHUNK_DELAY", 0.0, minimum=0)


class ChunkSizer:
    """Units per engine call, adapted so that each call takes about ``target`` seconds."""

    def __init__(self, target: float = CHUNK_TARGET_SECONDS, first: int = FIRST_CHUNK_UNITS,
                 cap: int | None = None) -> None:
        self.target = target
        self.cap = cap
        self.units = min(first, cap) if cap else first

    def next(self, remaining: int) -> int:
        return max(1, min(self.units, remaining))

    def observe(self, units: int, seconds: float) -> None:
        scale = 8.0 if seconds <= 0 else min(8.0, max(0.25, self.target / seconds))
        self.units = max(1, int(units * scale))
        if self.cap:
            self.units = min(self.units, self.cap)


_REPORTS = threading.local()


@contextlib.contextmanager
def compile_reports(report: CompileReport | None) -> Iterator[None]:
    """Within the block, every :func:`drive` of this thread tells ``report(done, total)`` when
    Numba compiles the engine during a chunk (:mod:`quantlab.engine.compiling`); a split
    sweep's coordinator runs its shards through :func:`drive` as well."""
    before = getattr(_REPORTS, "compile", None)
    _REPORTS.compile = report
    try:
        yield
    finally:
        _REPORTS.compile = before


def drive(simulation: Any, between: Callable[[], None]) -> None:
    """Run a prepared ``Simulation`` to its end in chunks of about 50 ms, calling ``between``
    after every chunk (the last one too). ``between`` stops the loop by raising (a cancel, the
    time limit, a lost run); the simulation keeps what it finished. A chunk that makes Numba
    compile is told to the report of :func:`compile_reports`, if any."""
    cap, delay = chunk_knobs()
    sizer = ChunkSizer(cap=cap)
    while not simulation.finished:
        units = sizer.next(simulation.total_units - simulation.done_units)
        t0 = time.perf_counter()
        with compiling.watching(getattr(_REPORTS, "compile", None)):
            simulation.run(units)
        sizer.observe(units, time.perf_counter() - t0)
        if delay:
            time.sleep(delay)  # test/demo knob: makes a short run long enough to watch
        between()


# -- what the engine is given ----------------------------------------------------------------------


def engine_kwargs(cfg: BacktestConfig) -> dict[str, Any]:
    """``Simulation`` keyword arguments of a config whose strategy runs in the worker (a
    built-in one, or one a module imported by the worker registered)."""
    if cfg.strategy_source:
        # a notebook strategy's source is the submitter's code: it runs in a sandbox only
        raise RunError(f"strategy '{cfg.strategy}' travelled as source: it runs in a sandbox "
                       f"process (jobs.execution.simulation), never in the worker")
    return cfg.engine_kwargs()


def simulation(bars: Any, cfg: BacktestConfig, *, watch: Callable[[], None] | None = None,
               **overrides: Any) -> Simulation:
    """The engine's simulation of ``cfg`` over ``bars`` (``overrides``: e.g. a shard's params).

    A notebook-defined strategy travels as source text (``strategy_source``): its simulation
    lives in a sandbox process (:class:`~quantlab.jobs.isolation.SandboxedSimulation`, same
    interface), where the source is loaded into a ``Strategy`` passed to the engine directly,
    so it never meets a registry and never runs in the worker. ``watch`` is called while the
    sandbox works and stops it by raising (the sandbox is then killed)."""
    if cfg.strategy_source:
        return SandboxedSimulation(bars, cfg, overrides, watch)  # type: ignore[return-value]
    return Simulation(bars, **{**engine_kwargs(cfg), **overrides})


def load_bars(doc: Mapping[str, Any]) -> tuple[Any, str]:
    """The run's bars from the store, through this worker's cache (LRU by data fingerprint),
    and their fingerprint."""
    cfg = BacktestConfig.from_any(doc["config"], check=False)
    start, end = cfg.data_window()
    fingerprint = str(data.fingerprint(list(cfg.symbols), start, end, cfg.interval))
    return BARS_CACHE.get(
        fingerprint, lambda: data.load(list(cfg.symbols), start, end, cfg.interval)
    ), fingerprint


def worker_id() -> str:
    """This worker thread's name in run documents and shard claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


# -- per-worker caches -----------------------------------------------------------------------------


class BarsCache:
    """The last few loaded ``Bars`` by data fingerprint: consecutive runs on the same data (a
    researcher iterating on one strategy) skip DuckDB and Parquet entirely. Bounded by count and
    by bytes (``QUANTLAB_WORKER_CACHE_MB``, default 512), least recently used out first."""

    def __init__(self, size: int = 8, max_bytes: int | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _budget(self) -> int:
        if self.max_bytes is not None:
            return self.max_bytes
        return int(env_number("QUANTLAB_WORKER_CACHE_MB", 512) * 2**20)

    @staticmethod
    def _nbytes(bars: Any) -> int:
        memo = _INDICATORS.get(bars)
        return sum(int(getattr(getattr(bars, name, None), "nbytes", 0))
                   for name in ("open", "high", "low", "close", "volume")) + (
            memo.nbytes if memo is not None else 0)

    def get(self, key: str, load: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = load()
        with self._lock:
            self.misses += 1
            self._items[key] = value
            budget = self._budget()
            while len(self._items) > 1 and (
                    len(self._items) > self.size
                    or sum(self._nbytes(v) for v in self._items.values()) > budget):
                self._items.popitem(last=False)
        return value


BARS_CACHE = BarsCache()

INDICATORS_PER_DATA_SET = 64 << 20  # bytes of memoised indicators kept per cached data set
_INDICATORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_INDICATORS_LOCK = threading.Lock()


def shared_indicators(bars: Any) -> Indicators:
    """This worker's memo of indicators over ``bars`` (a data set from :data:`BARS_CACHE`):
    a run reuses the averages earlier runs on the same data computed. It lives as long as the
    cache keeps the bars (a weak key), and is bounded per data set."""
    with _INDICATORS_LOCK:
        found = _INDICATORS.get(bars)
        if found is None:
            found = _INDICATORS[bars] = Indicators(bars, max_bytes=INDICATORS_PER_DATA_SET)
        return found
