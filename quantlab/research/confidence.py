"""How uncertain a run's metrics are, and whether two runs' Sharpe ratios really differ.

- :func:`confidence`: bootstrap intervals of a result's metrics. ``method="stationary"``
  resamples the per-bar returns with the stationary bootstrap of Politis & Romano (1994), block
  length chosen by Politis & White (2004) with the correction of Patton, Politis & White (2009)
  (both from the ``arch`` package), and recomputes each metric on every resampled path with the
  engine's own formulas (:func:`quantlab.metrics.finalize`). ``method="trades"`` resamples the
  closed trades (i.i.d., ``arch``'s ``IIDBootstrap``) for trade and drawdown metrics.
- :func:`sharpe_difference_tests`: pairwise tests of equal Sharpe ratios, Ledoit & Wolf (2008)
  section 3.1 (delta method with a HAC estimate of the long-run covariance), with Holm (1979)
  adjusted p-values. docs/research.md gives every formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.metrics import (
    M_DOWN2,
    M_LAST,
    M_MAX_DD,
    M_MAX_DD_LEN,
    M_N,
    M_N_ACC,
    M_SUM,
    M_SUM2,
    METRIC_INDEX,
    METRICS,
    finalize,
    periods_per_year,
)

METHODS = ("stationary", "trades")
DEFAULT_METRICS = ("sharpe", "cagr_pct", "max_drawdown_pct")
# metrics of the equity curve alone: what a resampled return path determines
PATH_METRICS = ("total_return_pct", "cagr_pct", "volatility_ann_pct", "sharpe", "sortino",
                "calmar", "max_drawdown_pct", "max_drawdown_duration", "equity_final")
TRADE_METRICS = ("total_return_pct", "max_drawdown_pct", "win_rate_pct", "expectancy_pct",
                 "profit_factor", "best_trade_pct", "worst_trade_pct")
COLUMNS = ["metric", "estimate", "lower", "upper"]


# --------------------------------------------------------------------------- metrics of a path


def path_metrics(returns: np.ndarray, cash: float, ppy: float) -> np.ndarray:
    """The metric row (``METRICS`` order) of the equity path ``cash * cumprod(1 + returns)``,
    through the engine's own :func:`finalize` (trade metrics NaN: a path has no trades)."""
    r = np.asarray(returns, dtype="float64")
    equity = cash * np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate(([cash], equity)))[1:]
    depth = equity / peak - 1.0
    acc = np.zeros(M_N_ACC)
    acc[M_N] = len(r)
    acc[M_SUM] = r.sum()
    acc[M_SUM2] = (r * r).sum()
    acc[M_DOWN2] = (np.minimum(r, 0.0) ** 2).sum()
    acc[M_LAST] = equity[-1] if len(r) else cash
    acc[M_MAX_DD] = min(0.0, depth.min()) if len(r) else 0.0
    acc[M_MAX_DD_LEN] = _longest_run(depth < 0.0)
    out = np.empty(len(METRICS))
    finalize.py_func(acc, np.zeros(4), cash, 0, ppy, out)
    for name in METRICS:
        if name not in PATH_METRICS:
            out[METRIC_INDEX[name]] = np.nan
    return out


