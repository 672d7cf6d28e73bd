"""A large sweep split into shards that several workers run at once.

The worker that takes the sweep's run is its *coordinator*: it splits the valid combinations
(``sweep_combinations``, the engine's order) into contiguous shards, enqueues one Huey task per
shard (only the run id, the shard index and the shard count cross the queue), and then runs
shards itself too, so that a sweep never waits for a worker that does not exist. Any other
worker that picks a shard task claims it and runs it. Progress of all shards is told on the
parent run's one event stream by the coordinator, who also checks for cancel and the time limit.

Claims, heart-beats, done counts, results and the cancel flag of the shards live in the queue's
key-value store (Redis hash or SQLite table, atomic ``put_if_empty`` for claims); each shard's
table is a Parquet blob ``runs/<id>/shards/<i>.parquet`` in the registry. A shard whose worker
stops beating is run again by the coordinator; a coordinator that dies is replaced through the
reaper (the parent run is re-queued), and its successor keeps every shard already finished.

A cancel or the time limit stops a split sweep as fast as an unsplit one (``_stop_shards``):
the coordinator sets the board's stop flag, deletes the sweep's shard messages still queued,
claims for no one each shard no worker took (a message popped meanwhile runs nothing), and gives
the helpers at most ``STOP_GRACE`` to record their finished part; it never waits for a shard no
worker claimed.

Only a cancel (or the time limit) makes a part of a shard final: a worker that finds the run
re-queued or ended without a cancel gives its shard up (claim and beat dropped, nothing recorded),
and a coordinator runs again any shard whose result is only a part unless the run is being
cancelled. So a completed sweep always holds every combination.

The merged result is what one worker would give: the shard tables concatenated in combination
order, the best combination chosen by the same rule as the engine (``select``, first on ties,
NaN last) and re-run as a single backtest for its equity and trades.

A many-symbol *portfolio* shares one cash account across its symbols, so it is one simulation
and is never split; only parameter sweeps are.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import numpy as np
import pandas as pd
from huey.constants import EmptyData

from quantlab import settings as settings_mod
from quantlab.config import BacktestConfig
from quantlab.engine import Result, Simulation
from quantlab.engine.simulation import FAILURES_SHOWN, all_failed_error, failure_summary
from quantlab.engine.validate import sweep_combinations
from quantlab.errors import RunNotFound
from quantlab.jobs import queue
from quantlab.jobs.execution import (
    STEP_COMPILING,
    STEP_INDICATORS,
    STEP_SIMULATING,
    CancelRequested,
    OwnershipLost,
    StepProgress,
    TimedOut,
    compile_reports,
    drive,
    engine_kwargs,
    load_bars,
    shared_indicators,
    simulation,
    stale_after,
    worker_id,
)
from quantlab.jobs.lifecycle import TERMINAL, RunStatus
from quantlab.metrics import LOWER_IS_BETTER
from quantlab.registry import RunRecord, open_registry
from quantlab.settings import Settings, env_number

log = logging.getLogger("quantlab.jobs")

MAX_SHARDS = 16
# A stopping coordinator (cancel, time limit) waits at most this long for the helpers to
# record the part they finished: they stop at their next chunk (~50 ms). One slower than that
# is merged without; it removes its part itself (``_drop_if_too_late``).
STOP_GRACE = 0.5
# The claim a stopping coordinator puts on the shards no worker took, so that none takes them.
NO_ONE = "no one: the sweep was stopped"
# Seconds between two looks of an idle coordinator at its shards (and at cancel, time limit).
IDLE_POLL = 0.05
# Automatic splitting: only sweeps estimated to simulate longer than this, in shards of about
# SHARD_SECONDS each (a shard re-computes its indicators, so tiny shards would waste work).
SHARD_MIN_SECONDS = 10.0
SHARD_SECONDS = 5.0
# Seconds between two writes of a shard's step counts (indicators, compiling) to the board;
# the first and the last of a step are always written.
STEP_WRITE_EVERY = 0.05
# What a shard tells of its first seconds on the board (summed over shards by the coordinator)
SHARD_STEPS = {STEP_INDICATORS: "indicators", STEP_COMPILING: "compiling"}


class ShardFailed(Exception):
    """A shard of a split sweep raised on its worker."""

    def __init__(self, message: str, trace: str | None) -> None:
        super().__init__(message)
        self.trace = trace


def shard_count(total: int, estimated_seconds: float | None) -> int:
    """How many shards a sweep of ``total`` combinations is split into (1 = not split).

    ``QUANTLAB_SHARD_COMBINATIONS=N`` forces shards of N combinations; otherwise sweeps
    estimated to take over ``SHARD_MIN_SECONDS`` are split into shards of ~``SHARD_SECONDS``.
    """
    per = int(env_number("QUANTLAB_SHARD_COMBINATIONS", 0, integer=True, minimum=0,
                         example="500"))
    if per:
        count = math.ceil(total / per)
    elif estimated_seconds and estimated_seconds > SHARD_MIN_SECONDS:
        count = math.ceil(estimated_seconds / SHARD_SECONDS)
    else:
        count = 1
    return max(1, min(MAX_SHARDS, count, total))


def bounds(index: int, count: int, total: int) -> tuple[int, int]:
    """Combinations ``[start, stop)`` of shard ``index`` of ``count``."""
    return index * total // count, (index + 1) * total // count


def blob_key(run_id: str, index: int) -> str:
    return f"runs/{run_id}/shards/{index}.parquet"


class ShardBoard:
    """The shared state of one run's shards, in the queue's key-value store."""

    def __init__(self, run_id: str, count: int, settings: Settings) -> None:
        self.run_id = run_id
        self.count = count
        self.storage = queue.huey_app(settings).storage

    def _key(self, index: int | None, what: str) -> str:
        shard = "all" if index is None else str(index)
        return f"quantlab.shard.{self.run_id}.{self.count}.{shard}.{what}"

    def _get(self, key: str) -> Any:
        raw = self.storage.peek_data(key)
        return None if raw is EmptyData else json.loads(raw)

    def _put(self, key: str, value: Any) -> None:
        self.storage.put_data(key, json.dumps(value).encode())

    def claim(self, index: int, worker: str) -> bool:
        """Atomically take shard ``index``; False if someone already has."""
        value = json.dumps({"worker": worker, "ts": time.time()}).encode()
        return bool(self.storage.put_if_empty(self._key(index, "claim"), value))

    def claimed_by(self, index: int) -> str | None:
        """The worker that claimed shard ``index``, if any."""
        claim = self._get(self._key(index, "claim"))
        return str(claim["worker"]) if claim else None

    def beat(self, index: int, done: int) -> None:
        self._put(self._key(index, "beat"), {"ts": time.time(), "done": done})

    def done(self, index: int) -> int:
        result = self.result(index)
        if result is not None:  # its table's rows and the combinations that raised
            return int(result["rows"]) + len(result.get("failed_at", ()))
        beat = self._get(self._key(index, "beat"))
        return int(beat["done"]) if beat else 0

    def stale(self, index: int, older_than: float) -> bool:
        """Claimed, unfinished, and no sign of life for ``older_than`` seconds."""
        last = self._get(self._key(index, "beat")) or self._get(self._key(index, "claim"))
        if last is None or self.result(index) is not None:
            return False
        return bool(time.time() - float(last["ts"]) > older_than)

    def release(self, index: int) -> None:
        """Give shard ``index`` up unfinished: no result, and its claim and beat are dropped so
        that any worker may claim it at once. The claim goes first: a worker that claims it in
        between is never taken for dead (``stale`` falls back to its fresh claim)."""
        self.storage.delete_data(self._key(index, "claim"))
        self.storage.delete_data(self._key(index, "beat"))
        for what in SHARD_STEPS.values():  # a worker lost mid-compile is compiling no more
            self.storage.delete_data(self._key(index, what))

    def reset(self, index: int) -> None:
        """Forget shard ``index`` (result, claim, beat): it is to be run again from its start."""
        self.storage.delete_data(self._key(index, "result"))
        self.release(index)

    def tell_step(self, index: int, step: str, done: int, total: int) -> None:
        """Shard ``index`` did ``done`` of ``total`` of ``step`` (computing indicators, or
        compiling the engine): the coordinator sums them over shards (:func:`start_step`)."""
        self._put(self._key(index, SHARD_STEPS[step]), [int(done), int(total)])

    def step_counts(self, index: int, step: str) -> tuple[int, int] | None:
        """What shard ``index`` last told of ``step``, if anything."""
        found = self._get(self._key(index, SHARD_STEPS[step]))
        return None if found is None else (int(found[0]), int(found[1]))

    def finish(self, index: int, rows: int, complete: bool,
               failed: Mapping[int, str] | None = None) -> None:
        """Shard ``index`` recorded its table of ``rows`` rows; ``failed``: the combinations
        (positions in the whole sweep) whose strategy raised, left out of the table. All their
        positions are kept, and the errors of the first ``FAILURES_SHOWN`` (the merged config
        lists no more), so that the merge accounts for them as one worker's sweep would."""
        record: dict[str, Any] = {"rows": rows, "complete": complete}
        if failed:
            at = sorted(failed)
            record.update(failed_at=at, errors=[failed[k] for k in at[:FAILURES_SHOWN]])
        self._put(self._key(index, "result"), record)

    def fail(self, index: int, worker: str, error: str, trace: str) -> None:
        self._put(self._key(index, "result"), {"rows": 0, "complete": False, "worker": worker,
                                               "error": error, "trace": trace})

    def result(self, index: int) -> dict[str, Any] | None:
        found = self._get(self._key(index, "result"))
        return dict(found) if found else None

    def cancel(self) -> None:
        self._put(self._key(None, "cancel"), True)

    def cancelled(self) -> bool:
        return bool(self._get(self._key(None, "cancel")))

    def uncancel(self) -> None:
        self.storage.delete_data(self._key(None, "cancel"))

    def clear(self) -> None:
        for index in range(self.count):
            for what in ("claim", "beat", "result", *SHARD_STEPS.values()):
                self.storage.delete_data(self._key(index, what))
        self.storage.delete_data(self._key(None, "cancel"))


