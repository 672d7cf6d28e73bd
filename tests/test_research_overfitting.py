"""Overfitting statistics (quantlab.sharpe_stats, quantlab.research) against independent
implementations written here from the papers, with plain loops over a T x N returns matrix:

* PSR, SR standard error, minimum track record length: Bailey & López de Prado (2012), "The
  Sharpe Ratio Efficient Frontier" (eq. for the non-normal SR variance, PSR, MinTRL).
* Deflated Sharpe ratio: Bailey & López de Prado (2014), "The Deflated Sharpe Ratio" (SR0 from the
  expected maximum of N normal draws).
* PBO by CSCV: Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest
  Overfitting" (section 2: the algorithm, steps 1-6).

None of these helpers calls the product.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import quantlab as ql
from quantlab import sharpe_stats as ss
from quantlab.errors import ConfigError
from quantlab.registry import SQLiteRegistry, open_registry
from quantlab.research import ledger, result_overfitting
from tests.support import jobs as jobs_support
from tests.support.engine import random_walk
from tests.support.jobs import SLOW, SWEEP, WAIT, Workers, wait_for

# ---- the papers, written out ----------------------------------------------------------------


def paper_sr(r: np.ndarray) -> float:
    sd = np.std(r, ddof=1)
    return 0.0 if sd == 0 else float(np.mean(r) / sd)


def paper_psr(r: np.ndarray, sr_star: float = 0.0) -> float:
    """PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))."""
    sr = paper_sr(r)
    g3 = stats.skew(r, bias=True)
    g4 = stats.kurtosis(r, fisher=False, bias=True)
    return float(stats.norm.cdf((sr - sr_star) * math.sqrt(len(r) - 1)
                                / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)))


def paper_se(r: np.ndarray) -> float:
    sr = paper_sr(r)
    g3 = stats.skew(r, bias=True)
    g4 = stats.kurtosis(r, fisher=False, bias=True)
    return math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr ** 2) / (len(r) - 1))


def paper_min_trl(r: np.ndarray, sr_star: float = 0.0, prob: float = 0.95) -> float:
    sr = paper_sr(r)
    g3 = stats.skew(r, bias=True)
    g4 = stats.kurtosis(r, fisher=False, bias=True)
    return 1 + (1 - g3 * sr + (g4 - 1) / 4 * sr ** 2) * (stats.norm.ppf(prob) / (sr - sr_star)) ** 2


def paper_dsr(returns: np.ndarray, j: int) -> float:
    """DSR of column j among the N columns (trials) of ``returns``."""
    srs = np.array([paper_sr(returns[:, i]) for i in range(returns.shape[1])])
    n = returns.shape[1]
    v = np.var(srs, ddof=1)
    e = 0.5772156649015329  # Euler-Mascheroni
    sr0 = math.sqrt(v) * ((1 - e) * stats.norm.ppf(1 - 1 / n) + e * stats.norm.ppf(1 - 1 / (n * math.e)))
    return paper_psr(returns[:, j], sr0)


def paper_cscv(returns: np.ndarray, s: int) -> dict[str, object]:
    """Bailey et al. (2017), section 2: split the T x N matrix M into S row blocks; for each
    combination C of S/2 blocks, J = the rows of C (in order), Jbar the rest; R = SR of each
    column on J, Rbar on Jbar; n* = argmax R; omega = rank of Rbar[n*] in Rbar / (N + 1);
    lambda = logit(omega). PBO = share of lambda <= 0."""
    blocks = np.array_split(np.arange(len(returns)), s)
    n = returns.shape[1]
    logits, is_sr, oos_sr = [], [], []
    for chosen in itertools.combinations(range(s), s // 2):
        rows_in = np.concatenate([blocks[b] for b in chosen])
        rows_out = np.concatenate([blocks[b] for b in range(s) if b not in chosen])
        r_in = [paper_sr(returns[rows_in, i]) for i in range(n)]
        r_out = [paper_sr(returns[rows_out, i]) for i in range(n)]
        best = int(np.argmax(r_in))
        omega = stats.rankdata(r_out)[best] / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
        is_sr.append(r_in[best])
        oos_sr.append(r_out[best])
    logits_a = np.array(logits)
    slope = np.polyfit(is_sr, oos_sr, 1)[0]
    return {"pbo": float(np.mean(logits_a <= 0)), "logits": logits_a,
            "degradation": float(slope), "p_loss": float(np.mean(np.array(oos_sr) < 0))}


def block_sums_of(returns: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = np.array_split(returns, s)
    return (np.array([len(p) for p in parts], float), np.array([p.sum(0) for p in parts]),
            np.array([(p ** 2).sum(0) for p in parts]))


def fat_tailed(t: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.01 * rng.standard_t(5, size=(t, n)) + rng.normal(0.0005, 0.0005, size=n)


# ---- formulas on arrays -----------------------------------------------------------------------


def test_psr_se_min_trl_dsr_match_the_papers() -> None:
    returns = fat_tailed(500, 12, seed=3)
    mom = ss.moments(returns)
    for j in range(returns.shape[1]):
        r = returns[:, j]
        assert mom.sr[j] == pytest.approx(paper_sr(r), rel=1e-10)
        assert float(ss.psr(mom.sr[j], mom.skew[j], mom.kurt[j], mom.t)) == pytest.approx(
            paper_psr(r), rel=1e-9)
        assert float(ss.psr(mom.sr[j], mom.skew[j], mom.kurt[j], mom.t, 0.02)) == pytest.approx(
            paper_psr(r, 0.02), rel=1e-9)
        assert float(ss.sharpe_se(mom.sr[j], mom.skew[j], mom.kurt[j], mom.t)) == pytest.approx(
            paper_se(r), rel=1e-9)
        if paper_sr(r) > 0:
            assert float(ss.min_track_record(mom.sr[j], mom.skew[j], mom.kurt[j])) == \
                pytest.approx(paper_min_trl(r), rel=1e-9)
        else:
            assert float(ss.min_track_record(mom.sr[j], mom.skew[j], mom.kurt[j])) == math.inf
        dsr = ss.deflated_sharpe(mom.sr[j], mom.skew[j], mom.kurt[j], mom.t,
                                 float(np.var(mom.sr, ddof=1)), returns.shape[1])
        assert float(dsr) == pytest.approx(paper_dsr(returns, j), rel=1e-9)


def test_compiled_psr_and_se_equal_the_scipy_formulas() -> None:
    returns = fat_tailed(300, 5, seed=8)
    for j in range(5):
        r = returns[:, j]
        p, se = ss.psr_and_se(float(len(r)), r.sum(), (r ** 2).sum(), (r ** 3).sum(),
                              (r ** 4).sum())
        assert p == pytest.approx(paper_psr(r), rel=1e-9)
        assert se == pytest.approx(paper_se(r), rel=1e-9)


def test_zero_std_gives_sr_zero_psr_one_half() -> None:
    flat = np.zeros((50, 1))
    mom = ss.moments(flat)
    assert mom.sr[0] == 0.0 and float(ss.per_bar_sharpe(50, 0.0, 0.0)) == 0.0
    assert float(ss.psr(mom.sr, mom.skew, mom.kurt, mom.t)[0]) == 0.5
    assert ss.psr_and_se(50.0, 0.0, 0.0, 0.0, 0.0) == (0.5, math.sqrt(1 / 49))


def test_one_trial_deflates_nothing() -> None:
    assert ss.sr0(0.5, 1) == 0.0
    r = fat_tailed(200, 1, seed=1)
    mom = ss.moments(r)
    assert float(ss.deflated_sharpe(mom.sr, mom.skew, mom.kurt, mom.t, math.nan, 1)[0]) == \
        pytest.approx(paper_psr(r[:, 0]))


# ---- CSCV ----------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [4, 8, 10])
def test_cscv_matches_the_paper_loop(s: int) -> None:
    returns = fat_tailed(403, 9, seed=s)  # 403 rows: blocks of unequal sizes
    returns[:, 4] = returns[:, 2]  # two identical trials: ties in both ranks
    mine = ss.cscv(*block_sums_of(returns, s))
    ref = paper_cscv(returns, s)
    np.testing.assert_allclose(mine.logits, ref["logits"], rtol=1e-9, atol=1e-12)
    assert mine.pbo == ref["pbo"]
    assert mine.degradation == pytest.approx(ref["degradation"], rel=1e-8)
    assert mine.p_loss == ref["p_loss"]


def test_pbo_of_skill_less_trials_is_one_half() -> None:
    # The 70 splits of one data set are strongly dependent, so PBO's spread comes from the data
    # sets, not from the number of splits: one data set of i.i.d. noise (30 trials, 400 bars,
    # 8 blocks) gives PBO with a standard deviation of ~0.19 (measured over 300 data sets).
    # The mean over k independent ones is within 4 standard errors (4 x 0.2 / sqrt(k)) of 0.5.
    k = 60
    pbos = [ss.cscv(*block_sums_of(np.random.default_rng(seed).normal(0, 0.01, (400, 30)), 8)).pbo
            for seed in range(k)]
    assert abs(np.mean(pbos) - 0.5) < 4 * 0.2 / math.sqrt(k)


def test_pbo_of_a_planted_edge_is_near_zero() -> None:
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.01, (2000, 40))
    returns[:, 17] += 0.003  # a real edge over the whole history
    found = ss.cscv(*block_sums_of(returns, 16))
    assert found.pbo < 0.01 and np.all(found.best == 17)
    assert found.p_loss == 0.0


def test_blocks_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="even number") as exc:
        ss.block_bounds(100, 7)
    assert exc.value.field == "blocks"
    with pytest.raises(ConfigError, match=r"blocks=16 is more than the 10 returns.*at most 10"):
        ss.block_bounds(10, 16)
    assert list(ss.block_bounds(10, 4)) == [0, 3, 6, 8, 10]  # numpy.array_split's sizes


# ---- the product on sweeps ----------------------------------------------------------------


def equity_returns(df: pd.DataFrame, params: dict[str, int], cash: float = 10_000) -> np.ndarray:
    """Bar returns of a single run, the first bar's measured from the cash (docs/metrics.md)."""
    res = ql.backtest(df, "sma_crossover", params, cash=cash, commission=0.001)
    eq = np.concatenate(([cash], res.equity.to_numpy()))
    return eq[1:] / eq[:-1] - 1


