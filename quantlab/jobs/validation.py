"""Walk-forward analysis and combinatorial purged cross-validation as queued runs.

A config with ``walk_forward:`` or ``cross_validate:`` is queued like any run; on the worker the
runner hands it here once its bars are loaded (:func:`run`). The analysis is the research
layer's own plan (:class:`~quantlab.research.walkforward.WalkForwardPlan`,
:class:`~quantlab.research.crossval.CrossValidationPlan`), the very steps ``ql.walk_forward`` /
``ql.cross_validate`` take in a kernel, run one at a time:

- walk-forward: fold by fold, each fold's in-sample sweep driven in chunks by
  :func:`~quantlab.jobs.execution.drive`; the finished folds are checkpointed (every
  ``QUANTLAB_CHECKPOINT_SECONDS``), so a run whose worker died resumes at its next fold;
- cross-validation: the full-sample sweep of the default purge (driven in chunks), the
  re-simulation summing every combination's returns per block (in chunks of combinations), then
  split by split; the sums are checkpointed, so a run whose worker died goes on to the splits.

Between folds (splits) and between the chunks of a fold's sweep, a progress event tells where
the run is (``step`` such as ``"fold 3 of 12"``, ``done_units``/``total_units`` the folds) and the
runner's ``check_control`` stops it for a cancel, the time limit or a lost ownership. A stopped
run keeps its finished folds (splits): the runner saves them as a partial result. The result is
stored with the run (``WalkForward.to_blobs``) and ``run.result()`` gives the same object as the
in-kernel call on the same config.
"""

from __future__ import annotations

import time
from typing import Any

from quantlab import data
from quantlab.config import BacktestConfig
from quantlab.errors import ConfigError
from quantlab.jobs import lifecycle
from quantlab.jobs.execution import (
    STEP_PROGRESS,
    STEP_SAVING,
    CancelRequested,
    TimedOut,
    chunk_knobs,
    drive,
)
from quantlab.research import crossval, walkforward
from quantlab.research.crossval import CrossValidation, CrossValidationPlan
from quantlab.research.walkforward import WalkForward, WalkForwardPlan

WALK_FORWARD = "walk_forward"
CROSS_VALIDATE = "cross_validate"
# where the folds (splits) sit on the run's 0..1 progress bar (as the engine's simulating step)
LOOP_START = STEP_PROGRESS["simulating"]
LOOP_END = STEP_PROGRESS[STEP_SAVING]
# of that span, what a cross-validation's full-sample sweep and block sums take before the splits
CV_PREPARE_SHARE = 0.5
PROGRESS_EVERY = 0.05  # seconds between two progress events within a fold
RECORD_EVERY = 0.25  # seconds between two progress writes to the registry within a fold


def kind_of(cfg: BacktestConfig) -> str | None:
    """``"walk_forward"``, ``"cross_validate"`` or None (a plain backtest or sweep)."""
    if cfg.walk_forward is not None:
        return WALK_FORWARD
    if cfg.cross_validate is not None:
        return CROSS_VALIDATE
    return None


def is_validation(result: Any) -> bool:
    return isinstance(result, WalkForward | CrossValidation)


def finished_count(result: Any) -> int:
    """How many folds (splits; a sweep's combinations) a stopped run's partial result kept."""
    if isinstance(result, WalkForward):
        return len(result.folds)
    if isinstance(result, CrossValidation):
        return len(result.splits)
    return len(result.table)


def finished_what(result: Any) -> str:
    if isinstance(result, WalkForward):
        return "folds"
    if isinstance(result, CrossValidation):
        return "splits"
    return "combinations"


def from_blobs(blobs: dict[str, bytes]) -> WalkForward | CrossValidation | None:
    """A stored walk-forward or cross-validation (by its summary blob), else None."""
    if walkforward.BLOB_NAME in blobs:
        return WalkForward.from_blobs(blobs)
    if crossval.BLOB_NAME in blobs:
        return CrossValidation.from_blobs(blobs)
    return None


