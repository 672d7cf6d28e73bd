"""The look-ahead audit: does a strategy's signal on a bar depend on later bars?

A strategy that peeks at the future (a ``shift(-1)``, a normalisation over the whole sample, a
centred rolling window, a back-filled indicator) gives worthless results. Its signals are not
*prefix-invariant*: the signal on bar ``i`` changes when only bars after ``i`` change. The audit
tests exactly that, on the strategy's signal function alone (no backtest):

- **truncation**: for a cut ``t``, the strategy run on ``bars[:t]`` must give the same signals as
  the run on all bars, on every bar before ``t``;
- **perturbation**: the bars from ``t`` on are replaced by a scrambled future (the close-to-close
  returns shuffled, a few shocks added, open/high/low scaled with their close so every bar stays
  consistent) and no signal before ``t`` may change.

Cuts cover the whole history, warm-up included: every bar of the first :data:`DENSE_CUTS`, then
:data:`SPACED_CUTS` evenly spaced, plus :data:`RANDOM_CUTS` drawn with a fixed seed (the verdict
is reproducible). Signals are -1/0/+1, so they are compared exactly. A sweep is audited at the
edges of each parameter's range (its smallest and largest value, the others at their first
value). docs/research.md "Look-ahead audit" says what the audit cannot see.

Submission (:func:`audit_before_queue`, called by :func:`quantlab.jobs.orchestrator.submit`)
audits notebook strategies (in the submitting kernel when the strategy is its own, else in a
sandbox process the jobs layer provides, killed after ``QUANTLAB_AUDIT_TIMEOUT`` s) and keeps the verdict in a small SQLite table in ``QUANTLAB_HOME``
keyed by the strategy's source, the data fingerprint and the submitted parameters, so only the
first submit of a strategy on some data pays for it.
"""

from __future__ import annotations

import ast
import hashlib
import html
import json
import sqlite3
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantlab import data as data_mod
from quantlab import settings as settings_mod
from quantlab.bars import Bars, as_bars, symbol_list
from quantlab.config import BacktestConfig
from quantlab.engine import validate
from quantlab.errors import ConfigError, QuantlabError, RunError, StrategyError
from quantlab.strategies import Strategy, get_strategy
from quantlab.strategies.usercode import load_shipped_strategy, user_strategy

# Cuts: every bar of the first DENSE_CUTS (the warm-up of most indicators, where back-filling
# and centred windows show), SPACED_CUTS spread evenly over the rest, RANDOM_CUTS anywhere.
# 2 strategy calls per cut; bench/bench_audit.py measures the cost (bench/README.md).
DENSE_CUTS = 64
SPACED_CUTS = 48
RANDOM_CUTS = 16
SEED = 0
# the table of verdicts in QUANTLAB_HOME
CACHE_FILE = "audits.sqlite"

KINDS = ("truncation", "perturbation")