def test_sweep_overfitting_equals_the_paper_on_single_runs() -> None:
    df = random_walk(700, seed=11)
    grid = {"fast": [3, 5, 8, 13], "slow": [21, 34, 55]}
    sweep = ql.backtest(df, "sma_crossover", grid, cash=10_000, commission=0.001)
    ov = sweep.overfitting(blocks=8)
    combos = sweep.table[["fast", "slow"]].to_dict("records")
    matrix = np.column_stack([equity_returns(df, c) for c in combos])  # T x N: fine in a test
    ref = paper_cscv(matrix, 8)
    np.testing.assert_allclose(ov.logits, ref["logits"], rtol=1e-8, atol=1e-10)
    assert ov.pbo == ref["pbo"] and ov.p_loss == ref["p_loss"]
    assert ov.degradation == pytest.approx(ref["degradation"], rel=1e-7)
    assert list(ov.table.columns) == ["fast", "slow", "sr", "psr", "dsr", "min_trl"]
    assert ov.table[["fast", "slow"]].to_dict("records") == combos
    for j in range(len(combos)):
        assert ov.table["psr"][j] == pytest.approx(paper_psr(matrix[:, j]), rel=1e-8)
        assert ov.table["dsr"][j] == pytest.approx(paper_dsr(matrix, j), rel=1e-8)
    assert ov.n_sweep == ov.n_trials == len(combos)
    assert "N = 12 this sweep / 12 all trials so far" in ov._repr_html_()