class StepWriter:
    """Writes a shard's counts of a step to the board: the first and the last of each step,
    and between them at most every ``STEP_WRITE_EVERY`` s (a crossover shard tells its
    indicators per pair of look-backs: hundreds of calls in a fraction of a second)."""

    def __init__(self, board: ShardBoard, index: int, step: str,
                 then: Callable[[], None] | None = None) -> None:
        self.board, self.index, self.step, self.then = board, index, step, then
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0 or done >= total or now - self.last >= STEP_WRITE_EVERY:
            self.last = now
            self.board.tell_step(self.index, self.step, done, total)
            if self.then is not None:
                self.then()


def run_shard(doc: Mapping[str, Any], index: int, count: int, bars: Any, settings: Settings, *,
              between: Callable[[], None] | None = None,
              told: Callable[[], None] | None = None) -> None:
    """Run shard ``index`` of the sweep of run ``doc`` and record its table.

    ``between`` is called after every engine chunk (the coordinator publishes progress and
    checks cancel there; it may raise to stop: on a cancel or the time limit the finished part
    is still recorded). A worker without ``between`` stops when the run is cancelled (its finished
    part is recorded) or no longer running, e.g. re-queued because its coordinator died: then
    nothing is recorded and the shard is released, to be run whole by the next coordinator (a
    part recorded then would be taken for the shard's final result).

    The shard's indicators, and a helper's compile of the engine, are counted on the board
    (:class:`StepWriter`); ``told`` is called after each write (the coordinator tells the
    sum over shards at once: it cannot tick while it prepares a shard itself). The
    coordinator's own compile is told by its job (``compile_reports``).
    """
    cfg = BacktestConfig.from_any(doc["config"], check=False)
    kwargs = engine_kwargs(cfg)
    # a combination carries its swept options' values (params x options, the engine's order)
    combos, _ = sweep_combinations(kwargs["strategy"], cfg.params, kwargs)
    start, stop = bounds(index, count, len(combos))
    sim = Simulation(bars, **{**kwargs, "params": combos[start:stop]})
    # a shard whose every combination raised is a part of the sweep like any other: the
    # merge fails the sweep if all of its combinations did (as one worker's sweep fails)
    sim.all_failed_raises = False
    board = ShardBoard(doc["id"], count, settings)
    registry = open_registry(settings)
    board.beat(index, 0)

    def after_chunk() -> None:
        board.beat(index, sim.done_units)
        if between is not None:
            between()
        else:
            _stop_if_asked(board, registry, doc["id"])

    stopped: Exception | None = None
    compiled = None if between is not None else StepWriter(board, index, STEP_COMPILING)
    try:
        sim.prepare(shared_indicators(bars),
                    progress=StepWriter(board, index, STEP_INDICATORS, told))
        with contextlib.ExitStack() as stack:
            if compiled is not None:  # a helper: its compile is told on the board
                stack.enter_context(compile_reports(compiled))
            drive(sim, after_chunk)
    except Exception as exc:
        stopped = exc
    lost = isinstance(stopped, OwnershipLost)
    if lost and not sim.finished:
        # the run was re-queued (or ended) without a cancel: a part is no result for it
        board.release(index)
    elif stopped is None or lost or isinstance(stopped, CancelRequested | TimedOut):
        # finished, or stopped on purpose: the combinations done so far are kept
        table = cast(pd.DataFrame, sim.result(partial=True).table)  # a sweep always has one
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        registry.put_blob(blob_key(doc["id"], index), buf.getvalue())
        failed = {start + k: error for k, error in sim.failed.items()}
        board.finish(index, len(table), bool(sim.finished), failed)
        if between is None:
            _drop_if_too_late(board, registry, doc["id"], index)
    elif between is None:  # a helper: tell the coordinator, which fails the run
        board.fail(index, worker_id(), f"{type(stopped).__name__}: {stopped}",
                   "".join(traceback.format_exception(stopped)))
    if stopped is not None and between is not None:
        raise stopped


