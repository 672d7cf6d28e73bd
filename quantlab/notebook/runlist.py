"""``%backtests``: the registry search as a table, from a line of filters.

Filters read like a search box: ``status=completed strategy=sma_crossover tag=trend sharpe>1
sort=-sharpe limit=10 "golden cross"``. ``key=value`` sets a filter (lists with commas); a
comparison on a metric (``sharpe>1``, ``max_drawdown_pct>=-20``) is a ``where`` clause; any other
word is searched in run names.
"""

from __future__ import annotations

import difflib
import html
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from quantlab.durations import format_duration
from quantlab.errors import ConfigError
from quantlab.notebook.state import RunState
from quantlab.registry import open_registry
from quantlab.render.format import (
    format_metric,
    html_table,
    metric_label,
    status_badge,
)

FILTER_KEYS = ("status", "strategy", "symbol", "tag", "user", "since", "until", "text", "where",
               "sort", "limit", "offset")
LIST_KEYS = frozenset({"status", "strategy", "symbol", "tag", "user"})
INT_KEYS = frozenset({"limit", "offset"})
DEFAULT_LIMIT = 20
TABLE_METRICS = ("total_return_pct", "sharpe", "max_drawdown_pct", "n_trades")

_ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z_]\w*)=(?P<value>.*)$", re.S)
_COMPARISON = re.compile(r"^\s*[A-Za-z_]\w*\s*(>=|<=|==|!=|>|<)\s*\S+\s*$")


def parse_filters(line: str) -> dict[str, Any]:
    """The keyword arguments of ``ql.runs`` a ``%backtests`` line asks for."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise ConfigError(f"%backtests: {exc}; close the quotes around the value") from None
    filters: dict[str, Any] = {}
    where: list[str] = []
    words: list[str] = []
    for token in tokens:
        assignment = _ASSIGNMENT.match(token)
        if assignment:
            key, value = assignment["key"], assignment["value"]
            if key not in FILTER_KEYS:
                close = difflib.get_close_matches(key, FILTER_KEYS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else (
                    f"filters are: {', '.join(FILTER_KEYS)}")
                raise ConfigError(f"%backtests: unknown filter '{key}' — {hint}", field=key)
            if key == "where":
                where.append(value)
            else:
                filters[key] = _filter_value(key, value)
        elif _COMPARISON.match(token):
            where.append(token)
        else:
            words.append(token)
    if where:
        filters["where"] = ", ".join(where)
    if words:
        filters["text"] = " ".join([filters.get("text", ""), *words]).strip()
    filters.setdefault("limit", DEFAULT_LIMIT)
    return filters


def _filter_value(key: str, value: str) -> Any:
    if key in INT_KEYS:
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"%backtests: {key} must be a whole number, got {value!r}; e.g. "
                              f"{key}=20", field=key) from None
        if number < 0:
            raise ConfigError(f"%backtests: {key} must not be negative (got {number})",
                              field=key)
        return number
    if key in LIST_KEYS and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


@dataclass
class RunsTable:
    """Runs found by ``%backtests``: a table in the notebook, records and a frame for code."""

    records: list[dict[str, Any]]
    filters: dict[str, Any]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self.records]

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for record in self.records:
            metrics = record.get("metrics") or {}
            rows.append({
                "id": record["id"], "name": record.get("name"), "status": record.get("status"),
                "progress": float(record.get("progress") or 0.0),
                "strategy": record.get("strategy"),
                "symbols": ", ".join(record.get("symbols") or []),
                "user": record.get("user"),
                "queued_at": pd.Timestamp(float(record["queued_at"]), unit="s")
                if record.get("queued_at") else pd.NaT,
                "queue_wait_s": queue_wait(record),
                **{m: metrics.get(m) for m in TABLE_METRICS},
            })
        columns = ["id", "name", "status", "progress", "strategy", "symbols", "user", "queued_at",
                   "queue_wait_s", *TABLE_METRICS]
        return pd.DataFrame(rows, columns=columns)

    def _repr_html_(self) -> str:
        described = ", ".join(f"{k}={v}" for k, v in self.filters.items() if k != "limit")
        if not self.records:
            return (f"<div>no runs match{(' ' + html.escape(described)) if described else ''}"
                    "</div>")
        header = ["id", "name", "status", "strategy", "symbols", "queued", "waited", "duration",
                  *(metric_label(m) for m in TABLE_METRICS)]
        rows = []
        for record in self.records:
            state = RunState.from_record(record)
            metrics = record.get("metrics") or {}
            badge = status_badge(state.status, f"{state.progress:.0%}"
                                 if state.status == "running" else "")
            rows.append([
                str(record["id"]), str(record.get("name") or ""), badge,
                str(record.get("strategy") or ""), ", ".join(record.get("symbols") or []),
                _when(record.get("queued_at")), format_duration(queue_wait(record)),
                format_duration(state.elapsed()),
                *(format_metric(m, metrics.get(m)) for m in TABLE_METRICS),
            ])
        # The status column holds coloured badges: HTML already (the badge escapes its text).
        table = html_table(header, rows, left_columns=5, css_class="ql-runs", html_columns={2})
        more = (f'<div style="font-size:11px;color:#666">first {len(self.records)} runs '
                f"(limit={self.filters.get('limit')}); page with offset=</div>"
                if len(self.records) == self.filters.get("limit") else "")
        return f'<div class="ql-runs-block">{table}{more}</div>'

    def __repr__(self) -> str:
        if not self.records:
            return "no runs"
        return self.to_frame().to_string(index=False)


def queue_wait(record: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds a run waited in the queue: until it started, or until now while still queued
    (None for a run that ended without starting, e.g. cancelled while queued, or unknown)."""
    queued = record.get("queued_at")
    if not queued:
        return None
    started = record.get("started_at")
    if started:
        return max(0.0, float(started) - float(queued))
    if record.get("status") == "queued":
        return max(0.0, (now or time.time()) - float(queued))
    return None


def _when(epoch: Any) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(epoch)))


def find_runs(filters: Mapping[str, Any]) -> RunsTable:
    records = open_registry().find_runs(**filters)
    return RunsTable([dict(r) for r in records], dict(filters))
