"""``ql.backtest``: run a strategy (or a parameter sweep) over data, to the end."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Unpack

import pandas as pd

from quantlab.bars import Bars, as_bars
from quantlab.engine.options import OPTION_NAMES, BacktestOptions, reject_unknown
from quantlab.engine.result import Result
from quantlab.engine.simulation import Simulation
from quantlab.errors import ConfigError


def backtest(
    data: Any,
    strategy: str = "sma_crossover",
    params: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    *,
    start: Any = None,
    end: Any = None,
    interval: str | None = None,
    **options: Unpack[BacktestOptions],
) -> Result:
    """Backtest ``strategy`` with ``params`` on ``data`` and return a :class:`Result`.

    ``data``: a DataFrame of OHLCV bars (DatetimeIndex), a dict of symbol -> DataFrame, a
    ``Bars``, or symbol name(s) from the data store. ``start``/``end`` slice it by date
    (inclusive). A param given as a list/range (or params as a list of dicts) runs a sweep.
    Options (their types, defaults and units: :class:`quantlab.engine.options.EngineOptions`,
    docs/engine.md): ``cash=10_000, commission=0.0, commission_fixed=0.0, slippage=0.0`` (bps),
    ``fill="next_open"|"close"``, ``units="whole"|"fractional"``, ``allow_short=False,
    size=1.0, weights=None, stop_loss=None, take_profit=None, close_at_end=False,
    select="sharpe", threads=None``.
    """
    reject_unknown(options, _KEYWORDS)  # before any data is loaded
    bars = load_bars(data, start=start, end=end, interval=interval)
    sim = Simulation(bars, strategy, params, **options)
    sim.prepare()
    sim.run(sim.total_units)
    # the bars stay with the result: its figure's price panel, a sweep's combinations
    return sim.result().attach_bars(bars)


# what backtest takes by name: the engine options and the date range
_KEYWORDS = frozenset((*OPTION_NAMES, "start", "end", "interval"))


def load_bars(data: Any, *, start: Any = None, end: Any = None, interval: str | None = None
              ) -> Bars:
    """``Bars`` from any accepted ``data`` (symbols are loaded from the store), sliced to
    ``start..end`` (inclusive); ConfigError for an empty range."""
    if isinstance(data, str) or (isinstance(data, list | tuple) and data
                                 and all(isinstance(s, str) for s in data)):
        # the store (pyarrow, DuckDB: ~0.3 s to import) only when data is named by symbol: a
        # backtest on DataFrames never pays for it
        from quantlab.data import load

        return load(data, start=start, end=end, interval=interval)  # sliced by the store
    bars = as_bars(data, interval=interval)
    if start is not None or end is not None:
        bars = slice_dates(bars, start, end)
    return bars


def slice_dates(bars: Bars, start: Any, end: Any) -> Bars:
    index = bars.index
    try:
        lo = 0 if start is None else int(index.searchsorted(_stamp(start, index), "left"))
        if end is None:
            hi = len(index)
        elif _date_only(end):  # a day includes all of its intraday bars
            hi = int(index.searchsorted(_stamp(end, index) + pd.Timedelta(days=1), "left"))
        else:
            hi = int(index.searchsorted(_stamp(end, index), "right"))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"start/end must be dates like '2020-01-31' ({exc})",
                          field="start") from None
    if start is not None and end is not None and _stamp(start, index) > _stamp(end, index):
        raise ConfigError(f"start ({start}) is after end ({end}); swap them", field="start")
    if hi <= lo:
        raise ConfigError(
            f"no bars between start={start} and end={end}: the data covers "
            f"{index[0].date() if len(index) else '-'} to "
            f"{index[-1].date() if len(index) else '-'}; widen the range", field="start")
    return bars.slice(lo, hi)


def _date_only(value: Any) -> bool:
    if isinstance(value, str):
        return len(value.strip()) <= 10
    return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)


def _stamp(value: Any, index: pd.DatetimeIndex) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if index.tz is not None and ts.tz is None:
        ts = ts.tz_localize(index.tz)
    elif index.tz is None and ts.tz is not None:
        ts = ts.tz_convert(None)
    return ts


__all__ = ["Result", "backtest", "load_bars"]
