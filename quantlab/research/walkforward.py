"""Walk-forward analysis (``ql.walk_forward``; docs/research.md "Walk-forward").

The data is cut into folds: a training window, then the test window right after it. On each
fold the sweep runs in-sample exactly as ``ql.backtest(data, strategy, params=grid,
start=train_start, end=train_end, **options)`` and its best combination by ``select`` trades the
test window alone. Its signals there are those the strategy gives on all the bars up to the end
of the test window (indicators warmed on everything before it, nothing after it seen), and the
run starts flat at ``test_start``: no trade of the warm-up exists. The test windows' equity
curves are chained (each fold starts with the equity the previous one ended with) into one
out-of-sample curve.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from quantlab import metrics as M
from quantlab.bars import Bars
from quantlab.engine import validate as V
from quantlab.engine.api import backtest, load_bars
from quantlab.engine.options import DEFAULTS, reject_unknown
from quantlab.engine.result import Result
from quantlab.engine.simulation import Simulation
from quantlab.errors import ConfigError
from quantlab.research.blobs import frame_of, parquet_bytes, plain
from quantlab.research.confidence import PATH_METRICS, bar_returns, path_metrics
from quantlab.strategies import Strategy
from quantlab.strategies.registry import get_strategy

# "2y", "6M", "13w", "90d": a number and a unit (case-insensitive: M is months, never minutes)
_DURATION = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>[dwmy])\s*$", re.IGNORECASE)
_OFFSETS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}


@dataclass(frozen=True)
class Fold:
    """One fold's windows as bar positions, ``[start, end)``."""

    train_start: int
    train_end: int
    test_start: int
    test_end: int


@dataclass
class WalkForward:
    """The outcome of :func:`walk_forward`.

    ``folds``: one row per fold (windows as timestamps, inclusive; the chosen params;
    ``is_<select>`` and ``oos_<select>``; the in- and out-of-sample ``cagr_pct`` behind the
    efficiency). ``equity``: the out-of-sample equity, folds chained. ``metrics``: that curve's
    metrics (the engine's formulas; ``n_trades`` summed over the folds). ``efficiency``: Pardo's
    walk-forward efficiency. ``results``: each fold's out-of-sample :class:`Result` (in the
    process that ran the folds; a queued run's result keeps the table and the curve only).
    ``partial``: a queued run stopped (cancel, time limit) after ``len(folds)`` of its
    ``n_folds`` folds.
    """

    folds: pd.DataFrame
    equity: pd.Series
    metrics: dict[str, float | int]
    efficiency: float
    select: str
    param_names: list[str]
    results: list[Result] = field(default_factory=list, repr=False)
    partial: bool = False
    n_folds: int | None = None

    def __post_init__(self) -> None:
        if self.n_folds is None:
            self.n_folds = len(self.folds)

    @property
    def params(self) -> dict[str, Any]:
        """The last fold's chosen params: what the analysis would trade next."""
        if not len(self.folds):
            return {}
        last = self.folds.iloc[-1]
        return {name: plain(last[name]) for name in self.param_names}

    def __repr__(self) -> str:
        done = (f"{len(self.folds)} of {self.n_folds} folds (PARTIAL)" if self.partial
                else f"{len(self.folds)} folds")
        return (f"<WalkForward {done}, select={self.select}, "
                f"OOS sharpe={self.metrics.get('sharpe', float('nan')):.3g}, "
                f"efficiency={self.efficiency:.3g}>")

    def figure(self) -> Any:
        """A plotly figure: the stitched out-of-sample equity with the folds' boundaries, the
        chosen params per fold, and in- vs out-of-sample ``select`` per fold
        (``quantlab.render.validation``)."""
        return VIEW.require("figure")(self)

    def _repr_html_(self) -> str:
        if VIEW.html is None:
            return f"<pre>{html.escape(repr(self))}</pre>"
        return VIEW.html(self)

    # -- persistence (a queued run's result: quantlab.jobs.validation) -------------------------

    def to_blobs(self) -> dict[str, bytes]:
        """Parquet bytes of ``folds`` and ``equity`` plus ``walk_forward.json`` (metrics,
        efficiency, select, params' names, partial): :meth:`from_blobs` gives them back
        exactly."""
        summary = {"kind": "walk_forward", "metrics": self.metrics,
                   "efficiency": self.efficiency, "select": self.select,
                   "param_names": self.param_names, "partial": self.partial,
                   "n_folds": self.n_folds}
        return {"folds.parquet": parquet_bytes(self.folds),
                "equity.parquet": parquet_bytes(self.equity.to_frame()),
                BLOB_NAME: json.dumps(summary).encode()}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes]) -> WalkForward:
        summary = json.loads(blobs[BLOB_NAME])
        equity = frame_of(blobs["equity.parquet"])["equity"]
        equity.index = pd.DatetimeIndex(equity.index, freq=None)  # type: ignore[arg-type]
        return cls(frame_of(blobs["folds.parquet"]), equity,
                   summary["metrics"], float(summary["efficiency"]), summary["select"],
                   list(summary["param_names"]), partial=bool(summary["partial"]),
                   n_folds=summary.get("n_folds"))


