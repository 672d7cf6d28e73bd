"""The worker side of a run: take it (``queued -> running``), run the engine in chunks, finish it.

Between two chunks of the engine the runner publishes progress, writes a checkpoint at a bounded
rate, and checks the registry for a cancel request, for the time limit and for its ownership of
the run (a worker that was presumed dead and re-queued must not finish a run that another worker
now owns). The chunked loop and what it shares with a split sweep's shards are in
:mod:`quantlab.jobs.execution`; the coordinator of a split sweep is in :mod:`quantlab.jobs.shards`.

Steps, each reported as ``step`` in the run document and in progress events:
collecting market data -> computing indicators -> simulating -> overfitting statistics (a
sweep: ledger, re-simulation, CSCV, counted) -> saving results, with "compiling the engine (...)"
while a chunk makes Numba compile (a worker's first run of a kind).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from quantlab import data, research
from quantlab import settings as settings_mod
from quantlab.config import BacktestConfig
from quantlab.engine import compiling
from quantlab.errors import HomeNotWritable, RunNotFound
from quantlab.jobs import lifecycle, queue, shards, slots, validation
from quantlab.jobs.execution import (
    STEP_COMPILING,
    STEP_DATA,
    STEP_INDICATORS,
    STEP_OVERFITTING,
    STEP_SAVING,
    STEP_SIMULATING,
    CancelRequested,
    OwnershipLost,
    StepProgress,
    TimedOut,
    compile_reports,
    drive,
    heartbeat_every,
    load_bars,
    shared_indicators,
    simulation,
    step_progress,
    worker_id,
)
from quantlab.jobs.fingerprint import config_hash
from quantlab.jobs.lifecycle import RunStatus, publish, transition
from quantlab.registry import RunRecord, open_registry
from quantlab.settings import Settings, env_number

log = logging.getLogger("quantlab.jobs")

QUEUED, RUNNING = RunStatus.QUEUED, RunStatus.RUNNING
PROGRESS_EVERY = 0.05  # seconds between two progress events
RECORD_EVERY = 0.25  # seconds between two progress writes to the registry
# Seconds before the first retry of a result save refused by the home, and at most between two.
SAVE_RETRY_FIRST = 0.5
SAVE_RETRY_MAX = 10.0


def checkpoint_every() -> float:
    """Seconds between two checkpoints of a running run (``QUANTLAB_CHECKPOINT_SECONDS``)."""
    return env_number("QUANTLAB_CHECKPOINT_SECONDS", 2.0)


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
        registry = open_registry(self.settings)  # registries are safe across threads
        while not self._stop.wait(self.interval):
            try:
                alive = registry.update_run(self.run_id, {"heartbeat_at": time.time()},
                                            expect_status=(RUNNING,))
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
    me = worker_id()
    if settings.max_concurrent:
        with slots.holding(run_id, settings, me):  # off the queue, not started: not lost
            doc = _take_within_limit(run_id, settings, me)
    else:
        doc = _take(run_id, settings, me)
    if doc is None:
        return
    publish(run_id, lifecycle.Started(worker=me, attempts=doc["attempts"]), settings)
    with Heartbeat(run_id, settings):
        Job(doc, settings, me).run()


def _queued_doc(run_id: str, settings: Settings) -> RunRecord | None:
    try:
        doc = open_registry(settings).get_run(run_id)
    except RunNotFound:
        log.warning("run %s is on the queue but not in the registry; dropped", run_id)
        return None
    if doc["status"] != QUEUED:
        return None  # cancelled while queued, or a duplicate message of a run already taken
    return doc


def _take(run_id: str, settings: Settings, me: str) -> RunRecord | None:
    """``queued -> running`` (a compare-and-set: of two workers only one takes a run); the run's
    document as taken, or None. Quiet: the caller tells ``started``."""
    doc = _queued_doc(run_id, settings)
    if doc is None:
        return None
    now = time.time()
    fields: RunRecord = {
        "started_at": doc.get("started_at") or now, "heartbeat_at": now, "worker": me,
        "attempts": int(doc.get("attempts") or 0) + 1, "step": STEP_DATA, "position": None,
    }
    if not transition(run_id, RUNNING, expect=QUEUED, fields=fields, settings=settings):
        return None
    doc.update({**fields, "status": RUNNING})
    return doc


def _take_within_limit(run_id: str, settings: Settings, me: str) -> RunRecord | None:
    """``QUANTLAB_MAX_CONCURRENT``: count the running runs and take this one only if there is
    room, both under the take lock, so that no one ever sees more running runs than the limit.
    Without room (or the lock), the run stays queued and its message goes back on the queue."""
    if _queued_doc(run_id, settings) is None:
        return None
    lock = slots.TakeLock(settings, me)
    doc = None
    if lock.acquire():
        try:
            if not _over_concurrency_limit(settings):
                doc = _take(run_id, settings, me)
                if doc is None:
                    return None  # another worker took it, or it was cancelled
        finally:
            lock.release()
    if doc is None:
        _put_back(run_id, settings)
    return doc


def _over_concurrency_limit(settings: Settings) -> bool:
    """Whether the running runs already fill ``QUANTLAB_MAX_CONCURRENT`` (counted under the take
    lock: no other worker takes a run meanwhile)."""
    if not settings.max_concurrent:
        return False
    running = open_registry(settings).count_runs(status=RUNNING)
    return bool(running >= settings.max_concurrent)


def _put_back(run_id: str, settings: Settings) -> None:
    """Send the message of a run left queued (no room) again after a short random pause, so
    that racing workers do not retry in step. The run was never touched: no one sees a thing,
    and its in-hand mark keeps the reaper from taking it for a lost message meanwhile."""
    time.sleep(random.uniform(0.05, 0.25))
    registry = open_registry(settings)
    try:
        doc = registry.get_run(run_id)
    except RunNotFound:
        return
    if doc["status"] != QUEUED:
        return  # cancelled meanwhile: nothing to send
    task_id = queue.enqueue(run_id, doc.get("priority") or 0, settings)
    registry.update_run(run_id, {"task_id": task_id}, expect_status=(QUEUED,))


class Job:
    """One attempt at one run, in this worker."""

    def __init__(self, doc: RunRecord, settings: Settings, me: str) -> None:
        self.doc = doc
        self.run_id: str = doc["id"]
        self.settings = settings
        self.me = me
        self.registry = open_registry(settings)
        self.attempt_start = time.monotonic()
        self.elapsed_before = 0.0  # seconds spent by earlier attempts (from the checkpoint)
        self.last_event = 0.0
        self.last_record = 0.0
        self.bars_told = 0  # bars_done in the last progress event (for bars_delta)
        self.step_told = ""  # the step of the last progress told (a new one is always told)
        self.progress_told = 0.0  # the bar never goes back (a compile in a later chunk)
        self.compiled_at = 0.0  # when Numba last finished compiling for this run (the ETA)
        self.units_told: tuple[int, int] | None = None  # (done, total) engine units last told
        self.last_checkpoint = time.monotonic()
        self.sim: Any = None
        self.bars_per_unit = 1
        self.shard_count = 1
        self.partial_result: Any = None
        self.ended = False  # this worker recorded the run's end (not lost to another)

    # -- outcome -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            with compile_reports(self._compiling):  # Numba compiling a chunk is told
                self._run()
        except OwnershipLost:
            log.warning("run %s: no longer owned by %s; stopped without recording", self.run_id,
                        self.me)
        except CancelRequested:
            self._cancelled()
        except shards.ShardFailed as exc:
            self._failed(str(exc), reason="error", trace=exc.trace)
        except TimedOut:
            self._timed_out()
        except Exception as exc:
            # a strategy's failure in its sandbox comes with the sandbox's traceback
            self._failed(f"{type(exc).__name__}: {exc}", reason="error",
                         trace=getattr(exc, "remote_traceback", None) or traceback.format_exc())
        finally:
            self._cleanup_shards()
            self._end_sandbox()

    def _end_sandbox(self) -> None:
        """A notebook strategy's sandbox ends with its run (the next run gets a fresh one)."""
        close = getattr(self.sim, "close", None)
        if close is not None:
            close()

    def _cleanup_shards(self) -> None:
        """A failed split sweep leaves no shard state behind (success and cancel clean up as
        soon as they have merged)."""
        if self.shard_count > 1 and self.ended:
            shards.cleanup(self.run_id, self.shard_count, self.settings)

    def _run(self) -> None:
        cfg = BacktestConfig.from_any(self.doc["config"], check=False)
        self.step(STEP_DATA)
        bars = self._load_bars(cfg)
        if validation.kind_of(cfg):  # walk-forward / cross-validation: fold by fold
            self._completed(validation.run(self, bars, cfg))
            return
        sim = simulation(bars, cfg, watch=self.check_control)
        self.sim = sim
        self.bars_per_unit = bars.n_bars * bars.n_symbols if sim.is_sweep else bars.n_symbols
        if sim.is_sweep and not cfg.strategy_source:  # a notebook strategy runs in one sandbox
            self.shard_count = shards.shard_count(sim.total_units,
                                                  self.doc.get("estimated_seconds"))
        if self.shard_count > 1:
            self._completed(shards.run_sharded(self, self.shard_count, bars, sim))
            return
        self.step(STEP_INDICATORS)
        indicators = shared_indicators(bars)
        computed_before = indicators.computed
        if cfg.strategy_source:  # prepared in its sandbox's process, uncounted
            sim.prepare(indicators)
        else:
            sim.prepare(indicators, progress=self._computing_indicators)
        self.check_control()
        self._resume(sim)
        self._simulate(sim)
        self.log(f"indicators computed: {indicators.computed - computed_before} (those that "
                 f"earlier runs on the same data computed come from this worker's cache)")
        self._completed(sim.result())

    def _load_bars(self, cfg: BacktestConfig) -> Any:
        missing = list(self.doc.get("fetch_symbols") or [])
        if missing:
            self.log(f"fetching {', '.join(missing)} ({cfg.interval}) from alphavantage")
            data.fetch(missing, provider="alphavantage", interval=cfg.interval)
        bars, fingerprint = load_bars(self.doc)
        if self.doc.get("data_fingerprint") != fingerprint:
            # The data changed since submit (or was fetched now): the hash follows the data used.
            from quantlab.data.chunks import chunk_fingerprints

            fields: RunRecord = {"data_fingerprint": fingerprint,
                                 "config_hash": config_hash(cfg, fingerprint),
                                 "data_chunks": chunk_fingerprints(bars)}
            self._update(fields)
        self.log(f"{bars.n_symbols} symbol(s) x {bars.n_bars} bars loaded")
        return bars

    def resume_state(self) -> bytes | None:
        """The state an earlier attempt's last checkpoint saved (None: there is none); the
        time that attempt spent counts towards the time limit."""
        found = self.registry.load_checkpoint(self.run_id)
        if found is None:
            return None
        state, meta = found
        self.elapsed_before = float(meta.get("elapsed") or 0.0)
        return state

    def _resume(self, sim: Any) -> None:
        state = self.resume_state()
        if state is None:
            return
        sim.load_state(state)
        self.bars_told = int(sim.done_units * self.bars_per_unit)  # counted by the earlier attempt
        self.log(f"resumed from checkpoint at {sim.done_units}/{sim.total_units} "
                 f"(attempt {self.doc['attempts']})", "warning")

    def _simulate(self, sim: Any) -> None:
        started_units = sim.done_units
        sim_start = time.monotonic()
        if sim.done_units:  # resumed; a fresh run says "simulating" after its first chunk,
            # which may first be "compiling the engine" (that step's bar lies before this one)
            self.step(STEP_SIMULATING, sim.done_units, sim.total_units)

        def between() -> None:
            nonlocal started_units, sim_start
            if self.compiled_at > sim_start:
                # that chunk's time was the compile's: the rate is measured from here on
                started_units, sim_start = sim.done_units, time.monotonic()
            rate = (sim.done_units - started_units) / max(time.monotonic() - sim_start, 1e-9)
            eta = (sim.total_units - sim.done_units) / rate if rate > 0 else None
            self.tell(StepProgress(STEP_SIMULATING, sim.done_units, sim.total_units, eta))
            if not sim.finished:
                self._maybe_checkpoint(sim)
                self.check_control()

        drive(sim, between)

    def _computing_indicators(self, done: int, total: int) -> None:
        self.tell(StepProgress(STEP_INDICATORS, done, total))

    def _compiling(self, done: int, total: int) -> None:
        """Numba compiles the engine in this chunk (told by quantlab.engine.compiling): say so,
        counting the functions compiled; the next chunk's progress says "simulating" again."""
        self.tell(StepProgress(STEP_COMPILING, done, total))
        if done >= total:
            self.compiled_at = time.monotonic()

    # -- between chunks ----------------------------------------------------------------------------

    def check_control(self) -> None:
        """Raise what stops the run now: ``OwnershipLost``, ``CancelRequested``, ``TimedOut``."""
        doc = self.registry.get_run(self.run_id)
        if doc.get("status") != RUNNING or doc.get("worker") != self.me:
            raise OwnershipLost
        if doc.get("cancel_requested"):
            raise CancelRequested
        limit = self.settings.max_duration
        if limit and self.elapsed() > limit:
            raise TimedOut

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.attempt_start

    def _maybe_checkpoint(self, sim: Any) -> None:
        self.checkpoint_if_due(sim.state_bytes, sim.done_units, sim.total_units)

    def checkpoint_if_due(self, state: Callable[[], bytes], done: int, total: int) -> None:
        """Save ``state()`` (what a later attempt resumes from: :meth:`resume_state`) when
        ``QUANTLAB_CHECKPOINT_SECONDS`` passed since the last one; ``done`` of ``total`` units
        (combinations, folds) are in it."""
        now = time.monotonic()
        if now - self.last_checkpoint < checkpoint_every():
            return
        self.last_checkpoint = now
        meta = {"done_units": done, "total_units": total,
                "attempt": self.doc["attempts"], "elapsed": self.elapsed(), "worker": self.me}
        self.registry.save_checkpoint(self.run_id, state(), meta)
        publish(self.run_id, lifecycle.Checkpoint(done, total), self.settings)

    def tell(self, p: StepProgress) -> None:
        """Publish progress (at most every ``PROGRESS_EVERY`` s) and record it in the run
        document (at most every ``RECORD_EVERY`` s); the first and the last of a step are
        always told. Simulating counts engine units (bars or combinations: ``done_units``);
        computing indicators and compiling count their own work (``step_done``)."""
        now = time.monotonic()
        last = p.done >= p.total
        changed = p.step != self.step_told
        progress = max(step_progress(p.step, p.done, p.total), self.progress_told)
        units = p.step in (STEP_SIMULATING, STEP_SAVING)
        bars_done = int(p.done * self.bars_per_unit) if units else self.bars_told
        if units:
            self.units_told = (p.done, p.total)
        # the other steps keep the engine's units as last told (a split sweep's coordinator
        # counts its shards' combinations, not its own unrun sweep's)
        done, total = (p.done, p.total) if units else self.units_told or (
            self._units_done(), self._units_total())
        eta = None if p.eta is None else round(p.eta, 3)
        if last or changed or now - self.last_event >= PROGRESS_EVERY or self.last_event == 0.0:
            self.last_event = now
            self.step_told = p.step
            self.progress_told = progress
            bars_delta = max(bars_done - self.bars_told, 0) if p.step == STEP_SIMULATING else 0
            self.bars_told = bars_done if p.step == STEP_SIMULATING else self.bars_told
            publish(self.run_id, lifecycle.Progress(
                progress=progress, step=p.step, bars_done=bars_done, bars_delta=bars_delta,
                done_units=done, total_units=total, eta_seconds=eta,
                step_done=0 if units else p.done, step_total=0 if units else p.total,
            ), self.settings)
        if last or changed or now - self.last_record >= RECORD_EVERY:
            self.last_record = now
            self._update({"progress": progress, "step": p.step, "bars_done": bars_done,
                          "eta_seconds": eta, "heartbeat_at": time.time()})

    def _units_done(self) -> int:
        return int(getattr(self.sim, "done_units", 0) or 0)

    def _units_total(self) -> int:
        return int(getattr(self.sim, "total_units", 0) or 0)

    def step(self, step: str, done: int = 0, total: int = 0) -> None:
        """Enter ``step``: always told, whatever the rate limits."""
        self.last_event = 0.0
        self.last_record = 0.0
        self.tell(StepProgress(step, done, total))

    def _update(self, fields: RunRecord) -> None:
        if not self.registry.update_run(self.run_id, fields, expect_status=(RUNNING,)):
            raise OwnershipLost

    def log(self, message: str, level: str = "info") -> None:
        lifecycle.run_log(self.run_id, message, level, self.settings)

    # -- endings -----------------------------------------------------------------------------------

    def _save_result(self, result: Any, told: bool = False) -> dict[str, Any]:
        """Write the result's blobs. A home that turned read-only or full keeps the work: the
        save is tried again (backing off to ``SAVE_RETRY_MAX`` s, each time logged with the
        path) until it succeeds, while this worker owns the run and no cancel is asked.
        ``told``: say so in progress (a completed run): a sweep's "overfitting statistics"
        with its parts counted, then "saving results"."""
        prefix = f"runs/{self.run_id}/"
        # the run's trials join the ledger; a sweep's overfitting summary is stored with it
        # (a walk-forward or cross-validation has no sweep table: no ledger, no overfitting)
        # Numba compiling the statistics' kernels (a cold cache: seconds) is told as at the start
        with compiling.watching(self._compiling if told else None):
            ending = ({} if validation.is_validation(result)
                      else research.run_end_fields(self.registry, self.sim, result, self.log,
                                                   progress=self._overfitting if told else None))
        if told and self.step_told != STEP_SAVING:  # a validation told it after its folds
            units = self._units_total()
            self.step(STEP_SAVING, units, units)
        blobs = result.to_blobs()
        delay = SAVE_RETRY_FIRST
        while True:
            try:
                for name, payload in blobs.items():
                    self.registry.put_blob(prefix + name, payload)
                break
            except HomeNotWritable as exc:  # DiskFull too
                self._wait_to_save_again(exc, delay)
                delay = min(delay * 2, SAVE_RETRY_MAX)
        return {"result_ref": prefix, "result_blobs": sorted(blobs),
                "metrics": _metrics(result.metrics), "best_params": _jsonable(result.params),
                **ending}

    def _wait_to_save_again(self, exc: HomeNotWritable, delay: float) -> None:
        """Log why the save failed, then sleep ``delay``; re-raise ``exc`` if the run was
        cancelled (nothing is left to keep) and ``OwnershipLost`` if another worker has it."""
        self._own_or_raise()
        if self.registry.get_run(self.run_id).get("cancel_requested"):
            raise exc
        line = f"cannot save the result yet: {exc.message}; trying again in {delay:g} s"
        log.warning("run %s: %s", self.run_id, line)
        with contextlib.suppress(Exception):  # the run's log may be as unwritable as the blobs
            self.log(line, "warning")
        time.sleep(delay)

    def _overfitting(self, done: int, total: int) -> None:
        """Every part is told: a part is ~0.1 s of a big sweep, and there are at most
        ``3 + combinations / 1,000`` of them (quantlab.research.blocksums.PART_COMBINATIONS)."""
        self.step(STEP_OVERFITTING, done, total)

    def _completed(self, result: Any) -> None:
        fields = self._save_result(result, told=True)
        self._own_or_raise()
        # a merged sweep tells whether a shard's part is missing: never claim it whole then
        partial = bool(getattr(result, "partial", False))
        fields.update({"progress": 1.0, "eta_seconds": 0.0, "partial": partial})
        event = lifecycle.Completed(**self._ending(), partial=partial, metrics=fields["metrics"])
        if not transition(self.run_id, RunStatus.COMPLETED, expect=RUNNING, fields=fields,
                          event=event, on_won=self._mark_ended, settings=self.settings):
            raise OwnershipLost
        self.registry.delete_checkpoint(self.run_id)

    def _finished_part(self) -> tuple[dict[str, Any], int]:
        """Save what a stopped run had finished (a sweep's finished combinations): the record's
        result fields with ``partial``, and how many combinations were kept (0: nothing kept,
        as for a single backtest stopped mid-way)."""
        fields: dict[str, Any] = {"partial": False}
        sim = self.sim
        kept = 0
        if self.partial_result is not None:
            fields.update(self._save_result(self.partial_result))
            fields["partial"] = True
            kept = validation.finished_count(self.partial_result)
        elif sim is not None and sim.is_sweep and sim.done_units > 0:
            kept = int(sim.done_units)
            try:
                fields.update(self._save_result(sim.result(partial=True)))
                fields["partial"] = True
            except Exception:  # e.g. a killed sandbox's checkpoint could not be rebuilt
                log.warning("run %s: its finished part could not be kept", self.run_id,
                            exc_info=True)
                kept = 0
        else:  # a single run stopped before its result still counts as a trial
            research.record_unfinished(self.registry, sim)
        return fields, kept

    def _cancelled(self) -> None:
        fields, kept = self._finished_part()
        event = lifecycle.Cancelled(**self._ending(), reason="cancelled",
                                    partial=fields["partial"], while_=RUNNING,
                                    combinations_done=kept)
        if transition(self.run_id, RunStatus.CANCELLED, expect=RUNNING, fields=fields,
                      event=event, on_won=self._mark_ended, settings=self.settings):
            self.registry.delete_checkpoint(self.run_id)

    def _timed_out(self) -> None:
        """QUANTLAB_MAX_DURATION passed: the run ends failed (reason ``timeout``) with what it
        had finished, as a cancel keeps it (a sweep's finished combinations: run.result())."""
        try:
            self._own_or_raise()
        except OwnershipLost:
            return
        fields, kept = self._finished_part()
        limit = self.settings.max_duration
        message = (f"timeout: the run took longer than QUANTLAB_MAX_DURATION={limit:g} s and was "
                   f"stopped; raise the limit or make the run smaller (fewer symbols, bars or "
                   f"combinations)")
        if kept:
            what = validation.finished_what(self.partial_result)
            message += f"; its {kept:,} finished {what} are kept: run.result()"
        self._failed(message, reason="timeout", trace=None, kept=fields)

    def _failed(self, message: str, *, reason: str, trace: str | None,
                kept: dict[str, Any] | None = None) -> None:
        """End the run failed; ``kept``: the result fields of what it had finished."""
        try:
            self._own_or_raise()
        except OwnershipLost:
            return
        fields = {"error": message, "traceback": trace, **(kept or {})}
        event = lifecycle.Failed(**self._ending(), reason=reason, error=message, traceback=trace,
                                 partial=bool(fields.get("partial")))
        if transition(self.run_id, RunStatus.FAILED, expect=RUNNING, fields=fields, event=event,
                      note=message + (f"\n{trace}" if trace else ""), level="error",
                      on_won=self._mark_ended, settings=self.settings):
            self.registry.delete_checkpoint(self.run_id)

    def _mark_ended(self) -> None:
        """This worker recorded the run's end (set before the event is told: a failure to tell
        it must not leave the shards' state behind)."""
        self.ended = True

    def _ending(self) -> dict[str, Any]:
        """What every terminal event of an executed run tells about the execution."""
        return {"seconds": round(self.elapsed(), 4), "strategy": self.doc.get("strategy")}

    def _own_or_raise(self) -> None:
        doc = self.registry.get_run(self.run_id)
        if doc.get("status") != RUNNING or doc.get("worker") != self.me:
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
