"""``Bars``: aligned OHLCV arrays, the one shape of market data the engine takes.

Everything that feeds the engine (a DataFrame, a dict of DataFrames, the data store) produces a
``Bars``. Arrays are float64 of shape ``(n_symbols, n_bars)`` so that each symbol's series is
contiguous (indicators walk one symbol at a time). Several symbols are aligned on the union of
their timestamps; a symbol with no bar at a timestamp has NaN there and is not tradable then
(never forward-filled into a fake fill).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, DataError

OHLCV = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True, eq=False)
class Bars:
    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    interval: str = "1d"
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    def frame(self, symbol: str) -> pd.DataFrame:
        """One symbol's bars as an OHLCV DataFrame (rows where it had no bar dropped)."""
        i = self.symbols.index(symbol)
        df = pd.DataFrame(
            {name: getattr(self, name)[i] for name in OHLCV}, index=self.index
        )
        return df[~np.isnan(df["close"].to_numpy())]

    def slice(self, start: int, stop: int) -> Bars:
        """Bars ``start:stop`` (positions), sharing memory with this one."""
        return Bars(
            self.index[start:stop], self.symbols,
            open=self.open[:, start:stop], high=self.high[:, start:stop],
            low=self.low[:, start:stop], close=self.close[:, start:stop],
            volume=self.volume[:, start:stop], interval=self.interval, meta=self.meta,
        )


