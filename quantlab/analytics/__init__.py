"""Comparing runs (``ql.compare``) and statistics over the registry (``ql.stats``).

- :mod:`quantlab.analytics.equity`: equity-curve maths (daily curves, drawdowns, alignment,
  returns, correlation, joint drawdowns).
- :mod:`quantlab.analytics.comparison`: ``Comparison`` and ``compare``, config diffs, saving.
- :mod:`quantlab.analytics.statistics`: ``Stats`` and ``stats`` over a period.
- :mod:`quantlab.analytics.views`: the hook through which :mod:`quantlab.render` gives these
  objects their HTML views.

Everything here is computed from what the registry holds (run documents and result blobs), so a
comparison or a statistics page gives the same numbers in a notebook, a report and a dashboard.
"""

from __future__ import annotations

from quantlab.analytics.comparison import (
    COMPARISONS,
    CONFIG_CATEGORIES,
    DEFAULT_DASHBOARD_URL,
    LABEL_KEYS,
    MAX_RUNS,
    METRIC_ORDER,
    MIN_RUNS,
    ComparedRun,
    Comparison,
    Drawdowns,
    compare,
    config_diff,
    dashboard_url,
    saved_comparisons,
)
from quantlab.analytics.equity import (
    align_equity,
    daily_equity,
    daily_returns,
    drawdown_periods,
    drawdown_series,
    joint_drawdowns,
    return_correlation,
)
from quantlab.analytics.statistics import STAT_COLUMNS, Stats, period_start, stats

__all__ = [
    "COMPARISONS", "CONFIG_CATEGORIES", "DEFAULT_DASHBOARD_URL", "LABEL_KEYS", "MAX_RUNS",
    "METRIC_ORDER", "MIN_RUNS", "STAT_COLUMNS", "ComparedRun", "Comparison", "Drawdowns",
    "Stats", "align_equity", "compare", "config_diff", "daily_equity", "daily_returns",
    "dashboard_url", "drawdown_periods", "drawdown_series", "joint_drawdowns", "period_start",
    "return_correlation", "saved_comparisons", "stats",
]
