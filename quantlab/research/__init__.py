"""What keeps a researcher honest (layer 5: above config, below jobs; docs/research.md):
overfitting statistics of sweeps (PSR, DSR, PBO) and the trial ledger behind an honest N
(formulas in :mod:`quantlab.sharpe_stats`), the look-ahead audit, run diff, confidence
intervals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from quantlab.registry import Registry, open_registry
from quantlab.research import ledger
from quantlab.research.audit import Audit, audit
from quantlab.research.crossval import CrossValidation, cross_validate
from quantlab.research.overfitting import VIEW, Overfitting, overfitting
from quantlab.research.overfitting import steps as overfitting_steps
from quantlab.research.walkforward import WalkForward, walk_forward

log = logging.getLogger(__name__)

#: CSCV blocks of the summary a queued sweep stores with its result
SUMMARY_BLOCKS = 16


def result_overfitting(result: Any, blocks: int = 16, trials: int | str | None = None,
                       registry: Registry | None = None) -> Overfitting:
    """``Result.overfitting``: the statistics of a sweep run in this process."""
    sim = result._source  # Result.overfitting checked it is there
    stats = None
    if trials == "registry":
        stats = ledger.stats(registry or open_registry(), result.config)
    return overfitting(sim, result.table, blocks, trials, stats)


def record_unfinished(registry: Registry, sim: Any) -> None:
    """A single run cancelled before its result joins the ledger (its SR unknown); a failure to
    write it is logged, never a reason to lose the cancellation."""
    try:
        ledger.record_unfinished(registry, sim)
    except Exception as exc:
        log.warning("trial ledger not updated: %s", exc)


def run_end_fields(registry: Registry, sim: Any, result: Any,
                   note: Callable[[str, str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """When a queued run ends with a result (completed, or a cancelled sweep's finished part):
    record its trials in the ledger and, for a sweep, return its overfitting summary as
    registry fields (N counted over the ledger). A statistic that cannot be had (too few bars
    for the blocks) is told, never a reason to lose the run.

    ``progress(done, total)``, for a sweep only: its parts as they end, the ledger first, then
    the re-simulation's parts and the CSCV (:func:`quantlab.research.overfitting.steps`)."""
    sweep = result.table is not None and sim is not None and len(result.table) > 0
    total = 1 + overfitting_steps(len(result.table)) if sweep else 0
    if sweep and progress is not None:
        progress(0, total)
    try:
        ledger.record(registry, result)
    except Exception as exc:  # the ledger is a courtesy to later runs, not this run's outcome
        log.warning("trial ledger not updated: %s", exc)
    if not sweep:
        return {}

    def after_ledger(done: int, _total: int) -> None:
        if progress is not None:
            progress(1 + done, total)

    try:
        found = overfitting(sim, result.table, SUMMARY_BLOCKS, "registry",
                            ledger.stats(registry, result.config), progress=after_ledger)
    except Exception as exc:  # too few bars for the blocks, a sandbox gone: the run is kept
        if note is not None:
            note(f"overfitting statistics skipped: {exc}", "warning")
        return {}
    result.overfitting_summary = found.summary()  # saved in the result's summary.json too
    return {"overfitting": result.overfitting_summary}


__all__ = ["SUMMARY_BLOCKS", "VIEW", "Audit", "CrossValidation", "Overfitting", "WalkForward",
           "audit", "cross_validate", "ledger", "overfitting", "record_unfinished",
           "result_overfitting", "run_end_fields", "walk_forward"]
