"""Comparing runs (``ql.compare``): 2 to 5 completed runs side by side.

A comparison puts their metrics, their equity curves aligned on common dates and rebased to 100,
the correlation of their daily returns, their largest drawdowns and the days they were under
water together, and what differs in their configs. It can be saved in the registry's
``comparisons`` documents, which gives it an id and a URL of the compare dashboard that opens
it. Runs are read from the registry (their records and result blobs), so a comparison gives the
same numbers in a notebook, a report and a dashboard.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pandas as pd

from quantlab.analytics.equity import (
    align_equity,
    daily_equity,
    daily_returns,
    drawdown_periods,
    drawdown_series,
    joint_drawdowns,
    return_correlation,
)
from quantlab.analytics.views import html_view
from quantlab.engine import Result
from quantlab.errors import ConfigError, RunError, RunNotFound
from quantlab.metrics import LOWER_IS_BETTER
from quantlab.registry import Registry, open_registry
from quantlab.registry.schema import RunStatus
from quantlab.research.confidence import sharpe_difference_tests
from quantlab.research.diff import RunDiff, diff_runs, divergence, summarise
from quantlab.settings import current

MIN_RUNS, MAX_RUNS = 2, 5
COMPARISONS = "comparisons"
DEFAULT_DASHBOARD_URL = "http://localhost:8866"
# The metrics a comparison shows first, in this order; other recorded metrics follow.
METRIC_ORDER = (
    "total_return_pct", "cagr_pct", "sharpe", "sortino", "calmar", "max_drawdown_pct",
    "max_drawdown_duration", "volatility_ann_pct", "n_trades", "win_rate_pct", "profit_factor",
    "expectancy_pct", "best_trade_pct", "worst_trade_pct", "avg_trade_pct", "exposure_pct",
    "buy_hold_return_pct", "equity_final", "open_trades", "commissions", "rejected_orders",
)
# Config keys grouped by what they say about a run, for the config diff.
CONFIG_CATEGORIES: dict[str, str] = {
    "strategy": "strategy", "strategy_source": "strategy",
    "symbols": "symbols", "weights": "symbols",
    "commission": "costs", "commission_fixed": "costs", "slippage": "costs",
    "start": "data", "end": "data", "interval": "data", "data_fingerprint": "data",
    "n_bars": "data", "strategy_source_hash": "strategy",
    "engine_version": "engine",
}
# Keys that label a run without changing its result: a diff of them is noise.
LABEL_KEYS = frozenset({"name", "tags", "notify"})


def _flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in LABEL_KEYS:
            continue
        if key == "params" and isinstance(value, Mapping):
            for name, param in value.items():
                flat[f"params.{name}"] = param
        elif key == "strategy_source" and isinstance(value, str):
            flat[key] = "code sha256 " + hashlib.sha256(value.encode()).hexdigest()[:12]
        else:
            flat[key] = value
    return flat


def _shown(value: Any) -> str:
    """A config value as text, the form config_diff compares: a whole float reads as the int
    it equals (a config read back from JSON or YAML may say ``10.0`` where another says 10)."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        # a sweep's 60-200 values read as their range ("10..200 step 10 (20 values)")
        return summarise(value) if len(value) > 3 else ", ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """What differs between run configs: one row per differing key (``params.fast``,
    ``symbols``, ``commission``, ``data_fingerprint``...), a ``category`` column (params,
    strategy, symbols, costs, data, engine, execution) and one column per run holding the value
    as text (``—`` when a run does not set the key). Empty when the configs agree."""
    flats = {run: _flatten_config(cfg) for run, cfg in configs.items()}
    keys: list[str] = []
    for flat in flats.values():
        keys.extend(k for k in flat if k not in keys)
    rows = []
    for key in keys:
        values = [_shown(flat.get(key)) for flat in flats.values()]
        if len(set(values)) > 1:
            category = "params" if key.startswith("params.") else CONFIG_CATEGORIES.get(
                key, "execution")
            rows.append({"key": key, "category": category, **dict(zip(flats, values))})
    order = ["params", "strategy", "symbols", "costs", "data", "engine", "execution"]
    table = pd.DataFrame(rows, columns=["key", "category", *flats])
    if table.empty:
        return table.set_index("key")
    table["_order"] = table["category"].map(order.index)
    table = table.sort_values(["_order", "key"], kind="stable").drop(columns="_order")
    return table.set_index("key")



@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison: its registry record and its equity curve."""

    id: str
    record: Mapping[str, Any]
    equity: pd.Series

    @property
    def label(self) -> str:
        name = str(self.record.get("name") or "").strip()
        return name or self.id


