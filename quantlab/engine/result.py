"""``Result``: what a backtest returns, with pandas objects built lazily on first access.

A backtest's raw output is a handful of NumPy arrays (equity per bar, the closed-trade log, the
open positions); turning them into pandas objects costs more than the simulation itself, so it
happens only when ``res.equity`` / ``res.trades`` ... are read.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantlab.engine import kernel as K
from quantlab.engine.options import CONFIG_OPTIONS
from quantlab.errors import ConfigError, MissingDependency, QuantlabError, RunError
from quantlab.hooks import RESEARCH

TRADE_COLUMNS = ("symbol", "size", "entry_time", "exit_time", "entry_price", "exit_price",
                 "pnl", "return_pct", "commission", "entry_bar", "exit_bar", "exit_reason")
OPEN_TRADE_COLUMNS = ("symbol", "size", "entry_time", "entry_price", "entry_bar", "last_price",
                      "unrealized_pnl", "return_pct", "commission")
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "end", "ruin")

_BLOB_FRAMES = ("equity", "trades", "open_trades", "table")
ORDER_COLUMNS = ("time", "bar", "symbol", "side", "size", "price", "kind", "reason", "trade")


class ResultViews:
    """What a Result needs from the layers above the engine, filled when the ``quantlab``
    package loads its public API (``quantlab.render.resultviews``): the engine draws nothing
    and loads no data itself."""

    #: ``plot(result, **options)`` -> a plotly Figure
    plot: Callable[..., Any] | None = None
    #: ``page(result)`` -> a self-contained HTML page of the result (plotly.js inline)
    page: Callable[[Any], str] | None = None
    #: ``rerun(result, params)`` -> the Result of one combination on the same data and options
    rerun: Callable[[Any, dict[str, Any]], Any] | None = None
    #: ``load_bars(config)`` -> the run's bars from the data store (None when not there)
    load_bars: Callable[[Mapping[str, Any]], Any] | None = None


VIEWS = ResultViews()


def _view(name: str) -> Callable[..., Any]:
    hook = getattr(VIEWS, name)
    if hook is None:
        raise MissingDependency(
            f"Result.{name} is provided by quantlab's render layer, which is not loaded; "
            "import quantlab.render.resultviews (``import quantlab as ql`` and ql.backtest / "
            "ql.get_run load it)", package="quantlab.render")
    return hook


class Resimulation:
    """How a stored Result re-simulates itself (``break_even_cost``) at another commission.
    Filled by :mod:`quantlab.engine.simulation` when imported (it imports this module, so this
    one cannot import it; importing the engine package imports both)."""

    def __init__(self) -> None:
        self.total_return_at: Any = None


RESIMULATION = Resimulation()

# the largest commission the engine accepts is just below this (validate.check_commission)
_MAX_COMMISSION = 0.5 - 1e-9


class Result:
    """The outcome of a backtest (or of a sweep's chosen combination).

    ``metrics`` (name -> number, see ``quantlab.metrics``), ``params``, ``equity`` (Series),
    ``drawdown`` (Series, percent, <= 0), ``trades`` (closed trades), ``open_trades``,
    ``table`` (one row per sweep combination, else None), ``config`` (effective settings),
    ``partial`` (a cancelled sweep's finished combinations only).
    """

    def __init__(
        self,
        *,
        metrics: Mapping[str, Any],
        params: Mapping[str, Any],
        config: Mapping[str, Any],
        index: pd.DatetimeIndex | None = None,
        symbols: tuple[str, ...] = (),
        equity: np.ndarray | pd.Series | None = None,
        log: np.ndarray | None = None,
        positions: np.ndarray | None = None,
        table: pd.DataFrame | None = None,
        partial: bool = False,
        trades: pd.DataFrame | None = None,
        open_trades: pd.DataFrame | None = None,
    ) -> None:
        self.metrics = dict(metrics)
        self.params = dict(params)
        self.config = dict(config)
        self.table = table
        self.partial = partial
        self._index = index
        self._symbols = symbols
        self._equity_raw = equity
        self._log = log
        self._positions = positions
        self._equity: pd.Series | None = equity if isinstance(equity, pd.Series) else None
        self._trades = trades
        self._open_trades = open_trades
        # total return (percent) of this run re-simulated at another proportional commission;
        # set by the Simulation that made it (its bars in memory), else rebuilt from the config
        self._total_return_at: Callable[[float], float] | None = None
        self._bars: Any = None  # the data of the run, when kept (ql.backtest keeps it)
        # the Simulation of a sweep run in this process: overfitting() re-simulates with it
        self._source: Any = None
        # a queued sweep's overfitting summary (PBO, DSR of the best, N), stored with it
        self.overfitting_summary: dict[str, Any] | None = None
        # break_even_cost's answer by tolerance (~20 re-simulations each: the results view,
        # its re-renders and the user's own call ask once): the commission, or why there is none
        self._break_even: dict[float, float | str] = {}

    # -- the run's data -------------------------------------------------------------------
    def attach_bars(self, bars: Any) -> Result:
        """Keep the run's ``Bars`` (for the price panel of :meth:`plot` and
        :meth:`combination`); returns self."""
        self._bars = bars
        return self

    @property
    def bars(self) -> Any:
        """The run's bars: those it ran on when kept, else loaded from the data store by the
        config's symbols, dates and interval; None when neither is possible."""
        if self._bars is None and VIEWS.load_bars is not None:
            self._bars = VIEWS.load_bars(self.config)
        return self._bars

    # -- figures and one combination of a sweep -------------------------------------------
    def plot(self, **options: Any) -> Any:
        """A plotly Figure: for a single run, price with trades and indicators, equity
        against buy & hold (log-scale toggle), drawdown and per-trade P&L on one zoomable
        time axis; for a sweep, a heatmap of ``metric`` over parameters ``x`` and ``y``
        (``plot(metric="sharpe", x="fast", y="slow")``; ``kind="result"`` draws the chosen
        combination instead). Options: docs/notebook.md, "Figures"."""
        return _view("plot")(self, **options)

    def to_html(self, path: str | None = None) -> str:
        """The results view as one self-contained HTML page (figures, trades, and for a sweep
        its heatmap whose cells show their combination's equity); written to ``path`` if
        given. Opens offline: plotly.js is inline."""
        page = str(_view("page")(self))
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(page)
        return page

    def combination(self, **params: Any) -> Result:
        """The exact Result of one combination of this sweep, recomputed on the same data with
        the same options (equal to a single run of it)."""
        if self.table is None:
            raise ConfigError(
                f"combination() picks one combination of a sweep; this result is a single run "
                f"(params {self.params}): use it directly", field="params")
        self._check_combination(params)
        return _view("rerun")(self, dict(params))

    def _check_combination(self, params: Mapping[str, Any]) -> None:
        table = self.table
        assert table is not None
        names = [c for c in table.columns if c in _sweep_param_names(self)]
        missing = [n for n in names if n not in params]
        unknown = [n for n in params if n not in names]
        if missing or unknown:
            raise ConfigError(
                f"combination() takes every parameter of the sweep by name: "
                f"{', '.join(names)}" + (f" (missing {', '.join(missing)})" if missing else "")
                + (f" (not parameters: {', '.join(unknown)})" if unknown else ""),
                field="params")
        match = np.ones(len(table), bool)
        for name in names:
            match &= (table[name] == params[name]).to_numpy()
        if not match.any():
            grid = "; ".join(f"{n} in {_value_range(table[n])}" for n in names)
            raise ConfigError(
                f"{dict(params)} is not a combination of this sweep (run or valid): its grid "
                f"has {grid}; pick values from it", field="params")

    # -- per-bar views ----------------------------------------------------------------------
    @property
    def returns(self) -> pd.Series:
        """Simple return of each bar (equity over the previous bar's, minus one; the first bar
        over the initial cash)."""
        eq = self.equity
        values = eq.to_numpy(np.float64)
        cash = float(self.config.get("cash", values[0] if len(values) else 1.0))
        previous = np.concatenate(([cash], values[:-1]))
        return pd.Series(values / previous - 1.0, index=eq.index, name="returns")

    @property
    def positions(self) -> pd.DataFrame:
        """Units held at each bar's close, one column per symbol (negative: short), from the
        trades (a trade holds from its entry bar to the bar before its exit)."""
        eq = self.equity
        symbols = list(self._symbols or self.config.get("symbols") or [])
        n = len(eq)
        held = np.zeros((n + 1, len(symbols)))
        column = {s: i for i, s in enumerate(symbols)}
        for frame, exits in ((self.trades, True), (self.open_trades, False)):
            if frame is None or frame.empty:
                continue
            cols = frame["symbol"].map(column).to_numpy(np.int64)
            size = frame["size"].to_numpy(np.float64)
            stop = frame["exit_bar"].to_numpy(np.int64) if exits else np.full(len(frame), n)
            np.add.at(held, (frame["entry_bar"].to_numpy(np.int64), cols), size)
            np.add.at(held, (stop, cols), -size)
        return pd.DataFrame(np.cumsum(held, axis=0)[:n], index=eq.index,
                            columns=pd.Index(symbols, name="symbol"))

    @property
    def orders(self) -> pd.DataFrame:
        """The filled orders, in the order they filled: each trade's entry and exit (exits
        of a bar before its entries, as the engine fills them). ``size`` is the units traded
        (positive), ``side`` buy or sell, ``reason`` the exit reason (``signal`` for
        entries), ``trade`` the row of the trade in ``trades`` (open trades: -1)."""
        parts = []
        trades, open_trades = self.trades, self.open_trades
        for frame, is_open in ((trades, False), (open_trades, True)):
            if frame is None or frame.empty:
                continue
            size = frame["size"].to_numpy(np.float64)
            number = np.full(len(frame), -1) if is_open else np.arange(len(frame))
            parts.append(pd.DataFrame({
                "time": frame["entry_time"].to_numpy(), "bar": frame["entry_bar"].to_numpy(),
                "symbol": frame["symbol"].to_numpy(),
                "side": np.where(size > 0, "buy", "sell"), "size": np.abs(size),
                "price": frame["entry_price"].to_numpy(), "kind": "entry", "reason": "signal",
                "trade": number, "_order": 1}))
            if not is_open:
                parts.append(pd.DataFrame({
                    "time": frame["exit_time"].to_numpy(), "bar": frame["exit_bar"].to_numpy(),
                    "symbol": frame["symbol"].to_numpy(),
                    "side": np.where(size > 0, "sell", "buy"), "size": np.abs(size),
                    "price": frame["exit_price"].to_numpy(), "kind": "exit",
                    "reason": frame["exit_reason"].to_numpy(), "trade": number, "_order": 0}))
        if not parts:
            return pd.DataFrame(columns=list(ORDER_COLUMNS))
        orders = pd.concat(parts, ignore_index=True)
        orders = orders.sort_values(["bar", "_order", "trade"], kind="stable")
        return orders[list(ORDER_COLUMNS)].reset_index(drop=True)

    # -- lazily built views ---------------------------------------------------------------
    @property
    def equity(self) -> pd.Series:
        """Portfolio value at each bar's close (cash + positions marked to market)."""
        if self._equity is None:
            values = self._equity_raw if self._equity_raw is not None else np.empty(0)
            index = self._index if self._index is not None else pd.DatetimeIndex([])
            if index.freq is not None:  # Parquet does not keep it: drop it for round trips
                index = pd.DatetimeIndex(index, freq=None)  # type: ignore[arg-type]
            self._equity = pd.Series(values, index=index, name="equity")
        return self._equity

    @property
    def drawdown(self) -> pd.Series:
        """Percent below the running peak (which starts at the initial cash); <= 0."""
        eq = self.equity
        cash = float(self.config.get("cash", eq.iloc[0] if len(eq) else 1.0))
        peak = np.maximum.accumulate(np.concatenate(([cash], eq.to_numpy())))[1:]
        return pd.Series(100.0 * (eq.to_numpy() / peak - 1.0), index=eq.index, name="drawdown")

    @property
    def trades(self) -> pd.DataFrame:
        """Closed trades, one row each (``size`` negative for shorts; ``pnl`` after both
        commissions; ``return_pct`` relative to the entry value)."""
        if self._trades is None:
            self._trades = self._trades_frame()
        return self._trades

    @property
    def open_trades(self) -> pd.DataFrame:
        """Positions still open after the last bar, marked at the last close."""
        if self._open_trades is None:
            self._open_trades = self._open_frame()
        return self._open_trades

    def _time(self, bars: np.ndarray) -> pd.DatetimeIndex:
        index = self._index if self._index is not None else pd.DatetimeIndex([])
        return index[bars.astype(np.int64)] if len(bars) else index[:0]

    def _trades_frame(self) -> pd.DataFrame:
        log = self._log if self._log is not None else np.empty((0, K.L_N))
        sym = log[:, K.L_SYMBOL].astype(np.int64)
        entry_bar = log[:, K.L_ENTRY_BAR].astype(np.int64)
        exit_bar = log[:, K.L_EXIT_BAR].astype(np.int64)
        return pd.DataFrame({
            "symbol": pd.array([self._symbols[i] for i in sym], dtype=object),
            "size": log[:, K.L_SIZE],
            "entry_time": self._time(entry_bar),
            "exit_time": self._time(exit_bar),
            "entry_price": log[:, K.L_ENTRY_PRICE],
            "exit_price": log[:, K.L_EXIT_PRICE],
            "pnl": log[:, K.L_PNL],
            "return_pct": 100.0 * log[:, K.L_RETURN],
            "commission": log[:, K.L_COMMISSION],
            "entry_bar": entry_bar,
            "exit_bar": exit_bar,
            "exit_reason": pd.array([EXIT_REASONS[int(r)] for r in log[:, K.L_REASON]],
                                    dtype=object),
        }, columns=list(TRADE_COLUMNS))

    def _open_frame(self) -> pd.DataFrame:
        pos = self._positions if self._positions is not None else np.empty((0, K.P_N))
        held = np.flatnonzero(pos[:, K.P_UNITS] != 0.0) if len(pos) else np.empty(0, np.int64)
        p = pos[held]
        units = p[:, K.P_UNITS]
        entry = p[:, K.P_ENTRY_PRICE]
        last = p[:, K.P_LAST]
        comm = p[:, K.P_ENTRY_COMM]
        pnl = units * (last - entry) - comm
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = 100.0 * pnl / (np.abs(units) * entry)
        entry_bar = p[:, K.P_ENTRY_BAR].astype(np.int64)
        return pd.DataFrame({
            "symbol": pd.array([self._symbols[i] for i in held], dtype=object),
            "size": units,
            "entry_time": self._time(entry_bar),
            "entry_price": entry,
            "entry_bar": entry_bar,
            "last_price": last,
            "unrealized_pnl": pnl,
            "return_pct": ret,
            "commission": comm,
        }, columns=list(OPEN_TRADE_COLUMNS))

    # -- costs ----------------------------------------------------------------------------
    def break_even_cost(self, tol: float = 1e-6, *, strict: bool = False) -> float:
        """The proportional commission (a fraction of traded value, as ``commission=``) at
        which this run's total return falls to zero, with every other setting (fixed fee,
        slippage, sizing, stops) kept; for a sweep, of its chosen combination.

        Found by bisection over re-simulations on ``[0, 0.5)`` (the engine's commission
        range) until the bracket is narrower than ``tol``; the midpoint is returned, so it is
        within ``tol`` of the crossing (about 20 re-simulations for the default ``tol``). Not a
        closed form: commission changes the units each entry buys (whole units of equity after
        commission), so the path of equity, and of every later trade's size, depends on it;
        only with fractional units, no fixed fee and no stops would one follow. Total return
        falls as commission rises, up to whole-unit rounding, so the crossing found is the
        one a researcher means.

        NaN (or, with ``strict=True``, a :class:`RunError` saying which) when there is no
        break-even: the run never trades (commission cannot change it), or it does not make
        money even at zero commission. ``inf`` when it still makes money at the largest
        commission the engine accepts."""
        if tol not in self._break_even:
            self._break_even[tol] = self._find_break_even(tol)
        found = self._break_even[tol]
        if isinstance(found, str):  # why there is no break-even
            if strict:
                raise RunError(f"no break-even commission: {found}", reason=found)
            return math.nan
        return found

    def _find_break_even(self, tol: float) -> float | str:
        """The break-even commission within ``tol``, or the reason there is none."""
        reason = self._no_break_even()
        total_return = self._total_return_at or self._total_return_from_config()
        if reason is None and not total_return(0.0) > 0.0:
            reason = ("it does not make money even at zero commission (total return "
                      f"{total_return(0.0):.4g}% before proportional costs)")
        if reason is not None:
            return reason
        lo, hi = 0.0, _MAX_COMMISSION
        if total_return(hi) > 0.0:
            return math.inf
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            if total_return(mid) > 0.0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def _no_break_even(self) -> str | None:
        trades = self.metrics.get("n_trades", 0) or 0
        held = self.metrics.get("open_trades", 0) or 0
        if not trades and not held:
            return "the run never trades, so no commission changes its return"
        return None

    def _total_return_from_config(self) -> Callable[[float], float]:
        """Re-simulation of a stored run (``run.result()``): its bars from the data store,
        by the config's symbols and dates."""
        from quantlab.data import load  # the store (pyarrow, DuckDB) only when needed

        config = self.config
        try:
            bars = load(list(config["symbols"]), start=config.get("start"),
                        end=config.get("end"), interval=config.get("interval"))
        except (KeyError, QuantlabError) as exc:
            raise RunError(
                f"break_even_cost() re-simulates the run and needs its bars: {exc}; for a "
                f"backtest of in-memory data, call it on the Result ql.backtest returned",
                reason="its bars could not be loaded from the data store") from None
        options = {name: config[name] for name in CONFIG_OPTIONS if name in config}
        return RESIMULATION.total_return_at(bars, str(config["strategy"]), self.params, options)

    # -- uncertainty ----------------------------------------------------------------------
    def confidence(self, metrics: Any = ("sharpe", "cagr_pct", "max_drawdown_pct"),
                   method: str = "stationary", n: int = 1000, level: float = 0.95,
                   seed: int | None = 0) -> pd.DataFrame:
        """Bootstrap confidence intervals of metrics: DataFrame (metric, estimate, lower,
        upper). ``method="stationary"`` resamples the bar returns in blocks of automatically
        chosen mean length; ``"trades"`` resamples closed trades (drawdown, trade metrics).
        See docs/research.md "Confidence"."""
        if RESEARCH.confidence is None:
            raise RunError("confidence intervals need the quantlab package imported "
                           "(import quantlab), which plugs in quantlab.research")
        return RESEARCH.confidence(self, metrics, method=method, n=n, level=level, seed=seed)

    # -- research -------------------------------------------------------------------------
    def overfitting(self, blocks: int = 16, trials: int | str | None = None) -> Any:
        """A sweep's overfitting statistics (``quantlab.research.Overfitting``): PBO by
        combinatorially symmetric cross-validation over ``blocks`` blocks of bars, and each
        combination's PSR, deflated Sharpe ratio and minimum track record length. ``trials``:
        the N of the deflation: None (this sweep's combinations), an int (all trials made), or
        ``"registry"`` (every trial the registry recorded for this strategy on this data).
        See docs/research.md."""
        if self.table is None:
            raise ConfigError("overfitting() needs a sweep: run ql.backtest with a grid of "
                              "params (lists or ranges)", field="params")
        if self._source is None:
            raise ConfigError(
                "overfitting() re-simulates the sweep's combinations, and this result was not "
                "run in this process (it was loaded from the registry); run the sweep with "
                "ql.backtest here, or read the summary its run stored "
                "(result.overfitting_summary)", field="overfitting")
        if RESEARCH.overfitting is None:  # a Simulation driven without the quantlab package
            raise ConfigError("overfitting() is computed by quantlab.research: import "
                              "quantlab.render.overfitting (ql.backtest does)",
                              field="overfitting")
        return RESEARCH.overfitting(self, blocks=blocks, trials=trials)

    # -- persistence ----------------------------------------------------------------------
    def to_blobs(self) -> dict[str, bytes]:
        """Parquet bytes for ``equity``, ``trades``, ``open_trades`` (and ``table`` for a
        sweep), plus ``summary.json`` with metrics, params, config and the partial flag."""
        blobs: dict[str, bytes] = {}
        frames: dict[str, pd.DataFrame] = {
            "equity": self.equity.to_frame(),
            "trades": self.trades,
            "open_trades": self.open_trades,
        }
        if self.table is not None:
            frames["table"] = self.table
        for name, frame in frames.items():
            buf = io.BytesIO()
            frame.to_parquet(buf, index=True)
            blobs[f"{name}.parquet"] = buf.getvalue()
        summary = {"metrics": self.metrics, "params": self.params, "config": self.config,
                   "partial": self.partial}
        if self.overfitting_summary is not None:
            summary["overfitting"] = self.overfitting_summary
        blobs["summary.json"] = json.dumps(summary, default=_json_default).encode()
        return blobs

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes]) -> Result:
        """Rebuild a Result from :meth:`to_blobs` output (an exact round trip)."""
        summary = json.loads(blobs["summary.json"])
        frames = {name: pd.read_parquet(io.BytesIO(blobs[f"{name}.parquet"]))
                  for name in _BLOB_FRAMES if f"{name}.parquet" in blobs}
        equity = frames["equity"]["equity"]
        index = pd.DatetimeIndex(equity.index, freq=None)  # type: ignore[arg-type]
        equity.index = index
        result = cls(
            metrics=summary["metrics"], params=summary["params"], config=summary["config"],
            index=index, equity=equity,
            trades=frames["trades"], open_trades=frames["open_trades"],
            table=frames.get("table"), partial=bool(summary["partial"]),
        )
        result.overfitting_summary = summary.get("overfitting")
        return result

    # -- display --------------------------------------------------------------------------
    def __repr__(self) -> str:
        head = f"<Result {self.config.get('strategy', '?')} {self.params}"
        if self.partial:
            head += " PARTIAL"
        if self.table is not None:
            head += f" sweep of {len(self.table)} combinations"
        lines = [head]
        for name, value in self.metrics.items():
            lines.append(f"  {name:<24} {_fmt(value)}")
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{_fmt(v)}</td></tr>"
                       for k, v in self.metrics.items())
        title = f"{self.config.get('strategy', '')} {self.params}"
        if self.partial:
            title += " (partial)"
        return f"<div><b>{title}</b><table>{rows}</table></div>"


def _sweep_param_names(result: Result) -> list[str]:
    declared = list(result.params)
    if declared:
        return declared
    grid = result.config.get("params")
    if isinstance(grid, Mapping):
        return list(grid)
    if isinstance(grid, list) and grid and isinstance(grid[0], Mapping):
        return list(grid[0])
    return []


def _value_range(column: pd.Series) -> str:
    values = sorted(column.unique().tolist())
    if len(values) <= 8:
        return "{" + ", ".join(str(v) for v in values) + "}"
    return f"{values[0]}..{values[-1]} ({len(values)} values)"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.4f}"
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, range):
        return list(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a result summary")
