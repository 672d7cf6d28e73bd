"""Performance and risk metrics, each defined once.

Notation: ``C`` initial cash; ``E_t`` the portfolio value (cash + positions marked at the close)
at the close of bar ``t = 0..N-1``, ``E_{-1} = C``; bar returns ``r_t = E_t / E_{t-1} - 1``;
``P`` periods per year (:func:`periods_per_year`); closed trades ``i = 1..n`` with cash profit
``pnl_i`` (after both commissions) and return ``q_i = pnl_i / (|size_i| * entry_price_i)``.

The engine computes the metrics *streaming* (accumulators updated bar by bar inside the Numba
loop, :func:`finalize` at the end), so a sweep never stores an equity curve per combination and
a sweep row is bit-identical to the single run of the same parameters.

Undefined values: a ratio whose denominator is zero is ``nan`` when its numerator is also zero
(or there is nothing to measure, e.g. no closed trades) and ``inf`` when only the denominator is
(profit factor with no losing trade, Sortino with no losing bar). See docs/metrics.md.

Metrics (``METRICS`` order; ``res.metrics[name]``):

``equity_final``
    ``E_{N-1}``, open positions marked at the last close.
``total_return_pct``
    ``100 * (E_{N-1} / C - 1)``.
``cagr_pct``
    ``100 * ((E_{N-1} / C) ** (1 / Y) - 1)`` with ``Y = N / P`` years (the same clock as the
    annualised volatility); ``-100`` if the account was wiped out.
``volatility_ann_pct``
    ``100 * std(r, ddof=1) * sqrt(P)``.
``sharpe``
    ``mean(r) / std(r, ddof=1) * sqrt(P)`` (risk-free rate 0).
``sharpe_se``
    The standard error of the Sharpe ratio, annualised like ``sharpe``:
    ``sqrt((1 - g3 * SR + (g4 - 1) / 4 * SR^2) / (N - 1)) * sqrt(P)`` with the per-bar
    ``SR = mean(r) / std(r, ddof=1)`` (0 when the std is 0), ``g3`` the biased skewness and ``g4``
    the raw kurtosis of ``r`` (Bailey & López de Prado 2012; ``quantlab.sharpe_stats``).
``psr``
    The probabilistic Sharpe ratio against 0: ``Phi(SR * sqrt(N - 1) / sqrt(1 - g3 * SR +
    (g4 - 1) / 4 * SR^2))``, the probability that the true per-bar Sharpe ratio is above 0
    (same notation; a run that never moved has ``SR = 0`` and ``psr`` 0.5).
``sortino``
    ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(P)`` (downside deviation over all bars, target 0).
``calmar``
    ``cagr_pct / |max_drawdown_pct|``.
``max_drawdown_pct``
    ``100 * min_t (E_t / max_{s<=t} E_s - 1)`` with the running peak starting at ``C``; <= 0.
``max_drawdown_duration``
    The longest run of consecutive bars spent below the running peak, in **bars**.
``n_trades``
    Number of closed trades (a trade still open at the end is not counted).
``open_trades``
    Number of positions still open after the last bar.
``win_rate_pct``
    ``100 * #{pnl_i > 0} / n``.
``profit_factor``
    ``sum(pnl_i > 0) / |sum(pnl_i < 0)|`` in cash.
``expectancy_pct``
    ``100 * mean(q_i)`` (arithmetic mean trade return).
``best_trade_pct`` / ``worst_trade_pct``
    ``100 * max(q_i)`` / ``100 * min(q_i)``.
``avg_trade_pct``
    ``100 * (prod(1 + q_i) ** (1/n) - 1)`` (geometric mean trade return, as backtesting.py).
``exposure_pct``
    ``100 * (bars closing with any open position) / N``.
``buy_hold_return_pct``
    ``100 * mean_s(close_s[last] / close_s[first] - 1)`` over symbols (first/last valid bar).
``commissions``
    Total commission paid (proportional + fixed), entries and exits, open positions included.
``rejected_orders``
    Entries refused because the budget could not buy one whole unit (or any fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from quantlab.sharpe_stats import psr_and_se

METRICS: tuple[str, ...] = (
    "equity_final", "total_return_pct", "cagr_pct", "volatility_ann_pct", "sharpe", "sharpe_se",
    "psr", "sortino",
    "calmar", "max_drawdown_pct", "max_drawdown_duration", "n_trades", "open_trades",
    "win_rate_pct", "profit_factor", "expectancy_pct", "best_trade_pct", "worst_trade_pct",
    "avg_trade_pct", "exposure_pct", "buy_hold_return_pct", "commissions", "rejected_orders",
)
METRIC_INDEX = {name: i for i, name in enumerate(METRICS)}

# Units of METRIC_INFO: how a value is read (and so how it is formatted everywhere).
PERCENT, RATIO, CASH, COUNT, BARS = "%", "", "cash", "count", "bars"


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is to a reader: its ``label``, its ``unit`` (one of PERCENT, RATIO, CASH,
    COUNT, BARS) and its direction (``lower_is_better``: smaller values are better; every other
    metric is higher-is-better, max_drawdown_pct included since it is negative)."""

    label: str
    unit: str
    lower_is_better: bool = False

    @property
    def whole(self) -> bool:
        """Counted in whole numbers (trades, orders, bars)."""
        return self.unit in (COUNT, BARS)


