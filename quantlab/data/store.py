"""The market-data store: one Parquet file per symbol and interval, plus a JSON manifest.

Layout under ``settings.current().data_dir``::

    manifest.json            one entry per (interval, symbol): rows, first/last bar, source ...
    .write.lock              fcntl lock taken by every writer (never by readers)
    bars/<interval>/<SYMBOL>.parquet

Concurrency model (a notebook imports while a worker backtests):

- Every file is written to a temporary file in the same folder, fsynced, then ``os.replace``-d
  over the old one, so a reader opens either the old or the new file, never half of one.
- Writers hold an exclusive ``fcntl.flock`` on ``.write.lock`` for the whole read-modify-write
  of a symbol and the manifest, so two processes extending the same symbol both keep their bars.
- Readers take no lock and open no DuckDB database file: bars are read with pyarrow, and SQL
  (:func:`query`) runs on an in-memory DuckDB connection over the Parquet files.
- The Parquet file is the source of truth for its bars (its schema carries the time zone and
  the key-value metadata the source and flags); the manifest is an index for listing and error
  messages, rebuilt from the files if it is missing or unreadable.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quantlab import settings

# The rules for symbol and interval names live with Bars (pure: config checks names without
# loading the store); the data package keeps importing them from here.
from quantlab.bars import OHLCV
from quantlab.bars import canonical_interval as canonical_interval
from quantlab.bars import canonical_symbol as canonical_symbol
from quantlab.bars import is_intraday as is_intraday
from quantlab.bars import symbol_list as symbol_list
from quantlab.errors import ConfigError, DataError
from quantlab.fileio import atomic_write_bytes

MANIFEST = "manifest.json"
LOCK = ".write.lock"
BARS_DIR = "bars"
META_KEY = b"quantlab"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- records


@dataclass
class Entry:
    """What the manifest knows about one symbol at one interval."""

    symbol: str
    interval: str
    rows: int
    first: str
    last: str
    source: str
    adjusted: bool
    synthetic: bool
    tz: str | None
    written_at: str
    fetched_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.interval}/{self.symbol}"

    @property
    def first_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.first)

    @property
    def last_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.last)


@dataclass(frozen=True)
class WriteSummary:
    """What an import or fetch did to the store."""

    symbol: str
    interval: str
    mode: str
    rows_written: int  # bars in the input
    new_rows: int  # bars whose timestamp was not in the store before
    updated_rows: int  # bars that replaced a stored bar with the same timestamp
    rows: int  # bars stored for the symbol afterwards
    first: pd.Timestamp
    last: pd.Timestamp
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Series:
    """One stored symbol's bars as arrays: ``ts`` is int64 ns (UTC instants if ``tz``)."""

    symbol: str
    interval: str
    ts: np.ndarray
    columns: dict[str, np.ndarray]
    tz: str | None
    meta: dict[str, Any]


# --------------------------------------------------------------------------- files