def test_random_walk_sweeps_have_pbo_near_one_half_and_no_deflated_edge() -> None:
    # As above, one walk's PBO varies (standard deviation ~0.22 for this sweep, measured over 40
    # walks): the mean over 16 walks is within 4 standard errors (4 x 0.22 / 4) of 0.5. A
    # long-only crossover on a walk that happened to trend earns that trend, so the DSR of the
    # best can exceed 0.95 on some walks (2 of the 40 measured); none of these 16 does.
    pbos, dsrs = [], []
    for seed in range(100, 116):
        df = random_walk(1200, seed=seed)
        grid = {"fast": range(2, 12, 2), "slow": range(15, 60, 5)}
        ov = ql.backtest(df, "sma_crossover", grid).overfitting(blocks=8)
        pbos.append(ov.pbo)
        dsrs.append(ov.dsr_best)
    assert abs(np.mean(pbos) - 0.5) < 4 * 0.22 / 4
    assert max(dsrs) < 0.95


def _planted(bars: object, seed: int) -> np.ndarray:
    n = bars.n_bars  # type: ignore[attr-defined]
    if seed == 0:
        sig = np.zeros(n, np.int8)
        sig[0] = 1  # buy and hold: the drift is a real edge
        return sig
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1, 0, 1], np.int8), size=n, p=[0.05, 0.9, 0.05])


