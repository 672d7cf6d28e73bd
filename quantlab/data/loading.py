"""Reading the store: ``load`` into aligned :class:`~quantlab.bars.Bars`, ``fingerprint``,
``symbols`` and ``query``.

Alignment is done on int64 nanosecond arrays with numpy (union of timestamps, then
``searchsorted`` per symbol) rather than with a pandas reindex per symbol: it is what keeps
10 symbols x 10 years of daily bars in a few milliseconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from quantlab.bars import FIRST_DATE, LAST_DATE, OHLCV, Bars, date_in_range
from quantlab.data.store import (
    Series,
    canonical_interval,
    current_store,
    is_intraday,
    symbol_list,
)
from quantlab.errors import ConfigError, DataError

SymbolsArg = str | list[str] | tuple[str, ...]
TimeArg = str | dt.date | dt.datetime | pd.Timestamp | None


def _parse_time(value: TimeArg, name: str) -> tuple[pd.Timestamp, bool] | None:
    """A bound as a Timestamp, and whether it named a whole day (a date without a time)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{name}={value!r} is not a date; write it as 'YYYY-MM-DD' (e.g. {name}='2020-01-31') "
            f"or 'YYYY-MM-DD HH:MM'", field=name,
        ) from None
    if pd.isna(ts):
        raise ConfigError(f"{name}={value!r} is not a date; write it as 'YYYY-MM-DD'", field=name)
    if not date_in_range(ts.year):
        raise ConfigError(
            f"{name}={value!r} is outside the dates bars can carry ({FIRST_DATE} to {LAST_DATE}); "
            f"leave {name} out to use all the data", field=name)
    whole_day = (isinstance(value, dt.date) and not isinstance(value, dt.datetime)) or (
        isinstance(value, str) and ":" not in value and ts == ts.normalize()
    )
    return ts, whole_day


def _bound_ns(ts: pd.Timestamp, tz: str | None) -> int:
    if tz is None:
        naive = ts.tz_localize(None) if ts.tz is not None else ts
        return int(naive.as_unit("ns").value)
    aware = ts.tz_localize(tz) if ts.tz is None else ts
    return int(aware.as_unit("ns").value)


def _range_ns(start: TimeArg, end: TimeArg, tz: str | None) -> tuple[int | None, int | None]:
    """``[lo, hi)`` in the series' own clock; a date-only ``end`` includes that whole day."""
    lo = hi = None
    parsed_start, parsed_end = _parse_time(start, "start"), _parse_time(end, "end")
    if parsed_start is not None:
        lo = _bound_ns(parsed_start[0], tz)
    if parsed_end is not None:
        ts, whole_day = parsed_end
        hi = _bound_ns(ts + pd.Timedelta(days=1) if whole_day else ts, tz) + (0 if whole_day
                                                                            else 1)
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(
            f"start={start!r} is not before end={end!r}; pass a start date earlier than the end "
            f"date", field="start",
        )
    return lo, hi


def _span(series: Series) -> str:
    def fmt(ns: int) -> str:
        ts = pd.Timestamp(ns, unit="ns")
        if series.tz:
            ts = ts.tz_localize("UTC").tz_convert(series.tz)
        return str(ts.date()) if ts == ts.normalize() else str(ts)
    return f"{fmt(int(series.ts[0]))} to {fmt(int(series.ts[-1]))}"


def _window(series: Series, start: TimeArg, end: TimeArg) -> tuple[int, int]:
    lo, hi = _range_ns(start, end, series.tz)
    i0 = 0 if lo is None else int(np.searchsorted(series.ts, lo, side="left"))
    i1 = len(series.ts) if hi is None else int(np.searchsorted(series.ts, hi, side="left"))
    if i1 <= i0:
        raise DataError(
            f"{series.symbol} has no {series.interval} bars between "
            f"{start if start is not None else 'its start'} and "
            f"{end if end is not None else 'its end'}; its bars run from {_span(series)}. "
            f"Choose start/end inside that range", symbol=series.symbol,
        )
    return i0, i1