def plan_of(bars: Any, cfg: BacktestConfig) -> WalkForwardPlan | CrossValidationPlan:
    """The analysis ``cfg`` asks for over ``bars``: the arguments ``ql.walk_forward`` /
    ``ql.cross_validate`` get from the same config (the engine options it sets; ``select``
    picks each fold's combination; a cross-validation chooses by Sharpe ratio)."""
    options = cfg.options_given()
    if cfg.walk_forward is not None:
        spec = cfg.walk_forward
        select = options.pop("select", "sharpe")
        return WalkForwardPlan(bars, cfg.strategy, cfg.params, train=spec.train,
                               test=spec.test, step=spec.step, anchored=spec.anchored,
                               select=select, **options)
    cv = cfg.cross_validate
    if cv is None:
        raise ConfigError("this config has no walk_forward or cross_validate key",
                          field="walk_forward")
    return CrossValidationPlan(bars, cfg.strategy, cfg.params, groups=cv.groups,
                               test_groups=cv.test_groups, purge=cv.purge, embargo=cv.embargo,
                               **options)


def run_here(cfg: BacktestConfig) -> WalkForward | CrossValidation:
    """The analysis of ``cfg`` run at once in this process (what ``ql.walk_forward`` /
    ``ql.cross_validate`` compute with the same arguments): for a strategy defined in a notebook,
    which is not queued (see :func:`check_before_queue`)."""
    plan = plan_of(_bars_of(cfg), cfg)
    if isinstance(plan, WalkForwardPlan):
        return plan.assemble([plan.run_fold(k) for k in range(len(plan.folds))])
    plan.prepare()
    return plan.assemble([plan.run_split(i) for i in range(len(plan.splits))])


def check_before_queue(cfg: BacktestConfig, with_data: bool = True) -> float:
    """At submit, before anything is queued: what only the data can tell (window sizes such as
    ``2y`` in bars, train + test longer than the data, too few bars for the groups) raises its
    ConfigError here rather than failing the run on a worker (``with_data=False``: symbols the
    worker will fetch first; checked there); a notebook strategy is refused (its folds would
    need a sandbox each: run ``ql.walk_forward`` in the kernel). Returns the run's work as a
    multiple of one sweep over all its bars (:func:`work_factor`; 1 for a plain run)."""
    kind = kind_of(cfg)
    if kind is None:
        return 1.0
    if cfg.strategy_source:
        call = "ql.walk_forward" if kind == WALK_FORWARD else "ql.cross_validate"
        raise ConfigError(f"{kind} with a strategy defined in this notebook ('{cfg.strategy}') "
                          f"is not queued: call {call}(...) in the kernel, or register the "
                          f"strategy in a module the worker imports (quantlab worker --import)",
                          field=kind)
    if not with_data:
        return 1.0
    return work_factor(plan_of(_bars_of(cfg), cfg))


def _bars_of(cfg: BacktestConfig) -> Any:
    """The bars of ``cfg``'s symbols and window, from the data store."""
    return data.load(list(cfg.symbols), *cfg.data_window(), cfg.interval)


def work_factor(plan: WalkForwardPlan | CrossValidationPlan) -> float:
    """The bars an analysis simulates per combination over the bars of the data: the folds'
    training windows (the test runs are one combination each: left out) for a walk-forward;
    the re-simulation of the block sums, plus the full-sample sweep of a default purge, for a
    cross-validation. The queue's estimate of the run's seconds scales with it."""
    if isinstance(plan, WalkForwardPlan):
        trained = sum(f.train_end - f.train_start for f in plan.folds)
        return trained / max(plan.bars.n_bars, 1)
    return 2.0 if plan.purge is None else 1.0


# -- on the worker -------------------------------------------------------------------------------