@dataclass
class Audit:
    """The verdict of :func:`audit`. ``ok`` is True when no signal depended on a later bar.

    On a failure: ``first_bar`` is the timestamp of the earliest bar whose signal changed when
    only later bars changed, ``kind`` how it was found (``"truncation"``: bars after the cut
    removed; ``"perturbation"``: bars after the cut scrambled), ``symbol`` and ``params`` which
    series and combination, ``signal_full``/``signal_cut`` the signal on all the real bars and
    after the change, ``line``/``code`` the line of the strategy's source most likely
    responsible (counted from its first line, as the notebook shows it) when it can be told.
    ``skipped_cuts`` counts the checks (cut x kind) the strategy could not run (it raised on
    a short history): they are not evidence either way.
    """

    ok: bool
    strategy: str
    first_bar: Any = None
    kind: str | None = None
    symbol: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    signal_full: int | None = None
    signal_cut: int | None = None
    cut: Any = None
    line: int | None = None
    code: str | None = None
    why: str | None = None
    cuts: int = 0
    combinations: int = 0
    skipped_cuts: int = 0
    seconds: float = 0.0

    @property
    def message(self) -> str:
        if self.ok:
            return (f"look-ahead audit of '{self.strategy}' passed: no signal changed when only "
                    f"later bars changed ({self.cuts} cuts x {self.combinations} parameter "
                    f"combination(s), {self.seconds:.2f} s)")
        cut = _stamp(self.cut)
        change = ("the bars after it were removed" if self.kind == "truncation"
                  else "the bars after it were scrambled")
        where = f" of {self.symbol}" if self.symbol else ""
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        text = (f"look-ahead: strategy '{self.strategy}' peeks at the future. Its signal on "
                f"{_stamp(self.first_bar)}{where} was {_signal(self.signal_full)} with all the "
                f"bars and {_signal(self.signal_cut)} when {change} ({self.kind} at {cut}"
                f"{', params ' + params if params else ''}).")
        if self.line is not None:
            text += (f" Most likely line {self.line}: `{self.code}` ({self.why}).")
        else:
            text += " The responsible line could not be told from the source."
        return text + (" Compute every value from past bars only (rolling, expanding, ewm "
                       "windows; shift(1)), or set audit: false to run it anyway.")

    def __str__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        colour, label = ("#1a7f37", "passed") if self.ok else ("#cf222e", "look-ahead found")
        rows = [("strategy", self.strategy), ("verdict", label)]
        if not self.ok:
            rows += [("first bar", _stamp(self.first_bar)), ("kind", self.kind or ""),
                     ("signal (all bars → changed)",
                      f"{_signal(self.signal_full)} → {_signal(self.signal_cut)}"),
                     ("line", f"{self.line}: {self.code}" if self.line else "not told")]
        rows.append(("cuts x combinations", f"{self.cuts} x {self.combinations}"))
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return (f"<div class='ql-audit'><b style='color:{colour}'>Look-ahead audit: {label}</b>"
                f"<table>{body}</table><p>{html.escape(self.message)}</p></div>")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_bar"] = _stamp(self.first_bar) if self.first_bar is not None else None
        out["cut"] = _stamp(self.cut) if self.cut is not None else None
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Audit:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


def _stamp(value: Any) -> str:
    if value is None:
        return "?"
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:10] if text.endswith("T00:00:00") else text
    return str(value)


_SIGNAL_WORDS = {1: "+1 (buy)", -1: "-1 (sell)", 0: "0 (nothing)"}


def _signal(value: int | None) -> str:
    return _SIGNAL_WORDS.get(value, "?") if value is not None else "?"


# -- the audit -------------------------------------------------------------------------------------


def audit(strategy: Any, data: Any, params: Any = None, *, seed: int = SEED) -> Audit:
    """Check that ``strategy``'s signals on a bar never depend on later bars.

    ``strategy`` is a strategy name, a registered strategy or a function ``f(bars, **params)``;
    ``data`` a DataFrame of OHLCV bars, a dict of them, ``Bars``, or symbol names in the data
    store; ``params`` one combination (defaults filled in), or a sweep (its edge combinations
    are audited). Returns an :class:`Audit`; raises StrategyError if the strategy fails on the
    full data."""
    strat = _as_strategy(strategy)
    return audit_combinations(strat, _as_data(data), edge_combinations(strat, params), seed=seed)


def audit_combinations(strat: Strategy, bars: Bars, combos: list[dict[str, Any]], *,
                       seed: int = SEED) -> Audit:
    """:func:`audit` of these full parameter combinations (stops at the first look-ahead)."""
    started = time.perf_counter()
    cuts = cut_points(bars.n_bars, seed=seed)
    verdict = Audit(ok=True, strategy=strat.name, cuts=len(cuts), combinations=len(combos))
    for combo in combos:
        found, skipped = _audit_one(strat, bars, combo, cuts, seed)
        verdict.skipped_cuts += skipped
        if found is not None:
            verdict = found
            verdict.cuts, verdict.combinations = len(cuts), len(combos)
            _attribute(verdict, strat)
            break
    verdict.seconds = round(time.perf_counter() - started, 4)
    return verdict