def _output_tz(series: list[Series]) -> str | None:
    zones = {s.tz for s in series}
    if len(zones) == 1:
        return zones.pop()
    if None in zones:
        naive = [s.symbol for s in series if s.tz is None]
        aware = [f"{s.symbol} ({s.tz})" for s in series if s.tz is not None]
        raise DataError(
            f"cannot align symbols without a time zone ({', '.join(naive)}) with symbols that "
            f"have one ({', '.join(aware)}); re-import one group with timezone=... so they agree",
            symbol=naive[0],
        )
    return "UTC"  # different zones: instants are comparable, shown in UTC


def load(symbols: SymbolsArg, start: TimeArg = None, end: TimeArg = None,
         interval: str | None = "1d") -> Bars:
    """Stored bars of ``symbols`` between ``start`` and ``end`` (inclusive), aligned.

    The index is the union of the symbols' timestamps; where a symbol has no bar its prices are
    NaN (it is not tradable then; nothing is forward-filled). A date-only ``end`` includes that
    whole day; ``interval=None`` means ``"1d"``. Raises :class:`DataError` naming an unknown
    symbol (with the nearest stored name) or a range without bars (with its first and last bar).
    """
    names = symbol_list(symbols)
    iv = canonical_interval(interval or "1d")
    store = current_store()
    series = [store.read(name, iv) for name in names]
    tz = _output_tz(series)
    windows = [_window(s, start, end) for s in series]
    stamps = [s.ts[i0:i1] for s, (i0, i1) in zip(series, windows)]
    if len(series) == 1 or all(np.array_equal(stamps[0], other) for other in stamps[1:]):
        index_ns = stamps[0]
        arrays = {name: np.ascontiguousarray(np.stack(
            [s.columns[name][i0:i1] for s, (i0, i1) in zip(series, windows)]))
            for name in OHLCV}
    else:
        merged = np.sort(np.concatenate(stamps))
        index_ns = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
        arrays = {name: np.full((len(series), len(index_ns)), np.nan) for name in OHLCV}
        for row, (s, (i0, i1), ts) in enumerate(zip(series, windows, stamps)):
            pos = np.searchsorted(index_ns, ts)
            for name in OHLCV:
                arrays[name][row, pos] = s.columns[name][i0:i1]
    index = pd.DatetimeIndex(np.asarray(index_ns).view("datetime64[ns]"))
    if tz is not None:
        index = index.tz_localize("UTC").tz_convert(tz)
    meta: dict[str, object] = {
        "source": {s.symbol: s.meta.get("source") for s in series},
        "adjusted": {s.symbol: bool(s.meta.get("adjusted")) for s in series},
        "synthetic": {s.symbol: bool(s.meta.get("synthetic")) for s in series},
        "store": str(store.root),
    }
    return Bars(index, tuple(names), interval=iv, meta=meta, **arrays)


def check(symbols: SymbolsArg, start: TimeArg = None, end: TimeArg = None,
          interval: str | None = "1d") -> list[str]:
    """Raise what :func:`load` would for unknown symbols or a range outside their bars, from the
    manifest alone (no bars are read: cheap enough to validate a config in the kernel).

    Returns the canonical symbol names.
    """
    names = symbol_list(symbols)
    iv = canonical_interval(interval or "1d")
    store = current_store()
    for name in names:
        entry = store.entry(name, iv)
        if entry is None:
            raise store.unknown_symbol(name, iv)
        tz = entry.tz
        lo, hi = _range_ns(start, end, tz)
        first = _bound_ns(entry.first_ts, tz)
        last = _bound_ns(entry.last_ts, tz)
        if (lo is not None and lo > last) or (hi is not None and hi <= first):
            span = f"{entry.first_ts} to {entry.last_ts}" if is_intraday(iv) else (
                f"{entry.first_ts.date()} to {entry.last_ts.date()}")
            raise DataError(
                f"{name} has no {iv} bars between {start if start is not None else 'its start'} "
                f"and {end if end is not None else 'its end'}; its bars run from {span}. "
                f"Choose start/end inside that range", symbol=name,
            )
    return names