class FoldProgress:
    """Progress events and registry writes of a run going fold by fold: each fold's start is
    always told; within a fold's sweep at most every ``PROGRESS_EVERY`` s (written to the
    registry every ``RECORD_EVERY`` s)."""

    def __init__(self, job: Any, unit: str, total: int, start: float, end: float) -> None:
        self.job = job
        self.unit, self.total = unit, total
        self.start, self.end = start, end
        self.began = time.monotonic()
        self.last_event = self.last_record = 0.0
        self.bars_done = 0  # bars x combinations simulated in finished folds
        self.bars_told = 0

    def fraction(self, done: float) -> float:
        return self.start + (self.end - self.start) * done / max(self.total, 1)

    def tell(self, k: int, within: float = 0.0, bars_now: int = 0, force: bool = False,
             step: str | None = None) -> None:
        """Fold ``k`` (0-based) is ``within`` (0..1) done; ``bars_now`` bars simulated in it."""
        now = time.monotonic()
        done = min(k + within, self.total)
        progress = self.fraction(done)
        spent = now - self.began
        eta = round(spent * (self.total - done) / done, 3) if done > 0 else None
        bars = self.bars_done + bars_now
        step = step or f"{self.unit} {min(k + 1, self.total)} of {self.total}"
        if force or now - self.last_event >= PROGRESS_EVERY:
            self.last_event = now
            lifecycle.publish(self.job.run_id, lifecycle.Progress(
                progress=progress, step=step, bars_done=bars,
                bars_delta=max(bars - self.bars_told, 0), done_units=k, total_units=self.total,
                eta_seconds=eta), self.job.settings)
            self.bars_told = bars
        if force or now - self.last_record >= RECORD_EVERY:
            self.last_record = now
            self.job._update({"progress": progress, "step": step, "bars_done": bars,
                              "eta_seconds": eta, "heartbeat_at": time.time()})

    def driver(self, k: int, step: str | None = None) -> Any:
        """``run`` of a plan's sweep: :func:`drive` in chunks, telling progress and checking
        the run's control between chunks."""
        def run(sim: Any) -> None:
            drive(sim, self.between(k, sim, step))
        return run

    def between(self, k: int, work: Any, step: str | None = None) -> Any:
        """What :func:`drive` calls after each chunk of ``work`` (a simulation, or anything with
        its ``bars``, ``is_sweep``, ``done_units``, ``total_units`` and ``finished``) in unit
        ``k``: progress told, then the run's control checked (it raises to stop)."""
        bars = work.bars
        per_unit = bars.n_bars * bars.n_symbols if work.is_sweep else bars.n_symbols

        def after_chunk() -> None:
            within = work.done_units / max(work.total_units, 1)
            self.tell(k, within, int(work.done_units * per_unit), step=step)
            if not work.finished:
                self.job.check_control()
            else:
                self.bars_done += int(work.total_units * per_unit)
        return after_chunk


class BlockSumsInParts:
    """A cross-validation's block sums as :func:`drive` runs a simulation: ``run(units)`` sums
    the next ``units`` combinations."""

    def __init__(self, plan: CrossValidationPlan) -> None:
        self.plan = plan
        self.bars = plan.bars
        self.total_units = plan.n_combos
        self.done_units = 0
        self.is_sweep = True

    @property
    def finished(self) -> bool:
        return self.done_units >= self.total_units

    def run(self, units: int) -> int:
        stop = min(self.total_units, self.done_units + int(units))
        self.plan.sum_blocks(self.done_units, stop)
        self.done_units = stop
        return stop


def run(job: Any, bars: Any, cfg: BacktestConfig) -> WalkForward | CrossValidation:
    """Run the analysis of ``cfg`` over ``bars`` for the runner's ``job``; a cancel or the time
    limit between (or within) folds leaves the finished part in ``job.partial_result``."""
    plan = plan_of(bars, cfg)
    if isinstance(plan, WalkForwardPlan):
        return _walk_forward(job, plan)
    return _cross_validate(job, plan)


