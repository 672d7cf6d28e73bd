"""Statistics over the registry's runs (``ql.stats``): counts, success rate, returns, best and
worst runs, a histogram and monthly trends over a period."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantlab.analytics.views import html_view
from quantlab.errors import ConfigError
from quantlab.registry import open_registry
from quantlab.registry.schema import RunStatus

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
        done = self.count(RunStatus.COMPLETED) + self.count(RunStatus.FAILED)
        return float("nan") if done == 0 else 100.0 * self.count(RunStatus.COMPLETED) / done

    @property
    def returns(self) -> pd.Series:
        """total_return_pct of the completed runs that recorded one."""
        if not self.n_runs:
            return pd.Series(dtype=np.float64, name="total_return_pct")
        done = self.runs[self.runs["status"] == RunStatus.COMPLETED]
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
            completed = group[group["status"] == RunStatus.COMPLETED]
            n_done = len(completed) + int((group["status"] == RunStatus.FAILED).sum())
            returns = pd.to_numeric(completed["total_return_pct"], errors="coerce").dropna()
            sharpe = pd.to_numeric(completed["sharpe"], errors="coerce").dropna()
            rows.append({
                "month": month,
                "runs": len(group),
                "completed": len(completed),
                "failed": int((group["status"] == RunStatus.FAILED).sum()),
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
            "completed": self.count(RunStatus.COMPLETED),
            "failed": self.count(RunStatus.FAILED),
            "cancelled": self.count(RunStatus.CANCELLED), "success_rate_pct": self.success_rate_pct,
            "mean_return_pct": self.mean_return_pct,
            "median_return_pct": self.median_return_pct,
        }

    def _repr_html_(self) -> str | None:
        return html_view(self)  # the view lives in quantlab.render.html


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