def test_planted_edge_sweep_has_pbo_near_zero() -> None:
    ql.strategy(name="planted_edge_test")(_planted)
    rng = np.random.default_rng(2)
    close = 100 * np.cumprod(1 + rng.normal(0.004, 0.01, 2000))
    idx = pd.date_range("2015-01-01", periods=2000, freq="D")
    df = pd.DataFrame({"Open": close, "High": close, "Low": close, "Close": close,
                       "Volume": 1.0}, index=idx)
    sweep = ql.backtest(df, "planted_edge_test", {"seed": list(range(20))})
    ov = sweep.overfitting(blocks=16)
    assert ov.pbo < 0.05
    assert ov.best == 0 and ov.dsr_best > 0.95


def test_bad_arguments_name_the_fix() -> None:
    df = random_walk(300, seed=4)
    sweep = ql.backtest(df, "sma_crossover", {"fast": [3, 5], "slow": [20, 30]})
    with pytest.raises(ConfigError, match=r"blocks must be an even number.*use e.g. blocks=16"):
        sweep.overfitting(blocks=5)
    with pytest.raises(ConfigError, match="blocks=302 is more than the 300 returns"):
        sweep.overfitting(blocks=302)
    with pytest.raises(ConfigError, match="trials=2 is fewer than this sweep's 4 combinations"):
        sweep.overfitting(trials=2)
    with pytest.raises(ConfigError, match=r"trials must be None.*'registry'.*positive int"):
        sweep.overfitting(trials="all")
    assert sweep.overfitting(blocks=4, trials=1000).n_trials == 1000
    single = ql.backtest(df, "sma_crossover", {"fast": 5, "slow": 20})
    with pytest.raises(ConfigError, match="needs a sweep"):
        single.overfitting()


def test_single_combination_sweep_deflates_nothing() -> None:
    df = random_walk(300, seed=6)
    sweep = ql.backtest(df, "sma_crossover", {"fast": [5], "slow": [20]})
    ov = sweep.overfitting(blocks=4)
    assert ov.n_trials == 1 and ov.sr0 == 0.0
    assert ov.table["dsr"][0] == ov.table["psr"][0]
    # one trial ranks 1 of 1: omega = 1/2, lambda = 0 <= 0 on every split (PBO's definition)
    assert ov.pbo == 1.0


