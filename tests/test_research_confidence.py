"""Confidence intervals of a run's metrics and tests of Sharpe differences, each checked against
an implementation written here from its source (never by calling the product's formulas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import IIDBootstrap, StationaryBootstrap, optimal_block_length
from scipy.stats import norm

import quantlab as ql
from quantlab.engine.result import Result
from quantlab.research.confidence import (
    hac_covariance,
    holm,
    sharpe_difference,
    sharpe_difference_tests,
)

CASH = 10_000.0


def _bars(seed: int = 1, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-01", periods=n)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, n)))
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": 1e6}, index=index)


@pytest.fixture(scope="module")
def result() -> Result:
    return ql.backtest(_bars(), "sma_crossover", {"fast": 10, "slow": 40}, cash=CASH)


# --- the metrics of a return path, from metrics.py's documented formulas (written here) ---


def _returns(equity: pd.Series) -> np.ndarray:
    values = equity.to_numpy()
    return values / np.concatenate(([CASH], values[:-1])) - 1.0


def _sharpe(r: np.ndarray) -> float:
    return float(r.mean() / r.std(ddof=1) * math.sqrt(252))


def _cagr(r: np.ndarray) -> float:
    growth = float(np.prod(1.0 + r))
    return 100.0 * (growth ** (252 / len(r)) - 1.0)


def _max_drawdown(r: np.ndarray) -> float:
    equity = CASH * np.cumprod(1.0 + r)
    worst, peak = 0.0, CASH
    for value in equity:
        peak = max(peak, value)
        worst = min(worst, value / peak - 1.0)
    return 100.0 * worst


def _three(r: np.ndarray) -> np.ndarray:
    return np.array([_sharpe(r), _cagr(r), _max_drawdown(r)])


def test_stationary_intervals_equal_arch_with_the_same_seed(result: Result) -> None:
    n, level = 200, 0.9
    found = result.confidence(n=n, level=level, seed=7)
    assert list(found.columns) == ["metric", "estimate", "lower", "upper"]
    assert list(found["metric"]) == ["sharpe", "cagr_pct", "max_drawdown_pct"]
    r = _returns(result.equity)
    # the estimate is the run's own metric
    assert np.allclose(found["estimate"], [result.metrics["sharpe"], result.metrics["cagr_pct"],
                                           result.metrics["max_drawdown_pct"]], rtol=1e-9)
    block = float(optimal_block_length(r)["stationary"].iloc[0])
    assert found.attrs["block_length"] == pytest.approx(block)
    draws = StationaryBootstrap(block, r, seed=7).apply(_three, reps=n)
    lower = np.percentile(draws, 100 * (1 - level) / 2, axis=0)
    upper = np.percentile(draws, 100 * (1 + level) / 2, axis=0)
    assert np.allclose(found["lower"], lower, rtol=1e-9)
    assert np.allclose(found["upper"], upper, rtol=1e-9)
    assert (found["lower"] <= found["estimate"]).all() and (found["estimate"] <= found["upper"]).all()
    # the same seed gives the same interval; another seed another one
    again = result.confidence(n=n, level=level, seed=7)
    pd.testing.assert_frame_equal(found, again)
    assert not np.allclose(result.confidence(n=n, level=level, seed=8)["lower"], found["lower"])


def test_trade_bootstrap_against_arch(result: Result) -> None:
    n = 300
    found = result.confidence(("max_drawdown_pct", "win_rate_pct"), method="trades", n=n,
                              seed=3)
    pnl = result.trades["pnl"].to_numpy()
    rets = result.trades["return_pct"].to_numpy() / 100

    def stat(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        path = CASH + np.cumsum(p)
        peak = np.maximum.accumulate(np.concatenate(([CASH], path)))[1:]
        return np.array([100 * min(0.0, (path / peak - 1).min()), 100 * np.mean(p > 0)])

    draws = IIDBootstrap(pnl, rets, seed=3).apply(stat, reps=n)
    assert np.allclose(found["lower"], np.percentile(draws, 2.5, axis=0), rtol=1e-9)
    assert np.allclose(found["upper"], np.percentile(draws, 97.5, axis=0), rtol=1e-9)
    assert found["estimate"].iloc[1] == pytest.approx(result.metrics["win_rate_pct"])


def test_coverage_on_iid_normal_returns() -> None:
    """95 % intervals of the Sharpe ratio cover the true value about 95 % of the time."""
    rng = np.random.default_rng(11)
    mu, sd, t = 0.0006, 0.01, 750
    truth = mu / sd * math.sqrt(252)
    covered = 0
    trials = 60
    for _ in range(trials):
        r = rng.normal(mu, sd, t)
        equity = pd.Series(CASH * np.cumprod(1 + r), index=pd.bdate_range("2010-01-01",
                                                                            periods=t))
        res = Result(metrics={}, params={}, config={"cash": CASH, "interval": "1d"},
                     index=pd.DatetimeIndex(equity.index), equity=equity)
        ci = res.confidence(("sharpe",), n=200, seed=None)
        covered += bool(ci["lower"].iloc[0] <= truth <= ci["upper"].iloc[0])
    assert 0.82 <= covered / trials <= 1.0


def test_bad_requests_name_the_fix(result: Result) -> None:
    with pytest.raises(ql.ConfigError, match="unknown confidence method 'blocks'; use "
                                             "'stationary'"):
        result.confidence(method="blocks")
    with pytest.raises(ql.ConfigError, match=r"metric 'win_rate_pct' has no stationary "
                                             r"confidence interval.*need method='trades'"):
        result.confidence(("win_rate_pct",))
    with pytest.raises(ql.ConfigError, match="n \\(bootstrap resamples\\) must be a whole "
                                             "number of at least 50"):
        result.confidence(n=10)
    with pytest.raises(ql.ConfigError, match=r"level must be between 0\.5 and 1"):
        result.confidence(level=95)


# --- Ledoit & Wolf (2008), section 3.1, written from the paper -----------------------------


def _lw_from_paper(r1: np.ndarray, r2: np.ndarray) -> tuple[float, float, float]:
    t = len(r1)
    mu = np.array([r1.mean(), r2.mean()])
    gam = np.array([(r1 ** 2).mean(), (r2 ** 2).mean()])
    sharpe = mu / np.sqrt(gam - mu ** 2)
    delta = sharpe[0] - sharpe[1]
    # gradient of f(a, b, c, d) = a / sqrt(c - a^2) - b / sqrt(d - b^2)
    grad = np.array([
        gam[0] / (gam[0] - mu[0] ** 2) ** 1.5,
        -gam[1] / (gam[1] - mu[1] ** 2) ** 1.5,
        -0.5 * mu[0] / (gam[0] - mu[0] ** 2) ** 1.5,
        0.5 * mu[1] / (gam[1] - mu[1] ** 2) ** 1.5,
    ])
    y = np.stack([r1 - mu[0], r2 - mu[1], r1 ** 2 - gam[0], r2 ** 2 - gam[1]], axis=1)
    bandwidth = int(4 * (t / 100) ** (2 / 9))
    psi = np.zeros((4, 4))
    for j in range(-bandwidth, bandwidth + 1):
        weight = 1 - abs(j) / (bandwidth + 1)
        gamma_j = sum(np.outer(y[s], y[s - j]) for s in range(max(j, 0), t + min(j, 0))) / t
        psi += weight * gamma_j
    psi *= t / (t - 4)
    se = math.sqrt(grad @ psi @ grad / t)
    return delta, se, 2 * norm.sf(abs(delta) / se)


def test_ledoit_wolf_against_the_paper() -> None:
    rng = np.random.default_rng(5)
    common = rng.normal(0, 0.01, 400)
    r1 = 0.0008 + common + rng.normal(0, 0.004, 400)
    r2 = 0.0002 + 0.8 * common + rng.normal(0, 0.006, 400)
    found = sharpe_difference(r1, r2)
    expected = _lw_from_paper(r1, r2)
    assert np.allclose(found, expected, rtol=1e-9)
    # a series against itself: no difference
    assert sharpe_difference(r1, r1)[0] == 0.0
    y = np.column_stack([r1 - r1.mean(), r2 - r2.mean()])
    assert np.allclose(hac_covariance(y), hac_covariance(y).T)


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_pairwise_table_holm_adjusts_every_pair() -> None:
    rng = np.random.default_rng(2)
    returns = pd.DataFrame(rng.normal(0.0005, 0.01, (500, 3)), columns=["x", "y", "z"])
    table = sharpe_difference_tests(returns)
    assert list(zip(table["a"], table["b"])) == [("x", "y"), ("x", "z"), ("y", "z")]
    assert np.allclose(table["p_holm"], holm(table["p_value"].to_numpy()))
    first = _lw_from_paper(returns["x"].to_numpy(), returns["y"].to_numpy())
    assert table["difference"].iloc[0] == pytest.approx(first[0] * math.sqrt(252))
    assert table["p_value"].iloc[0] == pytest.approx(first[2])


def test_results_view_shows_the_confidence_table(result: Result) -> None:
    from quantlab.notebook.results import ResultsView
    from quantlab.render.confidence import confidence_html
    from quantlab.render.format import format_metric

    view = ResultsView(result)
    assert "ql-confidence-table" in view.metrics_html.value
    table = result.confidence(n=500, seed=0)
    for row in table.itertuples():
        assert format_metric(row.metric, row.lower) in view.metrics_html.value
    short = Result(metrics={}, params={}, config={"cash": CASH},
                   index=pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=5)),
                   equity=pd.Series(CASH, index=pd.bdate_range("2020-01-01", periods=5)))
    assert "Confidence: not available (the run has 5 bars" in confidence_html(short)