class _View:
    """The notebook view and figure of a :class:`WalkForward` / ``CrossValidation``, drawn by
    ``quantlab.render.validation`` (a higher layer): the ``quantlab`` package fills these
    when it loads ``ql.walk_forward``, ``ql.cross_validate`` or ``ql.get_run``."""

    html: Callable[[Any], str] | None = None
    figure: Callable[[Any], Any] | None = None

    def require(self, name: str) -> Callable[[Any], Any]:
        found = getattr(self, name)
        if found is None:
            raise ConfigError("the walk-forward and cross-validation views are drawn by "
                              "quantlab.render.validation: import it (import quantlab as ql "
                              "and ql.walk_forward does)", field="view")
        return cast(Callable[[Any], Any], found)


VIEW = _View()
#: the summary blob of a queued walk-forward's result
BLOB_NAME = "walk_forward.json"


# ------------------------------------------------------------------------------ the folds


def bars_of(size: Any, index: pd.DatetimeIndex, what: str) -> int:
    """A window size in bars: an int as given, a duration (``"2y"``, ``"6M"``, ``"13w"``,
    ``"90d"``) as the number of bars in that span from the data's first bar."""
    if isinstance(size, bool):
        raise _bad_size(size, what)
    if isinstance(size, int | np.integer):
        if size <= 0:
            raise _bad_size(size, what)
        return int(size)
    match = _DURATION.match(size) if isinstance(size, str) else None
    if match is None or int(match["n"]) == 0:
        raise _bad_size(size, what)
    span: dict[str, Any] = {_OFFSETS[match["unit"].lower()]: int(match["n"])}
    offset = pd.DateOffset(**span)
    bars = int(index.searchsorted(index[0] + offset, "left"))
    if bars == 0:
        raise _bad_size(size, what)
    return bars


def _bad_size(size: Any, what: str) -> ConfigError:
    return ConfigError(f"{what}={size!r} is not a window size; give a positive number of bars "
                       f"(e.g. 504) or a duration: a number and d, w, M or y (e.g. '2y', '6M')",
                       field=what)


def make_folds(n_bars: int, train: int, test: int, step: int | None = None,
               anchored: bool = False) -> list[Fold]:
    """The folds over ``n_bars`` bars: fold ``k`` tests ``[train + k*step, +test)`` (only whole
    test windows); its training window is the ``train`` bars before (rolling) or every bar
    before (anchored). ``step`` defaults to ``test`` (test windows end to end)."""
    step = test if step is None else step
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step <= 0:
        raise ConfigError(f"step={step!r} must be a positive number of bars (by default the "
                          f"test size, {test}: test windows end to end)", field="step")
    if step < test:
        raise ConfigError(f"step={step} is shorter than test={test}: the test windows would "
                          f"overlap and the out-of-sample equity count a bar twice; use "
                          f"step >= test", field="step")
    if train + test > n_bars:
        raise ConfigError(f"train + test = {train} + {test} = {train + test} bars is longer "
                          f"than the data ({n_bars} bars); shorten train or test or give "
                          f"more data", field="train")
    folds = []
    test_start = train
    while test_start + test <= n_bars:
        folds.append(Fold(0 if anchored else test_start - train, test_start, test_start,
                          test_start + test))
        test_start += step
    return folds


# ------------------------------------------------------------------------------ one fold


def oos_signals(bars: Bars, strategy: Strategy, params: Mapping[str, Any], test_start: int,
                test_end: int) -> np.ndarray:
    """The strategy's signals on the test window ``[test_start, test_end)``: computed on every
    bar up to ``test_end`` (the indicators warm on all the history before the window, and no bar
    after it is seen), then cut to the window."""
    own = V.carried_options(strategy, params)[0]
    history = bars.slice(0, test_end)
    return strategy.signals(history, own)[:, test_start:]


def replay(strategy: Strategy, own: Mapping[str, Any], signals: np.ndarray) -> Strategy:
    """A strategy that gives ``signals`` (already computed) on the bars it is run on, keeping
    the default weights of ``strategy`` with ``own`` params."""

    def walk_forward_test(bars: Bars) -> np.ndarray:
        return signals

    return Strategy(walk_forward_test, name=f"{strategy.name} (walk-forward test)",
                    slots=lambda _params, n: strategy.slots(own, n))


