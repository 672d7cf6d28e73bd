"""The worker side of a run: take it (``queued -> running``), run the engine in chunks, finish it.

Between two chunks of the engine the runner publishes progress, writes a checkpoint at a bounded
rate, and checks the registry for a cancel request, for the time limit and for its ownership of
the run (a worker that was presumed dead and re-queued must not finish a run that another worker
now owns). Chunks are sized by time (about 50 ms) so that a cancel is honoured within a chunk even
though a Numba call cannot be interrupted.

Steps, each reported as ``step`` in the run document and in progress events:
collecting market data -> computing indicators -> simulating -> saving results.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantlab import settings as settings_mod
from quantlab.config import BacktestConfig, iso
from quantlab.errors import RunNotFound
from quantlab.jobs import backends, orchestrator, queue
from quantlab.jobs.fingerprint import config_hash
from quantlab.jobs.orchestrator import publish
from quantlab.settings import Settings, env_number

log = logging.getLogger("quantlab.jobs")

STEP_DATA = "collecting market data"
STEP_INDICATORS = "computing indicators"
STEP_SIMULATING = "simulating"
STEP_SAVING = "saving results"
# Where each step starts on the run's 0..1 progress bar; simulating spans 0.05..0.95.
STEP_PROGRESS = {STEP_DATA: 0.0, STEP_INDICATORS: 0.02, STEP_SIMULATING: 0.05, STEP_SAVING: 0.95}

CHUNK_TARGET_SECONDS = 0.05
FIRST_CHUNK_UNITS = 64
PROGRESS_EVERY = 0.05  # seconds between two progress events
RECORD_EVERY = 0.25  # seconds between two progress writes to the registry


def checkpoint_every() -> float:
    """Seconds between two checkpoints of a running run (``QUANTLAB_CHECKPOINT_SECONDS``)."""
    return env_number("QUANTLAB_CHECKPOINT_SECONDS", 2.0)


def heartbeat_every() -> float:
    return env_number("QUANTLAB_HEARTBEAT_SECONDS", 1.0)


def chunk_knobs() -> tuple[int | None, float]:
    """Test/demo knobs: ``QUANTLAB_JOBS_MAX_CHUNK`` caps the units per engine call and
    ``QUANTLAB_JOBS_CHUNK_DELAY`` sleeps between calls, to make a short run long enough to
    watch, cancel or kill."""
    cap = int(env_number("QUANTLAB_JOBS_MAX_CHUNK", 0, integer=True, minimum=0))
    return cap or None, env_number("QUANTLAB_JOBS_CHUNK_DELAY", 0.0, minimum=0)


def engine_kwargs(cfg: BacktestConfig) -> dict[str, Any]:
    """``Simulation`` keyword arguments of a config. A notebook-defined strategy travels as
    source text (``strategy_source``): it is loaded here into a ``Strategy`` object that is
    passed to the engine directly, so it never meets the worker's global registry (two users'
    strategies of the same name cannot collide)."""
    kwargs = cfg.engine_kwargs()
    if cfg.strategy_source:
        from quantlab.notebook.usercode import load_shipped_strategy

        kwargs["strategy"] = load_shipped_strategy(cfg.strategy, cfg.strategy_source)
    return kwargs


def load_bars(doc: Mapping[str, Any]) -> Any:
    """The run's bars from the store, through this worker's cache (LRU by data fingerprint)."""
    from quantlab import data

    cfg = BacktestConfig.from_any(doc["config"], check=False)
    start = iso(cfg.start) if cfg.start else None
    end = iso(cfg.end) if cfg.end else None
    fingerprint = str(data.fingerprint(list(cfg.symbols), start, end, cfg.interval))
    return BARS_CACHE.get(
        fingerprint, lambda: data.load(list(cfg.symbols), start, end, cfg.interval)
    ), fingerprint


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


class OwnershipLost(Exception):
    """The run was re-queued (this worker was presumed dead) or finished by someone else."""


class CancelRequested(Exception):
    pass


class TimedOut(Exception):
    pass


class ShardFailed(Exception):
    """A shard of a split sweep raised on its worker."""

    def __init__(self, message: str, trace: str | None) -> None:
        super().__init__(message)
        self.trace = trace


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


def shared_indicators(bars: Any) -> Any:
    """This worker's memo of indicators over ``bars`` (a data set from :data:`BARS_CACHE`):
    a run reuses the averages earlier runs on the same data computed. It lives as long as the
    cache keeps the bars (a weak key), and is bounded per data set."""
    from quantlab.strategies.base import Indicators

    with _INDICATORS_LOCK:
        found = _INDICATORS.get(bars)
        if found is None:
            found = _INDICATORS[bars] = Indicators(bars, max_bytes=INDICATORS_PER_DATA_SET)
        return found


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


# -- heartbeat -------------------------------------------------------------------------------------


class Heartbeat:
    """A thread that stamps ``heartbeat_at`` every second while this worker runs the run."""

    def __init__(self, run_id: str, settings: Settings, interval: float | None = None) -> None:
        self.run_id = run_id
        self.settings = settings
        self.interval = interval or heartbeat_every()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        registry = backends.registry(self.settings)  # registries are safe across threads
        while not self._stop.wait(self.interval):
            try:
                alive = registry.update_run(self.run_id, {"heartbeat_at": time.time()},
                                            expect_status=("running",))
            except Exception:  # a blip of the registry: try again at the next beat
                log.warning("heartbeat of run %s failed", self.run_id, exc_info=True)
                continue
            if not alive:
                return


# -- execute ---------------------------------------------------------------------------------------


def execute(run_id: str, settings: Settings | None = None) -> None:
    """Run ``run_id`` if it is still queued (the Huey task's body). Never raises for a run's
    own failure: that is recorded on the run, and the worker lives on."""
    settings = settings or settings_mod.current()
    registry = backends.registry(settings)
    try:
        doc = registry.get_run(run_id)
    except RunNotFound:
        log.warning("run %s is on the queue but not in the registry; dropped", run_id)
        return
    if doc["status"] != "queued":
        return  # cancelled while queued, or a duplicate message of a run already taken
    me = worker_id()
    now = time.time()
    fields = {
        "status": "running", "started_at": doc.get("started_at") or now, "heartbeat_at": now,
        "worker": me, "attempts": (doc.get("attempts") or 0) + 1, "step": STEP_DATA,
        "position": None,
    }
    if not registry.update_run(run_id, fields, expect_status=("queued",)):
        return
    if _over_concurrency_limit(settings):
        _put_back(doc, settings)
        return
    doc.update(fields)
    publish(run_id, "started", {"worker": me, "attempts": fields["attempts"]}, settings)
    with Heartbeat(run_id, settings):
        Job(doc, settings, me).run()


def _over_concurrency_limit(settings: Settings) -> bool:
    """``QUANTLAB_MAX_CONCURRENT``: counted *after* taking the run, so that two workers taking
    runs at the same instant both see both runs and neither exceeds the limit."""
    if not settings.max_concurrent:
        return False
    running = backends.registry(settings).count_runs(status="running")
    return bool(running > settings.max_concurrent)


def _put_back(doc: Mapping[str, Any], settings: Settings) -> None:
    """Undo the take (no event was published: to everyone else the run stayed queued) and
    re-enqueue it after a short random pause, so that racing workers do not retry in step."""
    registry = backends.registry(settings)
    restore = {key: doc.get(key) for key in ("started_at", "heartbeat_at", "worker", "attempts",
                                             "step", "position")}
    if registry.update_run(doc["id"], {**restore, "status": "queued"},
                           expect_status=("running",)):
        time.sleep(random.uniform(0.05, 0.25))
        task_id = queue.enqueue(doc["id"], doc.get("priority") or 0, settings)
        registry.update_run(doc["id"], {"task_id": task_id}, expect_status=("queued",))


@dataclass
class Progress:
    step: str
    done: int = 0
    total: int = 0
    eta: float | None = None


class Job:
    """One attempt at one run, in this worker."""

    def __init__(self, doc: dict[str, Any], settings: Settings, me: str) -> None:
        self.doc = doc
        self.run_id: str = doc["id"]
        self.settings = settings
        self.me = me
        self.registry = backends.registry(settings)
        self.attempt_start = time.monotonic()
        self.elapsed_before = 0.0  # seconds spent by earlier attempts (from the checkpoint)
        self.last_event = 0.0
        self.last_record = 0.0
        self.bars_told = 0  # bars_done in the last progress event (for bars_delta)
        self.last_checkpoint = time.monotonic()
        self.sim: Any = None
        self.bars_per_unit = 1
        self.shard_count = 1
        self.partial_result: Any = None
        self.ended = False  # this worker recorded the run's end (not lost to another)

    # -- outcome -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except OwnershipLost:
            log.warning("run %s: no longer owned by %s; stopped without recording", self.run_id,
                        self.me)
        except CancelRequested:
            self._cancelled()
        except ShardFailed as exc:
            self._failed(str(exc), reason="error", trace=exc.trace)
        except TimedOut:
            limit = self.settings.max_duration
            self._failed(
                f"timeout: the run took longer than QUANTLAB_MAX_DURATION={limit:g} s and was "
                f"stopped; raise the limit or make the run smaller (fewer symbols, bars or "
                f"combinations)", reason="timeout", trace=None,
            )
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}", reason="error",
                         trace=traceback.format_exc())
        finally:
            self._cleanup_shards()

    def _cleanup_shards(self) -> None:
        """A failed split sweep leaves no shard state behind (success and cancel clean up as
        soon as they have merged)."""
        if self.shard_count > 1 and self.ended:
            from quantlab.jobs import shards

            shards.cleanup(self.run_id, self.shard_count, self.settings)

    def _run(self) -> None:
        from quantlab.engine import Simulation

        cfg = BacktestConfig.from_any(self.doc["config"], check=False)
        self._step(STEP_DATA)
        bars = self._load_bars(cfg)
        sim = Simulation(bars, **engine_kwargs(cfg))
        self.sim = sim
        self.bars_per_unit = bars.n_bars * bars.n_symbols if sim.is_sweep else bars.n_symbols
        if sim.is_sweep:
            from quantlab.jobs import shards

            self.shard_count = shards.shard_count(sim.total_units,
                                                  self.doc.get("estimated_seconds"))
        if self.shard_count > 1:
            self._completed(self._run_sharded(bars, sim))
            return
        self._step(STEP_INDICATORS)
        indicators = shared_indicators(bars)
        computed_before = indicators.computed
        sim.prepare(indicators)
        self._check_control()
        self._resume(sim)
        self._simulate(sim)
        self._log(f"indicators computed: {indicators.computed - computed_before} (those that "
                  f"earlier runs on the same data computed come from this worker's cache)")
        self._step(STEP_SAVING, sim.done_units, sim.total_units)
        result = sim.result()
        self._completed(result)

    def _load_bars(self, cfg: BacktestConfig) -> Any:
        from quantlab import data

        missing = list(self.doc.get("fetch_symbols") or [])
        if missing:
            self._log(f"fetching {', '.join(missing)} ({cfg.interval}) from alphavantage")
            data.fetch(missing, provider="alphavantage", interval=cfg.interval)
        bars, fingerprint = load_bars(self.doc)
        if self.doc.get("data_fingerprint") != fingerprint:
            # The data changed since submit (or was fetched now): the hash follows the data used.
            fields = {"data_fingerprint": fingerprint, "config_hash": config_hash(cfg, fingerprint)}
            self._update(fields)
        self._log(f"{bars.n_symbols} symbol(s) x {bars.n_bars} bars loaded")
        return bars

    def _run_sharded(self, bars: Any, sweep: Any) -> Any:
        """Coordinate a split sweep: enqueue the shards, run unclaimed (or abandoned) ones here,
        tell the aggregated progress, and merge the shards' tables."""
        from quantlab.jobs import shards

        count, total = self.shard_count, sweep.total_units
        board = shards.ShardBoard(self.run_id, count, self.settings)
        if board.cancelled():
            # left by an earlier attempt that was stopping (cancel or time limit) when its worker
            # died: this attempt runs the sweep whole (a cancel requested of the run itself is
            # seen at the first check and sets the flag again)
            board.uncancel()
        pending = self._pending_shards(board)
        for shard in pending:
            queue.enqueue_shard(self.run_id, shard, count, self.doc.get("priority") or 0,
                                self.settings)
        self._log(f"sweep of {total} combinations split into {count} shards "
                  f"({count - len(pending)} already done)")
        self._step(STEP_SIMULATING, sum(board.done(i) for i in range(count)), total)
        sim_start = time.monotonic()

        def tick() -> None:
            done = sum(board.done(i) for i in range(count))
            elapsed = time.monotonic() - sim_start
            eta = (total - done) * elapsed / done if done else None
            self._progress(Progress(STEP_SIMULATING, done, total, eta))
            self._check_control()

        try:
            while True:
                pending = self._pending_shards(board)
                self._raise_shard_errors(board)
                if not pending:
                    # every shard has its result: tell 100% (the shards' done counters are
                    # written at a bounded rate and may lag their results)
                    self._progress(Progress(STEP_SIMULATING, total, total, 0.0))
                    break
                index: int | None = next((i for i in pending if board.claim(i, self.me)),
                                         None)
                if index is None:
                    index = next((i for i in pending
                                  if board.stale(i, orchestrator.stale_after())), None)
                    if index is not None:
                        self._log(f"shard {index} lost its worker; running it here", "warning")
                if index is not None:
                    shards.run_shard(self.doc, index, count, bars, self.settings, between=tick)
                    continue
                tick()
                time.sleep(0.05)
        except (CancelRequested, TimedOut):
            board.cancel()
            self._await_shards(board)
            self.partial_result = shards.merge(self.doc, count, bars, sweep, self.settings)
            shards.cleanup(self.run_id, count, self.settings)
            raise
        self._step(STEP_SAVING, total, total)
        result = shards.merge(self.doc, count, bars, sweep, self.settings)
        # the merged result is about to be saved: the shards' parts are no longer needed
        shards.cleanup(self.run_id, count, self.settings)
        return result

    def _pending_shards(self, board: Any) -> list[int]:
        """The shards still to run: those without a result, and those whose result is only a
        part (a worker stopped early) unless the run is being cancelled, the one case where a
        part is final. Such a part is forgotten here, so that the shard is claimed and run again
        whole; a failed shard is not pending (``_raise_shard_errors`` fails the run)."""
        cancelled = board.cancelled()
        pending = []
        for index in range(self.shard_count):
            found = board.result(index)
            if found is not None and not found["complete"] and not found.get("error") \
                    and not cancelled:
                board.reset(index)
                found = None
            if found is None:
                pending.append(index)
        return pending

    def _raise_shard_errors(self, board: Any) -> None:
        for index in range(self.shard_count):
            found = board.result(index)
            if found and found.get("error"):
                raise ShardFailed(f"shard {index} of {self.shard_count} failed on "
                                  f"{found.get('worker')}: {found['error']}", found.get("trace"))

    def _await_shards(self, board: Any) -> None:
        """After a cancel: give the shards that other workers run time to record their part."""
        deadline = time.monotonic() + orchestrator.stale_after() + 1
        while time.monotonic() < deadline:
            if all(board.result(i) is not None or board.stale(i, 1.0)
                   for i in range(self.shard_count)):
                return
            time.sleep(0.05)

    def _resume(self, sim: Any) -> None:
        found = self.registry.load_checkpoint(self.run_id)
        if found is None:
            return
        state, meta = found
        sim.load_state(state)
        self.elapsed_before = float(meta.get("elapsed") or 0.0)
        self.bars_told = int(sim.done_units * self.bars_per_unit)  # counted by the earlier attempt
        self._log(f"resumed from checkpoint at {sim.done_units}/{sim.total_units} "
                  f"(attempt {self.doc['attempts']})", "warning")

    def _simulate(self, sim: Any) -> None:
        cap, delay = chunk_knobs()
        sizer = ChunkSizer(cap=cap)
        started_units = sim.done_units
        sim_start = time.monotonic()
        self._step(STEP_SIMULATING, sim.done_units, sim.total_units)
        while not sim.finished:
            units = sizer.next(sim.total_units - sim.done_units)
            t0 = time.perf_counter()
            sim.run(units)
            sizer.observe(units, time.perf_counter() - t0)
            if delay:
                time.sleep(delay)  # test/demo knob: makes a short run long enough to watch
            rate = (sim.done_units - started_units) / max(time.monotonic() - sim_start, 1e-9)
            eta = (sim.total_units - sim.done_units) / rate if rate > 0 else None
            self._progress(Progress(STEP_SIMULATING, sim.done_units, sim.total_units, eta))
            if sim.finished:
                break
            self._maybe_checkpoint(sim)
            self._check_control()

    # -- between chunks ----------------------------------------------------------------------------

    def _check_control(self) -> None:
        doc = self.registry.get_run(self.run_id)
        if doc.get("status") != "running" or doc.get("worker") != self.me:
            raise OwnershipLost
        if doc.get("cancel_requested"):
            raise CancelRequested
        limit = self.settings.max_duration
        if limit and self.elapsed() > limit:
            raise TimedOut

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.attempt_start

    def _maybe_checkpoint(self, sim: Any) -> None:
        now = time.monotonic()
        if now - self.last_checkpoint < checkpoint_every():
            return
        self.last_checkpoint = now
        meta = {"done_units": sim.done_units, "total_units": sim.total_units,
                "attempt": self.doc["attempts"], "elapsed": self.elapsed(), "worker": self.me}
        self.registry.save_checkpoint(self.run_id, sim.state_bytes(), meta)
        publish(self.run_id, "checkpoint",
                {"done_units": sim.done_units, "total_units": sim.total_units}, self.settings)

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        last = p.done >= p.total
        fraction = p.done / p.total if p.total else 0.0
        progress = STEP_PROGRESS[p.step]
        if p.step == STEP_SIMULATING:  # simulating spans its share of the bar by units done
            progress += fraction * (STEP_PROGRESS[STEP_SAVING] - STEP_PROGRESS[STEP_SIMULATING])
        bars_done = int(p.done * self.bars_per_unit)
        if last or now - self.last_event >= PROGRESS_EVERY or self.last_event == 0.0:
            self.last_event = now
            bars_delta = max(bars_done - self.bars_told, 0) if p.step == STEP_SIMULATING else 0
            self.bars_told = bars_done if p.step == STEP_SIMULATING else self.bars_told
            publish(self.run_id, "progress", {
                "percent": round(100 * progress, 2), "progress": progress, "step": p.step,
                "bars_done": bars_done, "bars_delta": bars_delta,
                "done_units": p.done, "total_units": p.total,
                "eta": None if p.eta is None else round(p.eta, 3),
            }, self.settings)
        if last or now - self.last_record >= RECORD_EVERY:
            self.last_record = now
            self._update({"progress": progress, "step": p.step, "bars_done": bars_done,
                          "eta_seconds": p.eta, "heartbeat_at": time.time()})

    def _step(self, step: str, done: int = 0, total: int = 0) -> None:
        self.last_event = 0.0  # a new step is always told
        self.last_record = 0.0
        self._progress(Progress(step, done, total))

    def _update(self, fields: Mapping[str, Any]) -> None:
        if not self.registry.update_run(self.run_id, fields, expect_status=("running",)):
            raise OwnershipLost

    def _log(self, message: str, level: str = "info") -> None:
        orchestrator.run_log(self.run_id, message, level, self.settings)

    # -- endings -----------------------------------------------------------------------------------

    def _save_result(self, result: Any) -> dict[str, Any]:
        prefix = f"runs/{self.run_id}/"
        blobs = result.to_blobs()
        for name, payload in blobs.items():
            self.registry.put_blob(prefix + name, payload)
        fields: dict[str, Any] = {
            "result_ref": prefix, "result_blobs": sorted(blobs),
            "metrics": _metrics(result.metrics), "best_params": _jsonable(result.params),
        }
        return fields

    def _completed(self, result: Any) -> None:
        fields = self._save_result(result)
        self._own_or_raise()
        # a merged sweep tells whether a shard's part is missing: never claim it whole then
        fields.update({"status": "completed", "progress": 1.0, "step": "completed",
                       "finished_at": time.time(), "eta_seconds": 0.0,
                       "partial": bool(getattr(result, "partial", False))})
        if not self.registry.update_run(self.run_id, fields, expect_status=("running",)):
            raise OwnershipLost
        self.ended = True
        publish(self.run_id, "completed", {"metrics": fields["metrics"],
                                           **self._ending()}, self.settings)
        self.registry.delete_checkpoint(self.run_id)

    def _cancelled(self) -> None:
        fields: dict[str, Any] = {"status": "cancelled", "step": "cancelled",
                                  "finished_at": time.time(), "partial": False}
        sim = self.sim
        kept = 0
        if self.partial_result is not None:
            fields.update(self._save_result(self.partial_result))
            fields["partial"] = True
            kept = len(self.partial_result.table)
        elif sim is not None and sim.is_sweep and sim.done_units > 0:
            fields.update(self._save_result(sim.result(partial=True)))
            fields["partial"] = True
            kept = int(sim.done_units)
        if self.registry.update_run(self.run_id, fields, expect_status=("running",)):
            self.ended = True
            publish(self.run_id, "cancelled", {"while": "running", "partial": fields["partial"],
                                               "combinations_done": kept, **self._ending()},
                    self.settings)
            self.registry.delete_checkpoint(self.run_id)

    def _failed(self, message: str, *, reason: str, trace: str | None) -> None:
        try:
            self._own_or_raise()
        except OwnershipLost:
            return
        fields = {"status": "failed", "step": "failed", "finished_at": time.time(),
                  "error": message, "traceback": trace}
        if self.registry.update_run(self.run_id, fields, expect_status=("running",)):
            self.ended = True
            self.registry.append_log(self.run_id, message + (f"\n{trace}" if trace else ""),
                                     "error")
            publish(self.run_id, "failed", {"error": message, "reason": reason,
                                            "traceback": trace, **self._ending()}, self.settings)
            self.registry.delete_checkpoint(self.run_id)

    def _ending(self) -> dict[str, Any]:
        """What every terminal event tells besides its type (metrics are labelled by strategy)."""
        return {"seconds": round(self.elapsed(), 4), "strategy": self.doc.get("strategy")}

    def _own_or_raise(self) -> None:
        doc = self.registry.get_run(self.run_id)
        if doc.get("status") != "running" or doc.get("worker") != self.me:
            raise OwnershipLost


def _metrics(metrics: Any) -> dict[str, float | None]:
    """Numeric metrics for the run document; NaN/inf (undefined, e.g. the Sharpe ratio of a flat
    curve) become None, as JSON cannot carry them."""
    out: dict[str, float | None] = {}
    for key, value in dict(metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue  # a non-numeric summary (dates, names) stays in the result blobs
        out[str(key)] = number if math.isfinite(number) else None
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return value
