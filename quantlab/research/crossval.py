"""Combinatorial purged cross-validation of a sweep (``ql.cross_validate``; López de Prado,
*Advances in Financial Machine Learning*, Wiley 2018, ch. 12; docs/research.md).

The bars are cut into ``N`` contiguous groups. For each choice of ``k`` test groups (in
``itertools.combinations`` order) the combination with the best in-sample Sharpe ratio on the
other groups, minus the ``purge`` bars before each test group and the ``embargo`` bars after
it, is chosen, and its returns on the test groups are its out-of-sample returns. Each group is
tested in ``C(N-1, k-1)`` splits; path ``j`` takes, for every group, its ``j``-th such split:
``C(N, k) * k / N`` paths, each an out-of-sample history of all the bars. The answer is the
distribution of the paths' Sharpe ratios.

Every combination's bar returns are those of its run over all the bars (the metrics' returns,
``E_{-1}`` the initial cash), summed per stretch of bars by re-simulation
(:mod:`quantlab.research.blocksums`): never a ``T x N`` matrix.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, cast

import numpy as np
import pandas as pd

from quantlab import metrics as M
from quantlab.engine.api import load_bars
from quantlab.engine.options import reject_unknown
from quantlab.engine.simulation import Simulation
from quantlab.errors import ConfigError
from quantlab.research.blobs import frame_of, parquet_bytes, plain
from quantlab.research.blocksums import block_sums
from quantlab.research.walkforward import VIEW


@dataclass
class CrossValidation:
    """The outcome of :func:`cross_validate`.

    ``sharpe``: the annualised Sharpe ratio of each path (``C(N,k)*k/N`` of them). ``paths``: a
    row per path (``path``, ``sharpe``, ``mean_return`` per bar).
    ``splits``: a row per split (``split``, ``test_groups``, the chosen params, ``is_sharpe``,
    ``oos_sharpe`` on its test groups). ``groups``: each group's first and last bar.
    ``partial``: a queued run stopped (cancel, time limit) after ``len(splits)`` of its
    ``n_splits`` splits; ``paths`` then holds the paths whose splits all finished.
    """

    sharpe: np.ndarray
    paths: pd.DataFrame
    splits: pd.DataFrame
    groups: pd.DataFrame
    n_groups: int
    test_groups: int
    purge: int
    embargo: int
    param_names: list[str] = field(default_factory=list)
    partial: bool = False
    n_splits: int | None = None

    def __post_init__(self) -> None:
        if self.n_splits is None:
            self.n_splits = len(self.splits)

    def summary(self) -> dict[str, float]:
        s = self.sharpe
        if not len(s):  # a run stopped before its first whole path
            return {"paths": 0.0, "mean": math.nan, "std": math.nan, "min": math.nan,
                    "median": math.nan, "max": math.nan, "p_negative": math.nan}
        return {"paths": float(len(s)), "mean": float(np.mean(s)),
                "std": float(np.std(s, ddof=1)) if len(s) > 1 else math.nan,
                "min": float(np.min(s)), "median": float(np.median(s)), "max": float(np.max(s)),
                "p_negative": float(np.mean(s < 0))}

    @property
    def metrics(self) -> dict[str, float]:
        """The run's metrics in the registry (search, compare): ``sharpe`` is the median path
        Sharpe ratio (robust to the one lucky or unlucky path), beside the paths' mean, std,
        min, max, the share of paths with a negative Sharpe ratio and their count."""
        found = self.summary()
        return {"sharpe": found["median"], "sharpe_mean": found["mean"],
                "sharpe_std": found["std"], "sharpe_min": found["min"],
                "sharpe_max": found["max"], "p_negative_sharpe": found["p_negative"],
                "paths": found["paths"]}

    @property
    def params(self) -> dict[str, Any]:
        """The combination the splits chose most often (the first of equals)."""
        if not len(self.splits) or not self.param_names:
            return {}
        chosen = self.splits[self.param_names].astype(object).apply(tuple, axis=1)
        best = chosen.value_counts(sort=True).index[0]
        return {name: plain(v) for name, v in zip(self.param_names, best, strict=True)}

    def __repr__(self) -> str:
        found = self.summary()
        done = (f" PARTIAL ({len(self.splits)} of {self.n_splits} splits)" if self.partial
                else "")
        return (f"<CrossValidation N={self.n_groups} k={self.test_groups} "
                f"{len(self.sharpe)} paths, OOS sharpe mean {found['mean']:.3g} "
                f"(min {found['min']:.3g}, max {found['max']:.3g}), purge {self.purge}, "
                f"embargo {self.embargo}{done}>")

    def figure(self) -> Any:
        """A plotly histogram of the paths' out-of-sample Sharpe ratios
        (``quantlab.render.validation``)."""
        return VIEW.require("figure")(self)

    def _repr_html_(self) -> str:
        if VIEW.html is None:
            return f"<pre>{html.escape(repr(self))}</pre>"
        return VIEW.html(self)

    # -- persistence (a queued run's result: quantlab.jobs.validation) -------------------------

    def to_blobs(self) -> dict[str, bytes]:
        """Parquet bytes of ``paths``, ``splits`` (test groups as JSON lists) and ``groups`` plus
        ``cross_validate.json``: :meth:`from_blobs` gives them back exactly."""
        splits = self.splits.copy()
        if "test_groups" in splits:
            splits["test_groups"] = [json.dumps(list(map(int, t))) for t in splits["test_groups"]]
        summary = {"kind": "cross_validate", "n_groups": self.n_groups,
                   "test_groups": self.test_groups, "purge": self.purge, "embargo": self.embargo,
                   "param_names": self.param_names, "partial": self.partial,
                   "n_splits": self.n_splits}
        return {"paths.parquet": parquet_bytes(self.paths), "splits.parquet": parquet_bytes(splits),
                "groups.parquet": parquet_bytes(self.groups), BLOB_NAME: json.dumps(summary).encode()}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes]) -> CrossValidation:
        summary = json.loads(blobs[BLOB_NAME])
        frames = {name: frame_of(blobs[f"{name}.parquet"])
                  for name in ("paths", "splits", "groups")}
        splits = frames["splits"]
        if "test_groups" in splits:
            splits["test_groups"] = [tuple(json.loads(t)) for t in splits["test_groups"]]
        paths = frames["paths"]
        sharpe = paths["sharpe"].to_numpy() if "sharpe" in paths else np.empty(0)
        return cls(sharpe, paths, splits, frames["groups"], int(summary["n_groups"]),
                   int(summary["test_groups"]), int(summary["purge"]), int(summary["embargo"]),
                   list(summary["param_names"]), bool(summary["partial"]),
                   summary.get("n_splits"))


#: the summary blob of a queued cross-validation's result
BLOB_NAME = "cross_validate.json"


def path_count(groups: int, test_groups: int) -> int:
    """``C(N, k) * k / N``: how many out-of-sample paths the splits make."""
    return math.comb(groups, test_groups) * test_groups // groups


def default_purge(params: Any, longest_trade: int) -> int:
    """The longest indicator look-back, taken as the largest whole-number param of the grid
    (a proxy: a window param is a look-back), plus the longest trade in bars."""
    values: list[Any] = []
    for combo in (params if isinstance(params, list | tuple) else [params or {}]):
        for value in combo.values():
            values.extend(value if isinstance(value, list | tuple | range) else [value])
    ints = [int(v) for v in values
            if isinstance(v, int | np.integer) and not isinstance(v, bool)]
    return (max(ints) if ints else 0) + int(longest_trade)


def _check(groups: Any, test_groups: Any, purge: Any, embargo: Any) -> None:
    def whole(value: Any) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if not whole(groups) or groups < 2:
        raise ConfigError(f"groups={groups!r} must be a whole number of at least 2 (10 is usual)",
                          field="groups")
    if not whole(test_groups) or not 1 <= test_groups < groups:
        raise ConfigError(f"test_groups={test_groups!r} must be a whole number from 1 to "
                          f"groups - 1 = {groups - 1} (2 is usual)", field="test_groups")
    for name, value in (("purge", purge), ("embargo", embargo)):
        if value is not None and (not whole(value) or value < 0):
            raise ConfigError(f"{name}={value!r} must be a whole number of bars >= 0",
                              field=name)


def cross_validate(data: Any, strategy: Any = "sma_crossover",
                   params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, *,
                   groups: int = 10, test_groups: int = 2, purge: int | None = None,
                   embargo: int = 0, interval: str | None = None,
                   **options: Any) -> CrossValidation:
    """Combinatorial purged cross-validation of ``strategy`` swept over ``params``.

    ``groups`` (N) contiguous groups of bars, ``test_groups`` (k) of them tested per split;
    ``purge``: bars dropped from training before each test group (default: the largest
    whole-number param of the grid plus the longest trade of the full-sample best combination);
    ``embargo``: bars dropped from training after each test group. ``options``: engine options,
    as ``ql.backtest``. The choice in sample is by Sharpe ratio.
    """
    _check(groups, test_groups, purge, embargo)
    if "start" in options or "end" in options:
        raise ConfigError("cross_validate takes no start/end: slice the data before (the "
                          "groups cover all of it)", field="start")
    plan = CrossValidationPlan(load_bars(data, interval=interval), strategy, params,
                               groups=groups, test_groups=test_groups, purge=purge,
                               embargo=embargo, **options)
    plan.prepare()
    return plan.assemble([plan.run_split(i) for i in range(len(plan.splits))])


def run_to_end(sim: Simulation) -> None:
    """Run a prepared simulation to its end in one call (as ``ql.backtest`` does)."""
    sim.run(sim.total_units)


class CrossValidationPlan:
    """A cross-validation cut into its steps: :meth:`prepare` (the default purge's full-sample
    sweep, then every combination's returns summed per block by re-simulation), then one
    :meth:`run_split` per split, then :meth:`assemble`. :func:`cross_validate` runs them at
    once; a queued run split by split on a worker (:mod:`quantlab.jobs.validation`, which
    checks for a cancel between splits): the same numbers either way."""

    def __init__(self, bars: Any, strategy: Any,
                 params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, *,
                 groups: int = 10, test_groups: int = 2, purge: int | None = None,
                 embargo: int = 0, **options: Any) -> None:
        _check(groups, test_groups, purge, embargo)
        options.pop("select", None)  # the choice is by Sharpe ratio, the statistic of the paths
        reject_unknown(options)  # as ql.backtest: before any sweep runs
        self.bars = bars
        self.strategy, self.params, self.options = strategy, params, options
        self.n_groups, self.test_groups = groups, test_groups
        self.purge, self.embargo = purge, embargo
        edges = np.array([len(part) for part in np.array_split(np.arange(bars.n_bars), groups)])
        if edges.min() < 2:
            raise ConfigError(f"{bars.n_bars} bars are too few for {groups} groups (each needs "
                              f"2 bars or more); use fewer groups or more data", field="groups")
        self.edges = edges
        self.bounds = np.concatenate(([0], np.cumsum(edges)))
        self.splits = list(combinations(range(groups), test_groups))
        self.ppy = M.periods_per_year(bars.interval, bars.index)

    def full_sample(self) -> Simulation:
        """The sweep over all the bars, prepared (its best's longest trade sets the default
        purge; the same as ``ql.backtest(data, strategy, params, **options)``)."""
        sim = Simulation(self.bars, self.strategy, cast(Any, self.params), **self.options)
        sim.prepare()
        return sim

    def prepare(self, run: Callable[[Simulation], None] = run_to_end) -> None:
        """The default purge (``run`` drives the full-sample sweep to its end), then every
        combination's per-block sums of returns, cut so that each split trains on whole
        blocks (in one part here; a queued run sums them in chunks of combinations)."""
        self.choose_purge(run)
        self.start_sums()
        self.sum_blocks(0, self.n_combos)
        self.finish_sums()

    def choose_purge(self, run: Callable[[Simulation], None] = run_to_end) -> None:
        """``purge`` left out: the largest whole-number param plus the longest trade of the
        full-sample best combination (``run`` drives that sweep to its end)."""
        if self.purge is not None:
            return
        best_sim = self.full_sample()
        run(best_sim)
        best = best_sim.result()
        longest = int((best.trades["exit_bar"] - best.trades["entry_bar"]).max()) \
            if len(best.trades) else 0
        self.purge = default_purge(self.params, longest)

    def start_sums(self) -> None:
        """The re-simulation behind the block sums, prepared, and the blocks' edges."""
        sim = Simulation(self.bars, self.strategy, cast(Any, self.params), **self.options)
        sim.prepare()
        self._sums_sim = sim
        self._set_blocks(sim.combos)
        self._parts: list[np.ndarray] = []

    def _set_blocks(self, combos: Sequence[Mapping[str, Any]]) -> None:
        """The combinations and the blocks' edges (by the purge and embargo)."""
        self.combos = combos
        self.n_combos = len(combos)
        self.cuts = _cuts(self.bounds, int(cast(int, self.purge)), self.embargo,
                          self.bars.n_bars)

    def sum_blocks(self, first: int, stop: int) -> None:
        """The block sums of combinations ``first:stop`` (parts in order, each after the
        last): each combination's are its own, so the parts make the same numbers as one."""
        self._parts.append(block_sums(self._sums_sim, self.cuts, stop, first).sums)

    def finish_sums(self) -> None:
        sums = np.concatenate(self._parts, axis=1)  # (blocks, combos, 4)
        self._parts = []
        self._set_sums(sums[:, :, 0], sums[:, :, 1])

    def _set_sums(self, s1: np.ndarray, s2: np.ndarray) -> None:
        self.n = np.diff(self.cuts).astype(float)
        self.s1, self.s2 = s1, s2
        self.starts = self.cuts[:-1]
        # group of each block (blocks never straddle a group's edge)
        self.block_group = np.searchsorted(self.bounds, self.starts, "right") - 1

    def sums_bytes(self) -> bytes:
        """The purge and every combination's block sums (what :meth:`prepare` computes, nearly
        all of the work): a queued run's checkpoint, from which :meth:`load_sums` goes on to
        the splits; they are recomputed from the sums in milliseconds."""
        buf = io.BytesIO()
        np.savez(buf, purge=np.int64(cast(int, self.purge)), s1=self.s1, s2=self.s2)
        return buf.getvalue()

    def load_sums(self, blob: bytes) -> bool:
        """Take up the sums :meth:`sums_bytes` saved instead of :meth:`prepare`; False (and
        nothing taken) when they do not fit this plan's grid and bars."""
        with np.load(io.BytesIO(blob)) as saved:
            purge, s1, s2 = int(saved["purge"]), saved["s1"], saved["s2"]
        if self.purge is not None and purge != self.purge:
            return False
        combos = Simulation(self.bars, self.strategy, cast(Any, self.params),
                            **self.options).combos
        blocks = len(_cuts(self.bounds, purge, self.embargo, self.bars.n_bars)) - 1
        if s1.shape != s2.shape or s1.shape != (blocks, len(combos)):
            return False
        self.purge = purge
        self._set_blocks(combos)
        self._set_sums(s1, s2)
        return True

    def run_split(self, i: int) -> SplitOutcome:
        """Split ``i``: the combination with the best Sharpe ratio on its training blocks and
        that one's Sharpe ratio on its test groups."""
        test = self.splits[i]
        purge, embargo = int(cast(int, self.purge)), self.embargo
        n, s1, s2 = self.n, self.s1, self.s2
        train = _train_blocks(self.starts, self.block_group, self.bounds, test, purge, embargo)
        if not train.any():
            raise ConfigError(f"purge={purge} and embargo={embargo} leave no training bars "
                              f"for test groups {test}; lower them or use more groups",
                              field="purge")
        is_sr = _sharpe(n[train].sum(), s1[train].sum(axis=0), s2[train].sum(axis=0))
        j = int(np.argmax(is_sr))  # the first of equal bests
        tested = np.isin(self.block_group, test)
        oos = _sharpe(n[tested].sum(), s1[tested, j].sum(), s2[tested, j].sum())
        row = {"split": i, "test_groups": test, **dict(self.combos[j]),
               "is_sharpe": float(is_sr[j]) * math.sqrt(self.ppy),
               "oos_sharpe": float(oos) * math.sqrt(self.ppy)}
        return SplitOutcome(row, j)

    def assemble(self, outcomes: Sequence[SplitOutcome], partial: bool = False
                 ) -> CrossValidation:
        """The paths of the splits done (all, or with ``partial`` the first ones of a run
        stopped mid-way: only the paths whose splits all finished)."""
        chosen = np.array([o.chosen for o in outcomes], dtype=int)
        paths = _paths(self.n_groups, self.splits, chosen, self.block_group, self.n, self.s1,
                       self.s2, self.ppy)
        bounds = self.bounds
        group_table = pd.DataFrame({"group": range(self.n_groups),
                                    "first": self.bars.index[bounds[:-1]],
                                    "last": self.bars.index[bounds[1:] - 1],
                                    "bars": self.edges})
        names = list(dict(self.combos[0])) if len(self.combos) else []
        sharpe = paths["sharpe"].to_numpy() if len(paths) else np.empty(0)
        return CrossValidation(sharpe, paths, pd.DataFrame([o.row for o in outcomes]),
                               group_table, self.n_groups, self.test_groups,
                               int(cast(int, self.purge)), int(self.embargo), names, partial,
                               len(self.splits))


@dataclass(frozen=True)
class SplitOutcome:
    """One split done: its row of :attr:`CrossValidation.splits` and the chosen combination."""

    row: dict[str, Any]
    chosen: int


def _cuts(bounds: np.ndarray, purge: int, embargo: int, n_bars: int) -> np.ndarray:
    """Block edges: the groups' edges and, around each group, where its purge zone begins and
    its embargo ends (clipped to the bars), so that any split's training set is whole blocks."""
    extra = [max(0, b - purge) for b in bounds[1:-1]] + [min(n_bars, b + embargo)
                                                         for b in bounds[1:-1]]
    return np.unique(np.concatenate((bounds, extra))).astype(np.int64)


def _train_blocks(starts: np.ndarray, block_group: np.ndarray, bounds: np.ndarray,
                  test: tuple[int, ...], purge: int, embargo: int) -> np.ndarray:
    """The blocks of a split's training set: not in a test group, not in the ``purge`` bars
    before a test group, not in the ``embargo`` bars after one."""
    keep = ~np.isin(block_group, test)
    for g in test:
        lo, hi = bounds[g], bounds[g + 1]
        keep &= ~((starts >= lo - purge) & (starts < lo))
        keep &= ~((starts >= hi) & (starts < hi + embargo))
    return cast(np.ndarray, keep)


def _sharpe(n: Any, s1: Any, s2: Any) -> Any:
    """Per-bar ``mean / std (ddof = 1)`` from ``n``, ``sum r``, ``sum r^2``; 0 when the std is
    0 (as the overfitting statistics)."""
    n = float(n)
    if n < 2:
        return np.zeros_like(np.asarray(s1, dtype=float))
    mean = np.asarray(s1, dtype=float) / n
    var = (np.asarray(s2, dtype=float) - n * mean * mean) / (n - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 1e-15, mean / np.where(sd > 1e-15, sd, 1.0), 0.0)


def _paths(groups: int, splits: list[tuple[int, ...]], chosen: np.ndarray,
           block_group: np.ndarray, n: np.ndarray, s1: np.ndarray, s2: np.ndarray,
           ppy: float) -> pd.DataFrame:
    """Path ``p``: for each group ``g`` the returns of the combination chosen by the ``p``-th
    split (in order) that tests ``g``; its annualised Sharpe ratio and per-bar mean return
    from the power sums of those returns."""
    tested_by = [[i for i, test in enumerate(splits) if g in test] for g in range(groups)]
    count = len(tested_by[0])
    rows = []
    for p in range(count):
        if any(tested_by[g][p] >= len(chosen) for g in range(groups)):
            continue  # a split of this path did not run (a stopped queued run)
        tn = t1 = t2 = 0.0
        for g in range(groups):
            j = chosen[tested_by[g][p]]
            blocks = block_group == g
            tn += float(n[blocks].sum())
            t1 += float(s1[blocks, j].sum())
            t2 += float(s2[blocks, j].sum())
        rows.append({"path": p, "sharpe": float(_sharpe(tn, t1, t2)) * math.sqrt(ppy),
                     "mean_return": t1 / tn})
    return pd.DataFrame(rows, columns=["path", "sharpe", "mean_return"])


__all__ = ["BLOB_NAME", "CrossValidation", "CrossValidationPlan", "SplitOutcome", "cross_validate",
           "default_purge", "path_count"]