def test_trials_from_the_registry_ledger(tmp_path: object) -> None:
    reg = SQLiteRegistry(tmp_path / "r.sqlite", tmp_path / "blobs")  # type: ignore[operator]
    df = random_walk(500, seed=9)
    first = ql.backtest(df, "sma_crossover", {"fast": [3, 5], "slow": [20, 30]})
    assert ledger.record(reg, first) == 4
    assert ledger.record(reg, first) == 0  # the same trials again add nothing
    second = ql.backtest(df, "sma_crossover", {"fast": [5, 8], "slow": [20, 30]})
    ledger.record(reg, second)
    count, variance = ledger.stats(reg, second.config)
    assert count == 6  # (5, 20) and (5, 30) were run twice
    ov = result_overfitting(second, blocks=4, trials="registry", registry=reg)
    assert ov.n_sweep == 4 and ov.n_trials == 6 and ov.trials_source == "registry"
    srs = np.array([v for v in reg.trial_ledger(ledger.group_key(second.config)).values()])
    assert variance == pytest.approx(np.var(srs, ddof=1)) and ov.sr_variance == variance
    assert ov.sr0 == ss.sr0(variance, 6)
    assert "N = 4 this sweep / 6 all trials so far" in ov._repr_html_()
    # other data: another group
    other = ql.backtest(random_walk(400, seed=9), "sma_crossover", {"fast": [3], "slow": [20]})
    assert ledger.stats(reg, other.config)[0] == 0
    reg.close()


# ---- the psr and sharpe_se metrics ------------------------------------------------------------


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_psr_and_sharpe_se_metrics_match_the_paper(fill: str) -> None:
    df = random_walk(600, seed=21)
    res = ql.backtest(df, "sma_crossover", {"fast": 5, "slow": 20}, cash=10_000,
                      commission=0.002, fill=fill)
    eq = np.concatenate(([10_000.0], res.equity.to_numpy()))  # E_{-1} = the cash
    r = eq[1:] / eq[:-1] - 1
    ppy = res.config["periods_per_year"]
    assert res.metrics["psr"] == pytest.approx(paper_psr(r), rel=1e-9)
    assert res.metrics["sharpe_se"] == pytest.approx(paper_se(r) * math.sqrt(ppy), rel=1e-9)
    assert res.metrics["sharpe"] == pytest.approx(paper_sr(r) * math.sqrt(ppy), rel=1e-9)
    # a sweep's row is the single run's, bit for bit
    sweep = ql.backtest(df, "sma_crossover", {"fast": [5, 6], "slow": [20]}, cash=10_000,
                        commission=0.002, fill=fill)
    row = sweep.table.iloc[0]
    assert (row["psr"], row["sharpe_se"]) == (res.metrics["psr"], res.metrics["sharpe_se"])


def test_psr_of_a_run_that_never_trades_is_one_half() -> None:
    df = random_walk(100, seed=2)
    res = ql.backtest(df, "sma_crossover", {"fast": 60, "slow": 99})
    assert res.metrics["n_trades"] == 0 and res.metrics["psr"] == 0.5
    assert res.metrics["sharpe_se"] == pytest.approx(math.sqrt(res.config["periods_per_year"] / 99))


# ---- queued runs: the ledger and the stored summary -----------------------------------------

home = jobs_support.home  # fixture: an isolated QUANTLAB_HOME with sample data
workers = jobs_support.workers  # fixture: worker processes started by the test


def test_a_queued_sweep_stores_its_overfitting_summary_and_its_trials(home: object) -> None:
    run = ql.submit(SWEEP).wait(timeout=WAIT)
    assert run.status == "completed", run.record["error"]
    stored = run.record["overfitting"]
    assert stored["n_sweep"] == 24 and stored["n_trials"] == 24 and stored["blocks"] == 16
    # the same sweep here, N from the ledger the worker wrote: the same statistics
    here = ql.backtest(SWEEP["symbols"], "sma_crossover", SWEEP["params"], start=SWEEP["start"],
                       end=SWEEP["end"], interval="1d")
    ov = here.overfitting(trials="registry")
    assert stored["pbo"] == ov.pbo and stored["dsr_best"] == pytest.approx(ov.dsr_best)
    assert run.result().overfitting_summary == stored  # kept with the result's blobs too
    # a one-off run with new params and a wider sweep add their trials: N counts them all
    single = {**SWEEP, "params": {"fast": 7, "slow": 50}}
    assert ql.submit(single).wait(timeout=WAIT).status == "completed"
    wider = {**SWEEP, "params": {"fast": list(range(5, 50, 5)), "slow": [50, 100, 150]}}
    second = ql.submit(wider).wait(timeout=WAIT)
    assert second.record["overfitting"]["n_sweep"] == 27
    assert second.record["overfitting"]["n_trials"] == 24 + 1 + 3
    assert ledger.stats(open_registry(), here.config)[0] == 28


