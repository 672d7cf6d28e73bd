"""The statistics of a Sharpe ratio, as pure functions of arrays and sums (see docs/research.md).

Everything here works on *per-bar* quantities, never annualised: ``SR = mean(r) / std(r, ddof=1)``
(0 when the standard deviation is 0), ``skew`` the biased sample skewness ``m3 / m2^1.5`` and
``kurt`` the raw (not excess) kurtosis ``m4 / m2^2`` (3 for a normal), ``T`` the number of
returns. Moments come from the sums ``n, sum r, sum r^2, sum r^3, sum r^4`` so that a caller can
accumulate them while streaming (the engine's kernel, a re-simulation by block) and never hold a
returns series.

Sources:
  * PSR and minimum track record length: Bailey & López de Prado (2012), "The Sharpe Ratio
    Efficient Frontier", Journal of Risk 15(2).
  * Deflated Sharpe ratio: Bailey & López de Prado (2014), "The Deflated Sharpe Ratio",
    Journal of Portfolio Management 40(5).
  * PBO by CSCV: Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest
    Overfitting", Journal of Computational Finance 20(4).

This module is a leaf (layer 1): the engine uses it for the ``psr`` and ``sharpe_se`` metrics and
``quantlab.research`` for the overfitting report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from numba import njit

from quantlab.errors import ConfigError


def _stats() -> Any:
    # scipy.stats takes ~0.7 s to import: only the functions that need it load it, so the
    # engine (which imports this module for its metrics) starts as fast as before
    from scipy import stats

    return stats

#: the Euler-Mascheroni constant (numpy's value)
EULER_GAMMA = float(np.euler_gamma)


@dataclass(frozen=True)
class Moments:
    """Per-bar ``sr``, ``skew`` (biased), ``kurt`` (raw) and ``t`` (number of returns), each a
    float or an array of them."""

    sr: np.ndarray
    skew: np.ndarray
    kurt: np.ndarray
    t: np.ndarray


def moments_from_sums(n: object, s1: object, s2: object, s3: object, s4: object) -> Moments:
    """The per-bar Sharpe ratio, skewness and kurtosis from power sums of the returns.

    A series with zero variance (a combination that never traded) has ``SR = 0``; its skewness
    and kurtosis are undefined and set to 0 and 3 (a normal's): every formula below multiplies
    them by SR, so they do not matter.
    """
    n, s1, s2, s3, s4 = (np.asarray(v, dtype=float) for v in (n, s1, s2, s3, s4))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        # central moments from raw ones (bar returns are small: little cancellation)
        m2 = s2 / n - mean * mean
        m3 = s3 / n - 3.0 * mean * s2 / n + 2.0 * mean ** 3
        m4 = s4 / n - 4.0 * mean * s3 / n + 6.0 * mean * mean * s2 / n - 3.0 * mean ** 4
        sr = per_bar_sharpe(n, s1, s2)
        flat = (sr == 0.0) | ~(m2 > 0.0)
        skew = np.where(flat, 0.0, m3 / np.where(flat, 1.0, m2) ** 1.5)
        kurt = np.where(flat, 3.0, m4 / np.where(flat, 1.0, m2) ** 2)
    return Moments(sr=sr, skew=skew, kurt=kurt, t=n)


def moments(returns: np.ndarray, axis: int = 0) -> Moments:
    """:func:`moments_from_sums` of a returns array along ``axis`` (for tests and small data)."""
    r = np.asarray(returns, dtype=float)
    return moments_from_sums(r.shape[axis], r.sum(axis), (r ** 2).sum(axis),
                             (r ** 3).sum(axis), (r ** 4).sum(axis))


def per_bar_sharpe(n: object, s1: object, s2: object) -> np.ndarray:
    """``mean / std(ddof=1)`` from ``n``, ``sum r``, ``sum r^2``; 0 where the std is 0."""
    n, s1, s2 = (np.asarray(v, dtype=float) for v in (n, s1, s2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = (s2 - s1 * mean) / (n - 1.0)
        ok = var > 0.0
        return np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0)


def _spread(sr: object, skew: object, kurt: object) -> np.ndarray:
    """``1 - skew*SR + (kurt - 1)/4 * SR^2``: the variance of the SR estimate times ``T - 1``
    (never negative: ``kurt >= 1 + skew^2`` for any distribution)."""
    sr, skew, kurt = (np.asarray(v, dtype=float) for v in (sr, skew, kurt))
    return np.maximum(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr, 0.0)


def sharpe_se(sr: object, skew: object, kurt: object, t: object) -> np.ndarray:
    """Standard error of the per-bar SR: ``sqrt((1 - skew*SR + (kurt-1)/4*SR^2) / (T - 1))``
    (Bailey & López de Prado 2012, eq. 4 with non-normal returns); NaN when ``T < 2``."""
    t = np.asarray(t, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 1.0, np.sqrt(_spread(sr, skew, kurt) / (t - 1.0)), np.nan)


def psr(sr: object, skew: object, kurt: object, t: object, sr_star: object = 0.0) -> np.ndarray:
    """Probabilistic Sharpe ratio: ``Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew*SR +
    (kurt-1)/4*SR^2))`` (Bailey & López de Prado 2012); NaN when ``T < 2``."""
    sr = np.asarray(sr, dtype=float)
    t = np.asarray(t, dtype=float)
    spread = _spread(sr, skew, kurt)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - np.asarray(sr_star, dtype=float)) * np.sqrt(t - 1.0) / np.sqrt(spread)
    return np.where(t > 1.0, _stats().norm.cdf(z), np.nan)


def psr_from_se(sr: object, se: object, sr_star: object = 0.0) -> np.ndarray:
    """:func:`psr` from the SR and its standard error (:func:`sharpe_se`): ``Phi((SR - SR*) /
    SE)``, the same number (``SE = sqrt(spread / (T - 1))``), for tables that keep both."""
    sr, se = np.asarray(sr, dtype=float), np.asarray(se, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(_stats().norm.cdf((sr - np.asarray(sr_star, dtype=float)) / se))


def sr0(sr_variance: float, n_trials: int) -> float:
    """The expected maximum per-bar SR of ``n_trials`` skill-less trials whose SRs have variance
    ``sr_variance``: ``sqrt(V) ((1-g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))`` with ``g``
    the Euler-Mascheroni constant (Bailey & López de Prado 2014). One trial selects nothing:
    0."""
    if n_trials < 1:
        raise ConfigError(f"the number of trials must be at least 1, got {n_trials}",
                          field="trials")
    if n_trials == 1 or not sr_variance > 0.0:
        return 0.0
    g = EULER_GAMMA
    quantiles = _stats().norm.ppf([1.0 - 1.0 / n_trials, 1.0 - 1.0 / (n_trials * np.e)])
    return float(np.sqrt(sr_variance) * ((1.0 - g) * quantiles[0] + g * quantiles[1]))


def deflated_sharpe(sr: object, skew: object, kurt: object, t: object, sr_variance: float,
                    n_trials: int) -> np.ndarray:
    """Deflated Sharpe ratio: ``PSR(SR0)`` with :func:`sr0` of the trials
    (Bailey & López de Prado 2014)."""
    return psr(sr, skew, kurt, t, sr0(sr_variance, n_trials))


def min_track_record(sr: object, skew: object, kurt: object, sr_star: object = 0.0,
                     prob: float = 0.95) -> np.ndarray:
    """Minimum track record length in bars: ``1 + (1 - skew*SR + (kurt-1)/4*SR^2) *
    (Phi^-1(prob) / (SR - SR*))^2`` (Bailey & López de Prado 2012); ``inf`` when
    ``SR <= SR*`` (no length is enough)."""
    sr = np.asarray(sr, dtype=float)
    excess = sr - np.asarray(sr_star, dtype=float)
    z = float(_stats().norm.ppf(prob))
    with np.errstate(invalid="ignore", divide="ignore"):
        length = 1.0 + _spread(sr, skew, kurt) * (z / excess) ** 2
    return np.where(excess > 0.0, length, np.inf)


@njit(cache=True, error_model="numpy")
def psr_and_se(n, s1, s2, s3, s4):
    """``(PSR against 0, per-bar SR standard error)`` from the power sums, compiled for the
    engine's metric rows: the formulas of :func:`psr` and :func:`sharpe_se` on
    :func:`moments_from_sums`'s moments, with ``Phi(z) = erfc(-z / sqrt 2) / 2`` (the
    identity scipy's ``norm.cdf`` computes; the C library's ``erfc``, as Python's ``math``
    uses, so the compiled and the Python-run function give the same floats)."""
    if n < 2.0:
        return np.nan, np.nan
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1.0)
    sr = 0.0
    skew = 0.0
    kurt = 3.0
    m2 = s2 / n - mean * mean
    if var > 0.0 and m2 > 0.0:
        sr = mean / math.sqrt(var)
        m3 = s3 / n - 3.0 * mean * s2 / n + 2.0 * mean ** 3
        m4 = s4 / n - 4.0 * mean * s3 / n + 6.0 * mean * mean * s2 / n - 3.0 * mean ** 4
        skew = m3 / m2 ** 1.5
        kurt = m4 / (m2 * m2)
    spread = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr, 0.0)
    se = math.sqrt(spread / (n - 1.0))
    if se == 0.0:
        return (1.0 if sr > 0.0 else 0.0 if sr < 0.0 else 0.5), se
    return 0.5 * math.erfc(-(sr / se) / math.sqrt(2.0)), se


# -- PBO by combinatorially symmetric cross-validation --------------------------------------

@dataclass(frozen=True)
class CSCV:
    """One row per split (``itertools.combinations`` order of the in-sample blocks):
    ``best`` the combination with the best in-sample SR (the first on ties), ``is_sr`` and
    ``oos_sr`` its per-bar SR in and out of sample, ``omega`` its relative out-of-sample rank,
    ``logits`` ``ln(omega / (1 - omega))``; and the summaries."""

    best: np.ndarray
    is_sr: np.ndarray
    oos_sr: np.ndarray
    omega: np.ndarray
    logits: np.ndarray

    @property
    def pbo(self) -> float:
        """The share of splits whose logit is <= 0."""
        return float(np.mean(self.logits <= 0.0))

    @property
    def degradation(self) -> float:
        """The OLS slope of out-of-sample on in-sample SR of the selected combinations (NaN
        when the in-sample SRs are all equal)."""
        if len(self.is_sr) < 2 or np.ptp(self.is_sr) == 0.0:
            return float("nan")
        return float(_stats().linregress(self.is_sr, self.oos_sr).slope)

    @property
    def p_loss(self) -> float:
        """The share of splits where the selected combination's out-of-sample SR is < 0."""
        return float(np.mean(self.oos_sr < 0.0))