def run_test(bars: Bars, strategy: Strategy, params: Mapping[str, Any], fold: Fold,
             options: Mapping[str, Any]) -> Result:
    """The chosen ``params`` trading the fold's test window alone, flat at its first bar."""
    own, carried = V.carried_options(strategy, params)
    sigs = oos_signals(bars, strategy, params, fold.test_start, fold.test_end)
    window = bars.slice(fold.test_start, fold.test_end)
    # the swept options' values travel with the combination (they override the keywords)
    # (backtest takes a Strategy object as well as a name; its annotation says the usual)
    return backtest(window, cast(Any, replay(strategy, own, sigs)), params=carried, **options)


# ------------------------------------------------------------------------------ the whole


def walk_forward(data: Any, strategy: str | Strategy = "sma_crossover",
                 params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, *,
                 train: int | str = 504, test: int | str = 126, step: int | str | None = None,
                 anchored: bool = False, select: str = "sharpe", interval: str | None = None,
                 **options: Any) -> WalkForward:
    """Walk-forward analysis of ``strategy`` swept over ``params`` on ``data``.

    ``train``/``test``/``step``: window sizes in bars or durations (``"2y"``, ``"6M"``);
    ``step`` defaults to ``test``. ``anchored=True``: every training window starts at the first
    bar. ``select``: the metric that picks each fold's combination (as a sweep's best).
    ``options``: engine options, as ``ql.backtest`` (a list sweeps an option as well).
    """
    plan = WalkForwardPlan(load_bars(data, interval=interval), strategy, params, train=train,
                           test=test, step=step, anchored=anchored, select=select, **options)
    return plan.assemble([plan.run_fold(k) for k in range(len(plan.folds))])


def run_to_end(sim: Simulation) -> None:
    """Run a prepared simulation to its end in one call (as ``ql.backtest`` does)."""
    sim.run(sim.total_units)


@dataclass(frozen=True)
class FoldOutcome:
    """One fold done: its row of :attr:`WalkForward.folds`, the chosen combination and its
    out-of-sample result."""

    row: dict[str, Any]
    chosen: dict[str, Any]
    result: Result


def folds_bytes(outcomes: Sequence[FoldOutcome]) -> bytes:
    """The finished folds of a walk-forward as one blob (a zip of the folds' rows, each fold's
    param names and its out-of-sample Result's blobs): a queued run's checkpoint, from which
    :func:`folds_from_bytes` gives the same folds back, so a run resumed after its worker
    died ends as one that never stopped."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:  # Parquet is compressed
        archive.writestr("folds.parquet", parquet_bytes(pd.DataFrame([o.row for o in outcomes])))
        archive.writestr("chosen.json", json.dumps([list(o.chosen) for o in outcomes]))
        for k, outcome in enumerate(outcomes):
            for name, blob in outcome.result.to_blobs().items():
                archive.writestr(f"fold-{k}/{name}", blob)
    return buf.getvalue()


def folds_from_bytes(blob: bytes) -> list[FoldOutcome]:
    """The folds :func:`folds_bytes` saved."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        rows = frame_of(archive.read("folds.parquet")).to_dict("records")
        names = json.loads(archive.read("chosen.json"))
        outcomes = []
        for k, (record, keys) in enumerate(zip(rows, names, strict=True)):
            prefix = f"fold-{k}/"
            blobs = {name.removeprefix(prefix): archive.read(name)
                     for name in archive.namelist() if name.startswith(prefix)}
            row = {str(key): value for key, value in record.items()}
            outcomes.append(FoldOutcome(row, {key: row[key] for key in keys},
                                        Result.from_blobs(blobs)))
    return outcomes