# ---- the sweep results view -------------------------------------------------------------------


def test_table_dsr_from_sharpe_and_its_standard_error_equals_the_report() -> None:
    df = random_walk(800, seed=31)
    sweep = ql.backtest(df, "sma_crossover", {"fast": [3, 5, 8], "slow": [20, 30, 40]})
    ov = sweep.overfitting(blocks=8)
    from quantlab.research.overfitting import table_dsr

    dsr = table_dsr(sweep.table, sweep.config["periods_per_year"])
    np.testing.assert_allclose(dsr, ov.table["dsr"], rtol=1e-9)


def test_sweep_view_ranks_by_dsr_and_shows_pbo_beside_the_heatmap() -> None:
    from quantlab.notebook.results import SweepPanel

    df = random_walk(800, seed=32)
    sweep = ql.backtest(df, "sma_crossover", {"fast": [3, 5, 8], "slow": [20, 30, 40]})
    panel = SweepPanel(sweep)
    assert panel.metric.value == "dsr"
    badge = panel.children[3].children[1].value  # beside the heatmap
    ov = sweep.overfitting()
    assert f"PBO {ov.pbo:.3f}" in badge and "N = 9 this sweep / 9 all trials so far" in badge
    assert panel.table["dsr"].between(0, 1).all() and "Deflated Sharpe" in panel.best.value


def test_a_cancelled_sweep_adds_its_finished_combinations_to_the_ledger(
        home: object, workers: Workers) -> None:
    workers.start(env=SLOW)
    run = ql.submit(SWEEP)
    wait_for(lambda: any(e.type == "progress" and e.data.get("done_units", 0) >= 4
                         for e in run.events()), WAIT, "4 combinations done")
    run.cancel()
    run.wait(timeout=WAIT)
    assert run.record["status"] == "cancelled"
    kept = len(run.result().table)
    assert 4 <= kept < 24
    here = ql.backtest(SWEEP["symbols"], "sma_crossover", SWEEP["params"], start=SWEEP["start"],
                       end=SWEEP["end"], interval="1d")
    assert ledger.stats(open_registry(), here.config)[0] == kept
    assert run.record["overfitting"]["n_sweep"] == kept  # the finished part's statistics


def test_the_report_is_self_contained() -> None:
    sweep = ql.backtest(random_walk(400, seed=3), "sma_crossover",
                        {"fast": [3, 5], "slow": [20, 30]})
    page = sweep.overfitting(blocks=4)._repr_html_()
    assert page.count("<script") >= 2 and "Plotly.newPlot" in page
    # plotly.js inlined (no <script src=...> from a CDN), and once for both figures
    assert re.search(r"<script[^>]*\bsrc=", page) is None
    assert 4_000_000 < len(page) < 6_000_000


def test_a_result_loaded_from_blobs_keeps_its_summary_and_says_why_it_cannot_resimulate() -> None:
    sweep = ql.backtest(random_walk(300, seed=5), "sma_crossover", {"fast": [3, 5], "slow": [20]})
    sweep.overfitting_summary = {"pbo": 0.25}
    loaded = ql.Result.from_blobs(sweep.to_blobs())
    assert loaded.overfitting_summary == {"pbo": 0.25}
    with pytest.raises(ConfigError, match=r"not run in this process.*overfitting_summary"):
        loaded.overfitting()


