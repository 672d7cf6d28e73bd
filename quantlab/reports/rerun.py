"""Batch reruns: replay stored configs without the cache and check that the results reproduce.

Each run is submitted again from the config its registry document holds (``cache=False``, so
the engine really runs), and the new metrics are compared with the stored ones. A run is
``reproduced`` when every metric is equal (to 1e-9 relative), else ``drifted``, and then the
outcome says what changed among the inputs of the config hash: the data (fingerprint), the
engine version, or the strategy's code. When none of them changed the drift is reported as
non-determinism, which is a bug.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from quantlab.errors import ConfigError, QuantlabError, RunError, did_you_mean
from quantlab.jobs.api import submit
from quantlab.jobs.rundiff import store_rows
from quantlab.registry import RunRecord, open_registry
from quantlab.research.diff import data_changes

FILTER_KEYS = ("status", "strategy", "symbol", "tag", "user", "since", "until", "text", "where")
LIST_FILTERS = ("status", "strategy", "symbol", "tag", "user")
REL_TOL = 1e-9
ABS_TOL = 1e-12
SHOWN_CHANGES = 4


@dataclass(frozen=True)
class RerunOutcome:
    """What rerunning one run gave.

    ``status`` is ``reproduced``, ``drifted`` or ``error``; ``changes`` maps each metric that
    differs to (stored, new); ``causes`` lists the inputs that changed since the stored run.
    """

    run_id: str
    status: str
    new_run_id: str | None = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    compared: int = 0
    error: str | None = None

    def line(self) -> str:
        """One line for the terminal: ``<id> reproduced`` / ``<id> drifted: ...``."""
        if self.status == "error":
            return f"{self.run_id} error: {self.error}"
        if self.status == "reproduced":
            note = f" ({self.compared} metrics equal, rerun {self.new_run_id})"
            if self.causes:
                note += f"; unchanged despite: {'; '.join(self.causes)}"
            return f"{self.run_id} reproduced{note}"
        shown = [f"{name} {_num(old)} -> {_num(new)}"
                 for name, (old, new) in list(self.changes.items())[:SHOWN_CHANGES]]
        more = len(self.changes) - SHOWN_CHANGES
        if more > 0:
            shown.append(f"+{more} more")
        why = "; ".join(self.causes)
        return f"{self.run_id} drifted: {', '.join(shown)} (rerun {self.new_run_id}); because: {why}"

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "new_run_id": self.new_run_id,
                "changes": {k: list(v) for k, v in self.changes.items()},
                "causes": list(self.causes), "compared": self.compared, "error": self.error}


def _num(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _same(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is None and new is None
    try:
        a, b = float(old), float(new)
    except (TypeError, ValueError):
        return bool(old == new)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def metric_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Metrics whose values differ (a metric present on one side only counts as a change)."""
    changes = {}
    for name in [*old, *(k for k in new if k not in old)]:
        if not _same(old.get(name), new.get(name)):
            changes[name] = (old.get(name), new.get(name))
    return changes


def _strategy_hash(registry: Any, record: Mapping[str, Any]) -> str | None:
    """The strategy-code hash the run was made with, from its result summary (None if the
    result or the field is missing)."""
    ref = record.get("result_ref")
    if not ref:
        return None
    try:
        summary = json.loads(registry.get_blob(f"{ref}summary.json"))
    except (QuantlabError, ValueError):
        return None
    value = (summary.get("config") or {}).get("strategy_source_hash")
    return str(value) if value else None