class WalkForwardPlan:
    """A walk-forward analysis cut into its folds, run one at a time: all at once by
    :func:`walk_forward` in the calling process, fold by fold on a worker by a queued run
    (:mod:`quantlab.jobs.validation`, which checks for a cancel between and within folds).
    Both go through :meth:`run_fold` and :meth:`assemble`: the same numbers either way."""

    def __init__(self, bars: Bars, strategy: str | Strategy,
                 params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, *,
                 train: int | str = 504, test: int | str = 126, step: int | str | None = None,
                 anchored: bool = False, select: str = "sharpe", **options: Any) -> None:
        if select not in V.SELECTABLE:
            raise ConfigError(f"select={select!r} is not a metric a sweep can select by; use "
                              f"one of {', '.join(V.SELECTABLE)}", field="select")
        if "start" in options or "end" in options:
            raise ConfigError("walk_forward takes no start/end: slice the data before (the "
                              "folds cover all of it)", field="start")
        reject_unknown(options)  # as ql.backtest: before any fold runs
        self.bars = bars
        self.strategy = get_strategy(strategy)
        self.params = params
        self.select = select
        self.options = options
        index = bars.index
        train_n, test_n = bars_of(train, index, "train"), bars_of(test, index, "test")
        # a number of bars goes to make_folds as given (it says what is wrong with step <= 0)
        step_n = step if step is None or not isinstance(step, str) else bars_of(step, index,
                                                                                 "step")
        self.folds = make_folds(bars.n_bars, train_n, test_n, step_n, anchored)

    def in_sample(self, fold: Fold) -> Simulation:
        """The fold's in-sample sweep, prepared: exactly ``ql.backtest(data, strategy,
        params=grid, start=train_start, end=train_end, select=select, **options)``'s."""
        index = self.bars.index
        window = load_bars(self.bars, start=index[fold.train_start],
                           end=index[fold.train_end - 1])
        sim = Simulation(window, cast(Any, self.strategy), cast(Any, self.params),
                         select=self.select, **self.options)
        sim.prepare()
        return sim

    def run_fold(self, k: int, run: Callable[[Simulation], None] = run_to_end) -> FoldOutcome:
        """Fold ``k``: its in-sample sweep (``run`` drives it to its end; a worker's checks for
        a cancel between chunks), the chosen combination, then that one on the test window."""
        fold = self.folds[k]
        index = self.bars.index
        sim = self.in_sample(fold)
        run(sim)
        ins = sim.result().attach_bars(sim.bars)
        chosen = dict(ins.params)
        oos = run_test(self.bars, self.strategy, chosen, fold,
                       {**self.options, "select": self.select})
        select = self.select
        row = {"fold": k, "train_start": index[fold.train_start],
               "train_end": index[fold.train_end - 1],
               "test_start": index[fold.test_start], "test_end": index[fold.test_end - 1],
               **chosen,
               f"is_{select}": ins.metrics[select], f"oos_{select}": oos.metrics[select],
               "is_cagr_pct": ins.metrics["cagr_pct"], "oos_cagr_pct": oos.metrics["cagr_pct"]}
        return FoldOutcome(row, chosen, oos)

    def assemble(self, outcomes: Sequence[FoldOutcome], partial: bool = False) -> WalkForward:
        """The analysis of the folds done (all of them, or with ``partial`` the first ones of a
        run stopped mid-way): the folds table, the stitched out-of-sample equity, its metrics
        and the walk-forward efficiency."""
        if not outcomes:
            raise ConfigError("no fold finished: there is no walk-forward to show", field="test")
        results = [o.result for o in outcomes]
        table = pd.DataFrame([o.row for o in outcomes])
        names = list(outcomes[0].chosen)
        cash = float(self.options.get("cash", DEFAULTS["cash"]))
        equity = stitch([r.equity for r in results], cash)
        ppy = M.periods_per_year(self.bars.interval, self.bars.index)
        row = path_metrics(bar_returns(equity, cash), cash, ppy)
        # the metrics of the curve alone (a stitched curve has no trade list of its own)
        found: dict[str, float | int] = {name: float(row[M.METRIC_INDEX[name]])
                                         for name in PATH_METRICS}
        found["n_trades"] = int(sum(r.metrics["n_trades"] for r in results))
        return WalkForward(table, equity, found, efficiency(table), self.select, names, results,
                           partial=partial, n_folds=len(self.folds))


def stitch(curves: list[pd.Series], cash: float) -> pd.Series:
    """The test windows' equity curves chained: each (started with ``cash``) scaled to start
    with the equity the previous one ended with."""
    parts, level = [], cash
    for curve in curves:
        scaled = curve * (level / cash)
        parts.append(scaled)
        level = float(scaled.iloc[-1])
    return pd.concat(parts).rename("equity")


def efficiency(folds: pd.DataFrame) -> float:
    """Walk-forward efficiency (Pardo 2008): the mean annualised out-of-sample return over the
    mean annualised in-sample return (``cagr_pct`` of each fold's chosen combination); NaN when
    the in-sample mean is 0."""
    is_mean = float(folds["is_cagr_pct"].mean())
    oos_mean = float(folds["oos_cagr_pct"].mean())
    return oos_mean / is_mean if is_mean != 0 else float("nan")


__all__ = ["BLOB_NAME", "VIEW", "Fold", "FoldOutcome", "WalkForward", "WalkForwardPlan", "bars_of", "efficiency", "make_folds", "oos_signals",
           "run_test", "stitch", "walk_forward"]