# The one declaration of each metric's label, unit and direction (the formulas are above);
# notebook, reports, dashboards, notifications and sweeps derive theirs from it.
METRIC_INFO: dict[str, MetricInfo] = {
    "equity_final": MetricInfo("Final equity", CASH),
    "total_return_pct": MetricInfo("Total return", PERCENT),
    "cagr_pct": MetricInfo("CAGR", PERCENT),
    "volatility_ann_pct": MetricInfo("Volatility (ann.)", PERCENT, lower_is_better=True),
    "sharpe": MetricInfo("Sharpe", RATIO),
    "sharpe_se": MetricInfo("Sharpe std. error", RATIO, lower_is_better=True),
    "psr": MetricInfo("Probabilistic Sharpe", RATIO),
    "sortino": MetricInfo("Sortino", RATIO),
    "calmar": MetricInfo("Calmar", RATIO),
    "max_drawdown_pct": MetricInfo("Max drawdown", PERCENT),
    "max_drawdown_duration": MetricInfo("Max drawdown duration", BARS, lower_is_better=True),
    "n_trades": MetricInfo("Trades", COUNT),
    "open_trades": MetricInfo("Open trades", COUNT),
    "win_rate_pct": MetricInfo("Win rate", PERCENT),
    "profit_factor": MetricInfo("Profit factor", RATIO),
    "expectancy_pct": MetricInfo("Expectancy", PERCENT),
    "best_trade_pct": MetricInfo("Best trade", PERCENT),
    "worst_trade_pct": MetricInfo("Worst trade", PERCENT),
    "avg_trade_pct": MetricInfo("Average trade", PERCENT),
    "exposure_pct": MetricInfo("Exposure", PERCENT),
    "buy_hold_return_pct": MetricInfo("Buy & hold return", PERCENT),
    "commissions": MetricInfo("Commissions", CASH, lower_is_better=True),
    "rejected_orders": MetricInfo("Rejected orders", COUNT, lower_is_better=True),
}
METRIC_LABELS = {name: info.label for name, info in METRIC_INFO.items()}

# The columns a sweep's overfitting statistics add to its table (quantlab.research): not metrics
# of a run, but shown beside them (the sweep view ranks by ``dsr``).
STATISTIC_INFO: dict[str, MetricInfo] = {
    "dsr": MetricInfo("Deflated Sharpe", RATIO),
    "sr": MetricInfo("Sharpe per bar", RATIO),
    "min_trl": MetricInfo("Min. track record", BARS, lower_is_better=True),
}
# metrics where smaller is better (sweeps select their best combination with it, views highlight)
LOWER_IS_BETTER = frozenset(name for name, info in (METRIC_INFO | STATISTIC_INFO).items()
                            if info.lower_is_better)
# metrics counted in whole numbers (as_dict gives them as int)
WHOLE_METRICS = frozenset(name for name, info in METRIC_INFO.items() if info.whole)


