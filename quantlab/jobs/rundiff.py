"""``ql.diff(a, b)``: the run diff of two runs given by id or as ``Run`` objects.

The comparison itself is :func:`quantlab.research.diff.diff_runs` (a lower layer, which does
not load runs); this module reads the records and results from the registry and gives it the
data store's rows for the exact first changed bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from quantlab import data
from quantlab.errors import QuantlabError, RunError
from quantlab.jobs.api import Run, get_run
from quantlab.research.diff import RunDiff, diff_runs


def _as_run(value: Any) -> Run:
    if isinstance(value, Run):
        return value
    if isinstance(value, str) and value.strip():
        return get_run(value.strip())
    raise RunError(f"ql.diff takes two run ids or ql.Run objects, got {value!r}; e.g. "
                   f"ql.diff('01J...', '01K...')", value=repr(value))


def _result(run: Run) -> Any:
    """The run's result when it has one (a queued or failed run is compared by its record)."""
    if run.record.get("status") != "completed":
        return None
    try:
        return run.result(timeout=0)
    except (QuantlabError, TimeoutError):
        return None


def store_rows(symbol: str, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The current store's rows of ``symbol`` over the run's range, or None if it has none."""
    from quantlab.data.chunks import symbol_rows

    config = record.get("config") or {}
    try:
        bars = data.load([symbol], config.get("start"), config.get("end"),
                         config.get("interval") or record.get("interval") or "1d")
    except QuantlabError:
        return None
    return symbol_rows(bars, symbol)


def diff(a: Any, b: Any) -> RunDiff:
    """Why runs ``a`` and ``b`` differ: changed settings, code, data (which symbols, from which
    bar), engine, metrics, where the equity curves part, and the trades only in one of them."""
    run_a, run_b = _as_run(a), _as_run(b)
    rec_a, rec_b = run_a.record, run_b.record
    return diff_runs(rec_a, rec_b, result_a=_result(run_a), result_b=_result(run_b),
                     store_rows=store_rows)


__all__ = ["diff", "store_rows"]
