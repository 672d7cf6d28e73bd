"""A deterministic synthetic universe, so that a fresh install works offline.

``sample()`` stores ten fictional symbols ``AAA`` .. ``JJJ`` of daily bars over the business
days 2015-01-02 .. 2024-12-31 (closed on 1 January, 4 July and 25 December), and one symbol
of one-minute bars, ``AAA`` at interval ``1min`` (regular sessions 09:30-15:59, bar-start
labels, no time zone, the 21 sessions of 2024-12-02 .. 2024-12-31). Every bar is labelled
``synthetic`` in the store.

The model, per business day: a market factor whose drift and volatility follow a three-state
Markov regime (bull, bear, high-volatility) with fat-tailed (Student-t) shocks; each symbol
has its own beta, drift and idiosyncratic volatility; the close-to-close return is split into
an overnight gap (with occasional jumps, e.g. earnings) and an intraday move; high and low
extend beyond open and close; volume rises with the size of the move; a few days per symbol
have no bar. AAA's December 2024 daily bars are the aggregates of its minute bars (a Brownian
bridge from each day's open to its close), so the two intervals agree.

All randomness comes from ``numpy.random.default_rng`` seeded with fixed numbers, so the data
is identical on every machine and every call; a second ``sample()`` finds it installed and
returns at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantlab.bars import OHLCV
from quantlab.data.store import Store, canonical_symbol, current_store
from quantlab.errors import DataError

SEED = 20_150_101
SAMPLE_VERSION = 1
SOURCE = "quantlab.sample"
SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ")
START, END = "2015-01-01", "2024-12-31"
MINUTE_SYMBOL, MINUTE_INTERVAL = "AAA", "1min"
MINUTE_START, MINUTE_END = "2024-12-02", "2024-12-31"
SESSION_MINUTES = 390

# regime: (annual drift, volatility multiplier); rows of TRANSITION sum to one
REGIMES = {"bull": (0.12, 0.8), "bear": (-0.28, 1.35), "high_vol": (0.0, 2.3)}
TRANSITION = np.array([
    [0.9955, 0.0025, 0.0020],
    [0.0100, 0.9850, 0.0050],
    [0.0200, 0.0100, 0.9700],
])
MARKET_VOL = 0.15  # annual, before the regime multiplier


def calendar() -> pd.DatetimeIndex:
    """Business days without New Year's Day, Independence Day and Christmas."""
    days = pd.bdate_range(START, END)
    closed = ((days.month == 1) & (days.day == 1)) | ((days.month == 7) & (days.day == 4)) | (
        (days.month == 12) & (days.day == 25))
    return days[~closed]


def _t_shocks(rng: np.random.Generator, n: int, dof: float = 5.0) -> np.ndarray:
    """Student-t shocks scaled to unit variance (fat tails like real returns)."""
    return rng.standard_t(dof, n) / np.sqrt(dof / (dof - 2.0))


def market(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regime per day, the market's daily log return, and its volatility multiplier."""
    rng = np.random.default_rng([SEED, 0])
    states = np.empty(n, dtype=np.int64)
    state, draws = 0, rng.random(n)
    cumulative = TRANSITION.cumsum(axis=1)
    for t in range(n):
        states[t] = state
        state = int(np.searchsorted(cumulative[state], draws[t], side="right"))
        state = min(state, 2)
    drift = np.array([v[0] for v in REGIMES.values()])[states]
    mult = np.array([v[1] for v in REGIMES.values()])[states]
    returns = drift / 252 + MARKET_VOL / np.sqrt(252) * mult * _t_shocks(rng, n)
    return states, returns, mult


def _symbol_bars(k: int, index: pd.DatetimeIndex, m_ret: np.ndarray, mult: np.ndarray,
                 keep_last: int) -> pd.DataFrame:
    rng = np.random.default_rng([SEED, k + 1])
    n = len(index)
    beta = rng.uniform(0.6, 1.5)
    alpha = rng.uniform(-0.05, 0.04) / 252
    idio = rng.uniform(0.12, 0.35) / np.sqrt(252)
    price0 = float(np.round(rng.uniform(20, 300), 2))
    day_vol = np.sqrt((beta * MARKET_VOL / np.sqrt(252) * mult) ** 2 + (idio * np.sqrt(mult)) ** 2)
    ret = alpha + beta * m_ret + idio * np.sqrt(mult) * _t_shocks(rng, n)
    jumps = (rng.random(n) < 0.015) * rng.normal(0.0, 0.05, n)  # earnings-like overnight jumps
    gap = 0.3 * ret + jumps
    intraday = 0.7 * ret
    close = price0 * np.exp(np.cumsum(gap + intraday))
    prev_close = np.concatenate([[price0], close[:-1]])
    open_ = prev_close * np.exp(gap)
    wick = 0.5 * day_vol
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1.0, n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1.0, n)) * wick)
    base_volume = rng.uniform(2e5, 5e6)
    volume = np.round(base_volume * np.exp(0.35 * rng.normal(0.0, 1.0, n))
                      * (1 + 25 * np.abs(ret + jumps)))
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                          "volume": volume}, index=index)
    # a few days without a bar (a halt, a gap in the vendor's feed), never at the ends
    missing = rng.choice(np.arange(5, n - keep_last), size=int(rng.integers(3, 7)), replace=False)
    return frame.drop(index[np.sort(missing)])


def _minute_days() -> pd.DatetimeIndex:
    days = calendar()
    return days[(days >= pd.Timestamp(MINUTE_START)) & (days <= pd.Timestamp(MINUTE_END))]