@dataclass(frozen=True)
class Drawdowns:
    """The drawdown part of a comparison.

    ``largest``: each run's largest drawdowns (columns run, rank, start, trough, recovery,
    depth_pct, days, recovered). ``together``: periods when every run was under water at once
    (start, end, days, worst drawdown of each run inside). ``dates``: those days.
    ``underwater``: each run's drawdown in percent on the aligned calendar.
    """

    largest: pd.DataFrame
    together: pd.DataFrame
    dates: pd.DatetimeIndex
    underwater: pd.DataFrame

    @property
    def together_pct(self) -> float:
        """Share of the compared days (in %) on which every run was in drawdown."""
        if len(self.underwater) == 0:
            return float("nan")
        return 100.0 * len(self.dates) / len(self.underwater)


class Comparison:
    """2 to 5 runs side by side; build it with :func:`compare`.

    Attributes: ``run_ids``; ``labels`` (run id -> name, or the id when unnamed or shared);
    ``metrics`` (one row per run); ``equity`` (daily curves aligned and rebased to 100);
    ``returns`` (their daily returns); ``correlation``; ``drawdowns`` (:class:`Drawdowns`);
    ``config_diff``; ``common_period``; ``id`` and ``url`` once saved.
    """

    def __init__(self, runs: Sequence[ComparedRun], *, top_drawdowns: int = 5,
                 comparison_id: str | None = None, title: str | None = None) -> None:
        _check_count(len(runs))
        self.runs = list(runs)
        self.run_ids = [run.id for run in runs]
        self.id = comparison_id
        self.title = title
        self.labels = _labels(self.runs)
        self.metrics = _metrics_frame(self.runs)
        self.equity, self.common_period = align_equity({r.id: r.equity for r in self.runs})
        self.returns = daily_returns(self.equity)
        self.correlation = return_correlation(self.returns)
        self.drawdowns = _drawdowns(self.runs, self.equity, top_drawdowns)
        self.config_diff = config_diff({r.id: _diff_source(r.record) for r in self.runs})
        # Ledoit-Wolf tests of equal Sharpe ratios on the common daily returns, Holm-adjusted
        self.sharpe_tests = sharpe_difference_tests(self.returns)

    def diff(self, a: str | None = None, b: str | None = None) -> RunDiff:
        """The run diff of two of the compared runs (default: the first two) from their
        records and equity curves: settings, code, data, engine, metrics, divergence."""
        first = self._run(a or self.run_ids[0])
        second = self._run(b or self.run_ids[1])
        found = diff_runs(first.record, second.record)
        found.divergence = divergence(first.equity, second.equity)
        return found

    def differences(self) -> dict[str, list[str]]:
        """For each run after the first: what differs from the first, in words (config,
        code, data from which bar, engine)."""
        return {run_id: self.diff(self.run_ids[0], run_id).causes()
                for run_id in self.run_ids[1:]}

    def _run(self, run_id: str) -> ComparedRun:
        for run in self.runs:
            if run.id == run_id:
                return run
        raise ConfigError(f"run {run_id!r} is not in this comparison; choose one of "
                          f"{', '.join(self.run_ids)}", field="runs")

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_results(cls, results: Mapping[str, Any],
                     records: Mapping[str, Mapping[str, Any]] | None = None,
                     **kwargs: Any) -> Comparison:
        """Compare in-memory results (``ql.backtest`` Results, keyed by a label used as id):
        metrics from ``result.metrics``, config from ``result.config``."""
        runs = []
        for key, result in results.items():
            record = dict((records or {}).get(key) or {})
            record.setdefault("id", key)
            record.setdefault("name", key)
            record.setdefault("metrics", dict(getattr(result, "metrics", {}) or {}))
            record.setdefault("config", dict(getattr(result, "config", {}) or {}))
            record.setdefault("best_params", dict(getattr(result, "params", {}) or {}))
            record.setdefault("status", RunStatus.COMPLETED.value)
            runs.append(ComparedRun(str(key), record, _equity_of(result, str(key))))
        return cls(runs, **kwargs)

    @classmethod
    def load(cls, comparison_id: str) -> Comparison:
        """A saved comparison, recomputed from its runs as they are in the registry now."""
        doc = open_registry().get_document(COMPARISONS, comparison_id)
        return compare(doc["run_ids"], comparison_id=comparison_id, title=doc.get("title"))

    # ---- saving ------------------------------------------------------------------------------

    def save(self, title: str | None = None) -> str:
        """Store the comparison (its run ids, title, author) in the registry's ``comparisons``
        documents; returns its id, after which :attr:`url` opens it in the compare dashboard.
        Saving again updates the same document. Every run must be in the registry (a
        comparison of in-memory results cannot be opened elsewhere)."""
        registry = open_registry()
        for run_id in self.run_ids:
            try:
                registry.get_run(run_id)
            except RunNotFound:
                raise RunError(
                    f"{run_id!r} is not a run in the registry, so a saved comparison could not "
                    f"open it; compare runs submitted with ql.submit to share a comparison",
                    run_id=run_id,
                ) from None
        if title is not None:
            self.title = title
        doc: dict[str, Any] = {
            "run_ids": list(self.run_ids),
            "title": self.title or " vs ".join(self.labels[r] for r in self.run_ids),
            "user": current().user,
            "saved_at": time.time(),
        }
        if self.id is not None:
            doc["id"] = self.id
        self.id = registry.save_document(COMPARISONS, doc)
        return self.id

    @property
    def url(self) -> str | None:
        """The compare dashboard's URL for this comparison (None until saved)."""
        return None if self.id is None else dashboard_url(self.id)

    # ---- views -------------------------------------------------------------------------------

    def best(self, metric: str) -> str:
        """The id of the run with the best value of ``metric`` (the largest, except for metrics
        where smaller is better such as volatility or drawdown duration)."""
        if metric not in self.metrics.columns or metric in RUN_COLUMNS:
            known = [c for c in self.metrics.columns if c not in RUN_COLUMNS]
            raise ConfigError(
                f"no metric {metric!r} in this comparison; choose one of {', '.join(known)}",
                field="metric",
            )
        values = pd.to_numeric(self.metrics[metric], errors="coerce")
        if values.notna().sum() == 0:
            raise ConfigError(f"no run of this comparison has a value for {metric!r}",
                              field="metric")
        return str(values.idxmin() if metric in LOWER_IS_BETTER else values.idxmax())

    def summary(self) -> str:
        """Plain-text summary: one line per run with its headline metrics."""
        lines = []
        for run_id in self.run_ids:
            row = self.metrics.loc[run_id]
            lines.append(
                f"{self.labels[run_id]}: return {_fmt(row.get('total_return_pct'))} %, "
                f"sharpe {_fmt(row.get('sharpe'))}, max drawdown "
                f"{_fmt(row.get('max_drawdown_pct'))} %"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        saved = f" id={self.id}" if self.id else ""
        return f"<Comparison{saved} of {len(self.run_ids)} runs: {', '.join(self.run_ids)}>"

    def _repr_html_(self) -> str | None:
        return html_view(self)  # the view lives in quantlab.render.html


def _check_count(n: int) -> None:
    if not MIN_RUNS <= n <= MAX_RUNS:
        raise ConfigError(
            f"a comparison takes {MIN_RUNS} to {MAX_RUNS} runs, got {n}; "
            + ("add runs to compare" if n < MIN_RUNS else
               f"pick the {MAX_RUNS} you want to see side by side (ql.runs(sort='-sharpe', "
               f"limit={MAX_RUNS}) lists the best)"),
            field="runs", count=n,
        )


def _labels(runs: Sequence[ComparedRun]) -> dict[str, str]:
    labels = [run.label for run in runs]
    out = {}
    for run, label in zip(runs, labels):
        out[run.id] = label if labels.count(label) == 1 else f"{label} ({run.id[-6:]})"
    return out


def _ordered_metric_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    present: list[str] = []
    for record in records:
        present.extend(k for k in (record.get("metrics") or {}) if k not in present)
    first = [m for m in METRIC_ORDER if m in present]
    return first + sorted(m for m in present if m not in METRIC_ORDER)


# the columns of Comparison.metrics that describe a run rather than measure it
RUN_COLUMNS = ("name", "strategy", "combination")


def _combination(record: Mapping[str, Any]) -> str:
    """The combination a sweep contributed to the comparison (its chosen one, whose metrics
    and equity are compared), as ``fast=10, slow=100``; '' for a single run."""
    params = (record.get("config") or {}).get("params") or {}
    swept = isinstance(params, list) or any(
        isinstance(v, list | tuple | dict) for v in params.values())
    chosen = record.get("best_params") or {}
    if not swept or not chosen:
        return ""
    return ", ".join(f"{name}={_shown(value)}" for name, value in chosen.items())


def _metrics_frame(runs: Sequence[ComparedRun]) -> pd.DataFrame:
    names = _ordered_metric_names(run.record for run in runs)
    rows = []
    for run in runs:
        metrics = run.record.get("metrics") or {}
        row: dict[str, Any] = {
            "name": run.record.get("name") or "",
            "strategy": run.record.get("strategy") or (run.record.get("config") or {}).get(
                "strategy"),
            "combination": _combination(run.record),
        }
        for name in names:
            value = metrics.get(name)
            row[name] = float("nan") if value is None else value
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([r.id for r in runs], name="run"))
    return frame


