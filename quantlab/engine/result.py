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
from quantlab.errors import ConfigError

TRADE_COLUMNS = ("symbol", "size", "entry_time", "exit_time", "entry_price", "exit_price",
                 "pnl", "return_pct", "commission", "entry_bar", "exit_bar", "exit_reason")
OPEN_TRADE_COLUMNS = ("symbol", "size", "entry_time", "entry_price", "entry_bar", "last_price",
                      "unrealized_pnl", "return_pct", "commission")
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "end", "ruin")

_BLOB_FRAMES = ("equity", "trades", "open_trades", "table")


class _Research:
    """Where ``Result.overfitting`` finds ``quantlab.research`` (a higher layer): the
    ``quantlab`` package sets :attr:`overfitting` when it is imported."""

    overfitting: Callable[..., Any] | None = None


RESEARCH = _Research()


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
        # the Simulation of a sweep run in this process: overfitting() re-simulates with it
        self._source: Any = None
        # a queued sweep's overfitting summary (PBO, DSR of the best, N), stored with it
        self.overfitting_summary: dict[str, Any] | None = None

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