def test_a_single_run_cancelled_before_its_result_is_a_trial(home: object,
                                                               workers: Workers) -> None:
    workers.start(env=SLOW)
    single = {**SWEEP, "params": {"fast": 9, "slow": 50}}
    run = ql.submit(single)
    wait_for(lambda: any(e.type == "progress" and e.data.get("step") == "simulating"
                         for e in run.events()), WAIT, "simulating")
    run.cancel()
    run.wait(timeout=WAIT)
    assert run.record["status"] == "cancelled"
    here = ql.backtest(SWEEP["symbols"], "sma_crossover", {"fast": 9, "slow": 50},
                       start=SWEEP["start"], end=SWEEP["end"], interval="1d")
    group = open_registry().trial_ledger(ledger.group_key(here.config))
    assert group == {ledger.trial_key(here.config, here.params): None}


# ---- block sums: each kernel variant, and in parts -------------------------------------------


def _paper_block_sums(equity: np.ndarray, cash: float, bounds: np.ndarray) -> np.ndarray:
    """Per block, the sums of r, r^2, r^3, r^4 of a run's bar returns (docs/metrics.md: the
    first bar's measured from the cash), written from the definition."""
    eq = np.concatenate(([cash], equity))
    r = eq[1:] / eq[:-1] - 1
    return np.array([[np.sum(r[a:b] ** p) for p in (1, 2, 3, 4)]
                     for a, b in itertools.pairwise(bounds)])


@pytest.mark.parametrize("case", ["two symbols", "stops swept"])
def test_block_sums_of_every_kernel_variant_equal_the_single_runs(home: object,
                                                                   case: str) -> None:
    """The re-simulation compiles only the kernel a sweep needs (several symbols: simulate;
    one symbol with stops: simulate1 with highs and lows; without: simulate1 alone); each
    gives the single runs' returns, block by block."""
    from quantlab.research.blocksums import block_sums

    symbols = ["AAA", "BBB"] if case == "two symbols" else ["AAA"]
    options: dict[str, object] = {} if case == "two symbols" else {"stop_loss": [None, 0.02]}
    grid = {"fast": [5, 10], "slow": [50]}
    dates = {"start": SWEEP["start"], "end": SWEEP["end"], "interval": "1d"}
    sweep = ql.backtest(symbols, "sma_crossover", grid, cash=10_000, **options, **dates)
    bounds = ss.block_bounds(len(sweep.equity), 4)
    sums = block_sums(sweep._source, bounds)
    rows = sweep.table.to_dict("records")
    for j, row in enumerate(rows):
        stop = row.get("stop_loss")
        stop = None if stop is None or stop != stop else float(stop)
        single = ql.backtest(symbols, "sma_crossover", {"fast": row["fast"], "slow": row["slow"]},
                             cash=10_000, stop_loss=stop, **dates)
        np.testing.assert_allclose(sums.sums[:, j, :],
                                   _paper_block_sums(single.equity.to_numpy(), 10_000, bounds),
                                   rtol=1e-9, atol=1e-15)


def test_block_sums_in_parts_tell_each_part_and_give_the_same_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.research import blocksums
    from quantlab.research.overfitting import steps

    sweep = ql.backtest(random_walk(400, seed=4), "sma_crossover",
                        {"fast": [3, 5, 8], "slow": [20, 30]})
    bounds = ss.block_bounds(400, 8)
    whole = blocksums.block_sums(sweep._source, bounds)
    monkeypatch.setattr(blocksums, "PART_COMBINATIONS", 4)
    told: list[tuple[int, int]] = []
    parts = blocksums.block_sums(sweep._source, bounds, progress=lambda d, t: told.append((d, t)))
    assert told == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(parts.sums, whole.sums)
    # the statistics: the re-simulation's two parts, then the CSCV, from 0
    told.clear()
    from quantlab.research import overfitting

    ov = overfitting(sweep._source, sweep.table, 8, progress=lambda d, t: told.append((d, t)))
    assert steps(6) == 3 and told == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert ov.pbo == sweep.overfitting(blocks=8).pbo


