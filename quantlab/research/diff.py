"""Run diff: why two runs differ, setting by setting, line of code by line, bar by bar.

:func:`diff_runs` takes what the registry holds of two runs (their records, and their results
when they are wanted for metrics, the equity divergence and the trades) and returns a
:class:`RunDiff`. Loading runs by id belongs to the jobs layer (``ql.diff`` resolves ids there);
this module only compares.

What changed in the data is told from the per-symbol chunk fingerprints recorded at submit
(``data_chunks``, see :mod:`quantlab.data.chunks`): the first chunk whose SHA-256 differs, then
the first row inside it whose checksum differs. The timestamp of that row is read from the data
store when it still holds the bars of either run at that row, else the chunk's first timestamp
is given (the change is then "on or after" it).
"""

from __future__ import annotations

import difflib
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from quantlab.config import LABEL_KEYS
from quantlab.data.chunks import row_checksums
from quantlab.metrics import METRIC_INFO, metric_label

DATA_COLUMNS = ["symbol", "interval", "change", "first_changed", "rows_changed"]
CONFIG_COLUMNS = ["setting", "a", "b"]
METRIC_COLUMNS = ["metric", "a", "b", "delta"]
# settings shown in .code rather than as a config row, or not settings at all
_NOT_SETTINGS = frozenset({"strategy_source", *LABEL_KEYS})
_TRADE_KEY = ["symbol", "size", "entry_time", "exit_time", "entry_price", "exit_price"]
_REL_TOL = 1e-12
_LIST_SHOWN = 6


# --------------------------------------------------------------------------- config


def summarise(value: Any) -> str:
    """A setting as a reader wants it: a sweep's list as ``"10..200 step 10 (20 values)"`` (or
    ``"0.5..9 (40 values)"`` when uneven), never the whole list; anything else as text."""
    if isinstance(value, list | tuple) and len(value) > 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        values = np.asarray(value, dtype="float64")
        steps = np.diff(values)
        lo, hi = _num(value[0]), _num(value[-1])
        if len(steps) and np.allclose(steps, steps[0], rtol=1e-9, atol=1e-12) and steps[0] != 0:
            return f"{lo}..{hi} step {_num(steps[0])} ({len(value)} values)"
        return f"{_num(min(value))}..{_num(max(value))} ({len(value)} values)"
    if isinstance(value, list | tuple) and len(value) > _LIST_SHOWN:
        shown = ", ".join(str(v) for v in value[:_LIST_SHOWN])
        return f"[{shown}, ... ({len(value)} values)]"
    if isinstance(value, float):
        return _num(value)
    return "—" if value is None else str(value)