def _drawdowns(runs: Sequence[ComparedRun], aligned: pd.DataFrame, top: int) -> Drawdowns:
    tables = []
    for run in runs:
        table = drawdown_periods(daily_equity(run.equity), top=top)
        table.insert(0, "rank", range(1, len(table) + 1))
        table.insert(0, "run", run.id)
        tables.append(table)
    largest = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    dates, together = joint_drawdowns(aligned)
    underwater = aligned.apply(drawdown_series) if not aligned.empty else aligned
    return Drawdowns(largest, together, dates, underwater)


def _diff_source(record: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the registry stored it, plus the run's data and engine versions."""
    config = dict(record.get("config") or {})
    if record.get("data_fingerprint") is not None:
        # 12 hex digits tell fingerprints apart and keep the table readable
        config["data_fingerprint"] = str(record["data_fingerprint"])[:12]
    if record.get("engine_version") is not None:
        config["engine_version"] = record["engine_version"]
    return config


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(number) else f"{number:,.2f}"


def _equity_of(result: Any, run_id: str) -> pd.Series:
    equity = getattr(result, "equity", None)
    if not isinstance(equity, pd.Series):
        raise RunError(
            f"run {run_id!r} has no equity curve to compare (its result holds "
            f"{type(equity).__name__}); compare runs that completed with a result",
            run_id=run_id,
        )
    return equity


def dashboard_url(comparison_id: str, base: str | None = None) -> str:
    """The compare dashboard's address for a saved comparison: ``base`` with
    ``?comparison=<id>``. ``base`` defaults to ``$QUANTLAB_DASHBOARD_URL`` (default
    http://localhost:8866, where ``quantlab dashboard compare`` serves stakeholders); the Lab's
    server passes its own page (``<base_url>quantlab/dashboards/compare``)."""
    base = (base or os.environ.get("QUANTLAB_DASHBOARD_URL") or DEFAULT_DASHBOARD_URL).rstrip("/")
    return f"{base}/?comparison={quote(comparison_id)}"


def _load_run(registry: Registry, run_id: str) -> ComparedRun:
    record = registry.get_run(run_id)
    status = record.get("status")
    if status != RunStatus.COMPLETED:
        hint = (f"wait for it with ql.get_run({run_id!r}).wait()"
                if status in (RunStatus.QUEUED, RunStatus.RUNNING)
                else "compare completed runs only")
        raise RunError(f"run {run_id!r} is {status}, so it has no result to compare; {hint}",
                       run_id=run_id, status=status)
    return ComparedRun(run_id, record, _equity_of(_stored_result(registry, record), run_id))


def _stored_result(registry: Registry, record: Mapping[str, Any]) -> Result:
    """The ``Result`` a completed run saved as blobs (what ``run.result()`` gives)."""
    blobs = record.get("result_blobs") or []
    if not record.get("result_ref") or not blobs:
        raise RunError(f"run {record['id']} completed without a stored result; submit it again "
                       f"to get one", run_id=record["id"])
    prefix = str(record["result_ref"])
    return Result.from_blobs({name: registry.get_blob(prefix + name) for name in blobs})


def compare(runs: Sequence[Any], *, top_drawdowns: int = 5, comparison_id: str | None = None,
            title: str | None = None) -> Comparison:
    """Compare 2 to 5 completed runs, given by id (or ``ql.Run`` objects).

    >>> cmp = ql.compare(["01J...", "01J..."])
    >>> cmp.metrics, cmp.correlation, cmp.drawdowns.largest, cmp.equity, cmp.config_diff
    >>> cmp.save(); cmp.url
    """
    if isinstance(runs, str) or not isinstance(runs, Sequence | set | frozenset):
        raise ConfigError(
            f"ql.compare takes a list of {MIN_RUNS} to {MAX_RUNS} run ids, got {runs!r}; write "
            f"ql.compare(['<id>', '<id>'])", field="runs",
        )
    ids = [getattr(r, "id", r) for r in runs]
    for run_id in ids:
        if not isinstance(run_id, str) or not run_id:
            raise ConfigError(f"{run_id!r} is not a run id; pass ids as strings "
                              f"(ql.runs() lists them)", field="runs")
    duplicates = sorted({r for r in ids if ids.count(r) > 1})
    if duplicates:
        raise ConfigError(f"run {', '.join(duplicates)} is listed more than once; list each run "
                          f"once", field="runs")
    _check_count(len(ids))
    registry = open_registry()
    loaded = [_load_run(registry, run_id) for run_id in ids]
    return Comparison(loaded, top_drawdowns=top_drawdowns, comparison_id=comparison_id,
                      title=title)


def saved_comparisons(limit: int = 100) -> list[dict[str, Any]]:
    """The saved comparisons, newest first (``id``, ``title``, ``run_ids``, ``user``...)."""
    return open_registry().list_documents(COMPARISONS, limit=limit)