def _drop_if_too_late(board: ShardBoard, registry: Any, run_id: str, index: int) -> None:
    """A helper that recorded its shard after the run ended (its coordinator stopped waiting
    for it, ``STOP_GRACE``, merged without it and cleaned up) removes what it recorded. The
    run's end is written before the coordinator's last cleanup, so a record made while the run
    still shows running is removed by that cleanup, and one made later is removed here."""
    if registry.get_run(run_id).get("status") not in TERMINAL:
        return  # running (or re-queued: its next coordinator keeps a complete shard)
    board.reset(index)
    registry.delete_blobs(blob_key(run_id, index))


def _stop_if_asked(board: ShardBoard, registry: Any, run_id: str) -> None:
    """A helper stops its shard when the run is cancelled or the coordinator stopped it on the
    time limit (``CancelRequested``: the finished part counts) or when the run is no longer running,
    e.g. re-queued after its coordinator died (``OwnershipLost``: the part does not count)."""
    if board.cancelled():
        raise CancelRequested
    doc = registry.get_run(run_id)
    if doc.get("status") != RunStatus.RUNNING:
        raise OwnershipLost
    if doc.get("cancel_requested"):  # before the coordinator's own check has seen it
        raise CancelRequested


def execute_shard(run_id: str, index: int, count: int, settings: Settings | None = None) -> None:
    """The shard task's body on a helper worker: claim the shard, run it, record its table."""
    settings = settings or settings_mod.current()
    try:
        doc = open_registry(settings).get_run(run_id)
    except RunNotFound:
        return
    board = ShardBoard(run_id, count, settings)
    if _stopping(doc, board) or board.result(index) is not None:
        return  # a shard of a stopped sweep: nothing to do (its message was on its way out)
    if not board.claim(index, worker_id()):
        return
    bars, _ = load_bars(doc)
    run_shard(doc, index, count, bars, settings)