def drift_causes(registry: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Which inputs of the config hash differ between a stored run and its rerun."""
    causes = []
    if old.get("data_fingerprint") != new.get("data_fingerprint"):
        causes.append(f"data changed{_data_where(old, new)} (fingerprint {str(old.get('data_fingerprint'))[:12]} -> "
                      f"{str(new.get('data_fingerprint'))[:12]})")
    if old.get("engine_version") != new.get("engine_version"):
        causes.append(f"engine version {old.get('engine_version')} -> "
                      f"{new.get('engine_version')}")
    old_code, new_code = _strategy_hash(registry, old), _strategy_hash(registry, new)
    if old_code and new_code:
        if old_code != new_code:
            causes.append(f"strategy code changed (sha256 {old_code[:12]} -> {new_code[:12]})")
    elif not causes and old.get("config_hash") != new.get("config_hash"):
        # The hash covers config, data, code and engine; with data and engine equal, the code
        # (or the canonical form of the config) is what moved.
        causes.append("strategy code changed (the config hash differs while data and engine "
                      "are the same)")
    return causes


def _data_where(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``": DDD from 2022-06-01 on (152 rows)"``: which symbols' bars changed and from which bar,
    told by the run diff from the chunk fingerprints both runs recorded ('' when unknown)."""
    table = data_changes(old, new, store_rows)
    told = [f"{r.symbol} from {_day(r.first_changed)} on ({r.rows_changed} rows)"
            if r.change == "changed" and r.first_changed is not None else f"{r.symbol} {r.change}"
            for r in table.itertuples() if r.change != "unknown"]
    return f": {'; '.join(told)}" if told else ""


def _day(ts: Any) -> str:
    stamp = pd.Timestamp(ts)
    return str(stamp.date()) if stamp == stamp.normalize() else stamp.isoformat()


def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """``["strategy=sma_crossover", "tag=prod", "where=sharpe>1"]`` -> find_runs filters; a key
    given twice matches either value (``where`` clauses all apply)."""
    filters: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(
                f"cannot read the filter {item!r}; write KEY=VALUE, e.g. --filter "
                f"strategy=sma_crossover or --filter 'where=sharpe>1'", field="filter",
            )
        if key not in FILTER_KEYS:
            raise ConfigError(
                f"unknown filter {key!r}{did_you_mean(key, FILTER_KEYS)}; filter by "
                f"{', '.join(FILTER_KEYS)}", field="filter",
            )
        if key in LIST_FILTERS:
            filters.setdefault(key, []).append(value)
        elif key == "where" and key in filters:
            filters[key] = f"{filters[key]}, {value}"
        else:
            filters[key] = value
    return filters


def select_runs(run_ids: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
                limit: int | None = None) -> list[RunRecord]:
    """The run documents to rerun: the given ids, then those the filters match (completed runs
    unless a status filter says otherwise), each once."""
    if not run_ids and not filters:
        raise ConfigError(
            "say which runs to rerun: give run ids (quantlab rerun 01J... 01K...) or filters "
            "(quantlab rerun --filter strategy=sma_crossover)", field="runs",
        )
    registry = open_registry()
    docs = [registry.get_run(run_id) for run_id in run_ids]
    if filters:
        query = {"status": "completed", **filters}
        docs += registry.find_runs(**query, sort="queued_at", limit=limit)
    seen: set[str] = set()
    unique = []
    for doc in docs:
        if doc["id"] not in seen:
            seen.add(doc["id"])
            unique.append(doc)
    return unique


def submit_again(doc: Mapping[str, Any], user: str | None = None) -> Any:
    """Submit a stored run's config again, bypassing the result cache: the new run is named
    "rerun of ...", tagged ``rerun`` and points back with ``rerun_of``. The CLI's reruns and
    the Lab panel's Rerun both come here, so a rerun looks the same wherever it was made."""
    config = dict(doc.get("config") or {})
    name = f"rerun of {doc.get('name') or doc['id']}"
    tags = [*(doc.get("tags") or []), "rerun"]
    run = submit(config, cache=False, name=name, tags=sorted(set(tags)), user=user)
    open_registry().update_run(run.id, {"rerun_of": doc["id"]})
    return run


def rerun(run_ids: Sequence[str] = (), *, filters: Mapping[str, Any] | None = None,
          limit: int | None = None, timeout: float | None = 600,
          on_outcome: Callable[[RerunOutcome], None] | None = None) -> list[RerunOutcome]:
    """Rerun runs from their stored configs without the cache and compare the metrics.

    All reruns are queued first (so workers take them back to back), then awaited in order.
    Every outcome is also recorded: the new run gets ``rerun_of``, the stored one
    ``last_rerun`` (new id, status, time). ``on_outcome`` is called with each outcome as
    soon as it is known (the CLI prints it).
    """
    registry = open_registry()
    docs = select_runs(run_ids, filters, limit)
    submitted: list[tuple[Mapping[str, Any], Any, str | None]] = []
    for doc in docs:
        if doc.get("status") != "completed":
            submitted.append((doc, None, f"run is {doc.get('status')}; only completed runs can "
                                         f"be rerun and compared"))
            continue
        try:
            run = submit_again(doc)
        except QuantlabError as exc:
            submitted.append((doc, None, f"its stored config no longer submits: {exc}"))
            continue
        submitted.append((doc, run, None))
    outcomes = []
    for original, run, error in submitted:
        outcome = _outcome(registry, original, run, error, timeout)
        if outcome.new_run_id is not None:
            registry.update_run(outcome.run_id, {"last_rerun": {
                "run_id": outcome.new_run_id, "status": outcome.status, "at": time.time()}})
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def _outcome(registry: Any, doc: Mapping[str, Any], run: Any, error: str | None,
             timeout: float | None) -> RerunOutcome:
    if run is None:
        return RerunOutcome(doc["id"], "error", error=error)
    try:
        run.wait(timeout)
    except TimeoutError:
        return RerunOutcome(doc["id"], "error", new_run_id=run.id,
                            error=f"the rerun {run.id} did not finish within {timeout} s; it "
                                  f"goes on, check it with quantlab status {run.id}")
    new = run.record
    if new.get("status") != "completed":
        return RerunOutcome(doc["id"], "error", new_run_id=run.id,
                            error=f"the rerun {run.id} {new.get('status')}: {new.get('error')}")
    old_metrics = doc.get("metrics") or {}
    new_metrics = new.get("metrics") or {}
    changes = metric_changes(old_metrics, new_metrics)
    causes = drift_causes(registry, doc, new)
    if changes and not causes:
        causes = ["nothing: same config, data, engine and strategy code gave different "
                  "metrics, so the run is not deterministic (please report this as a bug)"]
    compared = len(set(old_metrics) | set(new_metrics))
    return RerunOutcome(doc["id"], "drifted" if changes else "reproduced", new_run_id=run.id,
                        changes=changes, causes=causes, compared=compared)


def raise_for(outcomes: Sequence[RerunOutcome]) -> None:
    """RunError naming the runs that did not reproduce (for scripts that want an exception)."""
    bad = [o.run_id for o in outcomes if o.status != "reproduced"]
    if bad:
        raise RunError(f"{len(bad)} of {len(outcomes)} runs did not reproduce: {', '.join(bad)}",
                       run_ids=bad)