def _minute_bars(daily: pd.DataFrame) -> pd.DataFrame:
    """One-minute bars for each minute day: a bridge from the day's open to its close."""
    rng = np.random.default_rng([SEED, 1000])
    minutes = np.arange(SESSION_MINUTES)
    # intraday volatility and volume are U-shaped: busiest at the open and the close
    u_shape = 1.0 + 1.5 * ((minutes - SESSION_MINUTES / 2) / (SESSION_MINUTES / 2)) ** 2
    frames = []
    opens_d, closes_d, volumes_d = (daily[name].to_dict() for name in ("open", "close", "volume"))
    for day in _minute_days():
        o, c = float(opens_d[day]), float(closes_d[day])
        sigma = 0.012 / np.sqrt(SESSION_MINUTES)
        steps = rng.normal(0.0, 1.0, SESSION_MINUTES) * sigma * np.sqrt(u_shape / u_shape.mean())
        walk = np.cumsum(steps)
        path = walk - (minutes + 1) / SESSION_MINUTES * (walk[-1] - np.log(c / o))
        closes = o * np.exp(path)
        opens = np.concatenate([[o], closes[:-1]])
        wick = 0.4 * sigma * np.sqrt(u_shape)
        highs = np.maximum(opens, closes) * np.exp(np.abs(rng.normal(0, 1, SESSION_MINUTES)) * wick)
        lows = np.minimum(opens, closes) * np.exp(-np.abs(rng.normal(0, 1, SESSION_MINUTES)) * wick)
        volume = np.round(float(volumes_d[day]) / SESSION_MINUTES * u_shape
                          / u_shape.mean() * np.exp(0.3 * rng.normal(0, 1, SESSION_MINUTES)))
        index = day + pd.Timedelta(hours=9, minutes=30) + pd.to_timedelta(minutes, unit="min")
        frames.append(pd.DataFrame({"open": opens, "high": highs, "low": lows, "close": closes,
                                    "volume": volume}, index=index))
    return pd.concat(frames)


def _round(frame: pd.DataFrame) -> pd.DataFrame:
    # cents, like real quotes; rounding is monotonic, so high >= max(open, close) still holds
    out = frame.copy()
    for name in ("open", "high", "low", "close"):
        out[name] = out[name].round(2)
    return out


def generate(symbols: tuple[str, ...] = SYMBOLS) -> dict[tuple[str, str], pd.DataFrame]:
    """The sample bars, keyed ``(symbol, interval)``; pure (nothing is written)."""
    index = calendar()
    _, m_ret, mult = market(len(index))
    keep_last = len(index) - int(index.searchsorted(pd.Timestamp(MINUTE_START))) + 1
    out: dict[tuple[str, str], pd.DataFrame] = {}
    for sym in symbols:
        k = SYMBOLS.index(sym)
        out[(sym, "1d")] = _round(_symbol_bars(k, index, m_ret, mult, keep_last))
    if MINUTE_SYMBOL in symbols:
        daily = out[(MINUTE_SYMBOL, "1d")]
        minute = _round(_minute_bars(daily))
        by_day = minute.groupby(pd.DatetimeIndex(minute.index).normalize())
        daily.loc[by_day.size().index, "high"] = by_day["high"].max()
        daily.loc[by_day.size().index, "low"] = by_day["low"].min()
        daily.loc[by_day.size().index, "volume"] = by_day["volume"].sum()
        out[(MINUTE_SYMBOL, MINUTE_INTERVAL)] = minute
    return {key: frame[list(OHLCV)] for key, frame in out.items()}


def _installed(store: Store, symbol: str, interval: str) -> bool:
    entry = store.entry(symbol, interval)
    if entry is None:
        return False
    if not entry.synthetic or entry.source != SOURCE:
        raise DataError(
            f"{symbol} {interval} already holds data from {entry.source!r}; sample() will not "
            f"overwrite it. Remove it first (ql.data.remove({symbol!r}, {interval!r})) or call "
            f"sample(force=True)", symbol=symbol,
        )
    return entry.extra.get("sample_version") == SAMPLE_VERSION and store.path(
        symbol, interval).exists()


def sample(symbols: list[str] | tuple[str, ...] | None = None, *, minute: bool = True,
           force: bool = False) -> pd.DataFrame:
    """Install the synthetic sample universe (see the module doc); idempotent and offline.

    ``symbols`` picks a subset of AAA..JJJ; ``minute=False`` skips AAA's one-minute bars;
    ``force=True`` rewrites the sample even over other data of the same names. Returns one row
    per stored series with its status (``installed`` or ``already installed``).
    """
    chosen = tuple(SYMBOLS if symbols is None else [canonical_symbol(s) for s in symbols])
    unknown = [s for s in chosen if s not in SYMBOLS]
    if unknown:
        raise DataError(
            f"{unknown[0]!r} is not a sample symbol; the sample has {', '.join(SYMBOLS)}",
            symbol=unknown[0],
        )
    store = current_store()
    wanted = [(s, "1d") for s in chosen]
    if minute and MINUTE_SYMBOL in chosen:
        wanted.append((MINUTE_SYMBOL, MINUTE_INTERVAL))
    todo = [key for key in wanted if force or not _installed(store, *key)]
    frames = generate(chosen) if todo else {}
    rows = []
    for sym, interval in wanted:
        if (sym, interval) in todo:
            store.write(sym, interval, frames[(sym, interval)], mode="replace", source=SOURCE,
                        adjusted=True, synthetic=True, extra={"sample_version": SAMPLE_VERSION})
            status = "installed"
        else:
            status = "already installed"
        entry = store.entry(sym, interval)
        assert entry is not None
        rows.append({"symbol": sym, "interval": interval, "rows": entry.rows,
                     "first": entry.first_ts, "last": entry.last_ts, "status": status})
    return pd.DataFrame(rows)