def _as_strategy(strategy: Any) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if callable(strategy) and not isinstance(strategy, str):
        return Strategy(strategy)
    return get_strategy(strategy)


def _as_data(value: Any) -> Bars:
    if isinstance(value, str | list | tuple):
        bars = data_mod.load(symbol_list(value))
    else:
        bars = as_bars(value)
    if bars.n_bars < 2:
        raise ConfigError("the look-ahead audit needs at least 2 bars", field="data")
    return bars


def cut_points(n_bars: int, *, seed: int = SEED) -> list[int]:
    """Where the history is cut (``t``: bars ``[:t]`` kept), 1 <= t < n_bars, ascending: every
    bar of the first :data:`DENSE_CUTS`, :data:`SPACED_CUTS` spread evenly over the rest and
    :data:`RANDOM_CUTS` drawn with ``seed``."""
    if n_bars < 2:
        return []
    cuts = set(range(1, min(n_bars, DENSE_CUTS + 1)))
    cuts.update(int(t) for t in np.linspace(1, n_bars - 1, SPACED_CUTS))
    rng = np.random.default_rng(seed)
    cuts.update(int(t) for t in rng.integers(1, n_bars, RANDOM_CUTS))
    return sorted(cuts)


def edge_combinations(strat: Strategy, params: Any) -> list[dict[str, Any]]:
    """The combinations audited: ``params`` itself for a single run; for a sweep, for each
    parameter its smallest and its largest value with the others at their first value (those
    the strategy's rule rejects are left out; if all are, the sweep's first valid one)."""
    if not validate.is_sweep(params):
        return [validate.check_params(strat, params)]
    if isinstance(params, Mapping):
        first = {k: (_values(v)[0]) for k, v in params.items()}
        candidates = [first]
        for name, value in params.items():
            values = _values(value)
            if len(values) < 2:
                continue
            for edge in (_smallest(values), _largest(values)):
                candidates.append({**first, name: edge})
    else:
        rows = [dict(p) for p in params]
        candidates = [rows[0]]
        for name in dict.fromkeys(k for row in rows for k in row):
            values = [row[name] for row in rows if name in row]
            for edge in (_smallest(values), _largest(values)):
                candidates.append(next(row for row in rows if row.get(name) == edge))
    combos: list[dict[str, Any]] = []
    for candidate in candidates:
        try:
            full = validate.check_params(strat, candidate)
        except ConfigError:
            continue  # rejected by the strategy's rule (e.g. fast < slow)
        if full not in combos:
            combos.append(full)
    if not combos:
        combos = [dict(validate.sweep_combinations(strat, params)[0][0])]
    return combos


def _values(value: Any) -> list[Any]:
    return list(value) if validate.is_sweep({"value": value}) else [value]


def _smallest(values: Sequence[Any]) -> Any:
    try:
        return min(values)
    except TypeError:  # values that do not order (strings with numbers): the first
        return values[0]


def _largest(values: Sequence[Any]) -> Any:
    try:
        return max(values)
    except TypeError:
        return values[-1]


def _signals(strat: Strategy, bars: Bars, combo: Mapping[str, Any]) -> np.ndarray:
    return strat.signals(bars, combo)  # a fresh indicator cache: the bars differ per call


