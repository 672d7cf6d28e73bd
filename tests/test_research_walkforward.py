"""Walk-forward analysis (quantlab.research.walkforward, ``ql.walk_forward``).

The folds are checked against tables written out by hand; each fold's in-sample choice against
``ql.backtest`` on the training window; each test run against a full-history run whose signals
are masked before ``test_start`` (built here, not by the product); the stitched curve, its
Sharpe ratio and the walk-forward efficiency (Pardo 2008: mean annualised out-of-sample return /
mean annualised in-sample return) against formulas written here.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import quantlab as ql
from quantlab.errors import ConfigError
from quantlab.research.walkforward import Fold, bars_of, make_folds, oos_signals
from quantlab.strategies import Strategy, get_strategy
from tests.support import notebook as nb_support
from tests.support.engine import random_walk

nb_home = nb_support.nb_home  # a fixture: a fresh home with the sample data

GRID = {"fast": [5, 10, 20], "slow": [30, 60]}
OPTIONS = {"commission": 0.001}
TRAIN, TEST = 200, 100
P = 252.0  # bars per year of daily bars (quantlab.metrics: "1d" -> 252)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return random_walk(640, seed=7)


@pytest.fixture(scope="module")
def wf(data: pd.DataFrame) -> ql.WalkForward:
    return ql.walk_forward(data, "sma_crossover", params=GRID, train=TRAIN, test=TEST,
                           **OPTIONS)


# ---- the folds --------------------------------------------------------------------------------


def test_rolling_folds_are_the_table_written_out() -> None:
    # 20 bars, train 8, test 4: test windows end to end from bar 8; the last whole one ends at 20
    assert make_folds(20, 8, 4) == [Fold(0, 8, 8, 12), Fold(4, 12, 12, 16), Fold(8, 16, 16, 20)]
    # step 5: windows with a gap of one bar; bar 18+4 > 20 ends it
    assert make_folds(21, 8, 4, step=5) == [Fold(0, 8, 8, 12), Fold(5, 13, 13, 17)]
    # exactly train + test bars: one fold
    assert make_folds(12, 8, 4) == [Fold(0, 8, 8, 12)]


def test_anchored_folds_grow_from_the_first_bar() -> None:
    assert make_folds(20, 8, 4, anchored=True) == [
        Fold(0, 8, 8, 12), Fold(0, 12, 12, 16), Fold(0, 16, 16, 20)]


def test_folds_table_has_the_windows_params_and_scores(wf: ql.WalkForward,
                                                       data: pd.DataFrame) -> None:
    idx = data.index
    # 640 bars, train 200, test 100: tests at 200, 300, 400, 500 (600 + 100 > 640)
    expected = pd.DataFrame({
        "fold": [0, 1, 2, 3],
        "train_start": idx[[0, 100, 200, 300]], "train_end": idx[[199, 299, 399, 499]],
        "test_start": idx[[200, 300, 400, 500]], "test_end": idx[[299, 399, 499, 599]]})
    pd.testing.assert_frame_equal(wf.folds[expected.columns], expected, check_freq=False)
    assert list(wf.folds.columns) == ["fold", "train_start", "train_end", "test_start",
                                      "test_end", "fast", "slow", "is_sharpe", "oos_sharpe",
                                      "is_cagr_pct", "oos_cagr_pct"]


def test_anchored_walk_forward_trains_from_the_start(data: pd.DataFrame) -> None:
    wf = ql.walk_forward(data, "sma_crossover", params={"fast": [5, 10], "slow": [30]},
                         train=300, test=150, anchored=True)
    assert list(wf.folds["train_start"]) == [data.index[0]] * 2
    assert list(wf.folds["train_end"]) == list(data.index[[299, 449]])
    assert list(wf.folds["test_start"]) == list(data.index[[300, 450]])


# ---- in sample: exactly the sweep of the training window -------------------------------------


def test_each_fold_chooses_what_backtest_on_its_window_chooses(wf: ql.WalkForward,
                                                               data: pd.DataFrame) -> None:
    for _, row in wf.folds.iterrows():
        ins = ql.backtest(data, "sma_crossover", params=GRID, start=row["train_start"],
                          end=row["train_end"], **OPTIONS)
        assert {"fast": row["fast"], "slow": row["slow"]} == ins.params
        assert row["is_sharpe"] == ins.metrics["sharpe"]
        # the best by select, as written: the largest Sharpe of the window's table
        assert ins.metrics["sharpe"] == ins.table["sharpe"].max()


def test_select_picks_by_another_metric(data: pd.DataFrame) -> None:
    wf = ql.walk_forward(data, "sma_crossover", params=GRID, train=TRAIN, test=TEST,
                         select="total_return_pct")
    row = wf.folds.iloc[1]
    ins = ql.backtest(data, "sma_crossover", params=GRID, start=row["train_start"],
                      end=row["train_end"], select="total_return_pct")
    assert row["is_total_return_pct"] == ins.table["total_return_pct"].max()
    assert {"fast": row["fast"], "slow": row["slow"]} == ins.params


# ---- out of sample: warmed signals, flat at test_start ---------------------------------------


def _masked(test_start: int) -> Strategy:
    """sma_crossover on the whole history with every signal before ``test_start`` dropped."""
    inner = get_strategy("sma_crossover")

    def masked_crossover(bars, fast, slow):  # type: ignore[no-untyped-def]
        sig = inner.signals(bars, {"fast": fast, "slow": slow}).copy()
        sig[:, :test_start] = 0
        return sig

    return Strategy(masked_crossover)


def test_oos_trades_start_in_the_test_window_and_match_a_masked_full_run(
        wf: ql.WalkForward, data: pd.DataFrame) -> None:
    starts = [int(data.index.get_loc(t)) for t in wf.folds["test_start"]]
    ends = [int(data.index.get_loc(t)) + 1 for t in wf.folds["test_end"]]
    traded = 0
    for k, (result, row) in enumerate(zip(wf.results, wf.folds.itertuples(), strict=True)):
        trades = result.trades
        traded += len(trades)
        assert (trades["entry_time"] >= row.test_start).all()
        assert result.equity.index[0] == row.test_start
        assert result.equity.index[-1] == row.test_end
        # the same trades as the whole history up to test_end run with signals masked before
        # test_start (so its indicators warmed on every earlier bar)
        full = ql.backtest(data.iloc[:ends[k]], _masked(starts[k]),
                           params={"fast": row.fast, "slow": row.slow}, **OPTIONS)
        assert (full.trades["entry_time"] >= row.test_start).all()
        cols = ["entry_time", "exit_time", "size", "entry_price", "exit_price", "pnl"]
        pd.testing.assert_frame_equal(trades[cols].reset_index(drop=True),
                                      full.trades[cols].reset_index(drop=True))
        np.testing.assert_allclose(result.equity.to_numpy(),
                                   full.equity.iloc[starts[k]:].to_numpy())
        assert result.metrics["sharpe"] == pytest.approx(row.oos_sharpe)
    assert traded > 0  # the comparison compared something


def test_oos_signals_equal_the_full_history_signals(data: pd.DataFrame) -> None:
    strat = get_strategy("sma_crossover")
    bars = ql.engine.api.load_bars(data)  # type: ignore[attr-defined]
    full = strat.signals(bars, {"fast": 10, "slow": 60})
    window = oos_signals(bars, strat, {"fast": 10, "slow": 60}, 300, 400)
    np.testing.assert_array_equal(window, full[:, 300:400])
    assert np.count_nonzero(window) > 0


# ---- the stitched curve, its metrics, the efficiency -----------------------------------------


def test_stitched_equity_continues_each_fold_from_the_last(wf: ql.WalkForward) -> None:
    cash = 10_000.0
    assert len(wf.equity) == 4 * TEST
    assert wf.equity.index.is_monotonic_increasing
    level = cash
    for k, result in enumerate(wf.results):
        part = wf.equity.iloc[k * TEST:(k + 1) * TEST]
        np.testing.assert_allclose(part.to_numpy(), result.equity.to_numpy() * level / cash)
        level = float(part.iloc[-1])
    finals = [r.equity.iloc[-1] / cash for r in wf.results]
    assert wf.equity.iloc[-1] == pytest.approx(cash * math.prod(finals))


def test_metrics_of_the_stitched_curve(wf: ql.WalkForward) -> None:
    e = wf.equity.to_numpy()
    r = np.diff(np.concatenate(([10_000.0], e))) / np.concatenate(([10_000.0], e[:-1]))
    assert wf.metrics["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(P))
    assert wf.metrics["total_return_pct"] == pytest.approx(100 * (e[-1] / 10_000.0 - 1))
    assert wf.metrics["n_trades"] == sum(len(x.trades) for x in wf.results)


def _cagr(equity: pd.Series, cash: float = 10_000.0) -> float:
    years = len(equity) / P
    return 100.0 * ((equity.iloc[-1] / cash) ** (1 / years) - 1)


def test_efficiency_is_mean_oos_over_mean_is_annualised_return(wf: ql.WalkForward,
                                                               data: pd.DataFrame) -> None:
    is_cagr, oos_cagr = [], []
    for result, row in zip(wf.results, wf.folds.itertuples(), strict=True):
        chosen = ql.backtest(data, "sma_crossover", params={"fast": row.fast, "slow": row.slow},
                             start=row.train_start, end=row.train_end, **OPTIONS)
        is_cagr.append(_cagr(chosen.equity))
        oos_cagr.append(_cagr(result.equity))
    assert wf.efficiency == pytest.approx(np.mean(oos_cagr) / np.mean(is_cagr))


# ---- durations, one combination, errors, the view --------------------------------------------


def test_durations_count_the_bars_of_the_span(data: pd.DataFrame) -> None:
    idx = data.index  # daily, calendar days from 2020-01-01
    assert bars_of("1y", idx, "train") == 366  # 2020 is a leap year
    assert bars_of("6M", idx, "test") == 182  # 2020-01-01 .. 2020-06-30
    assert bars_of("2w", idx, "test") == 14
    assert bars_of("30d", idx, "test") == 30
    assert bars_of(7, idx, "test") == 7
    wf = ql.walk_forward(data, "sma_crossover", params={"fast": [5, 10], "slow": [30]},
                         train="1y", test="3M")
    # 3 months from 2020-01-01 is 91 bars: tests at 366, 457, 548 (548 + 91 = 639 <= 640)
    assert list(wf.folds["test_start"]) == list(idx[[366, 457, 548]])
    assert list(wf.folds["test_end"]) == list(idx[[456, 547, 638]])
    assert list(wf.folds["train_start"]) == list(idx[[0, 91, 182]])


def test_a_grid_of_one_combination_is_fine(data: pd.DataFrame) -> None:
    wf = ql.walk_forward(data, "sma_crossover", params={"fast": 10, "slow": 30},
                         train=TRAIN, test=TEST)
    assert list(wf.folds["fast"]) == [10] * 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train": 600, "test": 100}, "train + test = 600 + 100 = 700 bars is longer than the data "
                                  "(640 bars); shorten train or test"),
    ({"step": 0}, "step=0 must be a positive number of bars"),
    ({"step": -5}, "step=-5 must be a positive number of bars"),
    ({"step": 50}, "step=50 is shorter than test=100: the test windows would overlap"),
    ({"select": "luck"}, "select='luck' is not a metric a sweep can select by; use one of "
                         "sharpe"),
    ({"train": "2 parsecs"}, "train='2 parsecs' is not a window size; give a positive number of "
                             "bars (e.g. 504) or a duration"),
    ({"test": 0}, "test=0 is not a window size"),
])
def test_errors_name_the_fix(data: pd.DataFrame, kwargs: dict, message: str) -> None:
    args = {"train": TRAIN, "test": TEST, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        ql.walk_forward(data, "sma_crossover", params=GRID, **args)


def test_view_shows_the_folds_and_a_figure(wf: ql.WalkForward) -> None:
    page = wf._repr_html_()
    assert "<table" in page and "oos_sharpe" in page
    assert page.count("plotly.js v") <= 1 and "Plotly.newPlot" in page
    fig = wf.figure()
    assert [t.name for t in fig.data] == ["out-of-sample equity", "fast", "slow",
                                          "in-sample sharpe", "out-of-sample sharpe"]
    assert "efficiency" in repr(wf)


# ---- the %%backtest key ----------------------------------------------------------------------

WF_CELL = """%%backtest --out wf_out
strategy: sma_crossover
symbols: [AAA]
start: 2020-01-01
end: 2021-12-31
params: {fast: [5, 10], slow: "30..60:30"}
commission: 0.001
select: sortino
walk_forward: {train: 200, test: 100}
"""


@pytest.fixture
def ip(nb_home: Path) -> Iterator[InteractiveShell]:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "quantlab")
    yield shell
    shell.user_ns.pop("wf_out", None)


def _runs() -> int:
    from quantlab.registry import open_registry

    return int(open_registry().count_runs())


def test_backtest_cell_with_walk_forward_is_queued_and_equals_the_kernel(
        ip: InteractiveShell) -> None:
    from quantlab.engine.api import load_bars

    # the cell queues the walk-forward (QuantLab starts a worker) and waits for it
    result = ip.run_cell(WF_CELL.replace("--out wf_out", "--out wf_out --wait"),
                         store_history=False)
    assert result.error_in_exec is None, result.error_in_exec
    run = result.result
    assert isinstance(run, ql.Run) and ip.user_ns["wf_out"] is run
    assert run.status == "completed", run.record.get("error")
    wf = run.result()
    assert isinstance(wf, ql.WalkForward) and len(wf.folds) >= 2
    assert _runs() == 1
    bars = load_bars(["AAA"], start="2020-01-01", end="2021-12-31")
    direct = ql.walk_forward(bars, "sma_crossover", params={"fast": [5, 10], "slow": [30, 60]},
                             train=200, test=100, select="sortino", commission=0.001)
    pd.testing.assert_frame_equal(wf.folds, direct.folds)
    pd.testing.assert_series_equal(wf.equity, direct.equity)
    assert "is_sortino" in wf.folds.columns
    assert "oos_sortino" in wf._repr_html_()


def test_walk_forward_key_errors_name_the_fix(ip: InteractiveShell) -> None:
    result = ip.run_cell(WF_CELL.replace("{train: 200", "{tarin: 200"), store_history=False)
    assert isinstance(result.error_in_exec, ConfigError)
    assert str(result.error_in_exec) == "walk_forward: unknown key 'tarin' — did you mean 'train'?"
    result = ip.run_cell(WF_CELL.replace("train: 200", "train: 2 parsecs"), store_history=False)
    assert "train='2 parsecs' is not a window size" in str(result.error_in_exec)
    assert _runs() == 0 and "wf_out" not in ip.user_ns


def test_a_walk_forward_with_a_notebook_strategy_is_not_queued(nb_home: Path) -> None:
    body = WF_CELL.split("\n", 1)[1].replace('"30..60:30"', "[30, 60]")
    config = {**__import__("yaml").safe_load(body), "strategy": "peeky",
              "strategy_source": "def peeky(bars):\n    return bars.close[0] * 0\n"}
    with pytest.raises(ConfigError, match=re.escape(
            "walk_forward with a strategy defined in this notebook ('peeky') is not queued: "
            "call ql.walk_forward(...) in the kernel")):
        ql.submit(config)
    assert _runs() == 0


NB_STRATEGY = """import numpy as np
import quantlab as ql

