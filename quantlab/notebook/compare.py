"""Side-by-side comparison of runs, built from their registry records.

This is what ``%backtest_compare`` shows. A later ``ql.compare`` (with aligned equity curves and
statistics over the differences) can replace :func:`compare_runs`; the magic only calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from quantlab.errors import ConfigError
from quantlab.notebook.formatting import (
    LOWER_IS_BETTER,
    METRIC_GROUPS,
    format_metric,
    html_table,
    is_number,
    metric_label,
)

HIGHLIGHT = "background:#e6f4e6;font-weight:bold;"
DESCRIPTION_ROWS = ("name", "status", "strategy", "params", "symbols", "period", "interval",
                    "costs", "user")


@dataclass
class Comparison:
    """Runs side by side: ``table`` has a row per field/metric and a column per run id."""

    records: list[dict[str, Any]]
    table: pd.DataFrame
    metrics: list[str]

    def best(self, metric: str) -> str | None:
        """The id of the run with the best ``metric`` (None when no run has it, or all tie)."""
        row = pd.Series(self.table.loc[metric]).apply(
            lambda v: float(v) if is_number(v) else float("nan"))
        row = row[row.notna()]
        if row.empty or (len(self.records) > 1 and row.nunique() == 1 and len(row) > 1):
            return None
        return str(row.idxmin() if metric in LOWER_IS_BETTER else row.idxmax())

    def _repr_html_(self) -> str:
        header = ["", *(_column_label(r) for r in self.records)]
        rows: list[list[Any]] = []
        highlight: dict[tuple[int, int], str] = {}
        for field in DESCRIPTION_ROWS:
            rows.append([field, *(str(v) for v in self.table.loc[field])])
        for metric in self.metrics:
            values = list(self.table.loc[metric])
            best = self.best(metric)
            r = len(rows)
            rows.append([metric_label(metric), *(format_metric(metric, v) for v in values)])
            for c, run_id in enumerate(self.table.columns):
                if best is not None and run_id == best and len(self.records) > 1:
                    highlight[(r, c + 1)] = HIGHLIGHT
        return ('<div class="ql-compare">'
                + html_table(header, rows, highlight=highlight, css_class="ql-compare-table")
                + '<div style="font-size:11px;color:#666">best value of each metric in bold'
                  "</div></div>")

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.records)} runs>\n{self.table.to_string()}"


def _column_label(record: Mapping[str, Any]) -> str:
    return str(record["id"])


def _period(config: Mapping[str, Any]) -> str:
    start, end = config.get("start") or "first bar", config.get("end") or "last bar"
    return f"{start} → {end}"


def _params(record: Mapping[str, Any]) -> str:
    config = record.get("config") or {}
    params = record.get("best_params") or config.get("params") or {}
    if isinstance(params, list):
        return f"{len(params)} combinations"
    text = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    return ("best of sweep: " if record.get("best_params") else "") + text


def _short(value: Any) -> str:
    if isinstance(value, list):
        if len(value) > 4:
            return f"[{value[0]}..{value[-1]}] ({len(value)})"
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _costs(config: Mapping[str, Any]) -> str:
    parts = []
    for key in ("commission", "slippage", "fill", "units"):
        if config.get(key) is not None:
            parts.append(f"{key} {config[key]}")
    return ", ".join(parts)


def metric_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Metrics of the records in tear-sheet order (known groups first, then others)."""
    present: dict[str, None] = {}
    for record in records:
        for name, value in (record.get("metrics") or {}).items():
            if is_number(value) or value is None:
                present.setdefault(name, None)
    ordered = [n for names in METRIC_GROUPS.values() for n in names if n in present]
    return ordered + sorted(n for n in present if n not in ordered)


def comparison_from_records(records: Sequence[Mapping[str, Any]]) -> Comparison:
    ids = [str(r["id"]) for r in records]
    metrics = metric_names(records)
    data: dict[str, list[Any]] = {}
    for record in records:
        config = record.get("config") or {}
        values = {
            "name": record.get("name") or "",
            "status": str(record.get("status") or "")
            + (" (partial)" if record.get("partial") else ""),
            "strategy": record.get("strategy") or config.get("strategy") or "",
            "params": _params(record),
            "symbols": ", ".join(record.get("symbols") or config.get("symbols") or []),
            "period": _period(config),
            "interval": config.get("interval") or record.get("interval") or "",
            "costs": _costs(config),
            "user": record.get("user") or "",
        }
        run_metrics = record.get("metrics") or {}
        for metric in metrics:
            value = run_metrics.get(metric)
            values[metric] = float("nan") if value is None else value
        data[str(record["id"])] = [values[k] for k in (*DESCRIPTION_ROWS, *metrics)]
    table = pd.DataFrame(data, index=[*DESCRIPTION_ROWS, *metrics], columns=ids)
    return Comparison([dict(r) for r in records], table, metrics)


def compare_runs(run_ids: Sequence[str]) -> Comparison:
    """Compare runs by id (2 or more; each id once). Unknown ids raise ``RunNotFound``."""
    ids = list(dict.fromkeys(str(i) for i in run_ids))
    if len(ids) < 2:
        raise ConfigError(
            "compare needs at least two different run ids, e.g. %backtest_compare 01J8... "
            "01J9... (list runs with %backtests)", field="run_ids")
    from quantlab.registry import open_registry

    registry = open_registry()
    records = [registry.get_run(run_id) for run_id in ids]
    return comparison_from_records(records)