def test_a_sweeps_trial_keys_are_the_digest_of_its_settings_and_params() -> None:
    """The ledger's keys, written once per sweep for speed, stay the digest they always were
    (the sorted JSON of settings and params: trials recorded before keep matching)."""
    import hashlib
    import json

    sweep = ql.backtest(random_walk(300, seed=6), "sma_crossover",
                        {"fast": [3, 5], "slow": [20, 30]}, commission=0.001)
    keys = ledger.trials_of(sweep)
    assert len(keys) == 4
    settings = {k: v for k, v in sweep.config.items()
                if k not in ("params", "select", "n_combinations", "skipped", "engine_version")}
    for row in sweep.table[["fast", "slow"]].to_dict("records"):
        params = {k: int(v) for k, v in row.items()}
        text = json.dumps({"settings": settings, "params": params}, sort_keys=True,
                          separators=(",", ":"), default=str)
        assert hashlib.sha256(text.encode()).hexdigest() in keys
        assert ledger.trial_key(sweep.config, params) in keys


def test_a_swept_option_makes_each_value_its_own_trial_keyed_as_its_single_run() -> None:
    """commission=[0, 0.001] and stop_loss=[None, 0.05] over a 2 x 2 grid are 16 trials, not
    4: each row's key is the key of the single run with that row's params and options."""
    data = random_walk(300, seed=7)
    grid = {"fast": [3, 5], "slow": [20, 30]}
    sweep = ql.backtest(data, "sma_crossover", grid, commission=[0.0, 0.001],
                        stop_loss=[None, 0.05])
    keys = ledger.trials_of(sweep)
    assert len(sweep.table) == 16 and len(keys) == 16
    for commission, stop_loss in ((0.0, None), (0.001, 0.05)):
        one = ql.backtest(data, "sma_crossover", {"fast": 5, "slow": 30},
                          commission=commission, stop_loss=stop_loss)
        (key, sharpe), = ledger.trials_of(one).items()
        assert key in keys and keys[key] == pytest.approx(sharpe)


@ql.strategy(name="fails_at_three")
def fails_at_three(bars, n=2):
    if n == 3:
        raise ValueError("n=3 is refused")
    close = bars.close[0]
    mean = pd.Series(close).rolling(n).mean().to_numpy()
    return np.where(close > mean, 1, 0)


def test_a_sweep_with_a_failed_combination_keeps_each_rows_own_statistics() -> None:
    """The table leaves out the combination that raised; row i of the statistics must still be
    row i's combination, not grid position i: the same numbers as the grid without it."""
    data = random_walk(400, seed=11)
    sweep = ql.backtest(data, "fails_at_three", {"n": [2, 3, 4, 5, 6]})
    assert list(sweep.table["n"]) == [2, 4, 5, 6]
    without = ql.backtest(data, "fails_at_three", {"n": [2, 4, 5, 6]})
    got, want = sweep.overfitting(blocks=4), without.overfitting(blocks=4)
    pd.testing.assert_frame_equal(got.table, want.table)
    assert got.pbo == want.pbo and len(set(got.table["sr"])) == 4


def test_the_same_trial_has_one_key_whatever_failed_beside_it_or_carried_it() -> None:
    """A sweep with a failed combination, and a single run given the sweep's best with its
    option carried in params, key each trial as the plain single run does."""
    data = random_walk(400, seed=12)
    sweep = ql.backtest(data, "fails_at_three", {"n": [2, 3, 4]}, commission=[0.0, 0.001])
    keys = ledger.trials_of(sweep)
    assert len(keys) == 4  # n in (2, 4) x two commissions; n=3 raised
    plain = ql.backtest(data, "fails_at_three", {"n": 4}, commission=0.001)
    carried = ql.backtest(data, "fails_at_three", {"n": 4, "commission": 0.001})
    (key, _), = ledger.trials_of(plain).items()
    assert key in keys and set(ledger.trials_of(carried)) == {key}
