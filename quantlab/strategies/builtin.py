"""The built-in strategies. Each returns -1/0/+1 signals per symbol and bar.

The crossover strategies also give sweeps their lines: the average of every window in the grid
is computed once, and each combination's crossover is taken inside the parallel kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from quantlab.bars import Bars
from quantlab.errors import ConfigError
from quantlab.indicators import band_breakout, crossover
from quantlab.strategies.base import Indicators, Strategy


def _window(params: Mapping[str, Any], name: str, minimum: int = 1) -> None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(
            f"parameter '{name}' must be a whole number of bars, got {value!r}; e.g. "
            f"{name}=20", field=f"params.{name}")
    if value < minimum:
        raise ConfigError(
            f"parameter '{name}' must be at least {minimum} bars, got {value}",
            field=f"params.{name}")


def _number(params: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"parameter '{name}' must be a number, got {value!r}",
                          field=f"params.{name}")
    if not low < float(value) < high:
        raise ConfigError(
            f"parameter '{name}' must be between {low:g} and {high:g} (exclusive), got "
            f"{value}", field=f"params.{name}")


def _check_fast_slow(params: Mapping[str, Any]) -> None:
    _window(params, "fast")
    _window(params, "slow")


def _prefetch(kind: str) -> Any:
    def prefetch(ind: Indicators, params: Mapping[str, Any]) -> None:
        ind.many(kind, [int(params["fast"]), int(params["slow"])])
    return prefetch


def sma_crossover(bars: Bars, fast: int = 10, slow: int = 20, *, ind: Indicators) -> np.ndarray:
    """Buy when the fast simple moving average crosses above the slow one, sell on the cross
    below (strict: ``fast[t-1] < slow[t-1] and fast[t] > slow[t]``)."""
    return crossover(ind.sma(fast), ind.sma(slow))


def ema_crossover(bars: Bars, fast: int = 12, slow: int = 26, *, ind: Indicators) -> np.ndarray:
    """Buy when the fast exponential moving average crosses above the slow one, sell below."""
    return crossover(ind.ema(fast), ind.ema(slow))


def rsi_reversion(bars: Bars, period: int = 14, lower: float = 30.0, upper: float = 70.0, *,
                  ind: Indicators) -> np.ndarray:
    """Buy while RSI(period) is below ``lower`` (oversold), sell while it is above ``upper``."""
    r = ind.rsi(period)
    with np.errstate(invalid="ignore"):
        return np.where(r < lower, 1, np.where(r > upper, -1, 0)).astype(np.int8)


def bollinger_breakout(bars: Bars, period: int = 20, k: float = 2.0, *,
                       ind: Indicators) -> np.ndarray:
    """Buy when the close crosses above the upper band ``sma + k*std``, sell when it crosses
    back below the middle band ``sma``."""
    return band_breakout(bars.close, ind.sma(period), ind.std(period), float(k))


@njit(cache=True)
def _momentum(close: np.ndarray, lookback: int, top_n: int) -> np.ndarray:
    n_sym, n_bars = close.shape
    out = np.zeros((n_sym, n_bars), np.int8)
    # each symbol's trailing return over its own last `lookback` valid bars
    ret = np.full((n_sym, n_bars), np.nan)
    for s in range(n_sym):
        pos = np.empty(n_bars, np.int64)
        k = 0
        for i in range(n_bars):
            if close[s, i] == close[s, i]:
                pos[k] = i
                if k >= lookback:
                    ret[s, i] = close[s, i] / close[s, pos[k - lookback]] - 1.0
                k += 1
    for i in range(n_bars):
        valid = 0
        for s in range(n_sym):
            if ret[s, i] == ret[s, i]:
                valid += 1
        if valid == 0:
            continue
        for s in range(n_sym):
            r = ret[s, i]
            if r != r:
                continue
            # rank = how many symbols beat it (ties broken by symbol order)
            better = 0
            for q in range(n_sym):
                rq = ret[q, i]
                if rq == rq and (rq > r or (rq == r and q < s)):
                    better += 1
            out[s, i] = 1 if better < top_n else -1
    return out


def momentum(bars: Bars, lookback: int = 20, top_n: int = 1) -> np.ndarray:
    """Rotation: on every bar hold the ``top_n`` symbols with the highest trailing return over
    ``lookback`` bars (buy them), sell the others. Default weights are ``1/top_n`` each."""
    return _momentum(bars.close, int(lookback), int(top_n))


def buy_and_hold(bars: Bars) -> np.ndarray:
    """Buy every symbol on its first bar and hold to the end."""
    out = np.zeros(bars.close.shape, np.int8)
    valid = ~np.isnan(bars.close)
    has = valid.any(axis=1)
    first = valid.argmax(axis=1)
    out[np.flatnonzero(has), first[has]] = 1
    return out


def _check_rsi(p: Mapping[str, Any]) -> None:
    _window(p, "period")
    _number(p, "lower", 0.0, 100.0)
    _number(p, "upper", 0.0, 100.0)


def _check_bollinger(p: Mapping[str, Any]) -> None:
    _window(p, "period", 2)
    _number(p, "k", 0.0, float("inf"))


def _check_momentum(p: Mapping[str, Any]) -> None:
    _window(p, "lookback")
    _window(p, "top_n")


# The built-in strategies, registered by name in quantlab.strategies.registry.
BUILTINS: tuple[Strategy, ...] = (
    Strategy(sma_crossover, builtin=True, valid=lambda p: p["fast"] < p["slow"],
             rule="fast < slow", crossover_of="sma", prefetch=_prefetch("sma"),
             check=_check_fast_slow),
    Strategy(ema_crossover, builtin=True, valid=lambda p: p["fast"] < p["slow"],
             rule="fast < slow", crossover_of="ema", check=_check_fast_slow),
    Strategy(rsi_reversion, builtin=True, valid=lambda p: p["lower"] < p["upper"],
             rule="lower < upper", check=_check_rsi),
    Strategy(bollinger_breakout, builtin=True, check=_check_bollinger),
    Strategy(momentum, builtin=True, check=_check_momentum,
             slots=lambda p, n: int(p["top_n"])),
    Strategy(buy_and_hold, builtin=True),
)