def metric_info(name: str) -> MetricInfo:
    """The metadata of ``name``; a name declared in neither METRIC_INFO nor STATISTIC_INFO (a
    user's column) gets a label made from its name, percent if it ends in ``_pct``."""
    info = METRIC_INFO.get(name) or STATISTIC_INFO.get(name)
    if info is not None:
        return info
    unit = PERCENT if name.endswith("_pct") else RATIO
    return MetricInfo(name.removesuffix("_pct").replace("_", " ").capitalize(), unit)


def metric_label(name: str) -> str:
    return metric_info(name).label

# streaming accumulators (filled by quantlab.engine.kernel)
(M_N, M_SUM, M_SUM2, M_DOWN2, M_PEAK, M_MAX_DD, M_DD_LEN, M_MAX_DD_LEN, M_EXPOSED, M_PREV,
 M_TRADES, M_WINS, M_GROSS_PROFIT, M_GROSS_LOSS, M_SUM_RET, M_SUM_LOG, M_BEST, M_WORST,
 M_LAST, M_SUM3, M_SUM4, M_N_ACC) = range(22)
# each metric's place in a row, for finalize (Numba reads these module ints as constants)
(_EQUITY_FINAL, _TOTAL_RETURN, _CAGR, _VOLATILITY, _SHARPE, _SHARPE_SE, _PSR, _SORTINO, _CALMAR,
 _MAX_DD, _MAX_DD_LEN, _N_TRADES, _OPEN_TRADES, _WIN_RATE, _PROFIT_FACTOR, _EXPECTANCY,
 _BEST_TRADE, _WORST_TRADE, _AVG_TRADE, _EXPOSURE, _BUY_HOLD, _COMMISSIONS,
 _REJECTED) = range(len(METRICS))
assert METRICS[_WIN_RATE:_AVG_TRADE + 1] == (
    "win_rate_pct", "profit_factor", "expectancy_pct", "best_trade_pct", "worst_trade_pct",
    "avg_trade_pct") and METRICS[_REJECTED] == "rejected_orders"

_FIXED_PERIODS = {"1d": 252.0, "1w": 52.0, "1mo": 12.0, "1q": 4.0, "1y": 1.0}


def periods_per_year(interval: str, index: object = None) -> float:
    """Bars per year, for annualisation.

    Daily and longer bars use fixed counts (``1d`` 252 trading days, ``1w`` 52, ``1mo`` 12).
    Intraday bars are counted from the data: the median number of bars per calendar day that
    has bars (over the first 100,000 bars), times 252 -- so a 6.5-hour equity session of
    1-minute bars gives 390 * 252, and
    24-hour FX or crypto hourly bars give 24 * 252. Without data, a 6.5-hour session is assumed.
    """
    if interval in _FIXED_PERIODS:
        return _FIXED_PERIODS[interval]
    if index is not None and len(index) > 1:  # type: ignore[arg-type]
        # the first 100,000 bars tell the session length as well as a million do
        values = np.asarray(index.values[:100_000])  # type: ignore[attr-defined]
        days = values.astype("datetime64[D]")
        # the index is sorted: a day's bars are one run; run lengths from the day changes
        starts = np.flatnonzero(np.concatenate(([True], days[1:] != days[:-1])))
        counts = np.diff(np.append(starts, len(days)))
        return float(np.median(counts)) * 252.0
    minutes = _interval_minutes(interval)
    return 252.0 * 390.0 / minutes if minutes else 252.0


def _interval_minutes(interval: str) -> float:
    if interval.endswith("min"):
        return float(interval[:-3] or 1)
    if interval.endswith("h"):
        return 60.0 * float(interval[:-1] or 1)
    return 0.0


def buy_hold_return_pct(close: np.ndarray) -> float:
    """``100 * mean_s(last valid close / first valid close - 1)`` over the rows of ``close``."""
    rets = []
    for row in close:
        first, last = row[0], row[-1]
        if first != first or last != last:  # a symbol starting late or ending early
            valid = np.flatnonzero(~np.isnan(row))
            if not len(valid):
                continue
            first, last = row[valid[0]], row[valid[-1]]
        rets.append(last / first - 1.0)
    return 100.0 * float(np.mean(rets)) if rets else math.nan


