"""Numba indicators over ``(n_symbols, n_bars)`` arrays.

Every indicator walks each symbol's row over its *valid* bars only: a NaN (no bar for that
symbol on that date) is skipped, so a window of ``n`` always means ``n`` real bars of that
symbol, and the output is NaN where the input is NaN or the window is not full yet.

``sma`` reproduces ``pandas.Series.rolling(n).mean()`` bit for bit (same running sum with
Kahan compensation, same reset rules), because the peers (backtesting.py's ``SMA`` helper and
most notebooks) compute their averages with pandas, and a crossover that compares two nearly
equal averages must flip on the same bar as theirs.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _sma_pair(x, at, k, dense, n0, n1, o0, o1):
    """pandas' roll_mean (add/remove with separate Kahan compensations, and the "same value n
    times" rule that returns that value exactly) over the valid values ``x[at[:k]]``, for
    windows ``n0`` and ``n1`` at once: each average is a chain of dependent additions, so two
    interleaved chains take about the time of one. ``n1 == 0``: ``n0`` only. ``dense``: no
    NaN in ``x`` (``at`` is not used, position ``j`` is bar ``j``)."""
    both = n1 > 0
    s0 = 0.0
    ca0 = 0.0
    cr0 = 0.0
    nobs0 = 0
    neg0 = 0
    s1 = 0.0
    ca1 = 0.0
    cr1 = 0.0
    nobs1 = 0
    neg1 = 0
    same = 0
    prev_value = np.nan
    for j in range(k):
        i = j if dense else at[j]
        val = x[i]
        # the run of equal values is the same for both windows
        if val == prev_value:
            same += 1
        else:
            same = 1
        prev_value = val
        # pandas removes the value leaving the window first, then adds the new one
        if j >= n0:
            old = x[j - n0] if dense else x[at[j - n0]]
            nobs0 -= 1
            y = -old - cr0
            t = s0 + y
            cr0 = t - s0 - y
            s0 = t
            if old < 0.0:
                neg0 -= 1
        nobs0 += 1
        y = val - ca0
        t = s0 + y
        ca0 = t - s0 - y
        s0 = t
        if val < 0.0:
            neg0 += 1
        if nobs0 >= n0:
            result = s0 / nobs0
            if same >= nobs0:
                result = val
            elif (neg0 == 0 and result < 0.0) or (neg0 == nobs0 and result > 0.0):
                result = 0.0
            o0[i] = result
        else:
            o0[i] = np.nan
        if both:
            if j >= n1:
                old = x[j - n1] if dense else x[at[j - n1]]
                nobs1 -= 1
                y = -old - cr1
                t = s1 + y
                cr1 = t - s1 - y
                s1 = t
                if old < 0.0:
                    neg1 -= 1
            nobs1 += 1
            y = val - ca1
            t = s1 + y
            ca1 = t - s1 - y
            s1 = t
            if val < 0.0:
                neg1 += 1
            if nobs1 >= n1:
                result = s1 / nobs1
                if same >= nobs1:
                    result = val
                elif (neg1 == 0 and result < 0.0) or (neg1 == nobs1 and result > 0.0):
                    result = 0.0
                o1[i] = result
            else:
                o1[i] = np.nan


@njit(cache=True)
def _sma_dense_rows(x, n0, n1, out0, out1):
    """``_sma_rows`` for rows without NaN, in one compiled loop."""
    no_positions = np.empty(0, np.int64)
    # `dense` as a variable, never a literal: a literal would compile a second
    # specialisation of _sma_pair (cold start time)
    dense = x.shape[1] >= 0
    for r in range(x.shape[0]):
        _sma_pair(x[r], no_positions, x.shape[1], dense, n0, n1, out0[r], out1[r])


_NO_POSITIONS = np.empty(0, np.int64)


def _sma_rows(x: np.ndarray, n0: int, n1: int, out0: np.ndarray, out1: np.ndarray) -> None:
    """``out0 = sma(x, n0)`` and, if ``n1 > 0``, ``out1 = sma(x, n1)``, in one pass per row.
    Rows with gaps (NaN) are handled here, row by row, so that the usual case compiles
    only the dense loop (cold start time)."""
    gaps = np.isnan(x).any(axis=1)
    if len(x) > 1 and not gaps.any():
        _sma_dense_rows(x, n0, n1, out0, out1)
        return
    # one symbol (or rows with gaps): row by row from here; one symbol then compiles nothing
    # but _sma_pair
    for r in range(x.shape[0]):
        row = x[r]
        if not gaps[r]:
            _sma_pair(row, _NO_POSITIONS, len(row), True, n0, n1, out0[r], out1[r])
            continue
        # the window slides over the valid values only
        positions = np.flatnonzero(row == row)
        out0[r] = np.nan
        out1[r] = np.nan
        _sma_pair(row, positions, len(positions), False, n0, n1, out0[r], out1[r])


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` valid bars: ``mean(x[t-n+1..t])``; bit for bit
    pandas' ``rolling(n).mean()``."""
    out = np.empty_like(x)
    _sma_rows(x, int(n), 0, out, out)
    return out