def _num(value: Any) -> str:
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.6g}"


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """Settings one level deep: ``params`` as ``params.fast`` ... (a list of combinations
    stays whole)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _NOT_SETTINGS:
            continue
        if key == "params" and isinstance(value, Mapping):
            out.update({f"params.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def config_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    """The settings that differ between two canonical configs (setting, a, b), summarised."""
    fa, fb = _flat(a), _flat(b)
    rows = [{"setting": key, "a": summarise(fa.get(key)), "b": summarise(fb.get(key))}
            for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)]
    return pd.DataFrame(rows, columns=CONFIG_COLUMNS)


# --------------------------------------------------------------------------- code


def code_diff(source_a: str | None, source_b: str | None, a: str = "a", b: str = "b") -> str:
    """The unified diff of two strategy sources ('' when equal)."""
    if (source_a or "") == (source_b or ""):
        return ""
    lines = difflib.unified_diff((source_a or "").splitlines(keepends=True),
                                 (source_b or "").splitlines(keepends=True),
                                 fromfile=a, tofile=b)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --------------------------------------------------------------------------- data

# the store's rows of a symbol over a run's range: (symbol, run record) -> (timestamps as int64
# ns, OHLCV as an (n, 5) array), or None when the store cannot give them
StoreRows = Callable[[str, Mapping[str, Any]], "tuple[np.ndarray, np.ndarray] | None"]


def _first_row_changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[int, int] | None:
    """(index of the first differing row, rows differing) of two symbol chunk records, or
    None when their chunks are equal."""
    chunks_a, chunks_b = a.get("chunks") or [], b.get("chunks") or []
    if chunks_a == chunks_b:
        return None
    size = int(a.get("chunk_rows") or 256)
    first_chunk = next((i for i, (x, y) in enumerate(zip(chunks_a, chunks_b)) if x != y),
                       min(len(chunks_a), len(chunks_b)))
    sums_a, sums_b = row_checksums(dict(a)), row_checksums(dict(b))
    n = min(len(sums_a), len(sums_b))
    differ = np.flatnonzero(sums_a[:n] != sums_b[:n])
    extra = abs(len(sums_a) - len(sums_b))
    lo = first_chunk * size
    inside = differ[(differ >= lo) & (differ < lo + size)]
    if len(inside):
        first = int(inside[0])
    else:  # no common row differs there: the first row one side has and the other lacks
        first = n if extra and n >= lo else lo
    return first, int(len(differ[differ >= lo]) + extra)


def _timestamp_of(row: int, symbol: str, a: Mapping[str, Any], b: Mapping[str, Any],
                  sides: Sequence[Mapping[str, Any]], store_rows: StoreRows | None) -> str:
    """The timestamp of ``row``: from the store when it holds either run's bars there (its
    chunk hashes match), else the first timestamp of the chunk holding the row."""
    size = int(a.get("chunk_rows") or 256)
    chunk = row // size
    if store_rows is not None:
        from quantlab.data.chunks import symbol_chunks
        for record, side in zip(sides, (a, b)):
            rows = store_rows(symbol, record)
            if rows is None or len(rows[0]) <= row:
                continue
            found = symbol_chunks(rows[0], rows[1], size).get("chunks") or []
            wanted = side.get("chunks") or []
            if chunk < len(found) and chunk < len(wanted) and found[chunk] == wanted[chunk]:
                return pd.Timestamp(int(rows[0][row]), unit="ns").isoformat()
    for side in (a, b):
        chunks = side.get("chunks") or []
        if chunk < len(chunks):
            return str(chunks[chunk][0])
    return ""


def data_changes(rec_a: Mapping[str, Any], rec_b: Mapping[str, Any],
                 store_rows: StoreRows | None = None) -> pd.DataFrame:
    """Which symbols' bars changed between two runs (symbol, interval, change, first_changed,
    rows_changed). ``change`` is ``changed``, ``added`` (only in b), ``removed`` (only in a),
    or ``unknown`` when a run has no chunk fingerprints but their data fingerprints differ."""
    chunks_a = (rec_a.get("data_chunks") or {}).get("symbols") or {}
    chunks_b = (rec_b.get("data_chunks") or {}).get("symbols") or {}
    interval_a = rec_a.get("interval") or (rec_a.get("config") or {}).get("interval")
    interval_b = rec_b.get("interval") or (rec_b.get("config") or {}).get("interval")
    symbols_a = list(rec_a.get("symbols") or chunks_a)
    symbols_b = list(rec_b.get("symbols") or chunks_b)
    rows: list[dict[str, Any]] = []
    for symbol in [*symbols_a, *(s for s in symbols_b if s not in symbols_a)]:
        row = {"symbol": symbol, "interval": interval_b or interval_a, "change": None,
               "first_changed": None, "rows_changed": None}
        if symbol not in symbols_b:
            rows.append({**row, "change": "removed", "interval": interval_a})
        elif symbol not in symbols_a:
            rows.append({**row, "change": "added"})
        elif interval_a != interval_b:
            rows.append({**row, "change": f"interval {interval_a} -> {interval_b}"})
        elif symbol in chunks_a and symbol in chunks_b:
            found = _first_row_changed(chunks_a[symbol], chunks_b[symbol])
            if found is not None:
                first, count = found
                when = _timestamp_of(first, symbol, chunks_a[symbol], chunks_b[symbol],
                                     (rec_a, rec_b), store_rows)
                rows.append({**row, "change": "changed", "first_changed": pd.Timestamp(when)
                             if when else None, "rows_changed": count})
        elif rec_a.get("data_fingerprint") != rec_b.get("data_fingerprint"):
            rows.append({**row, "change": "unknown"})
    return pd.DataFrame(rows, columns=DATA_COLUMNS)


# --------------------------------------------------------------------------- outcome


def metric_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    """Every metric either run has (metric label, a, b, delta = b - a), in METRIC_INFO order."""
    names = [n for n in METRIC_INFO if n in a or n in b]
    names += [n for n in [*a, *b] if n not in METRIC_INFO and n not in names]
    rows = []
    for name in dict.fromkeys(names):
        va, vb = _float(a.get(name)), _float(b.get(name))
        rows.append({"metric": metric_label(name), "a": va, "b": vb, "delta": vb - va})
    frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    frame.index = pd.Index(list(dict.fromkeys(names)), name="name")
    return frame


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def divergence(equity_a: pd.Series | None, equity_b: pd.Series | None) -> pd.Timestamp | None:
    """The first timestamp where two equity curves differ (a bar in one only counts), None
    when they are equal (relative tolerance 1e-12)."""
    if equity_a is None or equity_b is None:
        return None
    joined = pd.concat([equity_a.rename("a"), equity_b.rename("b")], axis=1, sort=True)
    va, vb = joined["a"].to_numpy(dtype="float64"), joined["b"].to_numpy(dtype="float64")
    same = np.isclose(va, vb, rtol=_REL_TOL, atol=0.0) | (np.isnan(va) & np.isnan(vb))
    bad = np.flatnonzero(~same)
    return pd.Timestamp(joined.index[bad[0]]) if len(bad) else None


@dataclass(frozen=True)
class TradeDiff:
    """The closed trades only in run a and only in run b (matched on symbol, size, entry and
    exit times and prices)."""

    only_a: pd.DataFrame
    only_b: pd.DataFrame

    def __len__(self) -> int:
        return len(self.only_a) + len(self.only_b)


def trade_changes(trades_a: pd.DataFrame | None, trades_b: pd.DataFrame | None) -> TradeDiff:
    empty = pd.DataFrame(columns=_TRADE_KEY)
    a = trades_a if trades_a is not None else empty
    b = trades_b if trades_b is not None else empty
    key_a, key_b = _trade_keys(a), _trade_keys(b)
    return TradeDiff(a[~key_a.isin(set(key_b))].reset_index(drop=True),
                     b[~key_b.isin(set(key_a))].reset_index(drop=True))


def _trade_keys(trades: pd.DataFrame) -> pd.Series:
    def key(row: Any) -> str:
        return "|".join(f"{v:.10g}" if isinstance(v, float) else str(v)
                        for v in (row[c] for c in _TRADE_KEY))
    if trades.empty:
        return pd.Series([], dtype=object)
    return trades.apply(key, axis=1)


# --------------------------------------------------------------------------- RunDiff


@dataclass
class RunDiff:
    """Why two runs differ. Each part is empty ('' / empty DataFrame / None) when equal."""

    a: str
    b: str
    config: pd.DataFrame
    code: str
    data: pd.DataFrame
    engine: tuple[str, str] | None
    metrics: pd.DataFrame
    divergence: pd.Timestamp | None = None
    trades: TradeDiff = field(default_factory=lambda: trade_changes(None, None))
    code_hashes: tuple[str | None, str | None] = (None, None)

    @property
    def code_changed(self) -> bool:
        hashes_differ = None not in self.code_hashes and self.code_hashes[0] != self.code_hashes[1]
        return bool(self.code) or hashes_differ

    def causes(self) -> list[str]:
        """What drifted, in words: ``["data: DDD from 2022-06-01 on", "code", "engine 1 ->
        2", "config: commission"]``."""
        out = []
        if len(self.data):
            out.append("data: " + "; ".join(_data_phrase(r) for r in self.data.itertuples()))
        if self.code_changed:
            out.append("code")
        if self.engine is not None:
            out.append(f"engine {self.engine[0]} -> {self.engine[1]}")
        if len(self.config):
            out.append("config: " + ", ".join(self.config["setting"]))
        return out

    def __str__(self) -> str:
        lines = [f"diff {self.a} -> {self.b}"]
        causes = self.causes()
        lines.append("differs in: " + (", ".join(c.split(":")[0] for c in causes) or "nothing"))
        if len(self.config):
            lines += ["", "config:"] + [f"  {r.setting}: {r.a} -> {r.b}"
                                        for r in self.config.itertuples()]
        if self.code:
            lines += ["", "code:", self.code.rstrip("\n")]
        elif self.code_changed:
            old, new = (str(h)[:12] for h in self.code_hashes)
            lines += ["", f"code: changed (sha256 {old} -> {new}; the source was not stored)"]
        if len(self.data):
            lines += ["", "data:"] + [f"  {_data_phrase(r)}" for r in self.data.itertuples()]
        if self.engine is not None:
            lines += ["", f"engine: {self.engine[0]} -> {self.engine[1]}"]
        changed = self.metrics[~_equal(self.metrics["a"], self.metrics["b"])]
        if len(changed):
            lines += ["", "metrics:"] + [
                f"  {r.metric:<24} {_fmt(r.a):>14} {_fmt(r.b):>14} {_fmt(r.delta, True):>14}"
                for r in changed.itertuples()]
        if self.divergence is not None:
            lines += ["", f"equity curves diverge at {self.divergence}"]
        if len(self.trades):
            lines += ["", f"trades only in a: {len(self.trades.only_a)}, only in b: "
                          f"{len(self.trades.only_b)}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        parts = [f"<div class='quantlab-diff'><h4>Run diff {esc(self.a)} → {esc(self.b)}</h4>"]
        causes = self.causes()
        parts.append("<p>Differs in: <b>" + esc(", ".join(c.split(":")[0] for c in causes)
                                                 or "nothing") + "</b></p>")
        if len(self.config):
            parts.append("<h5>Config</h5>" + self.config.to_html(index=False))
        if self.code:
            parts.append(f"<h5>Code</h5><pre>{esc(self.code)}</pre>")
        if len(self.data):
            parts.append("<h5>Data</h5>" + self.data.to_html(index=False))
        if self.engine is not None:
            parts.append(f"<h5>Engine</h5><p>{esc(self.engine[0])} → {esc(self.engine[1])}</p>")
        changed = self.metrics[~_equal(self.metrics["a"], self.metrics["b"])]
        if len(changed):
            parts.append("<h5>Metrics</h5>" + changed.to_html(index=False, float_format=_fmt))
        if self.divergence is not None:
            parts.append(f"<p>Equity curves diverge at <b>{esc(str(self.divergence))}</b></p>")
        if len(self.trades):
            parts.append(f"<p>Trades only in a: {len(self.trades.only_a)}, only in b: "
                         f"{len(self.trades.only_b)}</p>")
        return "".join(parts) + "</div>"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON for the REST API."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            out = frame.astype(object).where(frame.notna(), None).to_dict("records")
            return [{str(k): (v.isoformat() if isinstance(v, pd.Timestamp) else v)
                     for k, v in row.items()} for row in out]
        return {
            "a": self.a, "b": self.b, "causes": self.causes(),
            "config": records(self.config), "code": self.code, "data": records(self.data),
            "engine": list(self.engine) if self.engine else None,
            "metrics": records(self.metrics.reset_index()),
            "divergence": self.divergence.isoformat() if self.divergence is not None else None,
            "trades": {"only_a": len(self.trades.only_a), "only_b": len(self.trades.only_b)},
            "text": str(self),
        }


def _data_phrase(row: Any) -> str:
    if row.change == "changed" and row.first_changed is not None:
        return f"{row.symbol} from {_day(row.first_changed)} on ({row.rows_changed} rows)"
    return f"{row.symbol} {row.change}"


def _day(ts: pd.Timestamp) -> str:
    stamp = pd.Timestamp(ts)
    if stamp == stamp.normalize():
        return str(stamp.date())
    return stamp.isoformat()


def _equal(a: pd.Series, b: pd.Series) -> pd.Series:
    va, vb = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
    same = np.isclose(va, vb, rtol=1e-9, atol=1e-12) | (np.isnan(va) & np.isnan(vb))
    return pd.Series(same, index=a.index)


def _fmt(value: Any, signed: bool = False) -> str:
    number = _float(value)
    if math.isnan(number):
        return "—"
    return f"{number:+,.4g}" if signed else f"{number:,.4g}"


def diff_runs(rec_a: Mapping[str, Any], rec_b: Mapping[str, Any], *,
              result_a: Any = None, result_b: Any = None,
              code_a: str | None = None, code_b: str | None = None,
              store_rows: StoreRows | None = None) -> RunDiff:
    """The :class:`RunDiff` of two runs from their registry records (and results, if given:
    without them ``.metrics`` comes from the records and there is no divergence or trades).

    ``code_a``/``code_b`` default to the configs' ``strategy_source`` (a notebook strategy);
    a built-in's code is compared by the hash in its result summary."""
    cfg_a, cfg_b = dict(rec_a.get("config") or {}), dict(rec_b.get("config") or {})
    src_a = code_a if code_a is not None else cfg_a.get("strategy_source")
    src_b = code_b if code_b is not None else cfg_b.get("strategy_source")
    engines = (rec_a.get("engine_version"), rec_b.get("engine_version"))
    metrics_a = result_a.metrics if result_a is not None else rec_a.get("metrics") or {}
    metrics_b = result_b.metrics if result_b is not None else rec_b.get("metrics") or {}
    both = result_a is not None and result_b is not None
    return RunDiff(
        a=str(rec_a.get("id")), b=str(rec_b.get("id")),
        config=config_changes(cfg_a, cfg_b),
        code=code_diff(src_a, src_b, f"a/{rec_a.get('id')}", f"b/{rec_b.get('id')}"),
        data=data_changes(rec_a, rec_b, store_rows),
        engine=(str(engines[0]), str(engines[1])) if engines[0] != engines[1] else None,
        metrics=metric_changes(metrics_a, metrics_b),
        divergence=divergence(result_a.equity, result_b.equity) if both else None,
        trades=trade_changes(result_a.trades, result_b.trades) if both
        else trade_changes(None, None),
        code_hashes=(_code_hash(result_a, cfg_a), _code_hash(result_b, cfg_b)),
    )


def _code_hash(result: Any, config: Mapping[str, Any]) -> str | None:
    if result is not None and result.config.get("strategy_source_hash"):
        return str(result.config["strategy_source_hash"])
    return None


__all__ = ["RunDiff", "TradeDiff", "code_diff", "config_changes", "data_changes", "diff_runs",
           "divergence", "metric_changes", "summarise", "trade_changes"]
