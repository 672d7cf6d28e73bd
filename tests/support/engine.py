"""Small builders shared by the engine tests: hand-made bars and fixed-signal strategies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

import quantlab as ql


def frame(opens: Sequence[float], closes: Sequence[float] | None = None,
          highs: Sequence[float] | None = None, lows: Sequence[float] | None = None,
          start: str = "2024-01-01") -> pd.DataFrame:
    """Daily OHLCV bars; high/low default to the max/min of open and close."""
    o = np.asarray(opens, dtype=float)
    c = np.asarray(closes if closes is not None else opens, dtype=float)
    h = np.asarray(highs, dtype=float) if highs is not None else np.maximum(o, c)
    lo = np.asarray(lows, dtype=float) if lows is not None else np.minimum(o, c)
    index = pd.date_range(start, periods=len(o), freq="D")
    return pd.DataFrame({"Open": o, "High": h, "Low": lo, "Close": c, "Volume": 1.0},
                        index=index)


def fixed_signals(name: str, signals: Sequence[int] | np.ndarray) -> str:
    """Register a strategy called ``name`` that returns ``signals`` whatever the data."""
    arr = np.asarray(signals, dtype=np.int8)

    @ql.strategy(name=name)
    def fixed(bars):  # type: ignore[no-untyped-def]
        return arr

    return name


def random_walk(n_bars: int, seed: int, start: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = start * np.cumprod(1 + rng.normal(0, 0.02, n_bars))
    opens = np.concatenate(([start], close[:-1])) * (1 + rng.normal(0, 0.005, n_bars))
    high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0, 0.01, n_bars)))
    low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0, 0.01, n_bars)))
    return frame(opens, close, high, low, start="2020-01-01")
