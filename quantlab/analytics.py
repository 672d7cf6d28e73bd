"""Comparing runs (``ql.compare``) and statistics over the registry (``ql.stats``).

A comparison puts 2 to 5 completed runs side by side: their metrics, their equity curves aligned
on common dates and rebased to 100, the correlation of their daily returns, their largest
drawdowns and the days they were under water together, and what differs in their configs. It
can be saved in the registry's ``comparisons`` documents, which gives it an id and a URL of the
compare dashboard that opens it.

Everything here is computed from what the registry holds (run documents and result blobs), so a
comparison or a statistics page gives the same numbers in a notebook, a report and a dashboard.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, RunError, RunNotFound

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


# --------------------------------------------------------------------------- pure maths


def daily_equity(equity: pd.Series) -> pd.Series:
    """The last value of each calendar day (intraday curves become daily; daily stay as is)."""
    clean = equity.dropna().astype(np.float64)
    if clean.empty:
        return clean
    index = pd.DatetimeIndex(clean.index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    clean.index = index
    days = clean.groupby(index.normalize()).last()
    days.index = pd.DatetimeIndex(days.index)
    days.index.name = None
    return days


def drawdown_series(equity: pd.Series) -> pd.Series:
    """Drawdown in percent of the running peak: ``100 * (equity / cummax(equity) - 1)``, <= 0."""
    peak = equity.cummax()
    return (equity / peak - 1.0) * 100.0


def _true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive True values (stop exclusive)."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2])]


def drawdown_periods(equity: pd.Series, top: int | None = 5) -> pd.DataFrame:
    """The largest drawdowns of an equity curve, deepest first.

    A drawdown starts at a peak (the last point at the running maximum before the fall), reaches
    its ``trough`` (lowest point) and ends at ``recovery``, the first point back at or above the
    peak (NaT while still under water). ``depth_pct`` is the fall from peak to trough in percent
    (negative); ``days`` counts calendar days from the peak to the recovery, or to the last
    point if it has not recovered.
    """
    columns = ["start", "trough", "recovery", "depth_pct", "days", "recovered"]
    clean = equity.dropna()
    if len(clean) < 2:
        return pd.DataFrame(columns=columns)
    dd = drawdown_series(clean)
    index = pd.DatetimeIndex(clean.index)
    values = dd.to_numpy()
    n = len(values)
    rows = []
    for i, stop in _true_runs(values < 0):
        trough_pos = i + int(np.argmin(values[i:stop]))
        recovered = stop < n
        start = index[i - 1] if i > 0 else index[i]
        end = index[stop] if recovered else index[-1]
        rows.append({
            "start": start,
            "trough": index[trough_pos],
            "recovery": index[stop] if recovered else pd.NaT,
            "depth_pct": float(values[trough_pos]),
            "days": int((end - start) / pd.Timedelta(days=1)),
            "recovered": recovered,
        })
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["depth_pct", "start"], kind="stable").reset_index(drop=True)
    return table if top is None else table.head(top).reset_index(drop=True)


def align_equity(curves: Mapping[str, pd.Series]) -> tuple[pd.DataFrame, tuple[Any, Any] | None]:
    """Daily curves on one calendar, each rebased to 100.

    When the runs share dates, the frame covers their common period (from the latest start to
    the earliest end) and every curve is 100 on its first day, so the lines show how the same
    money grew in each run. Without common dates it covers all dates and each curve is rebased
    on its own first day. A curve holds its last value on days it has no bar (another market's
    holiday). Returns ``(frame, (first, last) common day or None)``.
    """
    daily = {key: daily_equity(curve) for key, curve in curves.items()}
    non_empty = {key: s for key, s in daily.items() if not s.empty}
    if not non_empty:
        return pd.DataFrame(columns=list(curves)), None
    first = max(s.index[0] for s in non_empty.values())
    last = min(s.index[-1] for s in non_empty.values())
    common = (first, last) if first <= last and len(non_empty) == len(daily) else None
    frame = pd.DataFrame(daily)
    frame = frame.sort_index()
    if common is not None:
        frame = frame.ffill().loc[common[0]:common[1]]
    else:
        # Fill only inside each curve's own span: no value before a run started or after it ended.
        frame = frame.apply(lambda s: s.ffill().where(s.bfill().notna()))
    rebased = frame.apply(lambda s: s / s.dropna().iloc[0] * 100.0 if s.notna().any() else s)
    return rebased[list(curves)], common


def daily_returns(aligned: pd.DataFrame) -> pd.DataFrame:
    """Simple daily returns of aligned curves (the first day has none)."""
    return aligned.pct_change(fill_method=None).iloc[1:]


def return_correlation(returns: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of daily returns over the days both runs have one; NaN when two runs
    share fewer than 2 days or one of them never moved."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return returns.corr(min_periods=2)


def joint_drawdowns(aligned: pd.DataFrame) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """Days on which every run was under water at once, and those days grouped into periods.

    ``aligned`` must hold the curves on one calendar (see :func:`align_equity`); each period row
    has ``start``, ``end`` (first and last such day), ``days`` (trading days in it) and, per
    run, the deepest drawdown (``<run>_worst_pct``) it reached inside the period.
    """
    if aligned.empty:
        return pd.DatetimeIndex([]), pd.DataFrame(columns=["start", "end", "days"])
    dd = aligned.apply(drawdown_series)
    together = (dd < 0).all(axis=1) & dd.notna().all(axis=1)
    dates = pd.DatetimeIndex(aligned.index[together.to_numpy()])
    rows = []
    for i, stop in _true_runs(together.to_numpy()):
        window = dd.iloc[i:stop]
        row: dict[str, Any] = {"start": dd.index[i], "end": dd.index[stop - 1], "days": stop - i}
        for column in dd.columns:
            row[f"{column}_worst_pct"] = float(window[column].min())
        rows.append(row)
    columns = ["start", "end", "days", *[f"{c}_worst_pct" for c in dd.columns]]
    return dates, pd.DataFrame(rows, columns=columns)


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
        return ", ".join(_shown(v) for v in value)
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


# --------------------------------------------------------------------------- comparison


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
            record.setdefault("status", "completed")
            runs.append(ComparedRun(str(key), record, _equity_of(result, str(key))))
        return cls(runs, **kwargs)

    @classmethod
    def load(cls, comparison_id: str) -> Comparison:
        """A saved comparison, recomputed from its runs as they are in the registry now."""
        from quantlab.registry import open_registry

        doc = open_registry().get_document(COMPARISONS, comparison_id)
        return compare(doc["run_ids"], comparison_id=comparison_id, title=doc.get("title"))

    # ---- saving ------------------------------------------------------------------------------

    def save(self, title: str | None = None) -> str:
        """Store the comparison (its run ids, title, author) in the registry's ``comparisons``
        documents; returns its id, after which :attr:`url` opens it in the compare dashboard.
        Saving again updates the same document. Every run must be in the registry (a
        comparison of in-memory results cannot be opened elsewhere)."""
        from quantlab.registry import open_registry
        from quantlab.settings import current

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
        if metric not in self.metrics.columns:
            known = [c for c in self.metrics.columns if c not in ("name", "strategy", "status")]
            raise ConfigError(
                f"no metric {metric!r} in this comparison; choose one of {', '.join(known)}",
                field="metric",
            )
        values = pd.to_numeric(self.metrics[metric], errors="coerce")
        if values.notna().sum() == 0:
            raise ConfigError(f"no run of this comparison has a value for {metric!r}",
                              field="metric")
        return str(values.idxmin() if _lower_is_better(metric) else values.idxmax())

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

    def _repr_html_(self) -> str:
        from quantlab.reports.html import comparison_html

        return comparison_html(self)


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


def _metrics_frame(runs: Sequence[ComparedRun]) -> pd.DataFrame:
    names = _ordered_metric_names(run.record for run in runs)
    rows = []
    for run in runs:
        metrics = run.record.get("metrics") or {}
        row: dict[str, Any] = {
            "name": run.record.get("name") or "",
            "strategy": run.record.get("strategy") or (run.record.get("config") or {}).get(
                "strategy"),
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


def _lower_is_better(metric: str) -> bool:
    from quantlab.notebook.formatting import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER


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


def dashboard_url(comparison_id: str) -> str:
    """``$QUANTLAB_DASHBOARD_URL`` (default http://localhost:8866, where ``quantlab dashboard
    compare`` serves) with ``?comparison=<id>``."""
    from urllib.parse import quote

    base = (os.environ.get("QUANTLAB_DASHBOARD_URL") or DEFAULT_DASHBOARD_URL).rstrip("/")
    return f"{base}/?comparison={quote(comparison_id)}"


def _load_run(run_id: str) -> ComparedRun:
    from quantlab.jobs.api import get_run

    run = get_run(run_id)
    record = dict(run.record)
    status = record.get("status")
    if status != "completed":
        hint = (f"wait for it with ql.get_run({run_id!r}).wait()" if status in ("queued", "running")
                else "compare completed runs only")
        raise RunError(f"run {run_id!r} is {status}, so it has no result to compare; {hint}",
                       run_id=run_id, status=status)
    return ComparedRun(run_id, record, _equity_of(run.result(), run_id))


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
    loaded = [_load_run(run_id) for run_id in ids]
    return Comparison(loaded, top_drawdowns=top_drawdowns, comparison_id=comparison_id,
                      title=title)


def saved_comparisons(limit: int = 100) -> list[dict[str, Any]]:
    """The saved comparisons, newest first (``id``, ``title``, ``run_ids``, ``user``...)."""
    from quantlab.registry import open_registry

    return open_registry().list_documents(COMPARISONS, limit=limit)


# --------------------------------------------------------------------------- statistics

_PERIOD = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>[DdWwMmYy])\s*$")
_UNIT_DAYS = {"d": 1, "w": 7}
STAT_COLUMNS = ("id", "name", "strategy", "user", "total_return_pct", "sharpe",
                "max_drawdown_pct")


def period_start(period: str | None, now: float | None = None) -> float | None:
    """Epoch seconds where ``period`` (``"30D"``, ``"6M"``, ``"1Y"``, ``"YTD"``, ``"all"``)
    begins, counting back from ``now``; None for all time."""
    now = time.time() if now is None else now
    if period is None or (isinstance(period, str) and period.strip().lower() == "all"):
        return None
    if not isinstance(period, str):
        raise _bad_period(period)
    end = pd.Timestamp(now, unit="s", tz="UTC")
    if period.strip().upper() == "YTD":
        return pd.Timestamp(year=end.year, month=1, day=1, tz="UTC").timestamp()
    match = _PERIOD.match(period)
    if match is None or int(match["n"]) == 0:
        raise _bad_period(period)
    n, unit = int(match["n"]), match["unit"].lower()
    if unit in _UNIT_DAYS:
        start = end - pd.Timedelta(days=n * _UNIT_DAYS[unit])
    elif unit == "m":
        start = end - pd.DateOffset(months=n)
    else:
        start = end - pd.DateOffset(years=n)
    return float(pd.Timestamp(start).timestamp())


def _bad_period(period: Any) -> ConfigError:
    return ConfigError(
        f"period {period!r} is not understood; write a number and a unit D, W, M or Y "
        f"(e.g. '30D', '6M', '1Y'), 'YTD', or 'all'", field="period",
    )


@dataclass(frozen=True)
class Stats:
    """Statistics over the runs of a period (see :func:`stats`)."""

    period: str
    since: float | None
    filters: dict[str, Any]
    runs: pd.DataFrame  # one row per run: id, name, strategy, user, status, queued_at, metrics

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def count(self, status: str) -> int:
        return int((self.runs["status"] == status).sum()) if self.n_runs else 0

    @property
    def success_rate_pct(self) -> float:
        """Completed runs in % of the runs that ended by themselves (completed + failed);
        cancelled runs were stopped by a person and queued/running ones have not ended."""
        done = self.count("completed") + self.count("failed")
        return float("nan") if done == 0 else 100.0 * self.count("completed") / done

    @property
    def returns(self) -> pd.Series:
        """total_return_pct of the completed runs that recorded one."""
        if not self.n_runs:
            return pd.Series(dtype=np.float64, name="total_return_pct")
        done = self.runs[self.runs["status"] == "completed"]
        values = pd.to_numeric(done["total_return_pct"], errors="coerce").dropna()
        values.index = done.loc[values.index, "id"]
        return values.rename("total_return_pct")

    @property
    def mean_return_pct(self) -> float:
        values = self.returns
        return float(values.mean()) if len(values) else float("nan")

    @property
    def median_return_pct(self) -> float:
        values = self.returns
        return float(values.median()) if len(values) else float("nan")

    def best(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` completed runs with the highest total return."""
        return self._ranked(n, ascending=False)

    def worst(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` completed runs with the lowest total return."""
        return self._ranked(n, ascending=True)

    def _ranked(self, n: int, ascending: bool) -> pd.DataFrame:
        values = self.returns
        if values.empty:
            return pd.DataFrame(columns=list(STAT_COLUMNS))
        order = values.sort_values(ascending=ascending, kind="stable").index[:n]
        table = self.runs.set_index("id").loc[list(order)].reset_index()
        return table[[c for c in STAT_COLUMNS if c in table.columns]].reset_index(drop=True)

    def histogram(self, bins: int | None = None) -> pd.DataFrame:
        """Counts of total returns in equal-width bins (``left``, ``right``, ``count``); the
        number of bins defaults to ceil(sqrt(n)) between 5 and 20."""
        values = self.returns.to_numpy()
        if values.size == 0:
            return pd.DataFrame(columns=["left", "right", "count"])
        if bins is None:
            bins = min(20, max(5, math.ceil(math.sqrt(values.size))))
        low, high = float(values.min()), float(values.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(low, high))
        return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "count": counts})

    def monthly(self) -> pd.DataFrame:
        """Per calendar month (UTC, by queue time): runs, completed, failed, success rate,
        mean and median return of the completed runs, mean Sharpe."""
        columns = ["month", "runs", "completed", "failed", "success_rate_pct",
                   "mean_return_pct", "median_return_pct", "mean_sharpe"]
        if not self.n_runs:
            return pd.DataFrame(columns=columns)
        frame = self.runs.copy()
        stamps = pd.to_datetime(frame["queued_at"], unit="s", utc=True)
        frame["month"] = stamps.dt.strftime("%Y-%m")
        rows = []
        for month, group in frame.groupby("month", sort=True):
            completed = group[group["status"] == "completed"]
            n_done = len(completed) + int((group["status"] == "failed").sum())
            returns = pd.to_numeric(completed["total_return_pct"], errors="coerce").dropna()
            sharpe = pd.to_numeric(completed["sharpe"], errors="coerce").dropna()
            rows.append({
                "month": month,
                "runs": len(group),
                "completed": len(completed),
                "failed": int((group["status"] == "failed").sum()),
                "success_rate_pct": 100.0 * len(completed) / n_done if n_done else float("nan"),
                "mean_return_pct": float(returns.mean()) if len(returns) else float("nan"),
                "median_return_pct": float(returns.median()) if len(returns) else float("nan"),
                "mean_sharpe": float(sharpe.mean()) if len(sharpe) else float("nan"),
            })
        return pd.DataFrame(rows, columns=columns)

    def as_dict(self) -> dict[str, Any]:
        """The headline numbers as plain values (for JSON, dashboards and tests)."""
        return {
            "period": self.period, "n_runs": self.n_runs,
            "completed": self.count("completed"), "failed": self.count("failed"),
            "cancelled": self.count("cancelled"), "success_rate_pct": self.success_rate_pct,
            "mean_return_pct": self.mean_return_pct,
            "median_return_pct": self.median_return_pct,
        }

    def _repr_html_(self) -> str:
        from quantlab.reports.html import stats_html

        return stats_html(self)


def _run_rows(docs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for doc in docs:
        metrics = doc.get("metrics") or {}
        rows.append({
            "id": doc["id"], "name": doc.get("name") or "", "strategy": doc.get("strategy"),
            "user": doc.get("user"), "status": doc.get("status"),
            "queued_at": doc.get("queued_at"),
            "total_return_pct": metrics.get("total_return_pct"),
            "sharpe": metrics.get("sharpe"), "max_drawdown_pct": metrics.get("max_drawdown_pct"),
        })
    columns = ["id", "name", "strategy", "user", "status", "queued_at", "total_return_pct",
               "sharpe", "max_drawdown_pct"]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("queued_at", "total_return_pct", "sharpe", "max_drawdown_pct"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame


def stats(period: str | None = "1Y", strategy: str | None = None, tag: str | None = None,
          user: str | None = None, *, now: float | dt.datetime | None = None) -> Stats:
    """Statistics over the registry's runs queued in ``period`` (``"30D"``, ``"6M"``, ``"1Y"``,
    ``"YTD"``, ``"all"``), optionally only one strategy, tag or user: number of runs, success
    rate, mean and median return, best and worst runs, a histogram of returns and monthly
    trends."""
    from quantlab.registry import open_registry

    if isinstance(now, dt.datetime):
        now = now.timestamp()
    since = period_start(period, now)
    filters: dict[str, Any] = {k: v for k, v in
                               {"strategy": strategy, "tag": tag, "user": user}.items()
                               if v not in (None, "")}
    until = None if now is None else float(now)
    docs = open_registry().find_runs(since=since, until=until, sort="queued_at", limit=None,
                                     **filters)
    return Stats(str(period or "all"), since, filters, _run_rows(docs))