def _stopping(doc: Mapping[str, Any], board: ShardBoard) -> bool:
    """Whether the sweep is over or being stopped: ended, re-queued, cancel requested, or its
    coordinator stopping it (a cancel or the time limit)."""
    return bool(doc.get("status") != RunStatus.RUNNING or doc.get("cancel_requested")
                or board.cancelled())


def merge(doc: Mapping[str, Any], count: int, bars: Any, sweep: Any, settings: Settings) -> Any:
    """The sweep's Result from its shards' tables (None if no combination finished)."""
    board = ShardBoard(doc["id"], count, settings)
    registry = open_registry(settings)
    tables: list[pd.DataFrame] = []
    positions: list[int] = []
    partial = False
    # the combinations whose strategy raised: how many, and the errors of the first ones
    n_failed = 0
    failed: dict[int, str] = {}
    for index in range(count):
        found = board.result(index)
        if found is None:
            partial = True
            continue
        partial = partial or not found["complete"]
        table = pd.read_parquet(io.BytesIO(registry.get_blob(blob_key(doc["id"], index))))
        start, stop = bounds(index, count, len(sweep.combos))
        tables.append(table)
        failed_at = [int(k) for k in found.get("failed_at", ())]
        n_failed += len(failed_at)
        failed.update(zip(failed_at, found.get("errors", ()), strict=False))
        positions.extend(_table_positions(table, sweep, start, stop, failed_at))
    if n_failed and not partial and n_failed == len(sweep.combos):
        raise all_failed_error(sweep.strategy.name, sweep.combos, failed)
    if not positions:
        return None
    # a shard whose every combination raised has an empty table, whose columns would turn
    # the others' int64 into float64 in the concatenation
    table = pd.concat([t for t in tables if len(t)], ignore_index=True)
    select = sweep.select
    values = table[select].to_numpy(dtype=float)
    lower = select in LOWER_IS_BETTER
    filled = np.where(np.isnan(values), np.inf if lower else -np.inf, values)
    best = int(np.argmin(filled) if lower else np.argmax(filled))
    params = sweep.combos[positions[best]]
    cfg = BacktestConfig.from_any(doc["config"], check=False)
    single = simulation(bars, cfg, params=params)
    single.prepare()
    single.run(single.total_units)
    res = single.result()
    config = {**sweep.config, "n_combinations": len(sweep.combos), "skipped": sweep.skipped,
              **failure_summary(sweep.combos, failed, n_failed)}
    return Result(
        metrics=res.metrics, params=params, config=config, index=bars.index,
        symbols=bars.symbols, equity=res.equity, trades=res.trades,
        open_trades=res.open_trades, table=table, partial=partial,
    )


