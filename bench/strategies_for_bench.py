"""Notebook-like strategies timed by bench_audit.py (in a file so that their source travels)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import quantlab as ql


@ql.strategy
def zscore_trend(bars, lookback=20, band=1.0, trend=50):
    """Mean reversion on a rolling z-score, only with the EWM trend."""
    close = pd.Series(bars.close[0])
    z = (close - close.rolling(lookback).mean()) / close.rolling(lookback).std()
    up = close > close.ewm(span=trend).mean()
    return np.where((z < -band) & up, 1, np.where(z > band, -1, 0))


@ql.strategy
def five_windows(bars, n=10):
    """Five rolling statistics and a rank: a heavier pandas strategy."""
    close = pd.Series(bars.close[0])
    returns = close.pct_change()
    vol = returns.rolling(4 * n).std()
    fast, slow = close.rolling(n).mean(), close.rolling(5 * n).mean()
    high, low = close.rolling(2 * n).max(), close.rolling(2 * n).min()
    where = (close - low) / (high - low)
    rank = vol.rolling(10 * n).rank(pct=True)
    buy = (fast > slow) & (where > 0.8) & (rank < 0.8)
    sell = (fast < slow) | (where < 0.2)
    return np.where(buy, 1, np.where(sell, -1, 0))