@ql.strategy(name="nb_trend")
def nb_trend(bars, n=20):
    close = bars.close[0]
    mean = np.convolve(close, np.ones(n) / n)[:len(close)]
    mean[:n - 1] = np.nan
    return np.where(close > mean, 1, 0)
"""


def test_a_cell_analysing_a_notebook_strategy_runs_it_in_the_kernel(
        ip: InteractiveShell) -> None:
    """Such a run is not queued (a worker would need a sandbox per fold): the %%backtest cell
    computes it here, equal to ql.walk_forward / ql.cross_validate, and records no run."""
    from quantlab.engine.api import load_bars

    assert ip.run_cell(NB_STRATEGY, store_history=False).error_in_exec is None
    body = ("strategy: nb_trend\nsymbols: [AAA]\nstart: 2020-01-01\nend: 2021-12-31\n"
            "params: {n: [10, 30]}\n")
    bars = load_bars(["AAA"], start="2020-01-01", end="2021-12-31")
    cell = ip.run_cell(f"%%backtest --out wf_out\n{body}walk_forward: {{train: 200, test: 100}}\n",
                       store_history=False)
    assert cell.error_in_exec is None, cell.error_in_exec
    wf = cell.result
    assert isinstance(wf, ql.WalkForward) and ip.user_ns["wf_out"] is wf
    direct = ql.walk_forward(bars, "nb_trend", params={"n": [10, 30]}, train=200, test=100)
    pd.testing.assert_frame_equal(wf.folds, direct.folds)
    pd.testing.assert_series_equal(wf.equity, direct.equity)
    cell = ip.run_cell(f"%%backtest\n{body}cross_validate: {{groups: 6, test_groups: 2}}\n",
                       store_history=False)
    assert cell.error_in_exec is None, cell.error_in_exec
    cv = cell.result
    assert isinstance(cv, ql.CrossValidation)
    direct_cv = ql.cross_validate(bars, "nb_trend", params={"n": [10, 30]}, groups=6,
                                  test_groups=2)
    np.testing.assert_array_equal(cv.sharpe, direct_cv.sharpe)
    assert _runs() == 0


def test_a_config_without_walk_forward_keeps_its_canonical_form() -> None:
    from quantlab.config import BacktestConfig

    plain = {"strategy": "sma_crossover", "symbols": ["AAA"], "params": {"fast": 10, "slow": 30}}
    assert "walk_forward" not in BacktestConfig.from_any(plain).canonical()
    spec = BacktestConfig.from_any({**plain, "walk_forward": {"train": "2y", "test": "6M"}})
    assert spec.canonical()["walk_forward"] == {"train": "2y", "test": "6M", "step": None,
                                                "anchored": False}


# ---- combinatorial purged cross-validation (AFML ch. 12), written out with plain loops -----


def paper_returns(data: pd.DataFrame, combos: list[dict], **options: object) -> np.ndarray:
    """T x N bar returns r_t = E_t / E_{t-1} - 1 (E_{-1} the cash) of each combination's run
    over all the bars."""
    cols = []
    for combo in combos:
        e = ql.backtest(data, "sma_crossover", params=combo, **options).equity.to_numpy()
        prev = np.concatenate(([10_000.0], e[:-1]))
        cols.append(e / prev - 1)
    return np.column_stack(cols)


def paper_sr(r: np.ndarray) -> float:
    sd = np.std(r, ddof=1)
    return 0.0 if sd == 0 else float(np.mean(r) / sd)


def paper_cpcv(r: np.ndarray, n_groups: int, k: int, purge: int, embargo: int) -> list[float]:
    """CPCV: N contiguous groups; for each k-subset as test set, train on the rest without the
    purge bars before and the embargo bars after each test group; pick the best training SR;
    path p takes for each group the p-th split testing it (in combinations order)."""
    t = r.shape[0]
    groups = np.array_split(np.arange(t), n_groups)
    splits = list(itertools.combinations(range(n_groups), k))
    chosen = []
    for test in splits:
        train = np.ones(t, bool)
        for g in test:
            lo, hi = groups[g][0], groups[g][-1] + 1
            train[max(0, lo - purge):min(t, hi + embargo)] = False
        srs = [paper_sr(r[train, j]) for j in range(r.shape[1])]
        chosen.append(int(np.argmax(srs)))
    n_paths = math.comb(n_groups, k) * k // n_groups
    sharpes = []
    for p in range(n_paths):
        path = []
        for g in range(n_groups):
            split = [i for i, test in enumerate(splits) if g in test][p]
            path.append(r[groups[g], chosen[split]])
        sharpes.append(paper_sr(np.concatenate(path)) * math.sqrt(P))
    return sharpes


CV_GRID = {"fast": [5, 10, 20], "slow": [30, 60]}
CV_COMBOS = [{"fast": f, "slow": s} for f in (5, 10, 20) for s in (30, 60)]


@pytest.mark.parametrize(("n_groups", "k", "purge", "embargo"), [(6, 2, 0, 0), (6, 2, 25, 10),
                                                                 (5, 3, 40, 5)])
def test_cross_validate_matches_cpcv_written_from_the_book(data: pd.DataFrame, n_groups: int,
                                                          k: int, purge: int,
                                                          embargo: int) -> None:
    cv = ql.cross_validate(data, "sma_crossover", params=CV_GRID, groups=n_groups,
                           test_groups=k, purge=purge, embargo=embargo, **OPTIONS)
    expected = paper_cpcv(paper_returns(data, CV_COMBOS, **OPTIONS), n_groups, k, purge, embargo)
    assert len(cv.sharpe) == math.comb(n_groups, k) * k // n_groups
    np.testing.assert_allclose(cv.sharpe, expected, rtol=1e-9, atol=1e-12)
    assert len(cv.splits) == math.comb(n_groups, k)
    assert list(cv.groups["bars"]) == [len(g) for g in np.array_split(np.arange(640), n_groups)]


def test_default_purge_is_the_longest_lookback_plus_the_longest_trade(
        data: pd.DataFrame) -> None:
    cv = ql.cross_validate(data, "sma_crossover", params=CV_GRID, groups=4, test_groups=1)
    best = ql.backtest(data, "sma_crossover", params=CV_GRID)
    longest = int((best.trades["exit_bar"] - best.trades["entry_bar"]).max())
    assert cv.purge == 60 + longest
    assert len(cv.sharpe) == 1  # C(4,1) * 1 / 4
    assert "Combinatorial purged cross-validation" in cv._repr_html_()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"groups": 1}, "groups=1 must be a whole number of at least 2"),
    ({"groups": 4, "test_groups": 4}, "test_groups=4 must be a whole number from 1 to "
                                      "groups - 1 = 3"),
    ({"purge": -1}, "purge=-1 must be a whole number of bars >= 0"),
    ({"groups": 400}, "640 bars are too few for 400 groups"),
    ({"groups": 2, "test_groups": 1, "purge": 400},
     "purge=400 and embargo=0 leave no training bars"),
])
def test_cross_validate_errors_name_the_fix(data: pd.DataFrame, kwargs: dict,
                                            message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ql.cross_validate(data, "sma_crossover", params=CV_GRID, **kwargs)