def _audit_one(strat: Strategy, bars: Bars, combo: dict[str, Any], cuts: list[int],
               seed: int) -> tuple[Audit | None, int]:
    """The first look-ahead found for one combination (cuts in ascending order; at a cut
    whose two checks both fail, the one with the earlier bar), and how many cuts were skipped
    because the strategy could not run on them."""
    full = _signals(strat, bars, combo)
    rng = np.random.default_rng(seed)
    skipped = 0
    for t in cuts:
        found = []
        for kind, changed in (("truncation", lambda t=t: bars.slice(0, t)),
                              ("perturbation", lambda t=t: perturb(bars, t, rng))):
            try:
                sig = _signals(strat, changed(), combo)
            except StrategyError:
                skipped += 1  # too few bars for it to run: not evidence of a peek
                continue
            diff = first_difference(full[:, :t], sig[:, :t])
            if diff is not None:
                found.append((diff[1], KINDS.index(kind), kind, diff[0], sig))
        if found:
            bar, _, kind, sym, sig = min(found, key=lambda f: (f[0], f[1]))
            return Audit(
                ok=False, strategy=strat.name, first_bar=bars.index[bar], kind=kind,
                symbol=bars.symbols[sym] if bars.n_symbols > 1 else None, params=dict(combo),
                signal_full=int(full[sym, bar]), signal_cut=int(sig[sym, bar]),
                cut=bars.index[t]), skipped
    return None, skipped


def first_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, int] | None:
    """(symbol, bar) of the earliest bar where two signal arrays differ (NaN equal to NaN),
    None when they are equal."""
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    if bool(same.all()):
        return None
    rows, cols = np.nonzero(~same)
    k = int(np.argmin(cols))
    return int(rows[k]), int(cols[k])


def perturb(bars: Bars, t: int, rng: np.random.Generator) -> Bars:
    """``bars`` with bars ``t..`` replaced by a scrambled future: per symbol, the close-to-close
    ratios after the cut shuffled and a few shocked (x e^±0.2), the close rebuilt from the last
    close before the cut; open/high/low scaled by the same factor as their close (every bar stays
    consistent: low <= open, close <= high), volume shuffled. Bars before ``t`` are untouched."""
    o, h, lo, c, v = (np.array(getattr(bars, f), dtype=float, copy=True)
                      for f in ("open", "high", "low", "close", "volume"))
    for s in range(bars.n_symbols):
        valid = np.flatnonzero(~np.isnan(c[s]))
        tail = valid[valid >= t]
        if len(tail) == 0:
            continue
        before = valid[valid < t]
        anchor = c[s, before[-1]] if len(before) else c[s, tail[0]]
        closes = np.concatenate(([anchor], c[s, tail]))
        ratios = closes[1:] / closes[:-1]
        ratios = ratios[rng.permutation(len(ratios))]
        shocks = rng.random(len(ratios)) < 0.05
        ratios[shocks] *= np.exp(rng.choice([-0.2, 0.2], int(shocks.sum())))
        new_close = anchor * np.cumprod(ratios)
        factor = new_close / c[s, tail]
        for arr in (o, h, lo):
            arr[s, tail] *= factor
        c[s, tail] = new_close
        v[s, tail] = v[s, tail][rng.permutation(len(tail))]
    return Bars(bars.index, bars.symbols, open=o, high=h, low=lo, close=c, volume=v,
                interval=bars.interval, meta=bars.meta)


# -- which line ------------------------------------------------------------------------------------

_WHOLE_SAMPLE = {"mean", "std", "var", "max", "min", "median", "quantile", "sum", "rank",
                 "nanmean", "nanstd", "nanmax", "nanmin", "percentile", "nanpercentile",
                 "amax", "amin", "ptp", "idxmax", "idxmin", "argmax", "argmin", "qcut", "zscore"}
_WINDOWED = {"rolling", "expanding", "ewm", "groupby", "resample", "cummax", "cummin"}


def suspicious_lines(source: str) -> list[tuple[int, str, str]]:
    """(line, code, why) of the constructs in a strategy's source that read later bars, in
    source order; lines count from the first line of ``source``."""
    text = textwrap.dedent(source)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines = text.splitlines()
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        why = _peek_reason(node)
        line = getattr(node, "lineno", None)
        if why is not None and line is not None:
            found.setdefault(line, why)
    return [(n, lines[n - 1].strip(), why) for n, why in sorted(found.items())]