def block_bounds(t: int, blocks: int) -> np.ndarray:
    """The ``blocks + 1`` boundaries of ``numpy.array_split`` of ``t`` rows into ``blocks``
    contiguous blocks (checked: an even number, at most ``t``)."""
    if blocks < 2 or blocks % 2:
        raise ConfigError(
            f"blocks must be an even number of at least 2 (half of them in sample, half out), "
            f"got {blocks}; use e.g. blocks=16", field="blocks")
    if blocks > t:
        raise ConfigError(
            f"blocks={blocks} is more than the {t} returns of the data; use at most {t} blocks "
            f"(each block needs at least one bar, in practice many)", field="blocks")
    sizes = [len(part) for part in np.array_split(np.empty(t), blocks)]
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def cscv(block_n: np.ndarray, block_s1: np.ndarray, block_s2: np.ndarray) -> CSCV:
    """PBO by CSCV from per-block sums: ``block_n`` (S,) returns per block, ``block_s1`` and
    ``block_s2`` (S, N) sums of ``r`` and ``r^2`` per block and combination.

    For each split (``itertools.combinations`` order of the S/2 in-sample blocks), each
    combination's in-sample SR comes from its summed in-sample block sums and its
    out-of-sample SR from the rest; ``n*`` is the first best in sample, and the average rank
    (1 = worst) of ``n*``'s out-of-sample SR among the N, over ``N + 1``, is ``omega``. One
    compiled pass over the N combinations per pair of complementary splits (one's in-sample
    half is the other's out-of-sample half), no split x N temporaries: memory is ``S x N``,
    never ``T x N``.
    """
    block_n = np.ascontiguousarray(block_n, dtype=float)
    s1 = np.asarray(block_s1, dtype=float)
    s2 = np.asarray(block_s2, dtype=float)
    n_blocks = s1.shape[0]
    if n_blocks < 2 or n_blocks % 2:
        raise ConfigError(f"blocks must be an even number of at least 2, got {n_blocks}",
                          field="blocks")
    chosen = np.array(list(combinations(range(n_blocks), n_blocks // 2)), dtype=np.int64)
    n_splits = len(chosen)
    # a split and its complement share their two sets of sums (one's in-sample is the
    # other's out-of-sample): each pair is computed once
    where = {tuple(row): k for k, row in enumerate(chosen.tolist())}
    every = set(range(n_blocks))
    complement = np.array([where[tuple(sorted(every - set(row)))] for row in chosen.tolist()],
                          dtype=np.int64)
    best = np.empty(n_splits, dtype=np.int64)
    is_sr = np.empty(n_splits)
    oos_sr = np.empty(n_splits)
    omega = np.empty(n_splits)
    _cscv_splits(chosen, complement, block_n, np.ascontiguousarray(s1),
                 np.ascontiguousarray(s2), best, is_sr, oos_sr, omega)
    with np.errstate(divide="ignore"):
        logits = np.log(omega / (1.0 - omega))
    return CSCV(best=best, is_sr=is_sr, oos_sr=oos_sr, omega=omega, logits=logits)


@njit(cache=True, error_model="numpy")
def _sharpes(n, s1, s2, out):
    """per_bar_sharpe over arrays, into ``out``: ``mean / std`` and 0 where the variance is
    not positive (dividing by an infinite std gives that 0 without a branch)."""
    for j in range(s1.shape[0]):
        mean = s1[j] / n
        var = (s2[j] - s1[j] * mean) / (n - 1.0)
        out[j] = mean / (math.sqrt(var) if var > 0.0 else np.inf)


@njit(cache=True, error_model="numpy")
def _place(chosen_sr, ranked_sr, n_combos):
    """(the first best of ``chosen_sr``, its value, its value in ``ranked_sr``, omega: the
    average rank (1 = worst) of that value among ``ranked_sr`` over N + 1, as
    ``scipy.stats.rankdata(method="average")`` ranks)."""
    top = np.argmax(chosen_sr)  # the first on ties
    mine = ranked_sr[top]
    below = 0
    equal = 0
    for j in range(n_combos):
        v = ranked_sr[j]
        below += v < mine
        equal += v == mine
    return top, chosen_sr[top], mine, (below + (equal + 1) / 2.0) / (n_combos + 1.0)


@njit(cache=True, error_model="numpy")
def _cscv_splits(chosen, complement, block_n, s1, s2, best, is_sr, oos_sr, omega):
    n_combos = s1.shape[1]
    total_n = block_n.sum()
    total1 = s1.sum(axis=0)
    total2 = s2.sum(axis=0)
    a = np.empty(n_combos)
    b = np.empty(n_combos)
    sr_a = np.empty(n_combos)
    sr_b = np.empty(n_combos)
    for k in range(chosen.shape[0]):
        other = complement[k]
        if other < k:
            continue  # done with its complement
        a[:] = 0.0
        b[:] = 0.0
        n_in = 0.0
        for q in chosen[k]:
            n_in += block_n[q]
            a += s1[q]
            b += s2[q]
        _sharpes(n_in, a, b, sr_a)
        _sharpes(total_n - n_in, total1 - a, total2 - b, sr_b)
        best[k], is_sr[k], oos_sr[k], omega[k] = _place(sr_a, sr_b, n_combos)
        best[other], is_sr[other], oos_sr[other], omega[other] = _place(sr_b, sr_a, n_combos)


__all__ = ["CSCV", "EULER_GAMMA", "Moments", "block_bounds", "cscv", "deflated_sharpe",
           "min_track_record", "moments", "moments_from_sums", "per_bar_sharpe", "psr", "psr_and_se",
           "psr_from_se", "sharpe_se", "sr0"]