def _longest_run(flags: np.ndarray) -> int:
    """The longest run of consecutive True values."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int(lengths.max()) if len(lengths) else 0


def trade_metrics(pnl: np.ndarray, returns: np.ndarray, cash: float) -> dict[str, float]:
    """Trade metrics of closed trades taken in this order: cash path ``cash + cumsum(pnl)``
    (its drawdown, peak starting at ``cash``), win rate, expectancy, profit factor."""
    path = cash + np.cumsum(pnl)
    peak = np.maximum.accumulate(np.concatenate(([cash], path)))[1:]
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    return {
        "total_return_pct": 100.0 * pnl.sum() / cash,
        "max_drawdown_pct": 100.0 * min(0.0, float((path / peak - 1.0).min())),
        "win_rate_pct": 100.0 * float(np.mean(pnl > 0)),
        "expectancy_pct": 100.0 * float(np.mean(returns)),
        "profit_factor": gains / losses if losses > 0 else (math.inf if gains > 0 else math.nan),
        "best_trade_pct": 100.0 * float(returns.max()),
        "worst_trade_pct": 100.0 * float(returns.min()),
    }


# --------------------------------------------------------------------------- confidence


def _check(metrics: Sequence[str], method: str, n: int, level: float) -> list[str]:
    if method not in METHODS:
        raise ConfigError(f"unknown confidence method {method!r}; use 'stationary' (block "
                          f"bootstrap of bar returns) or 'trades' (bootstrap of closed trades)",
                          field="method")
    allowed = PATH_METRICS if method == "stationary" else TRADE_METRICS
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        if name not in allowed:
            raise ConfigError(
                f"metric {name!r} has no {method} confidence interval; with method="
                f"{method!r} choose from {', '.join(allowed)}"
                + (" (trade metrics need method='trades')" if name in TRADE_METRICS else ""),
                field="metrics")
    if isinstance(n, bool) or not isinstance(n, int) or n < 50:
        raise ConfigError(f"n (bootstrap resamples) must be a whole number of at least 50, "
                          f"got {n!r}; 1000 is the default", field="n")
    if not 0.5 <= float(level) < 1.0:
        raise ConfigError(f"level must be between 0.5 and 1 (e.g. 0.95), got {level!r}",
                          field="level")
    return names


def bar_returns(equity: pd.Series, cash: float) -> np.ndarray:
    """``r_t = E_t / E_{t-1} - 1`` with ``E_{-1}`` the initial cash (as metrics.py)."""
    values = equity.to_numpy(dtype="float64")
    prev = np.concatenate(([cash], values[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, values / prev - 1.0, 0.0)


def _interval(bs: Any, func: Callable[..., np.ndarray], n: int, level: float) -> np.ndarray:
    """arch's percentile interval: 2 x k array (lower, upper)."""
    return np.asarray(bs.conf_int(func, reps=n, method="percentile", size=level))


def confidence(result: Any, metrics: Sequence[str] = DEFAULT_METRICS, method: str = "stationary",
               n: int = 1000, level: float = 0.95, seed: int | None = 0) -> pd.DataFrame:
    """Bootstrap confidence intervals of a result's metrics: DataFrame (metric, estimate,
    lower, upper), ``estimate`` computed on the run itself."""
    from arch.bootstrap import IIDBootstrap, StationaryBootstrap

    names = _check(metrics, method, n, level)
    cash = float(result.config.get("cash") or 100_000.0)
    if method == "stationary":
        equity = result.equity
        returns = bar_returns(equity, cash)
        if len(returns) < 10:
            raise ConfigError(f"the run has {len(returns)} bars; a block bootstrap needs at "
                              f"least 10", field="method")
        ppy = periods_per_year(str(result.config.get("interval") or "1d"), equity.index)
        idx = [METRIC_INDEX[name] for name in names]

        def stat(r: np.ndarray) -> np.ndarray:
            return path_metrics(r, cash, ppy)[idx]

        block = block_length(returns)
        # a mean block length needs no rounding (arch types it int, and takes a float)
        bs: Any = StationaryBootstrap(block, returns, seed=seed)  # type: ignore[arg-type]
        estimate = stat(returns)
        bounds = _interval(bs, stat, n, level)
    else:
        trades = result.trades
        if len(trades) < 2:
            raise ConfigError(f"the run has {len(trades)} closed trades; method='trades' "
                              f"needs at least 2 (use method='stationary')", field="method")
        pnl = trades["pnl"].to_numpy(dtype="float64")
        rets = trades["return_pct"].to_numpy(dtype="float64") / 100.0

        def stat_trades(p: np.ndarray, q: np.ndarray) -> np.ndarray:
            found = trade_metrics(p, q, cash)
            return np.array([found[name] for name in names])

        bs = IIDBootstrap(pnl, rets, seed=seed)
        estimate = stat_trades(pnl, rets)
        bounds = _interval(bs, stat_trades, n, level)
    frame = pd.DataFrame({"metric": names, "estimate": estimate, "lower": bounds[0],
                          "upper": bounds[1]}, columns=COLUMNS)
    frame.attrs.update(method=method, n=n, level=level, seed=seed)
    if method == "stationary":
        frame.attrs["block_length"] = block
    return frame