def _frame_to_table(frame: pd.DataFrame, meta: dict[str, Any]) -> pa.Table:
    index = pd.DatetimeIndex(frame.index)
    tz = str(index.tz) if index.tz is not None else None
    ts_type = pa.timestamp("ns", tz="UTC" if tz else None)
    ts = index.as_unit("ns").asi8  # UTC instants when aware, wall clock when naive
    arrays = [pa.array(ts, type=pa.int64()).cast(ts_type)]
    arrays += [pa.array(frame[name].to_numpy(dtype="float64")) for name in OHLCV]
    schema = pa.schema(
        [pa.field("ts", ts_type, nullable=False)]
        + [pa.field(name, pa.float64(), nullable=False) for name in OHLCV],
        metadata={META_KEY: json.dumps({**meta, "tz": tz}).encode()},
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def _table_meta(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- read cache


class _SeriesCache:
    """An LRU of decoded series, bounded in bytes (``QUANTLAB_DATA_CACHE_MB``, default 512;
    0 turns it off) and in entries.

    An entry keeps its file open. That is what makes the key safe: while the old file is open
    its inode cannot be reused, so after a writer's ``os.replace`` the path has a different
    inode number, whatever the file system's timestamp granularity.
    """

    MAX_ENTRIES = 256  # each entry holds one file descriptor

    def __init__(self) -> None:
        self._items: OrderedDict[Path, tuple[Any, Series, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def limit() -> int:
        # 0 turns the cache off
        return int(settings.env_number("QUANTLAB_DATA_CACHE_MB", 512, minimum=0) * 2**20)

    def get(self, path: Path, st: os.stat_result) -> Series | None:
        with self._lock:
            item = self._items.get(path)
            if item is None:
                return None
            held = os.fstat(item[0].fileno())
            if (held.st_ino, held.st_dev, held.st_size, held.st_mtime_ns) != (
                    st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns):
                return None
            self._items.move_to_end(path)
            return item[1]

    def put(self, path: Path, fh: Any, series: Series) -> bool:
        """Cache ``series`` read from the open file ``fh``; False (caller closes) if refused."""
        size = series.ts.nbytes + sum(a.nbytes for a in series.columns.values())
        limit = self.limit()
        with self._lock:
            self._drop(path)
            if size > limit:
                return False
            self._items[path] = (fh, series, size)
            self._bytes += size
            while self._bytes > limit or len(self._items) > self.MAX_ENTRIES:
                self._drop(next(iter(self._items)))
            return True

    def _drop(self, path: Path) -> None:
        item = self._items.pop(path, None)
        if item is not None:
            self._bytes -= item[2]
            item[0].close()

    def discard(self, path: Path) -> None:
        with self._lock:
            self._drop(path)

    def clear(self) -> None:
        with self._lock:
            for path in list(self._items):
                self._drop(path)


_SERIES_CACHE = _SeriesCache()
_MMAP_FROM = 1 << 20  # bytes: files larger than this are memory-mapped


# --------------------------------------------------------------------------- the store


class Store:
    """The Parquet store under one data folder. Cheap to create; caches the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._manifest_cache: tuple[bytes, dict[str, Entry]] | None = None
        self._cache_lock = threading.Lock()

    # -- paths
    def path(self, symbol: str, interval: str) -> Path:
        # Percent-encode so that 'EUR/USD' or '^GSPC' are plain, portable file names.
        return self.root / BARS_DIR / interval / f"{quote(symbol, safe='.-_=')}.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # -- manifest
    def entries(self) -> dict[str, Entry]:
        """All entries, keyed ``"<interval>/<SYMBOL>"``; parsed again only when they changed.

        The cache is keyed by the file's bytes (reading a few kB costs microseconds), not by
        its mtime, whose granularity can hide two writes in a row.
        """
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return self._rebuild_entries() if (self.root / BARS_DIR).exists() else {}
        with self._cache_lock:
            cached = self._manifest_cache
            if cached is not None and cached[0] == raw:
                return cached[1]
        try:
            payload = json.loads(raw)
            entries = {key: Entry(**value) for key, value in payload["entries"].items()}
        except (ValueError, KeyError, TypeError):
            return self._rebuild_entries()
        with self._cache_lock:
            self._manifest_cache = (raw, entries)
        return entries

    def entry(self, symbol: str, interval: str) -> Entry | None:
        return self.entries().get(f"{interval}/{symbol}")

    def _rebuild_entries(self) -> dict[str, Entry]:
        """The manifest from the Parquet files themselves (lost or corrupt manifest)."""
        entries: dict[str, Entry] = {}
        for path in sorted((self.root / BARS_DIR).glob("*/*.parquet")):
            try:
                table = pq.read_table(path, columns=["ts"])
            except (OSError, pa.ArrowException):
                continue
            meta = _table_meta(table.schema)
            ts = table.column("ts").to_numpy().astype("datetime64[ns]").view("int64")
            if len(ts) == 0:
                continue
            entry = _entry_for(
                symbol=meta.get("symbol") or unquote(path.stem), interval=path.parent.name,
                ts=ts, tz=meta.get("tz"), meta=meta,
            )
            entries[entry.key] = entry
        return entries

    def _write_manifest(self, entries: dict[str, Entry]) -> None:
        payload = {"version": FORMAT_VERSION,
                   "entries": {key: asdict(entries[key]) for key in sorted(entries)}}
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.manifest_path, lambda fh: fh.write(data))

    # -- locking
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's writer lock (blocks while another process or thread writes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- reading
    def read(self, symbol: str, interval: str) -> Series:
        """One symbol's stored bars; :class:`DataError` (with what *is* stored) if absent.

        Decoded series are cached in this process, keyed by the file's inode, mtime and size:
        a writer's ``os.replace`` makes a new inode, so a cached series is never stale.
        """
        path = self.path(symbol, interval)
        try:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                _SERIES_CACHE.discard(path)  # removed, perhaps by another process
                raise
            cached = _SERIES_CACHE.get(path, st)
            if cached is not None:
                return cached
            fh = open(path, "rb")  # noqa: SIM115 -- kept open by the cache (see _SeriesCache)
        except FileNotFoundError:
            raise self.unknown_symbol(symbol, interval) from None
        try:
            # ParquetFile.read skips the dataset layer of read_table: ~3x faster on small files
            # Uncompressed plain pages: a large file is memory-mapped and its columns are views of
            # the page cache (the map keeps the inode alive even after a writer replaces the
            # path); a small one is cheaper to read in one call. One thread: decoding is a copy
            # at most, and thread start-up costs more than it saves on a busy machine.
            if st.st_size > _MMAP_FROM:
                source = pa.py_buffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            else:
                source = pa.py_buffer(fh.read())
            table = pq.ParquetFile(pa.BufferReader(source)).read(use_threads=False)
            series = _series_from_table(symbol, interval, table)
        except BaseException:
            fh.close()
            raise
        if not _SERIES_CACHE.put(path, fh, series):
            fh.close()
        return series

    def read_frame(self, symbol: str, interval: str) -> pd.DataFrame:
        series = self.read(symbol, interval)
        return series_frame(series)

    def unknown_symbol(self, symbol: str, interval: str) -> DataError:
        entries = self.entries()
        other_intervals = sorted(e.interval for e in entries.values() if e.symbol == symbol)
        arg = "" if interval == "1d" else f", interval={interval!r}"
        flag = "" if interval == "1d" else f" --interval {interval}"
        how = (f"import it with ql.data.import_csv({symbol!r}, 'file.csv'{arg}) (or `quantlab "
               f"data import {symbol} file.csv{flag}`), or download it with "
               f"ql.data.fetch({symbol!r}{arg}) (needs ALPHAVANTAGE_API_KEY)")
        if other_intervals:
            return DataError(
                f"{symbol} has no {interval} bars in the data store; it has "
                f"{', '.join(other_intervals)} bars. Load one of those intervals, or {how}",
                symbol=symbol,
            )
        names = sorted({e.symbol for e in entries.values() if e.interval == interval})
        if not names:
            held = ("the data store is empty" if not entries else
                    f"the data store holds no {interval} bars at all")
            return DataError(
                f"unknown symbol {symbol!r}: {held}. To add it, {how}; or run ql.data.sample() "
                f"(`quantlab data sample`) for the synthetic demo symbols AAA..JJJ",
                symbol=symbol,
            )
        near = difflib.get_close_matches(symbol, names, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        shown = ", ".join(names[:30]) + (f" ... ({len(names)} in all)" if len(names) > 30 else "")
        return DataError(
            f"unknown symbol {symbol!r}: it is not in the data store.{hint} {interval} symbols "
            f"stored: {shown}. To add it, {how}", symbol=symbol,
            suggestion=near[0] if near else None,
        )

    # -- writing
    def write(
        self,
        symbol: str,
        interval: str,
        frame: pd.DataFrame,
        *,
        mode: str = "replace",
        source: str,
        adjusted: bool,
        synthetic: bool = False,
        fetched_at: pd.Timestamp | None = None,
        extra: dict[str, Any] | None = None,
    ) -> WriteSummary:
        """Store validated bars (see :mod:`quantlab.data.importers`), atomically, under the lock.

        ``mode="replace"`` swaps the symbol's bars for ``frame``; ``mode="extend"`` merges them
        with what is stored, the new bar winning where both have the same timestamp.
        """
        if mode not in ("replace", "extend"):
            raise ConfigError(f"unknown mode {mode!r}; use mode='replace' or mode='extend'",
                              field="mode")
        with self.writing():
            entries = dict(self.entries())
            old = self.entry(symbol, interval)
            n_input = new_rows = len(frame)
            updated = 0
            if mode == "extend" and old is not None and self.path(symbol, interval).exists():
                frame, new_rows, updated = self._merge(symbol, interval, old, frame, adjusted)
            meta = {"symbol": symbol, "interval": interval, "source": source,
                    "adjusted": bool(adjusted), "synthetic": bool(synthetic),
                    "format": FORMAT_VERSION, **(extra or {})}
            table = _frame_to_table(frame, meta)
            atomic_write_bytes(
                self.path(symbol, interval),
                # uncompressed: prices barely compress, and plain pages are read without a copy
                lambda fh: pq.write_table(table, fh, compression="none", use_dictionary=False,
                                          row_group_size=1 << 22),
            )
            index = pd.DatetimeIndex(frame.index)
            ts = index.as_unit("ns").asi8
            tz = str(index.tz) if index.tz is not None else None
            entry = _entry_for(symbol, interval, ts, tz, meta)
            # when a provider was last asked (kept by an extend, so an import does not reset it)
            entry.fetched_at = (fetched_at.isoformat() if fetched_at is not None
                                else (old.fetched_at if old and mode == "extend" else None))
            entries[entry.key] = entry
            self._write_manifest(entries)
        return WriteSummary(symbol, interval, mode, n_input, new_rows, updated, entry.rows,
                            entry.first_ts, entry.last_ts, source)

    def _merge(self, symbol: str, interval: str, old: Entry, frame: pd.DataFrame,
               adjusted: bool) -> tuple[pd.DataFrame, int, int]:
        if old.adjusted != bool(adjusted):
            raise DataError(
                f"{symbol} {interval} holds {'adjusted' if old.adjusted else 'unadjusted'} "
                f"prices and the new bars are {'adjusted' if adjusted else 'unadjusted'}; mixing "
                f"them would fake a jump. Use mode='replace', or import with "
                f"adjusted={old.adjusted}", symbol=symbol,
            )
        stored = self.read_frame(symbol, interval)
        stored_tz = pd.DatetimeIndex(stored.index).tz
        new_tz = pd.DatetimeIndex(frame.index).tz
        if (stored_tz is None) != (new_tz is None):
            fix = (f"pass timezone={old.tz!r} to the import" if old.tz else
                   "drop the time zone of the new bars (df.tz_localize(None))")
            raise DataError(
                f"{symbol} {interval} is stored with time zone {old.tz or 'none (naive)'} and "
                f"the new bars have {new_tz or 'none (naive)'}; {fix}, or use mode='replace'",
                symbol=symbol,
            )
        if new_tz is not None and stored_tz is not None:
            frame = frame.tz_convert(stored_tz)
        overlap = stored.index.isin(frame.index)
        updated = int(overlap.sum())
        merged = pd.concat([stored[~overlap], frame]).sort_index()
        return merged, len(frame) - updated, updated

    def remove(self, symbol: str, interval: str | None = None) -> list[str]:
        """Delete a symbol's bars (one interval, or all); returns the intervals removed."""
        with self.writing():
            entries = dict(self.entries())
            targets = [e for e in entries.values() if e.symbol == symbol
                       and (interval is None or e.interval == interval)]
            if not targets:
                raise self.unknown_symbol(symbol, interval or "1d") if interval else DataError(
                    f"cannot remove {symbol!r}: it is not in the data store "
                    f"(see ql.data.symbols() or `quantlab data list`)", symbol=symbol,
                )
            for entry in targets:
                path = self.path(entry.symbol, entry.interval)
                _SERIES_CACHE.discard(path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                del entries[entry.key]
            self._write_manifest(entries)
        return sorted(e.interval for e in targets)

    def mark_fetched(self, symbol: str, interval: str, at: pd.Timestamp) -> None:
        """Record that a provider was asked now (so an up-to-date symbol is not asked again)."""
        with self.writing():
            entries = dict(self.entries())
            entry = entries.get(f"{interval}/{symbol}")
            if entry is None:
                return
            entries[entry.key] = Entry(**{**asdict(entry), "fetched_at": at.isoformat()})
            self._write_manifest(entries)


def _entry_for(symbol: str, interval: str, ts: np.ndarray, tz: str | None,
               meta: dict[str, Any]) -> Entry:
    first, last = (pd.Timestamp(int(ts[0]), unit="ns"), pd.Timestamp(int(ts[-1]), unit="ns"))
    if tz:
        first, last = (t.tz_localize("UTC").tz_convert(tz) for t in (first, last))
    known = {"symbol", "interval", "source", "adjusted", "synthetic", "tz", "format"}
    return Entry(
        symbol=symbol, interval=interval, rows=len(ts), first=first.isoformat(),
        last=last.isoformat(), source=str(meta.get("source", "unknown")),
        adjusted=bool(meta.get("adjusted", False)), synthetic=bool(meta.get("synthetic", False)),
        tz=tz, written_at=pd.Timestamp.now("UTC").isoformat(),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def _series_from_table(symbol: str, interval: str, table: pa.Table) -> Series:
    ts_col = table.column("ts")
    ts_type = ts_col.type
    if ts_type.tz is not None:
        ts_col = ts_col.cast(pa.timestamp("ns"))
    ts = ts_col.to_numpy().view("int64")
    meta = _table_meta(table.schema)
    columns = {name: table.column(name).to_numpy() for name in OHLCV}
    for array in (ts, *columns.values()):
        array.flags.writeable = False  # shared through the cache: nobody may edit it
    return Series(symbol, interval, ts, columns, meta.get("tz"), meta)


def series_frame(series: Series) -> pd.DataFrame:
    """A stored series as an OHLCV DataFrame with a DatetimeIndex (in its time zone)."""
    index = pd.DatetimeIndex(series.ts.view("datetime64[ns]"))
    if series.tz:
        index = index.tz_localize("UTC").tz_convert(series.tz)
    return pd.DataFrame({name: np.array(series.columns[name]) for name in OHLCV}, index=index)


_STORES: dict[Path, Store] = {}
_STORES_LOCK = threading.Lock()


def current_store() -> Store:
    """The store of the current settings (one object per data folder, so caches are shared)."""
    root = settings.current().data_dir
    with _STORES_LOCK:
        store = _STORES.get(root)
        if store is None:
            store = _STORES[root] = Store(root)
        return store