def _table_positions(table: pd.DataFrame, sweep: Any, start: int, stop: int,
                     failed_at: list[int]) -> list[int]:
    """The sweep positions of a shard's table rows: its combinations from ``start`` in order,
    less those that raised (``failed_at``; a shard recorded before they were kept: found by
    their values, ``_positions``)."""
    if len(table) == stop - start:
        return list(range(start, stop))
    if failed_at:
        skip = set(failed_at)
        return [k for k in range(start, start + len(table) + len(skip)) if k not in skip]
    return _positions(table, sweep.combos, start, [*sweep.strategy.params, *sweep.swept])


def _positions(table: pd.DataFrame, combos: Any, start: int, names: list[str]) -> list[int]:
    """Where the rows of a shard's table sit among the sweep's combinations: its combinations
    from ``start`` in order, less those whose strategy raised (left out of the table)."""
    k = start
    found = []
    for row in table[names].itertuples(index=False):
        while k < len(combos) and not all(_same(combos[k][name], value)
                                          for name, value in zip(names, row, strict=True)):
            k += 1
        if k == len(combos):  # a value the table does not give back equal: in order
            return list(range(start, start + len(table)))
        found.append(k)
        k += 1
    return found


def _same(given: Any, stored: Any) -> bool:
    """A combination's value and the table's: equal, or both "none" (a stop of None is NaN in
    the table)."""
    return bool(given == stored) or ((given is None or given != given)
                                     and (stored is None or stored != stored))


