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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, cast

import numpy as np
import pandas as pd

from quantlab import metrics as M
from quantlab.engine.api import backtest, load_bars
from quantlab.engine.simulation import Simulation
from quantlab.errors import ConfigError
from quantlab.research.blocksums import block_sums


@dataclass
class CrossValidation:
    """The outcome of :func:`cross_validate`.

    ``sharpe``: the annualised Sharpe ratio of each path (``C(N,k)*k/N`` of them). ``paths``: a
    row per path (``path``, ``sharpe``, ``mean_return`` per bar).
    ``splits``: a row per split (``split``, ``test_groups``, the chosen params, ``is_sharpe``,
    ``oos_sharpe`` on its test groups). ``groups``: each group's first and last bar.
    """

    sharpe: np.ndarray
    paths: pd.DataFrame
    splits: pd.DataFrame
    groups: pd.DataFrame
    n_groups: int
    test_groups: int
    purge: int
    embargo: int

    def summary(self) -> dict[str, float]:
        s = self.sharpe
        return {"paths": float(len(s)), "mean": float(np.mean(s)),
                "std": float(np.std(s, ddof=1)) if len(s) > 1 else math.nan,
                "min": float(np.min(s)), "median": float(np.median(s)), "max": float(np.max(s)),
                "p_negative": float(np.mean(s < 0))}

    def __repr__(self) -> str:
        found = self.summary()
        return (f"<CrossValidation N={self.n_groups} k={self.test_groups} "
                f"{len(self.sharpe)} paths, OOS sharpe mean {found['mean']:.3g} "
                f"(min {found['min']:.3g}, max {found['max']:.3g}), purge {self.purge}, "
                f"embargo {self.embargo}>")

    def figure(self) -> Any:
        """A plotly histogram of the paths' out-of-sample Sharpe ratios."""
        import plotly.graph_objects as go

        fig = go.Figure(go.Histogram(x=self.sharpe, name="path Sharpe"))
        fig.update_layout(template="plotly_white", height=320, showlegend=False,
                          title="Combinatorial purged CV: out-of-sample Sharpe per path",
                          xaxis_title="annualised Sharpe ratio", yaxis_title="paths",
                          margin={"l": 50, "r": 20, "t": 40, "b": 40})
        return fig

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
                       for k, v in self.summary().items())
        head = (f"<p><b>Combinatorial purged cross-validation</b>: N = {self.n_groups} groups, "
                f"k = {self.test_groups} test groups, purge {self.purge} bars, embargo "
                f"{self.embargo} bars</p><table>{rows}</table>")
        table = self.splits.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
        plot = self.figure().to_html(full_html=False, include_plotlyjs=True)
        return f"<div>{head}{plot}{table}</div>"


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
    options.pop("select", None)  # the choice is by Sharpe ratio, the statistic of the paths
    bars = load_bars(data, interval=interval)
    edges = np.array([len(part) for part in np.array_split(np.arange(bars.n_bars), groups)])
    bounds = np.concatenate(([0], np.cumsum(edges)))
    if edges.min() < 2:
        raise ConfigError(f"{bars.n_bars} bars are too few for {groups} groups (each needs 2 "
                          f"bars or more); use fewer groups or more data", field="groups")
    if purge is None:
        best = backtest(bars, cast(Any, strategy), cast(Any, params), **options)
        longest = int((best.trades["exit_bar"] - best.trades["entry_bar"]).max()) \
            if len(best.trades) else 0
        purge = default_purge(params, longest)
    sim = Simulation(bars, strategy, cast(Any, params), **options)
    cuts = _cuts(bounds, purge, embargo, bars.n_bars)
    sums = block_sums(sim, cuts)
    n, s1, s2 = sums.n, sums.sums[:, :, 0], sums.sums[:, :, 1]  # (blocks,), (blocks, combos)
    ppy = M.periods_per_year(bars.interval, bars.index)
    starts = cuts[:-1]
    # group of each block (blocks never straddle a group's edge)
    block_group = np.searchsorted(bounds, starts, "right") - 1
    splits = list(combinations(range(groups), test_groups))
    chosen = np.empty(len(splits), dtype=int)
    rows = []
    for i, test in enumerate(splits):
        train = _train_blocks(starts, block_group, bounds, test, purge, embargo)
        if not train.any():
            raise ConfigError(f"purge={purge} and embargo={embargo} leave no training bars "
                              f"for test groups {test}; lower them or use more groups",
                              field="purge")
        is_sr = _sharpe(n[train].sum(), s1[train].sum(axis=0), s2[train].sum(axis=0))
        j = int(np.argmax(is_sr))  # the first of equal bests
        chosen[i] = j
        tested = np.isin(block_group, test)
        oos = _sharpe(n[tested].sum(), s1[tested, j].sum(), s2[tested, j].sum())
        rows.append({"split": i, "test_groups": test, **dict(sim.combos[j]),
                     "is_sharpe": float(is_sr[j]) * math.sqrt(ppy),
                     "oos_sharpe": float(oos) * math.sqrt(ppy)})
    paths = _paths(groups, splits, chosen, block_group, n, s1, s2, ppy)
    group_table = pd.DataFrame({"group": range(groups), "first": bars.index[bounds[:-1]],
                                "last": bars.index[bounds[1:] - 1],
                                "bars": edges})
    return CrossValidation(paths["sharpe"].to_numpy(), paths, pd.DataFrame(rows), group_table,
                           groups, test_groups, int(purge), int(embargo))


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
        tn = t1 = t2 = 0.0
        for g in range(groups):
            j = chosen[tested_by[g][p]]
            blocks = block_group == g
            tn += float(n[blocks].sum())
            t1 += float(s1[blocks, j].sum())
            t2 += float(s2[blocks, j].sum())
        rows.append({"path": p, "sharpe": float(_sharpe(tn, t1, t2)) * math.sqrt(ppy),
                     "mean_return": t1 / tn})
    return pd.DataFrame(rows)


__all__ = ["CrossValidation", "cross_validate", "default_purge", "path_count"]
