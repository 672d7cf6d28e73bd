"""Market-data providers: a small base class, a registry, and ``fetch`` into the store.

A provider answers one question: "the bars of this symbol at this interval, given that the store
already has bars up to ``known.last``". It decides how much to ask for (a provider with a cheap
"recent bars" request uses it when the gap is small) and says whether its answer is the complete
history (the store replaces) or recent bars only (the store extends, new bars winning).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from quantlab.bars import normalize_ohlcv
from quantlab.data.ratelimit import Clock, Sleep
from quantlab.data.store import (
    Entry,
    Store,
    canonical_interval,
    current_store,
    is_intraday,
    symbol_list,
)
from quantlab.errors import ConfigError, DataError

EXCHANGE_TZ = "America/New_York"


@dataclass(frozen=True)
class Known:
    """The store's last bar of a symbol, so a provider can ask only for what is missing."""

    last: pd.Timestamp
    last_close: float
    adjusted: bool
    rows: int


@dataclass(frozen=True)
class History:
    """A provider's answer: OHLCV bars (DatetimeIndex, ascending)."""

    frame: pd.DataFrame
    adjusted: bool
    complete: bool  # the whole history the provider has: the store replaces, else extends
    note: str = ""


class Provider(ABC):
    """Base of market-data providers. Subclasses set ``name`` and ``intervals``."""

    name: ClassVar[str] = ""
    intervals: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, clock: Clock = time.time, sleep: Sleep = time.sleep) -> None:
        self.clock = clock
        self.sleep = sleep

    @abstractmethod
    def history(self, symbol: str, interval: str, known: Known | None) -> History:
        """The bars of ``symbol`` at ``interval`` (a canonical label from ``intervals``)."""

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self.clock(), unit="s", tz="UTC")

    def up_to_date(self, entry: Entry, interval: str) -> bool:
        """Whether the last fetch already saw every bar the provider can have by now.

        Daily bars are final after the 16:00 New York close; intraday bars (with extended
        hours) after 20:00. During a session an intraday series is current for one interval.
        """
        if not entry.fetched_at:
            return False
        fetched = pd.Timestamp(entry.fetched_at)
        now = self.now()
        intraday = is_intraday(interval)
        if intraday and _in_session(now):
            return now - fetched < pd.Timedelta(interval.replace("min", "m"))
        return fetched >= last_session_end(now, intraday)


def _in_session(now: pd.Timestamp) -> bool:
    local = now.tz_convert(EXCHANGE_TZ)
    return local.weekday() < 5 and 4 <= local.hour < 20


def last_session_end(now: pd.Timestamp, intraday: bool) -> pd.Timestamp:
    """The most recent weekday 16:00 (20:00 for intraday) New York time at or before ``now``."""
    local = now.tz_convert(EXCHANGE_TZ)
    end = local.normalize() + pd.Timedelta(hours=20 if intraday else 16)
    while end > local or end.weekday() >= 5:
        end = (end - pd.Timedelta(days=1)).normalize() + pd.Timedelta(hours=20 if intraday
                                                                      else 16)
    return end.tz_convert("UTC")


_PROVIDERS: dict[str, type[Provider]] = {}
# built-in providers register themselves when their module is imported, on first use
_BUILTIN = {"alphavantage": "quantlab.data.alphavantage"}


def _load_builtins() -> None:
    import importlib

    for name, module in _BUILTIN.items():
        if name not in _PROVIDERS:
            importlib.import_module(module)


def register_provider(name: str, cls: type[Provider]) -> None:
    """Make ``fetch(..., provider=name)`` use ``cls`` (a :class:`Provider` subclass)."""
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(
            f"register_provider({name!r}, ...) needs a subclass of quantlab.data.Provider, got "
            f"{cls!r}", field="provider",
        )
    _PROVIDERS[name.strip().lower()] = cls


