"""Equity-curve maths shared by comparisons and reports: daily curves, drawdowns and their
periods, curves aligned on one calendar, daily returns and their correlation, and the days
several runs were under water together. Pure functions of pandas objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


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
