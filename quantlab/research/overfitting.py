"""How much of a sweep's best is luck: PBO by CSCV, deflated Sharpe ratios, minimum track
record lengths (formulas in :mod:`quantlab.sharpe_stats`, sources in docs/research.md).

``sweep.overfitting(blocks=16, trials=None)`` (``quantlab.engine.result.Result``) lands in
:func:`overfitting`: the sweep's combinations are re-simulated block by block
(:mod:`quantlab.research.blocksums`), then everything is computed from the block sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from quantlab import sharpe_stats as ss
from quantlab.engine.simulation import Simulation
from quantlab.errors import ConfigError
from quantlab.research import blocksums
from quantlab.research.blocksums import table_block_sums


@dataclass
class Overfitting:
    """The overfitting statistics of a sweep.

    ``pbo`` the probability of backtest overfitting (share of CSCV splits whose logit is <= 0),
    ``logits`` one per split, ``degradation`` the OLS slope of out-of-sample on in-sample SR of
    each split's selected combination, ``p_loss`` the share of splits where it lost out of
    sample, ``table`` one row per combination (``sweep.table``'s order) with its parameters,
    per-bar ``sr``, ``psr``, ``dsr`` and ``min_trl`` (bars). ``is_sr``/``oos_sr`` per split;
    ``n_trials`` the N of the deflation (``n_sweep`` of them in this sweep), ``sr_variance``
    the variance of the trials' SRs it used and ``sr0`` the expected maximum SR of N skill-less
    trials. ``best`` is the row of the best full-sample SR (the first on ties).
    """

    pbo: float
    logits: np.ndarray
    degradation: float
    p_loss: float
    table: pd.DataFrame
    is_sr: np.ndarray
    oos_sr: np.ndarray
    blocks: int
    n_sweep: int
    n_trials: int
    sr_variance: float
    sr0: float
    best: int
    trials_source: str = "sweep"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dsr_best(self) -> float:
        """The deflated Sharpe ratio of the best combination."""
        return float(self.table["dsr"].iloc[self.best]) if len(self.table) else math.nan

    def summary(self) -> dict[str, Any]:
        """What a queued sweep stores with its result (plain JSON numbers; NaN as None)."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None
        return {"pbo": num(self.pbo), "dsr_best": num(self.dsr_best),
                "degradation": num(self.degradation), "p_loss": num(self.p_loss),
                "blocks": self.blocks, "n_sweep": self.n_sweep, "n_trials": self.n_trials,
                "sr_variance": num(self.sr_variance), "trials_source": self.trials_source}

    def __repr__(self) -> str:
        return (f"<Overfitting PBO {self.pbo:.3f} · DSR of best {self.dsr_best:.3f} · "
                f"degradation {self.degradation:.3f} · P(OOS loss) {self.p_loss:.3f} · "
                f"{len(self.logits)} splits of {self.blocks} blocks · "
                f"N = {self.n_sweep} this sweep / {self.n_trials} all trials>")

    def _repr_html_(self) -> str:
        if VIEW.html is None:
            return f"<pre>{self!r}</pre>"
        return VIEW.html(self)


class _View:
    """The notebook view of an :class:`Overfitting`, drawn by ``quantlab.render.overfitting``
    (a higher layer): the ``quantlab`` package sets :attr:`html` when it is imported."""

    html: Callable[[Overfitting], str] | None = None


VIEW = _View()


def steps(count: int) -> int:
    """How many parts :func:`overfitting` with ``progress`` tells for ``count`` combinations:
    the re-simulation's parts, then the CSCV."""
    return blocksums.parts(count) + 1


def overfitting(sim: Simulation, table: pd.DataFrame, blocks: int = 16,
                trials: int | str | None = None,
                ledger: tuple[int, float] | None = None,
                progress: Callable[[int, int], None] | None = None) -> Overfitting:
    """The overfitting statistics of the sweep ``sim`` whose result table is ``table`` (its
    finished combinations but those that raised: a cancelled sweep's are the first ones).

    ``trials``: the N of the deflated Sharpe ratio. None: this sweep's combinations; an int:
    that many trials in all (at least this sweep's); ``"registry"``: ``ledger`` = (trials
    recorded for this strategy on this data, the variance of their SRs or NaN), N the larger
    of the two counts and the ledger's variance where it has one.
    ``progress(done, total)``: told after each part of the re-simulation and after the CSCV
    (``total`` = :func:`steps`; a notebook strategy's sandbox re-simulates in one part).
    """
    count = len(table)
    if count < 1:
        raise ConfigError("the sweep has no finished combination; run it first",
                          field="table")
    bounds = ss.block_bounds(int(sim.bars.n_bars), int(blocks))
    # a notebook strategy's sweep re-simulates in its sandbox (jobs.isolation): it runs user code
    own_sums = getattr(sim, "block_sums", None)
    total = steps(count)

    def resimulated(done: int, _parts: int) -> None:
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    if own_sums is not None:
        sums = own_sums(bounds, count)
        resimulated(total - 1, total - 1)
    else:
        sums = table_block_sums(sim, bounds, count,
                                progress=resimulated if progress else None)
    t, s1, s2, s3, s4 = sums.totals()
    mom = ss.moments_from_sums(t, s1, s2, s3, s4)
    splits = ss.cscv(sums.n, sums.sums[:, :, 0], sums.sums[:, :, 1])
    if progress is not None:
        progress(total, total)
    n_trials, variance, source = _trials(mom.sr, trials, ledger)
    threshold = ss.sr0(variance, n_trials)
    dsr = ss.psr(mom.sr, mom.skew, mom.kurt, t, threshold)
    declared = getattr(sim, "param_names", None) or sim.strategy.params
    params = [name for name in declared if name in table.columns]
    out = table[params].reset_index(drop=True).copy()
    out["sr"] = mom.sr
    out["psr"] = ss.psr(mom.sr, mom.skew, mom.kurt, t)
    out["dsr"] = dsr
    out["min_trl"] = ss.min_track_record(mom.sr, mom.skew, mom.kurt)
    return Overfitting(
        pbo=splits.pbo, logits=splits.logits, degradation=splits.degradation,
        p_loss=splits.p_loss, table=out, is_sr=splits.is_sr, oos_sr=splits.oos_sr,
        blocks=int(blocks), n_sweep=count, n_trials=n_trials, sr_variance=variance,
        sr0=threshold, best=int(np.argmax(mom.sr)), trials_source=source)


def _trials(sr: np.ndarray, trials: int | str | None,
            ledger: tuple[int, float] | None) -> tuple[int, float, str]:
    """(N, the variance of the trials' SRs, where N came from)."""
    n_sweep = len(sr)
    variance = float(np.var(sr, ddof=1)) if n_sweep > 1 else 0.0
    if trials is None:
        return n_sweep, variance, "sweep"
    if trials == "registry":
        if ledger is None:
            raise ConfigError("trials='registry' needs the registry's trial ledger",
                              field="trials")
        count, ledger_variance = ledger
        if math.isfinite(ledger_variance) and count > 1:
            variance = ledger_variance
        return max(n_sweep, int(count)), variance, "registry"
    if isinstance(trials, bool) or not isinstance(trials, int | np.integer) or trials < 1:
        raise ConfigError(
            f"trials must be None (this sweep's combinations), 'registry' (every trial the "
            f"registry recorded for this strategy on this data) or a positive int (how many "
            f"trials were made in all), got {trials!r}", field="trials")
    if trials < n_sweep:
        raise ConfigError(
            f"trials={trials} is fewer than this sweep's {n_sweep} combinations; give the "
            f"total number of trials made (at least {n_sweep})", field="trials")
    return int(trials), variance, "given"


def table_dsr(table: pd.DataFrame, periods_per_year: float, n_trials: int | None = None,
              sr_variance: float | None = None) -> np.ndarray:
    """Each row's deflated Sharpe ratio from a sweep table's own ``sharpe`` and ``sharpe_se``
    columns (no re-simulation: ``DSR = Phi((SR - SR0) / SE)`` with the per-bar SR and its
    standard error, the columns divided by ``sqrt(periods_per_year)``). N and the trials' SR
    variance default to the table's own (a stored summary gives the ledger's)."""
    root = math.sqrt(periods_per_year)
    sharpe = table["sharpe"].to_numpy(dtype=float) / root
    sr = np.where(np.isfinite(sharpe), sharpe, 0.0)  # a flat run: SR 0 (sharpe_stats)
    se = table["sharpe_se"].to_numpy(dtype=float) / root
    n = len(table) if n_trials is None else int(n_trials)
    if sr_variance is None or not math.isfinite(sr_variance):
        sr_variance = float(np.var(sr, ddof=1)) if len(sr) > 1 else 0.0
    return ss.psr_from_se(sr, se, ss.sr0(sr_variance, max(n, 1)))


__all__ = ["VIEW", "Overfitting", "overfitting", "steps", "table_dsr"]