def block_length(returns: np.ndarray) -> float:
    """The stationary bootstrap's expected block length (Politis & White 2004, corrected by
    Patton, Politis & White 2009), at least 1."""
    from arch.bootstrap import optimal_block_length

    found = float(optimal_block_length(returns)["stationary"].iloc[0])
    return max(1.0, found) if math.isfinite(found) else 1.0


# --------------------------------------------------------------------------- Sharpe tests


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values: sorted ascending p_(1..m),
    adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype="float64")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def hac_covariance(y: np.ndarray) -> np.ndarray:
    """Long-run covariance of the rows of ``y`` (T x k, demeaned): Bartlett kernel (Newey &
    West 1987) with bandwidth ``floor(4 (T/100)^(2/9))``, times T/(T-4) as Ledoit & Wolf's
    small-sample correction."""
    t = len(y)
    lags = math.floor(4.0 * (t / 100.0) ** (2.0 / 9.0))
    psi = y.T @ y / t
    for lag in range(1, lags + 1):
        weight = 1.0 - lag / (lags + 1.0)
        gamma = y[lag:].T @ y[:-lag] / t
        psi += weight * (gamma + gamma.T)
    return psi * t / (t - 4.0) if t > 4 else psi


def sharpe_difference(r1: np.ndarray, r2: np.ndarray) -> tuple[float, float, float]:
    """Ledoit & Wolf (2008) test of equal Sharpe ratios of two aligned return series:
    (difference of per-bar Sharpe ratios, its HAC standard error, two-sided p-value)."""
    r1, r2 = np.asarray(r1, dtype="float64"), np.asarray(r2, dtype="float64")
    t = len(r1)
    mu1, mu2 = r1.mean(), r2.mean()
    g1, g2 = (r1 * r1).mean(), (r2 * r2).mean()
    v1, v2 = g1 - mu1 * mu1, g2 - mu2 * mu2
    if t < 10 or v1 <= 0 or v2 <= 0:
        return math.nan, math.nan, math.nan
    delta = mu1 / math.sqrt(v1) - mu2 / math.sqrt(v2)
    grad = np.array([g1 / v1 ** 1.5, -g2 / v2 ** 1.5, -mu1 / (2 * v1 ** 1.5),
                     mu2 / (2 * v2 ** 1.5)])
    y = np.column_stack([r1 - mu1, r2 - mu2, r1 * r1 - g1, r2 * r2 - g2])
    se = math.sqrt(max(float(grad @ hac_covariance(y) @ grad) / t, 0.0))
    if se == 0.0:
        return delta, se, math.nan
    from scipy.stats import norm  # scipy loads only when a test is computed

    return delta, se, float(2.0 * norm.sf(abs(delta) / se))


def sharpe_difference_tests(returns: pd.DataFrame, ppy: float = 252.0) -> pd.DataFrame:
    """Every pair of columns of ``returns`` (aligned per-period returns; rows with a gap
    dropped pairwise): a, b, sharpe_a, sharpe_b (annualised, ddof 0 as the paper), difference,
    se (annualised), z, p_value, p_holm (Holm over all pairs)."""
    rows = []
    for a, b in combinations(returns.columns, 2):
        both = returns[[a, b]].dropna()
        delta, se, p = sharpe_difference(both[a].to_numpy(), both[b].to_numpy())
        root = math.sqrt(ppy)
        sr = [float(both[c].mean() / both[c].std(ddof=0)) * root if len(both) > 1
              else math.nan for c in (a, b)]
        rows.append({"a": a, "b": b, "sharpe_a": sr[0], "sharpe_b": sr[1],
                     "difference": delta * root, "se": se * root,
                     "z": delta / se if se else math.nan, "p_value": p})
    frame = pd.DataFrame(rows, columns=["a", "b", "sharpe_a", "sharpe_b", "difference", "se",
                                        "z", "p_value", "p_holm"])
    finite = frame["p_value"].notna().to_numpy()
    adjusted = np.full(len(frame), np.nan)
    adjusted[finite] = holm(frame["p_value"].to_numpy(dtype="float64")[finite])
    frame["p_holm"] = adjusted
    return frame


__all__ = ["block_length", "confidence", "hac_covariance", "holm", "path_metrics",
           "sharpe_difference", "sharpe_difference_tests", "trade_metrics"]