@njit(cache=True)
def _nb_ratio(num, den):
    if den == 0.0:
        if num == 0.0 or num != num:
            return np.nan
        return np.inf if num > 0 else -np.inf
    return num / den


@njit(cache=True)
def finalize(acc, acct, cash, open_count, ppy, out):
    """Turn the accumulators into the metric row ``out`` (``METRICS`` order, buy & hold NaN:
    it depends only on the data and is filled in by the caller).

    Sweeps call it compiled, once per combination; a single run calls ``finalize.py_func``
    (the same code run by Python: one row does not repay 0.4 s of compiling on a cold start).
    Both give the same floats: only IEEE operations, and ``math`` functions that are the C
    library's in both (``np.exp`` in Python could take NumPy's own vectorised exp)."""
    n = acc[M_N]
    final = acc[M_LAST]
    out[_EQUITY_FINAL] = final
    out[_TOTAL_RETURN] = 100.0 * (final / cash - 1.0)
    years = n / ppy
    if final <= 0.0:
        cagr = -100.0
    elif years > 0:
        cagr = 100.0 * ((final / cash) ** (1.0 / years) - 1.0)
    else:
        cagr = np.nan
    out[_CAGR] = cagr
    mean = acc[M_SUM] / n if n > 0 else np.nan
    # sum of squares minus n*mean^2: bar returns are small, so no cancellation to fear
    var = (acc[M_SUM2] - acc[M_SUM] * mean) / (n - 1.0) if n > 1 else np.nan
    std = math.sqrt(var) if var > 0.0 else 0.0 if n > 1 else np.nan
    root = math.sqrt(ppy)
    out[_VOLATILITY] = 100.0 * std * root
    out[_SHARPE] = _nb_ratio(mean, std) * root if n > 1 else np.nan
    prob, se = psr_and_se(n, acc[M_SUM], acc[M_SUM2], acc[M_SUM3], acc[M_SUM4])
    out[_SHARPE_SE] = se * root
    out[_PSR] = prob
    down = math.sqrt(acc[M_DOWN2] / n) if n > 0 else np.nan
    out[_SORTINO] = _nb_ratio(mean, down) * root if n > 1 else np.nan
    max_dd = 100.0 * acc[M_MAX_DD]
    out[_CALMAR] = _nb_ratio(cagr, -max_dd)
    out[_MAX_DD] = max_dd
    out[_MAX_DD_LEN] = acc[M_MAX_DD_LEN]
    trades = acc[M_TRADES]
    out[_N_TRADES] = trades
    out[_OPEN_TRADES] = open_count
    if trades > 0:
        out[_WIN_RATE] = 100.0 * acc[M_WINS] / trades
        out[_PROFIT_FACTOR] = _nb_ratio(acc[M_GROSS_PROFIT], acc[M_GROSS_LOSS])
        out[_EXPECTANCY] = 100.0 * acc[M_SUM_RET] / trades
        out[_BEST_TRADE] = 100.0 * acc[M_BEST]
        out[_WORST_TRADE] = 100.0 * acc[M_WORST]
        out[_AVG_TRADE] = 100.0 * (math.exp(acc[M_SUM_LOG] / trades) - 1.0)
    else:
        for j in range(_WIN_RATE, _AVG_TRADE + 1):
            out[j] = np.nan
    out[_EXPOSURE] = 100.0 * acc[M_EXPOSED] / n if n > 0 else np.nan
    out[_BUY_HOLD] = np.nan
    out[_COMMISSIONS] = acct[1]
    out[_REJECTED] = acct[2]


def as_dict(row: np.ndarray) -> dict[str, float]:
    """A metric row as ``{name: float}`` (counts as ``int``)."""
    out: dict[str, float] = {}
    for name, value in zip(METRICS, row.tolist()):
        if name in WHOLE_METRICS:
            out[name] = int(value)
        else:
            out[name] = value
    return out


__all__ = ["LOWER_IS_BETTER", "METRICS", "METRIC_INFO", "METRIC_LABELS", "MetricInfo", "as_dict",
           "buy_hold_return_pct", "finalize", "metric_info", "metric_label", "periods_per_year"]