def _walk_forward(job: Any, plan: WalkForwardPlan) -> WalkForward:
    n = len(plan.folds)
    job.log(f"walk-forward: {n} folds, chosen by {plan.select}")
    progress = FoldProgress(job, "fold", n, LOOP_START, LOOP_END)
    outcomes = _resumed_folds(job, n)
    try:
        for k in range(len(outcomes), n):
            progress.tell(k, force=True)
            job.check_control()
            outcomes.append(plan.run_fold(k, run=progress.driver(k)))
            if k + 1 < n:  # the finished folds, for an attempt after this worker died
                job.checkpoint_if_due(lambda: walkforward.folds_bytes(outcomes), k + 1, n)
    except (CancelRequested, TimedOut):
        if outcomes:
            job.partial_result = plan.assemble(outcomes, partial=True)
        raise
    job.step(STEP_SAVING, n, n)
    return plan.assemble(outcomes)


def _resumed_folds(job: Any, n: int) -> list[walkforward.FoldOutcome]:
    """The folds an earlier attempt finished, from its last checkpoint (none: [])."""
    state = job.resume_state()
    if state is None:
        return []
    outcomes = walkforward.folds_from_bytes(state)
    job.log(f"resumed from checkpoint: {len(outcomes)} of {n} folds done "
            f"(attempt {job.doc['attempts']})", "warning")
    return outcomes


def _cross_validate(job: Any, plan: CrossValidationPlan) -> CrossValidation:
    m = len(plan.splits)
    job.log(f"cross-validation: {plan.n_groups} groups, {plan.test_groups} tested per split: "
            f"{m} splits")
    middle = LOOP_START + (LOOP_END - LOOP_START) * CV_PREPARE_SHARE
    before = FoldProgress(job, "preparing", 2, LOOP_START, middle)
    state = job.resume_state()
    if state is not None and plan.load_sums(state):
        job.log(f"resumed from checkpoint: the returns of all {plan.n_combos} combinations "
                f"summed per block (attempt {job.doc['attempts']})", "warning")
    else:
        _sum_blocks(job, plan, before)
        # nearly all of the work: kept for an attempt after this worker died
        job.checkpoint_if_due(plan.sums_bytes, 0, m)
    progress = FoldProgress(job, "split", m, middle, LOOP_END)
    progress.bars_done = before.bars_done
    outcomes: list[crossval.SplitOutcome] = []
    _, pause = chunk_knobs()  # the test knob's pause, between splits too
    try:
        for i in range(m):
            progress.tell(i)  # splits are quick: rate-limited, the first and last told
            job.check_control()
            if pause:
                time.sleep(pause)
            outcomes.append(plan.run_split(i))
    except (CancelRequested, TimedOut):
        if outcomes:
            job.partial_result = plan.assemble(outcomes, partial=True)
        raise
    progress.tell(m, force=True, step=f"split {m} of {m}")
    job.step(STEP_SAVING, m, m)
    return plan.assemble(outcomes)


def _sum_blocks(job: Any, plan: CrossValidationPlan, before: FoldProgress) -> None:
    """The default purge's full-sample sweep, then every combination's returns summed per
    block: both in chunks, the run's control checked between them."""
    purge_step = "full-sample sweep (default purge)"
    if plan.purge is None:
        before.tell(0, force=True, step=purge_step)
    job.check_control()
    plan.choose_purge(run=before.driver(0, step=purge_step))  # the sweep in chunks
    plan.start_sums()
    sums_step = "returns summed per block"
    before.tell(1, force=True, step=sums_step)
    job.check_control()
    parts = BlockSumsInParts(plan)
    drive(parts, before.between(1, parts, sums_step))
    plan.finish_sums()


__all__ = ["CROSS_VALIDATE", "WALK_FORWARD", "FoldProgress", "check_before_queue",
           "finished_count", "finished_what", "from_blobs", "is_validation", "kind_of",
           "plan_of", "run", "work_factor"]
