"""Market data: a Parquet + DuckDB store, CSV/DataFrame import, providers, sample data.

>>> import quantlab as ql
>>> ql.data.sample()                                   # synthetic AAA..JJJ, offline
>>> bars = ql.data.load(["AAA", "BBB"], start="2020-01-01", end="2020-12-31")
>>> ql.data.import_csv("ACME", "acme.csv", date_format="%d/%m/%Y")
>>> ql.data.fetch("IBM")                               # Alpha Vantage, ALPHAVANTAGE_API_KEY
>>> ql.data.symbols()                                  # what the store holds

See docs/data.md for the layout, the options and the guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantlab.data.importers import import_csv, import_frame
from quantlab.data.loading import (
    bar_counts,
    check,
    fingerprint,
    fingerprint_bars,
    load,
    query,
    symbols,
)
from quantlab.data.providers import (
    History,
    Known,
    Provider,
    fetch,
    get_provider,
    providers,
    register_provider,
)
from quantlab.data.ratelimit import RateLimiter
from quantlab.data.samples import sample
from quantlab.data.store import WriteSummary, canonical_interval, canonical_symbol, current_store

__all__ = [
    "AlphaVantage",
    "History",
    "Known",
    "Provider",
    "RateLimiter",
    "WriteSummary",
    "bar_counts",
    "canonical_interval",
    "check",
    "current_store",
    "fetch",
    "fingerprint",
    "fingerprint_bars",
    "get_provider",
    "import_csv",
    "import_frame",
    "load",
    "providers",
    "query",
    "register_provider",
    "remove",
    "sample",
    "symbols",
]

if TYPE_CHECKING:
    from quantlab.data.alphavantage import AlphaVantage


def __getattr__(name: str) -> Any:
    # Imported on first use: it pulls in requests, which loading bars never needs.
    if name == "AlphaVantage":
        from quantlab.data.alphavantage import AlphaVantage

        return AlphaVantage
    raise AttributeError(f"module 'quantlab.data' has no attribute {name!r}")


def remove(symbol: str, interval: str | None = None) -> list[str]:
    """Delete ``symbol``'s bars at ``interval`` (or at every interval); returns the intervals
    removed. An unknown symbol raises :class:`~quantlab.errors.DataError`."""
    iv = canonical_interval(interval) if interval is not None else None
    return current_store().remove(canonical_symbol(symbol), iv)