def bar_counts(symbols: SymbolsArg, start: TimeArg = None, end: TimeArg = None,
               interval: str | None = "1d") -> dict[str, int]:
    """How many bars each symbol has between ``start`` and ``end`` (as :func:`load` selects
    them; 0 for a range without bars, which :func:`load` refuses). Without a range the manifest
    answers; with one, the symbol's timestamps are read (the store's cache keeps them)."""
    names = symbol_list(symbols)
    iv = canonical_interval(interval or "1d")
    store = current_store()
    counts: dict[str, int] = {}
    for name in names:
        entry = store.entry(name, iv)
        if entry is None:
            raise store.unknown_symbol(name, iv)
        if start is None and end is None:
            counts[name] = int(entry.rows)
            continue
        series = store.read(name, iv)
        lo, hi = _range_ns(start, end, series.tz)
        i0 = 0 if lo is None else int(np.searchsorted(series.ts, lo, side="left"))
        i1 = len(series.ts) if hi is None else int(np.searchsorted(series.ts, hi, side="left"))
        counts[name] = max(0, i1 - i0)
    return counts


def fingerprint_bars(bars: Bars) -> str:
    """SHA-256 of exactly these bars: symbols, interval, timestamps and every OHLCV value."""
    digest = hashlib.sha256()
    header = {"v": 1, "symbols": list(bars.symbols), "interval": bars.interval,
              "tz": str(bars.index.tz) if bars.index.tz is not None else None}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(bars.index.as_unit("ns").asi8).tobytes())
    for name in OHLCV:
        values = np.ascontiguousarray(getattr(bars, name), dtype="float64")
        # One bit pattern for every NaN, so "no bar" hashes the same however it was made.
        digest.update(np.where(np.isnan(values), np.nan, values).tobytes())
    return digest.hexdigest()


def fingerprint(symbols: SymbolsArg, start: TimeArg = None, end: TimeArg = None,
                interval: str | None = "1d") -> str:
    """A hash of the bars a run over these symbols and dates would use.

    It changes when any of those bars changes (or a bar appears or disappears inside the range)
    and not when bars outside the range change.
    """
    return fingerprint_bars(load(symbols, start, end, interval))


def symbols() -> pd.DataFrame:
    """What the store holds: one row per symbol and interval."""
    columns = ["name", "interval", "first", "last", "rows", "source", "adjusted", "synthetic",
               "tz", "fetched_at"]
    entries = sorted(current_store().entries().values(), key=lambda e: (e.symbol, e.interval))
    rows = [
        {"name": e.symbol, "interval": e.interval, "first": e.first_ts, "last": e.last_ts,
         "rows": e.rows, "source": e.source, "adjusted": e.adjusted, "synthetic": e.synthetic,
         "tz": e.tz, "fetched_at": pd.Timestamp(e.fetched_at) if e.fetched_at else None}
        for e in entries
    ]
    return pd.DataFrame(rows, columns=columns)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def query(sql: str) -> pd.DataFrame:
    """Run DuckDB SQL over the store; the view ``bars`` has columns
    ``symbol, interval, ts, open, high, low, close, volume`` (``ts`` in UTC for zoned data).

    The connection is in-memory and read-only over the Parquet files, so it never blocks a
    writer: ``ql.data.query("select symbol, max(close) from bars group by symbol")``.
    """
    import duckdb

    store = current_store()
    parts = [
        f"SELECT {_sql_literal(e.symbol)} AS symbol, {_sql_literal(e.interval)} AS interval, "
        f"ts::TIMESTAMP AS ts, open, high, low, close, volume "
        f"FROM read_parquet({_sql_literal(str(store.path(e.symbol, e.interval)))})"
        for e in store.entries().values()
    ]
    body = " UNION ALL ".join(parts) if parts else (
        "SELECT NULL::VARCHAR AS symbol, NULL::VARCHAR AS interval, NULL::TIMESTAMP AS ts, "
        + ", ".join(f"NULL::DOUBLE AS {c}" for c in OHLCV) + " WHERE false"
    )
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone='UTC'")
        con.execute(f"CREATE VIEW bars AS {body}")
        try:
            result: Any = con.execute(sql).df()
        except duckdb.Error as exc:
            raise ConfigError(f"the SQL query failed: {exc}", field="sql") from None
        return pd.DataFrame(result)
    finally:
        con.close()