# -- the coordinator -------------------------------------------------------------------------------


class Coordinator(Protocol):
    """What the coordinator of a split sweep needs of the run it executes (a runner's Job)."""

    run_id: str
    doc: RunRecord
    settings: Settings
    me: str
    partial_result: Any

    def step(self, step: str, done: int = 0, total: int = 0) -> None: ...

    def tell(self, progress: StepProgress) -> None: ...

    def check_control(self) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...


def run_sharded(job: Coordinator, count: int, bars: Any, sweep: Any) -> Any:
    """Coordinate a split sweep: enqueue the shards, run unclaimed (or abandoned) ones here,
    tell the aggregated progress, and merge the shards' tables. On a cancel or the time limit,
    the shards' finished parts are merged into ``job.partial_result`` before the stop goes on."""
    total = sweep.total_units
    board = ShardBoard(job.run_id, count, job.settings)
    if board.cancelled():
        # left by an earlier attempt that was stopping (cancel or time limit) when its worker
        # died: this attempt runs the sweep whole (a cancel requested of the run itself is
        # seen at the first check and sets the flag again); the shards it had put out of
        # reach are free again
        board.uncancel()
        for index in range(count):
            if board.claimed_by(index) == NO_ONE:
                board.release(index)
    pending = _pending_shards(board)
    for shard in pending:
        queue.enqueue_shard(job.run_id, shard, count, job.doc.get("priority") or 0, job.settings)
    job.log(f"sweep of {total} combinations split into {count} shards "
            f"({count - len(pending)} already done)")
    sim_start = time.monotonic()
    done_at_start = 0
    # the shards' first seconds (indicators, a compile) are told until they simulate
    started = [_done(board) > 0]
    last_start: list[StepProgress | None] = [None]
    if started[0]:  # a successor's: some shards are done
        job.step(STEP_SIMULATING, _done(board), total)
    else:
        job.step(STEP_INDICATORS)

    def tell() -> None:
        nonlocal sim_start, done_at_start
        done = _done(board)
        found = start_step(board, simulating=started[0] or done > 0)
        if found is not None:
            if found != last_start[0]:  # an idle coordinator polls: only news is told
                last_start[0] = found
                job.tell(found)
            # the simulating rate is measured from after the indicators and any compile
            sim_start, done_at_start = time.monotonic(), done
            return
        started[0] = True
        elapsed = time.monotonic() - sim_start
        rate = (done - done_at_start) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        job.tell(StepProgress(STEP_SIMULATING, done, total, eta))

    def tick() -> None:
        tell()
        job.check_control()

    try:
        _coordinate(job, board, count, bars, total, tick, tell)
    except (CancelRequested, TimedOut):
        _stop_shards(board, job.settings)
        job.partial_result = merge(job.doc, count, bars, sweep, job.settings)
        cleanup(job.run_id, count, job.settings)
        raise
    except OwnershipLost:
        raise  # the run is another coordinator's now: its shard messages are its own
    except BaseException:
        _off_the_queue(job.run_id, job.settings)  # a failed sweep runs no shard more
        raise
    # the shards this worker ran itself may still have a message waiting
    _off_the_queue(job.run_id, job.settings)
    result = merge(job.doc, count, bars, sweep, job.settings)
    # the overfitting statistics re-simulate the sweep: from this worker's memo of the lines
    # its own shards computed, not a fresh one
    if not sweep._prepared:
        sweep.prepare(shared_indicators(bars))
    # the merged result is about to be saved: the shards' parts are no longer needed
    cleanup(job.run_id, count, job.settings)
    return result