def _peek_reason(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        return _call_reason(node)
    if isinstance(node, ast.Subscript):
        return _subscript_reason(node.slice)
    return None


def _call_reason(node: ast.Call) -> str | None:
    name = node.func.attr if isinstance(node.func, ast.Attribute) else (
        node.func.id if isinstance(node.func, ast.Name) else "")
    kwargs = {k.arg: k.value for k in node.keywords if k.arg}
    if name == "shift":
        periods = node.args[0] if node.args else kwargs.get("periods")
        if periods is not None and _negative(periods):
            return "shift with a negative period reads later bars"
    if name == "roll" and len(node.args) > 1 and _negative(node.args[1]):
        return "np.roll backwards brings later bars forward"
    if name == "rolling" and _true(kwargs.get("center")):
        return "a centred rolling window reads the bars after each one"
    if name in ("bfill", "backfill"):
        return "back-filling copies later values into earlier bars"
    if name == "fillna" and _constant(kwargs.get("method")) in ("bfill", "backfill"):
        return "back-filling copies later values into earlier bars"
    if name == "interpolate":
        return "interpolating uses the next valid value"
    if name == "flip":
        return "reversing the series puts later bars first"
    if name in _WHOLE_SAMPLE and not _windowed(node):
        return (f"{name}() over the whole sample includes later bars (use rolling/expanding "
                f"windows)")
    return None


def _windowed(node: ast.Call) -> bool:
    """Whether a reduction is taken over a window (``x.rolling(20).mean()``) or of scalars
    (``max(a, b)``) rather than over the whole series."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in ("max", "min", "sum") or len(node.args) > 1
    target = func.value if isinstance(func, ast.Attribute) else None
    while isinstance(target, ast.Call | ast.Attribute | ast.Subscript):
        if isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute) \
                and target.func.attr in _WINDOWED:
            return True
        target = target.func if isinstance(target, ast.Call) else target.value
    return False


def _subscript_reason(index: ast.AST) -> str | None:
    if isinstance(index, ast.Slice) and index.step is not None and _negative(index.step):
        return "[::-1] reverses the series: later bars come first"
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    for part in parts:
        for piece in ((part.lower, part.upper) if isinstance(part, ast.Slice) else (part,)):
            if isinstance(piece, ast.BinOp) and isinstance(piece.op, ast.Add) \
                    and isinstance(piece.right, ast.Constant) \
                    and isinstance(piece.right.value, int) and piece.right.value > 0:
                return "indexing at a later position (i + k) reads a future bar"
    return None


def _negative(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return isinstance(node.operand, ast.Constant) and bool(node.operand.value)
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
        and node.value < 0


def _true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _constant(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _attribute(verdict: Audit, strat: Strategy) -> None:
    """Fill ``line``/``code``/``why`` from the first suspicious construct of the source."""
    found = suspicious_lines(strat.source or "")
    if found:
        verdict.line, verdict.code, verdict.why = found[0]


# -- before queueing ------------------------------------------------------------------------------


#: how a shipped strategy source is audited without running it in this process:
#: ``runner(cfg, bars)`` returns the verdict of :func:`shipped_audit` run somewhere else (the
#: jobs layer passes :func:`quantlab.jobs.isolation.audit_in_sandbox`: a killable sandbox)
ShippedAuditRunner = Callable[[BacktestConfig, Bars], Audit]


def audit_before_queue(cfg: BacktestConfig, fingerprint: str | None,
                       settings: settings_mod.Settings | None = None, *,
                       run_shipped: ShippedAuditRunner | None = None) -> Audit | None:
    """Audit a config's notebook strategy before it is queued; ConfigError saying "look-ahead"
    with the first bar if it peeks. The verdict is cached (source, data, params).

    The strategy is called in this process only when it is this kernel's own (the function
    whose source the config carries: the user's code in the user's kernel). A strategy that is
    only shipped source (a REST submit handled by the Jupyter server, a config written
    elsewhere) is never run here: ``run_shipped`` audits it apart (in a sandbox that can be
    killed); without one, RunError.

    Nothing is audited for a built-in strategy (prefix-invariant by construction, tested), for
    ``audit: false`` (recorded in the run's config and shown as a badge), or when the data is
    not in the store yet (``fingerprint`` None: it is fetched by the worker)."""
    if cfg.strategy_source is None or cfg.audit is False or fingerprint is None:
        return None
    settings = settings or settings_mod.current()
    key = _verdict_key(cfg.strategy_source, fingerprint, cfg.params)
    verdict = _cached_verdict(settings.home, key)
    if verdict is None:
        try:
            verdict = _audit_submitted(cfg, run_shipped)
        except StrategyError:
            # the strategy fails on the full data (or its source does not load): no verdict;
            # the run fails on the worker with its traceback, as it would have without the audit
            return None
        _store_verdict(settings.home, key, verdict)
    if not verdict.ok:
        raise ConfigError(verdict.message, field="strategy", first_bar=_stamp(verdict.first_bar),
                          kind=verdict.kind, line=verdict.line)
    return verdict


def _audit_submitted(cfg: BacktestConfig, run_shipped: ShippedAuditRunner | None) -> Audit:
    own = _kernel_strategy(cfg)
    if own is None and run_shipped is None:
        raise RunError(f"strategy '{cfg.strategy}' is only shipped source: its look-ahead audit "
                       f"must run apart (pass run_shipped=quantlab.jobs.isolation."
                       f"audit_in_sandbox), never in this process")
    bars = data_mod.load(list(cfg.symbols), *cfg.data_window(), cfg.interval)
    if own is not None:
        return audit_combinations(own, bars, edge_combinations(own, cfg.params))
    assert run_shipped is not None
    return run_shipped(cfg, bars)


def shipped_audit(cfg: BacktestConfig, bars: Bars) -> Audit:
    """The audit of a config's shipped strategy source: loads (runs) the source, so call it
    only where user code may run (a sandbox: :func:`quantlab.jobs.isolation.audit_in_sandbox`).
    Raises StrategyError if the source does not load or the strategy fails on the full data."""
    strat = load_shipped_strategy(cfg.strategy, cfg.strategy_source or "")
    return audit_combinations(strat, bars, edge_combinations(strat, cfg.params))


def _kernel_strategy(cfg: BacktestConfig) -> Strategy | None:
    """This kernel's own strategy when it is the one whose source the config carries (called
    here: the user's code in the user's kernel), else None (the source is only shipped)."""
    from quantlab.strategies.usercode import shippable_source

    found = user_strategy(cfg.strategy)
    if found is None:
        return None
    try:
        return found if shippable_source(found) == cfg.strategy_source else None
    except QuantlabError:
        return None


def _verdict_key(source: str, fingerprint: str, params: Any) -> str:
    # the params as submitted (a sweep's spec): the audited edge combinations follow from them
    # and the source, and computing them needs the strategy object, which for a shipped source
    # exists only in the sandbox
    blob = json.dumps({"source": hashlib.sha256(source.encode()).hexdigest(),
                       "data": fingerprint, "params": params,
                       "cuts": [DENSE_CUTS, SPACED_CUTS, RANDOM_CUTS, SEED]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _connect(home: Path) -> sqlite3.Connection:
    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(home / CACHE_FILE, timeout=10)
    conn.execute("CREATE TABLE IF NOT EXISTS audits (key TEXT PRIMARY KEY, verdict TEXT NOT NULL,"
                 " created REAL NOT NULL)")
    return conn


def _cached_verdict(home: Path, key: str) -> Audit | None:
    try:
        with closing(_connect(home)) as conn:
            row = conn.execute("SELECT verdict FROM audits WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None  # an unreadable table: audit again (it is only a cache)
    return Audit.from_json(json.loads(row[0])) if row else None


def _store_verdict(home: Path, key: str, verdict: Audit) -> None:
    try:
        with closing(_connect(home)) as conn, conn:
            conn.execute("INSERT OR REPLACE INTO audits VALUES (?, ?, ?)",
                         (key, json.dumps(verdict.to_json(), default=str), time.time()))
    except sqlite3.Error:
        pass  # the verdict stands; the next submit audits again