def sma_pair(x: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sma(x, n0), sma(x, n1))`` computed together, in about the time of one."""
    out0 = np.empty_like(x)
    out1 = np.empty_like(x)
    _sma_rows(x, int(n0), int(n1), out0, out1)
    return out0, out1


@njit(cache=True)
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, ``alpha = 2/(n+1)``, seeded with the first valid value
    (pandas ``ewm(span=n, adjust=False)``), NaN for the first ``n-1`` valid bars (warm-up)."""
    out = np.empty_like(x)
    alpha = 2.0 / (n + 1.0)
    for r in range(x.shape[0]):
        count = 0
        value = np.nan
        for i in range(x.shape[1]):
            v = x[r, i]
            if np.isnan(v):
                out[r, i] = np.nan
                continue
            if count == 0:
                value = v
            else:
                value = value + alpha * (v - value)
            count += 1
            out[r, i] = value if count >= n else np.nan
    return out


@njit(cache=True)
def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation (ddof=1) of the last ``n`` valid bars (two-pass per window)."""
    out = np.full_like(x, np.nan)
    for r in range(x.shape[0]):
        pos = np.empty(x.shape[1], np.int64)
        k = 0
        for i in range(x.shape[1]):
            if not np.isnan(x[r, i]):
                pos[k] = i
                k += 1
        for j in range(n - 1, k):
            mean = 0.0
            for q in range(j - n + 1, j + 1):
                mean += x[r, pos[q]]
            mean /= n
            ss = 0.0
            for q in range(j - n + 1, j + 1):
                d = x[r, pos[q]] - mean
                ss += d * d
            out[r, pos[j]] = np.sqrt(ss / (n - 1)) if n > 1 else 0.0
    return out


@njit(cache=True)
def rsi(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI: ``100 - 100/(1 + avg_gain/avg_loss)``, averages seeded with the simple mean
    of the first ``n`` changes and smoothed with ``alpha = 1/n``; NaN for the first ``n`` valid
    bars; 100 when there was no loss in the window."""
    out = np.full_like(x, np.nan)
    for r in range(x.shape[0]):
        prev = np.nan
        count = 0
        gain = 0.0
        loss = 0.0
        for i in range(x.shape[1]):
            v = x[r, i]
            if np.isnan(v):
                continue
            if np.isnan(prev):
                prev = v
                continue
            change = v - prev
            prev = v
            up = change if change > 0.0 else 0.0
            down = -change if change < 0.0 else 0.0
            count += 1
            if count <= n:
                gain += up / n
                loss += down / n
            else:
                gain = (gain * (n - 1) + up) / n
                loss = (loss * (n - 1) + down) / n
            if count >= n:
                out[r, i] = 100.0 if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


@njit(cache=True)
def crossover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """+1 where ``a`` crosses above ``b`` (strictly: ``a[p] < b[p]`` and ``a[t] > b[t]``, with
    ``p`` the symbol's previous valid bar), -1 where it crosses below, else 0."""
    out = np.zeros(a.shape, np.int8)
    for r in range(a.shape[0]):
        _cross_row(a[r], b[r], out[r])
    return out


@njit(cache=True)
def _cross_row(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    pa = np.nan
    pb = np.nan
    for i in range(a.shape[0]):
        ca = a[i]
        cb = b[i]
        if np.isnan(ca) or np.isnan(cb):
            # no bar for this symbol, or a warm-up bar: not a comparison point
            continue
        if pa < pb and ca > cb:
            out[i] = 1
        elif pa > pb and ca < cb:
            out[i] = -1
        pa = ca
        pb = cb


@njit(cache=True)
def band_breakout(close: np.ndarray, mid: np.ndarray, sd: np.ndarray, k: float) -> np.ndarray:
    """+1 where close crosses above ``mid + k*sd``, -1 where it crosses below ``mid``."""
    out = np.zeros(close.shape, np.int8)
    for r in range(close.shape[0]):
        p_close = np.nan
        p_up = np.nan
        p_mid = np.nan
        for i in range(close.shape[1]):
            c = close[r, i]
            if np.isnan(c):
                continue
            up = mid[r, i] + k * sd[r, i]
            m = mid[r, i]
            if p_close <= p_up and c > up:
                out[r, i] = 1
            elif p_close >= p_mid and c < m:
                out[r, i] = -1
            p_close = c
            p_up = up
            p_mid = m
    return out