def start_step(board: ShardBoard, simulating: bool) -> StepProgress | None:
    """What the shards do before they simulate, summed over the shards that told it: the
    engine compiling while any shard compiles (functions compiled, of those the compiles may
    reach), else, until a first combination is simulated (``simulating``), the indicators
    computed of those their shards need. None: simulating."""
    compiling = [c for i in range(board.count)
                 if (c := board.step_counts(i, STEP_COMPILING)) is not None and c[0] < c[1]]
    if compiling:
        return StepProgress(STEP_COMPILING, sum(d for d, _ in compiling),
                            sum(t for _, t in compiling))
    if simulating:
        return None
    told = [c for i in range(board.count)
            if (c := board.step_counts(i, STEP_INDICATORS)) is not None]
    return StepProgress(STEP_INDICATORS, sum(d for d, _ in told), sum(t for _, t in told))


def _coordinate(job: Coordinator, board: ShardBoard, count: int, bars: Any, total: int,
                tick: Callable[[], None], told: Callable[[], None]) -> None:
    """Until every shard has its result: run here a shard no worker claimed (or whose worker
    went silent), else tell the progress and check cancel and the time limit (``tick``)."""
    while True:
        pending = _pending_shards(board)
        _raise_shard_errors(board)
        if not pending:
            # every shard has its result: tell 100% (the shards' done counters are
            # written at a bounded rate and may lag their results)
            job.tell(StepProgress(STEP_SIMULATING, total, total, 0.0))
            return
        index: int | None = next((i for i in pending if board.claim(i, job.me)), None)
        if index is None:
            index = next((i for i in pending if board.stale(i, stale_after())), None)
            if index is not None:
                job.log(f"shard {index} lost its worker; running it here", "warning")
        if index is not None:
            run_shard(job.doc, index, count, bars, job.settings, between=tick, told=told)
            continue
        tick()
        time.sleep(IDLE_POLL)


def _done(board: ShardBoard) -> int:
    return sum(board.done(i) for i in range(board.count))


def _pending_shards(board: ShardBoard) -> list[int]:
    """The shards still to run: those without a result, and those whose result is only a
    part (a worker stopped early) unless the run is being cancelled, the one case where a
    part is final. Such a part is forgotten here, so that the shard is claimed and run again
    whole; a failed shard is not pending (``_raise_shard_errors`` fails the run)."""
    cancelled = board.cancelled()
    pending = []
    for index in range(board.count):
        found = board.result(index)
        if found is not None and not found["complete"] and not found.get("error") \
                and not cancelled:
            board.reset(index)
            found = None
        if found is None:
            pending.append(index)
    return pending


def _raise_shard_errors(board: ShardBoard) -> None:
    for index in range(board.count):
        found = board.result(index)
        if found and found.get("error"):
            raise ShardFailed(f"shard {index} of {board.count} failed on "
                              f"{found.get('worker')}: {found['error']}", found.get("trace"))


def _stop_shards(board: ShardBoard, settings: Settings) -> None:
    """Stop a sweep's shards on a cancel or the time limit, in well under a second: the flag
    that stops the helpers at their next chunk, the shards no worker took off the queue and
    out of reach (claimed for no one), and at most ``STOP_GRACE`` for the helpers to record the
    part they finished. A shard no worker ever claimed is not waited for (it has no part)."""
    board.cancel()
    _off_the_queue(board.run_id, settings)
    running = [i for i in range(board.count)
               if board.result(i) is None and not board.claim(i, NO_ONE)]
    deadline = time.monotonic() + STOP_GRACE
    while running and time.monotonic() < deadline:
        time.sleep(0.01)
        running = [i for i in running if board.result(i) is None]


def _off_the_queue(run_id: str, settings: Settings) -> None:
    try:
        queue.remove_shards(run_id, settings)
    except Exception:  # a message left is a no-op when it comes (execute_shard sees the run)
        log.warning("could not take the shard messages of run %s off the queue", run_id,
                    exc_info=True)


def cleanup(run_id: str, count: int, settings: Settings) -> None:
    ShardBoard(run_id, count, settings).clear()
    open_registry(settings).delete_blobs(f"runs/{run_id}/shards/")