def normalize_ohlcv(df: pd.DataFrame, symbol: str = "data") -> pd.DataFrame:
    """Check one symbol's OHLCV frame and return it with lower-case float columns.

    Raises :class:`DataError` naming the symbol, the row or column and the fix for: a non-datetime
    index, missing columns, unsorted or duplicate timestamps, NaN or non-positive prices, and
    high below low. Volume is optional (zeros when absent).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"{symbol}: expected a pandas DataFrame of OHLCV bars, got {type(df).__name__}",
            symbol=symbol,
        )
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(
            f"{symbol}: the index must be a DatetimeIndex of bar timestamps, got "
            f"{type(df.index).__name__}; use df.set_index(pd.to_datetime(df['date']))",
            symbol=symbol,
        )
    lower = {str(c).lower(): c for c in df.columns}
    missing = [c for c in PRICE_COLUMNS if c not in lower]
    if missing:
        raise DataError(
            f"{symbol}: missing column(s) {', '.join(missing)}; the data needs open, high, low, "
            f"close (any case) and optionally volume. Columns found: {list(map(str, df.columns))}",
            symbol=symbol, column=missing[0],
        )
    if len(df) == 0:
        raise DataError(f"{symbol}: the data has no bars", symbol=symbol)
    out = pd.DataFrame(index=df.index)
    for name in OHLCV:
        if name in lower:
            try:
                out[name] = pd.to_numeric(df[lower[name]], errors="raise").astype("float64")
            except (ValueError, TypeError):
                raise DataError(
                    f"{symbol}: column '{lower[name]}' holds values that are not numbers",
                    symbol=symbol, column=name,
                ) from None
        else:
            out[name] = 0.0
    _check_index(pd.DatetimeIndex(out.index), symbol)
    _check_prices(out, symbol)
    return out


def _check_index(index: pd.DatetimeIndex, symbol: str) -> None:
    if index.hasnans:
        row = int(np.flatnonzero(index.isna())[0])
        raise DataError(f"{symbol}: row {row} has no timestamp (NaT); drop or fix it",
                        symbol=symbol, row=row)
    values = index.asi8
    if len(values) > 1:
        steps = np.diff(values)
        if (steps == 0).any():
            row = int(np.flatnonzero(steps == 0)[0]) + 1
            raise DataError(
                f"{symbol}: duplicate timestamp {index[row]} at row {row}; keep one bar per "
                f"timestamp (e.g. df[~df.index.duplicated()])", symbol=symbol, row=row,
            )
        if (steps < 0).any():
            row = int(np.flatnonzero(steps < 0)[0]) + 1
            raise DataError(
                f"{symbol}: timestamps are not sorted (row {row}, {index[row]}, comes before the "
                f"row above it); sort with df.sort_index()", symbol=symbol, row=row,
            )


def _check_prices(df: pd.DataFrame, symbol: str) -> None:
    prices = df[list(PRICE_COLUMNS)].to_numpy()
    bad = ~np.isfinite(prices)
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        value = prices[row, col]
        what = "missing (NaN)" if np.isnan(value) else f"infinite ({value:g})"
        raise DataError(
            f"{symbol}: {PRICE_COLUMNS[col]} is {what} at row {row} ({df.index[row]}); "
            f"drop that bar or fill it from the source", symbol=symbol, row=row,
            column=PRICE_COLUMNS[col],
        )
    nonpos = prices <= 0
    if nonpos.any():
        row, col = (int(x) for x in np.argwhere(nonpos)[0])
        raise DataError(
            f"{symbol}: {PRICE_COLUMNS[col]} is {prices[row, col]:g} at row {row} "
            f"({df.index[row]}); prices must be positive", symbol=symbol, row=row,
            column=PRICE_COLUMNS[col],
        )
    high, low = prices[:, 1], prices[:, 2]
    inverted = high < low
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        raise DataError(
            f"{symbol}: high ({high[row]:g}) is below low ({low[row]:g}) at row {row} "
            f"({df.index[row]}); the columns may be swapped", symbol=symbol, row=row,
            column="high",
        )


# -- names of symbols and intervals: pure rules, shared by the data store and the config

_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*(min|h|d|w|mo)\s*$", re.IGNORECASE)
_INTERVAL_ALIASES = {
    "daily": "1d", "day": "1d", "weekly": "1w", "monthly": "1mo", "minute": "1min",
    "hourly": "1h", "60min": "1h",
}
# The dates a bar (and a config's or a load's start and end) may carry: timestamps are held in
# nanoseconds, which span 1677-09-21 to 2262-04-11; whole years inside that keep the rule simple.
FIRST_DATE = "1678-01-01"
LAST_DATE = "2261-12-31"


def date_in_range(year: int) -> bool:
    """Whether a date of ``year`` is within :data:`FIRST_DATE` .. :data:`LAST_DATE`."""
    return int(FIRST_DATE[:4]) <= year <= int(LAST_DATE[:4])


# The longest symbol name: the data store names a file after it (quoted, so up to three bytes a
# character, plus the interval and temp-file affixes), which must stay under the 255 bytes a file
# name may take. Real tickers (OCC option symbols included) are far shorter.
MAX_SYMBOL_LENGTH = 64
_SYMBOL_RE = re.compile(r"^[A-Z0-9^][A-Z0-9._\-^=/:&]*$")


def canonical_interval(interval: str) -> str:
    """The store's label for a bar interval: ``1min``, ``5min``, ``1h``, ``1d``, ``1w``, ``1mo``.

    ``60min`` and ``1h`` are the same interval (labelled ``1h``); ``daily`` means ``1d``.
    """
    text = str(interval).strip().lower()
    text = _INTERVAL_ALIASES.get(text, text)
    match = _INTERVAL_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(
            f"unknown interval {interval!r}; use a number and a unit, e.g. '1min', '5min', "
            f"'1h', '1d', '1w' or '1mo'", field="interval",
        )
    n, unit = int(match.group(1)), match.group(2).lower()
    if unit == "min" and n % 60 == 0:
        n, unit = n // 60, "h"
    return f"{n}{unit}"


def is_intraday(interval: str) -> bool:
    return canonical_interval(interval).endswith(("min", "h"))


def canonical_symbol(symbol: object) -> str:
    """Symbols are upper-case ASCII, without surrounding blanks (``' aapl '`` is ``'AAPL'``).

    The one normalisation is ASCII upper-casing. A name with other characters is refused, and
    when Unicode would turn it into a valid symbol (NFKC, then upper case: ``'ſpy'``,
    ``'ﬁx'``, ``'ıbm'``, full-width ``'ＳＰＹ'``) the message names that symbol, so that a
    look-alike never silently stands for another name.
    """
    if not isinstance(symbol, str):
        raise ConfigError(
            f"a symbol must be a string such as 'AAPL', got {type(symbol).__name__} {symbol!r}",
            field="symbols",
        )
    stripped = symbol.strip()
    if not stripped.isascii():
        _refuse_non_ascii(symbol, stripped)
    name = stripped.upper()
    if len(name) > MAX_SYMBOL_LENGTH:
        raise ConfigError(
            f"the symbol {name[:20]}... is {len(name):,} characters long; a symbol has at most "
            f"{MAX_SYMBOL_LENGTH} (e.g. 'AAPL', 'BRK.B', '^GSPC')", field="symbols",
            symbol=name[:MAX_SYMBOL_LENGTH],
        )
    if not _SYMBOL_RE.match(name):
        raise ConfigError(
            f"invalid symbol {symbol!r}: use letters, digits and . - _ ^ = / : & "
            f"(e.g. 'AAPL', 'BRK.B', '^GSPC'), starting with a letter, digit or ^",
            field="symbols", symbol=symbol,
        )
    return name


def _refuse_non_ascii(symbol: str, stripped: str) -> None:
    odd = next(c for c in stripped if not c.isascii())
    described = f"{odd!r} (U+{ord(odd):04X} {unicodedata.name(odd, 'unnamed character')})"
    looks_like = unicodedata.normalize("NFKC", stripped).upper()
    if looks_like.isascii() and _SYMBOL_RE.match(looks_like) \
            and len(looks_like) <= MAX_SYMBOL_LENGTH:
        raise ConfigError(
            f"symbol {symbol!r} holds the non-ASCII character {described}; symbols are ASCII, "
            f"and this name would read as {looks_like!r}: write {looks_like!r} if that is what "
            f"you mean", field="symbols", symbol=symbol, suggestion=looks_like,
        )
    raise ConfigError(
        f"invalid symbol {symbol!r}: it holds the non-ASCII character {described}; use ASCII "
        f"letters, digits and . - _ ^ = / : & (e.g. 'AAPL', 'BRK.B', '^GSPC')",
        field="symbols", symbol=symbol,
    )


def symbol_list(symbols: str | list[str] | tuple[str, ...]) -> list[str]:
    """One symbol or a list of them, canonical, in order, without duplicates."""
    items = [symbols] if isinstance(symbols, str) else list(symbols)
    if not items:
        raise ConfigError("no symbols given; pass a symbol such as 'AAA' or a list of them",
                          field="symbols")
    out: list[str] = []
    for item in items:
        name = canonical_symbol(item)
        if name in out:
            raise ConfigError(f"symbol {name!r} is listed twice; list each symbol once",
                              field="symbols", symbol=name)
        out.append(name)
    return out


def infer_interval(index: pd.DatetimeIndex) -> str:
    """A bar interval label (``1d``, ``1h``, ``1min`` ...) from the median spacing of ``index``."""
    if len(index) < 2:
        return "1d"
    # asi8 counts in the index's own unit (pandas 3 defaults to microseconds, not ns)
    values = index.asi8
    if len(values) > 20_001:  # the median spacing of a sample says the same, much faster
        values = values[:20_001]
    per_ns = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[index.unit]
    step = pd.Timedelta(int(np.median(np.diff(values))) * per_ns, unit="ns")
    if step >= pd.Timedelta(days=20):
        return "1mo"
    if step >= pd.Timedelta(days=5):
        return "1w"
    if step >= pd.Timedelta(hours=20):
        return "1d"
    minutes = max(1, round(step / pd.Timedelta(minutes=1)))
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}min"


def from_frame(df: pd.DataFrame, symbol: str = "data", interval: str | None = None) -> Bars:
    return from_frames({symbol: df}, interval=interval)


def _fast_bars(df: object, symbol: str, interval: str | None) -> Bars | None:
    """NumPy-only path for the common case (float columns, a clean index, valid prices): a
    backtest on a small frame must not spend milliseconds in pandas. Anything unusual returns
    None and goes through :func:`normalize_ohlcv`, which explains the problem."""
    if not isinstance(df, pd.DataFrame) or not isinstance(df.index, pd.DatetimeIndex):
        return None
    index = df.index
    if len(index) == 0 or index.hasnans or not index.is_monotonic_increasing \
            or not index.is_unique:
        return None
    position: dict[str, int] = {}
    for i, column in enumerate(df.columns.tolist()):
        key = str(column).lower()
        if key in OHLCV and key not in position:
            position[key] = i
    if any(name not in position for name in PRICE_COLUMNS):
        return None
    try:
        values = df.to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        # a non-numeric column: only the OHLCV ones are converted (a ticker or note column
        # is fine; a bad price column sends the frame to the slow path, which says which)
        used = sorted(position.values())
        try:
            values = df.iloc[:, used].to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            return None
        position = {name: used.index(i) for name, i in position.items()}
    take = [position[name] for name in PRICE_COLUMNS]
    # values.T is usually the frame's own (columns, rows) block: taking rows is a plain copy
    prices = np.ascontiguousarray(values.T[take])
    if not (np.isfinite(prices).all() and (prices > 0).all()
            and (prices[1] >= prices[2]).all()):
        return None
    volume = (np.ascontiguousarray(values.T[position["volume"]][None, :])
              if "volume" in position else np.zeros((1, len(index))))
    return Bars(index, (symbol,), open=prices[0:1], high=prices[1:2], low=prices[2:3],
                close=prices[3:4], volume=volume,
                interval=interval or infer_interval(index))


def from_frames(frames: Mapping[str, pd.DataFrame], interval: str | None = None) -> Bars:
    """Validate and align several symbols' frames on the union of their timestamps."""
    if not frames:
        raise DataError("no symbols given; pass a DataFrame or a dict of symbol -> DataFrame")
    single = len(frames) == 1
    if single:
        sym, df = next(iter(frames.items()))
        fast = _fast_bars(df, str(sym), interval)
        if fast is not None:
            return fast
    parts: dict[str, tuple[pd.DatetimeIndex, dict[str, np.ndarray]]] = {}
    for sym, df in frames.items():
        # the interval is inferred once, below; a single frame's fast path was just tried
        quick = None if single else _fast_bars(df, str(sym), "-")
        if quick is not None:
            parts[str(sym)] = (quick.index, {name: getattr(quick, name)[0] for name in OHLCV})
        else:
            clean = normalize_ohlcv(df, str(sym))
            parts[str(sym)] = (pd.DatetimeIndex(clean.index),
                               {name: clean[name].to_numpy() for name in OHLCV})
    tz = {str(index.tz) for index, _ in parts.values()}
    if len(tz) > 1:
        raise DataError(
            f"symbols mix time zones ({', '.join(sorted(tz))}); convert them to one with "
            f"df.tz_convert(...) or df.tz_localize(None)"
        )
    symbols = tuple(parts)
    indexes = [index for index, _ in parts.values()]
    first = indexes[0]
    if all(index is first or index.equals(first) for index in indexes[1:]):
        # the usual case (one calendar): stack, no alignment needed
        index = first
        arrays = {name: np.ascontiguousarray(np.stack([cols[name] for _, cols in parts.values()]))
                  for name in OHLCV}
    else:
        index = first
        for other in indexes[1:]:
            index = index.union(other)
        arrays = {name: np.full((len(symbols), len(index)), np.nan) for name in OHLCV}
        for i, (own, cols) in enumerate(parts.values()):
            pos = index.get_indexer(own)
            for name in OHLCV:
                arrays[name][i, pos] = cols[name]
    index = pd.DatetimeIndex(index)
    return Bars(index, symbols, open=arrays["open"], high=arrays["high"], low=arrays["low"],
                close=arrays["close"], volume=arrays["volume"],
                interval=interval or infer_interval(index))


def as_bars(data: object, interval: str | None = None) -> Bars:
    """Accept a DataFrame, a dict of symbol -> DataFrame, or ``Bars``."""
    if isinstance(data, Bars):
        return data
    if isinstance(data, pd.DataFrame):
        return from_frame(data, interval=interval)
    if isinstance(data, Mapping):
        return from_frames(data, interval=interval)
    raise DataError(
        f"cannot backtest on {type(data).__name__}; pass a DataFrame of OHLCV bars, a dict of "
        f"symbol -> DataFrame, or symbol names from the data store"
    )