def providers() -> list[str]:
    """The registered provider names."""
    _load_builtins()
    return sorted(_PROVIDERS)


def get_provider(name: str | Provider, **options: Any) -> Provider:
    if isinstance(name, Provider):
        return name
    key = str(name).strip().lower()
    _load_builtins()
    if key not in _PROVIDERS:
        raise ConfigError(
            f"unknown data provider {name!r}; registered providers: "
            f"{', '.join(providers()) or 'none'} (add one with "
            f"ql.data.register_provider(name, cls))", field="provider",
        )
    return _PROVIDERS[key](**options)


def _known(store: Store, entry: Entry) -> Known:
    series = store.read(entry.symbol, entry.interval)
    return Known(last=entry.last_ts, last_close=float(series.columns["close"][-1]),
                 adjusted=entry.adjusted, rows=entry.rows)


def fetch(symbols: str | list[str] | tuple[str, ...], provider: str | Provider = "alphavantage",
          interval: str = "1d", *, force: bool = False, **options: Any) -> pd.DataFrame:
    """Download bars into the store, asking only for what is missing.

    A symbol fetched since the last session ended is skipped (``force=True`` re-downloads its
    whole history and replaces what is stored, whatever its source). ``options`` go to the
    provider (for Alpha Vantage: ``api_key``, ``base_url``, ``calls_per_minute``,
    ``calls_per_day``, ``adjusted`` ...). Returns one row per symbol: what was done.
    """
    names = symbol_list(symbols)
    iv = canonical_interval(interval)
    prov = get_provider(provider, **options)
    if iv not in prov.intervals:
        raise ConfigError(
            f"{prov.name} does not serve interval {interval!r}; use one of "
            f"{', '.join(prov.intervals)}", field="interval",
        )
    store = current_store()
    rows = []
    for name in names:
        rows.append(_fetch_one(store, prov, name, iv, force))
    return pd.DataFrame(rows, columns=["symbol", "interval", "status", "new_rows", "rows",
                                       "first", "last", "adjusted", "note"])


def _fetch_one(store: Store, prov: Provider, name: str, iv: str, force: bool) -> dict[str, Any]:
    entry = store.entry(name, iv)
    ours = entry is not None and entry.source == prov.name
    if entry is not None and ours and not force and prov.up_to_date(entry, iv):
        return {"symbol": name, "interval": iv, "status": "up to date", "new_rows": 0,
                "rows": entry.rows, "first": entry.first_ts, "last": entry.last_ts,
                "adjusted": entry.adjusted, "note": ""}
    if entry is not None and not ours and not force:
        # Refuse before spending a request of the day's quota.
        assert entry is not None
        raise DataError(
            f"{name} {iv} holds bars from {entry.source!r}, not from {prov.name}; remove them "
            f"first (ql.data.remove({name!r}, {iv!r})) or pass force=True to replace them "
            f"with {prov.name}'s", symbol=name,
        )
    known = _known(store, entry) if entry is not None and ours and not force else None
    asked = prov.now()  # before the request: a bar finished during it is fetched next time
    hist = prov.history(name, iv, known)
    if known is not None and len(hist.frame) == 0:
        store.mark_fetched(name, iv, asked)
        return {"symbol": name, "interval": iv, "status": "no new bars", "new_rows": 0,
                "rows": known.rows, "first": entry.first_ts if entry else None,
                "last": known.last, "adjusted": known.adjusted, "note": hist.note}
    frame = normalize_ohlcv(hist.frame, name)
    summary = store.write(name, iv, frame, mode="replace" if hist.complete else "extend",
                          source=prov.name, adjusted=hist.adjusted, fetched_at=asked)
    return {"symbol": name, "interval": iv,
            "status": "downloaded" if hist.complete else "updated",
            "new_rows": summary.new_rows if known is not None else summary.rows,
            "rows": summary.rows, "first": summary.first, "last": summary.last,
            "adjusted": hist.adjusted, "note": hist.note}
