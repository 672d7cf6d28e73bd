"""ql.compare / ql.stats: the maths on hand-computable curves, and statistics over a real
registry in a temporary QUANTLAB_HOME."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
import quantlab.render.html  # the HTML views, as `ql.compare` loads them
from quantlab import analytics
from quantlab.analytics import (
    Comparison,
    align_equity,
    config_diff,
    drawdown_periods,
    joint_drawdowns,
    period_start,
)


def curve(values: list[float], start: str = "2024-01-01", freq: str = "D") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq=freq),
                     dtype=float)


def fake_result(values: list[float], start: str = "2024-01-01", **config: object
                ) -> SimpleNamespace:
    metrics = {"total_return_pct": (values[-1] / values[0] - 1) * 100, "sharpe": 1.0}
    return SimpleNamespace(equity=curve(values, start), metrics=metrics,
                           config={"strategy": "sma_crossover", **config})


# --------------------------------------------------------------------------- drawdowns


def test_drawdown_periods_peak_trough_recovery_and_depth() -> None:
    eq = curve([100, 110, 99, 88, 110, 121, 100, 121, 130, 117])
    table = drawdown_periods(eq, top=None)
    assert list(table["depth_pct"].round(6)) == [
        round(-20.0, 6), round((100 / 121 - 1) * 100, 6), round(-10.0, 6)]
    deepest = table.iloc[0]
    assert deepest["start"] == pd.Timestamp("2024-01-02")  # the 110 peak
    assert deepest["trough"] == pd.Timestamp("2024-01-04")  # 88
    assert deepest["recovery"] == pd.Timestamp("2024-01-05")  # back to 110
    assert deepest["days"] == 3 and deepest["recovered"]
    last = table.iloc[2]  # 130 -> 117, still under water at the end
    assert last["start"] == pd.Timestamp("2024-01-09")
    assert pd.isna(last["recovery"]) and not last["recovered"]
    assert last["days"] == 1


def test_drawdown_periods_top_n_and_no_drawdown() -> None:
    eq = curve([100, 110, 99, 88, 110, 121, 100, 121, 130, 117])
    assert len(drawdown_periods(eq, top=2)) == 2
    assert drawdown_periods(curve([1, 2, 3, 4])).empty


# --------------------------------------------------------------------------- alignment


def test_align_equity_uses_common_period_and_rebases_to_100() -> None:
    a = curve([100, 102, 104, 106, 108, 110], start="2024-01-01")
    b = curve([50, 55, 60, 66, 72, 80], start="2024-01-03")
    aligned, common = align_equity({"a": a, "b": b})
    assert common == (pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-06"))
    assert list(aligned.index) == list(pd.date_range("2024-01-03", "2024-01-06"))
    assert aligned["a"].iloc[0] == pytest.approx(100.0)
    assert aligned["b"].iloc[0] == pytest.approx(100.0)
    assert aligned["a"].iloc[-1] == pytest.approx(110 / 104 * 100)
    assert aligned["b"].iloc[-1] == pytest.approx(66 / 50 * 100)


def test_align_equity_holds_value_on_a_missing_day_and_takes_last_intraday_value() -> None:
    a = curve([100, 101, 102, 103], start="2024-01-01")
    b = curve([100, 110, 120], start="2024-01-01").drop(pd.Timestamp("2024-01-02"))
    b = pd.concat([b, pd.Series([130.0], index=[pd.Timestamp("2024-01-04 15:00")])])
    b = pd.concat([b, pd.Series([125.0], index=[pd.Timestamp("2024-01-04 16:00")])])
    aligned, _ = align_equity({"a": a, "b": b})
    assert aligned.loc["2024-01-02", "b"] == pytest.approx(100.0)  # held from Jan 1
    assert aligned.loc["2024-01-04", "b"] == pytest.approx(125.0)  # last bar of the day


def test_align_without_common_dates_rebases_each_curve_on_its_own_start() -> None:
    a = curve([100, 120, 130], start="2020-01-01")
    b = curve([10, 11], start="2021-01-01")
    aligned, common = align_equity({"a": a, "b": b})
    assert common is None
    assert aligned["a"].dropna().tolist() == pytest.approx([100, 120, 130])
    assert aligned["b"].dropna().tolist() == pytest.approx([100, 110])


# --------------------------------------------------------------------------- comparison


def three_runs() -> dict[str, SimpleNamespace]:
    base = [100.0, 101, 99, 102, 104, 103, 107, 105, 108, 110]
    ret = np.diff(base) / base[:-1]
    doubled = [100.0]
    opposite = [100.0]
    for r in ret:
        doubled.append(doubled[-1] * (1 + 2 * r))
        opposite.append(opposite[-1] * (1 - r))
    return {
        "base": fake_result(base, params={"fast": 10, "slow": 50}, symbols=["AAA"],
                            commission=0.001),
        "double": fake_result(doubled, params={"fast": 20, "slow": 50}, symbols=["AAA"],
                              commission=0.001),
        "opposite": fake_result(opposite, params={"fast": 10, "slow": 50},
                                symbols=["AAA", "BBB"], commission=0.0),
    }


def test_comparison_correlation_of_daily_returns() -> None:
    cmp = Comparison.from_results(three_runs())
    corr = cmp.correlation
    assert corr.loc["base", "double"] == pytest.approx(1.0)
    assert corr.loc["base", "opposite"] == pytest.approx(-1.0)
    assert corr.loc["base", "base"] == pytest.approx(1.0)
    assert list(corr.columns) == ["base", "double", "opposite"]


def test_comparison_metrics_equity_and_best() -> None:
    runs = three_runs()
    cmp = Comparison.from_results(runs)
    assert list(cmp.metrics.index) == ["base", "double", "opposite"]
    assert cmp.metrics.loc["base", "total_return_pct"] == pytest.approx(10.0)
    assert cmp.best("total_return_pct") == "double"
    assert cmp.equity.iloc[0].tolist() == pytest.approx([100.0, 100.0, 100.0])
    assert cmp.equity["base"].iloc[-1] == pytest.approx(110.0)
    with pytest.raises(ql.ConfigError, match="no metric 'sharp' in this comparison; choose one"):
        cmp.best("sharp")


def test_comparison_drawdowns_largest_and_together() -> None:
    a = curve([100, 90, 95, 100, 100, 80, 100])
    b = curve([100, 100, 90, 100, 90, 85, 100])
    cmp = Comparison.from_results({"a": SimpleNamespace(equity=a, metrics={}, config={}),
                                   "b": SimpleNamespace(equity=b, metrics={}, config={})})
    largest = cmp.drawdowns.largest
    a_rows = largest[largest["run"] == "a"]
    assert a_rows["depth_pct"].tolist() == pytest.approx([-20.0, -10.0])
    assert a_rows["rank"].tolist() == [1, 2]
    # a is under water on Jan 2-3 and Jan 6; b on Jan 3 and Jan 5-6: together on Jan 3 and 6
    assert list(cmp.drawdowns.dates) == [pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-06")]
    together = cmp.drawdowns.together
    assert together["days"].tolist() == [1, 1]
    assert together["a_worst_pct"].tolist() == pytest.approx([-5.0, -20.0])
    assert together["b_worst_pct"].tolist() == pytest.approx([-10.0, -15.0])
    assert cmp.drawdowns.together_pct == pytest.approx(200 / 7)


def test_joint_drawdowns_groups_consecutive_days() -> None:
    frame = pd.DataFrame({"a": [100, 90, 80, 85, 100], "b": [100, 95, 90, 99, 98]},
                         index=pd.date_range("2024-01-01", periods=5), dtype=float)
    dates, periods = joint_drawdowns(frame)
    assert len(dates) == 3
    assert periods[["start", "end", "days"]].values.tolist() == [
        [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-04"), 3]]


def test_config_diff_names_params_symbols_costs_and_data() -> None:
    diff = config_diff({
        "r1": {"strategy": "sma", "params": {"fast": 10, "slow": 50}, "symbols": ["AAA"],
               "commission": 0.001, "name": "one", "tags": ["x"],
               "data_fingerprint": "abc", "engine_version": "1"},
        "r2": {"strategy": "sma", "params": {"fast": 20, "slow": 50}, "symbols": ["AAA", "BBB"],
               "commission": 0.0, "name": "two", "tags": ["y"],
               "data_fingerprint": "abd", "engine_version": "1"},
    })
    assert list(diff.index) == ["params.fast", "symbols", "commission", "data_fingerprint"]
    assert diff.loc["params.fast", "category"] == "params"
    assert diff.loc["params.fast", "r1"] == "10" and diff.loc["params.fast", "r2"] == "20"
    assert diff.loc["symbols", "r2"] == "AAA, BBB"
    assert diff.loc["commission", "category"] == "costs"
    assert diff.loc["data_fingerprint", "category"] == "data"


def test_config_diff_marks_a_key_only_one_run_sets() -> None:
    diff = config_diff({"a": {"stop_loss": 0.05}, "b": {}})
    assert diff.loc["stop_loss", "a"] == "0.05" and diff.loc["stop_loss", "b"] == "—"
    assert diff.loc["stop_loss", "category"] == "execution"
    assert config_diff({"a": {"cash": 1}, "b": {"cash": 1}}).empty


def test_a_comparison_of_sweeps_shows_each_ones_combination_and_their_grids_as_ranges() -> None:
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, 600)))
    bars = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": 1e6},
                        index=pd.date_range("2020-01-01", periods=600, freq="B"))
    narrow = ql.backtest(bars, "sma_crossover", {"fast": [5, 10], "slow": [50, 100]})
    wide = ql.backtest(bars, "sma_crossover", {"fast": list(range(5, 65, 5)), "slow": [50, 100]})
    single = ql.backtest(bars, "sma_crossover", {"fast": 10, "slow": 50})
    cmp = Comparison.from_results({"narrow": narrow, "wide": wide, "single": single})
    # what each sweep contributed: its chosen combination, named in the metrics and the view
    chosen = {key: ", ".join(f"{k}={v}" for k, v in res.params.items())
              for key, res in (("narrow", narrow), ("wide", wide))}
    assert cmp.metrics.loc["narrow", "combination"] == chosen["narrow"]
    assert cmp.metrics.loc["wide", "combination"] == chosen["wide"]
    assert cmp.metrics.loc["single", "combination"] == ""
    page = cmp._repr_html_() or ""
    assert "combination" in page and chosen["wide"] in page
    # a 12-value grid reads as its range, never as the list
    assert cmp.config_diff.loc["params.fast", "wide"] == "5..60 step 5 (12 values)"
    assert cmp.config_diff.loc["params.fast", "narrow"] == "5, 10"
    with pytest.raises(ql.ConfigError, match="no metric 'combination'") as info:
        cmp.best("combination")  # a description of the run, not a metric
    assert "combination" not in str(info.value).split("choose one of")[1]


def test_config_diff_treats_a_whole_float_as_the_int_it_equals() -> None:
    """A config saved as JSON/YAML may say 10.0 where another says 10: not a difference."""
    same = config_diff({"a": {"params": {"fast": 10}, "cash": 100_000.0, "symbols": ["A"]},
                        "b": {"params": {"fast": 10.0}, "cash": 100_000, "symbols": ["A"]}})
    assert same.empty
    diff = config_diff({"a": {"params": {"fast": 10.0}}, "b": {"params": {"fast": 10.5}}})
    assert diff.loc["params.fast", "a"] == "10" and diff.loc["params.fast", "b"] == "10.5"


def test_comparison_config_diff_from_results() -> None:
    cmp = Comparison.from_results(three_runs())
    assert set(cmp.config_diff.index) == {"params.fast", "symbols", "commission"}


def test_comparison_html_shows_runs_and_numbers() -> None:
    cmp = Comparison.from_results(three_runs())
    page = cmp._repr_html_()
    for label in ("base", "double", "opposite"):
        assert label in page
    assert "10.00 %" in page  # base's total return
    assert "-1.00" in page  # base vs opposite correlation
    assert "<svg" in page and "ql-compare-config" in page


@pytest.mark.parametrize("n", [0, 1, 6])
def test_compare_needs_two_to_five_runs(n: int) -> None:
    with pytest.raises(ql.ConfigError, match=f"a comparison takes 2 to 5 runs, got {n}"):
        ql.compare([f"run{i}" for i in range(n)])


def test_compare_rejects_a_string_and_duplicates() -> None:
    with pytest.raises(ql.ConfigError, match=r"takes a list of 2 to 5 run ids.*ql.compare\(\["):
        ql.compare("abc")
    with pytest.raises(ql.ConfigError, match="run a is listed more than once; list each run once"):
        ql.compare(["a", "a", "b"])


def test_compare_rejects_a_run_that_has_not_completed(ql_home: Path) -> None:
    from quantlab.registry import open_registry

    reg = open_registry()
    reg.insert_run({"id": "r-queued", "status": "queued", "strategy": "sma_crossover"})
    reg.insert_run({"id": "r-failed", "status": "failed", "strategy": "sma_crossover"})
    with pytest.raises(ql.RunError, match=r"run 'r-queued' is queued, so it has no result to "
                                          r"compare; wait for it with ql.get_run"):
        ql.compare(["r-queued", "r-failed"])
    with pytest.raises(ql.RunError, match=r"run 'r-failed' is failed.*compare completed runs"):
        ql.compare(["r-failed", "r-queued"])
    with pytest.raises(ql.RunNotFound, match="no run 'nope'"):
        ql.compare(["nope", "r-queued"])


def test_save_gives_an_id_a_document_and_a_dashboard_url(
        ql_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.registry import open_registry

    cmp = Comparison.from_results(three_runs())
    assert cmp.url is None
    with pytest.raises(ql.RunError, match="'base' is not a run in the registry, so a saved "
                                          "comparison could not open it"):
        cmp.save()
    for run_id in ("base", "double", "opposite"):  # the same runs, as the registry holds them
        open_registry().insert_run({"id": run_id, "status": "completed"})
    monkeypatch.delenv("QUANTLAB_DASHBOARD_URL", raising=False)
    comparison_id = cmp.save(title="trend variants")
    doc = open_registry().get_document("comparisons", comparison_id)
    assert doc["run_ids"] == ["base", "double", "opposite"]
    assert doc["title"] == "trend variants" and doc["user"] == "tester"
    assert cmp.url == f"http://localhost:8866/?comparison={comparison_id}"
    monkeypatch.setenv("QUANTLAB_DASHBOARD_URL", "https://dash.example.com/compare/")
    assert cmp.url == f"https://dash.example.com/compare/?comparison={comparison_id}"
    assert cmp.save() == comparison_id  # saving again updates the same document
    assert [d["id"] for d in analytics.saved_comparisons()] == [comparison_id]
    assert "open in the dashboard" in cmp._repr_html_()


# --------------------------------------------------------------------------- statistics

NOW = pd.Timestamp("2025-06-15 12:00", tz="UTC").timestamp()


def day(text: str) -> float:
    return pd.Timestamp(text, tz="UTC").timestamp()


@pytest.fixture
def stats_registry(ql_home: Path) -> None:
    from quantlab.registry import open_registry

    reg = open_registry()
    runs = [
        # id, queued, status, strategy, user, tags, return, sharpe
        ("old", "2023-03-01", "completed", "sma", "ann", ["trend"], 50.0, 2.0),
        ("r1", "2025-01-10", "completed", "sma", "ann", ["trend"], 10.0, 1.0),
        ("r2", "2025-01-20", "completed", "sma", "bob", ["trend"], -5.0, -0.5),
        ("r3", "2025-02-03", "failed", "rsi", "bob", [], None, None),
        ("r4", "2025-02-04", "completed", "rsi", "ann", ["mr"], 30.0, 1.5),
        ("r5", "2025-02-05", "cancelled", "rsi", "ann", ["mr"], None, None),
        ("r6", "2025-03-01", "completed", "sma", "ann", ["trend"], 2.0, 0.2),
        ("r7", "2025-03-02", "running", "sma", "ann", [], None, None),
    ]
    for run_id, queued, status, strategy, user, tags, ret, sharpe in runs:
        metrics = {} if ret is None else {"total_return_pct": ret, "sharpe": sharpe,
                                          "max_drawdown_pct": -ret / 2}
        reg.insert_run({"id": run_id, "name": f"run {run_id}", "queued_at": day(queued),
                        "status": status, "strategy": strategy, "user": user, "tags": tags,
                        "metrics": metrics})


def test_stats_over_a_year(stats_registry: None) -> None:
    st = ql.stats("1Y", now=NOW)
    assert st.n_runs == 7  # "old" is outside the year
    assert st.as_dict() == {
        "period": "1Y", "n_runs": 7, "completed": 4, "failed": 1, "cancelled": 1,
        "success_rate_pct": pytest.approx(80.0),
        "mean_return_pct": pytest.approx((10 - 5 + 30 + 2) / 4),
        "median_return_pct": pytest.approx(6.0),
    }
    assert st.best(2)["id"].tolist() == ["r4", "r1"]
    assert st.worst(1)["id"].tolist() == ["r2"]
    assert st.best(1)["name"].tolist() == ["run r4"]
    hist = st.histogram(bins=5)
    assert hist["count"].sum() == 4
    assert hist["left"].iloc[0] == pytest.approx(-5.0) and hist["right"].iloc[-1] == 30.0
    assert hist["count"].tolist() == [1, 1, 1, 0, 1]  # bins of 7: -5 | 2 | 10 | - | 30


def test_stats_monthly_trend(stats_registry: None) -> None:
    monthly = ql.stats("1Y", now=NOW).monthly().set_index("month")
    assert list(monthly.index) == ["2025-01", "2025-02", "2025-03"]
    assert monthly.loc["2025-01", "runs"] == 2
    assert monthly.loc["2025-01", "mean_return_pct"] == pytest.approx(2.5)
    assert monthly.loc["2025-02", "success_rate_pct"] == pytest.approx(50.0)
    assert monthly.loc["2025-02", "failed"] == 1
    assert monthly.loc["2025-03", "mean_sharpe"] == pytest.approx(0.2)


def test_stats_filters(stats_registry: None) -> None:
    assert ql.stats("all", now=NOW).n_runs == 8
    assert ql.stats("1Y", strategy="rsi", now=NOW).n_runs == 3
    assert ql.stats("1Y", user="bob", now=NOW).success_rate_pct == pytest.approx(50.0)
    by_tag = ql.stats("all", tag="trend", now=NOW)
    assert sorted(by_tag.runs["id"]) == ["old", "r1", "r2", "r6"]
    assert by_tag.mean_return_pct == pytest.approx((50 + 10 - 5 + 2) / 4)
    assert ql.stats("30D", now=day("2025-02-10")).n_runs == 4  # Jan 11 .. Feb 10: r2 .. r5


def test_stats_html_shows_the_numbers(stats_registry: None) -> None:
    page = ql.stats("1Y", now=NOW)._repr_html_()
    assert "80.00 %" in page and "9.25 %" in page and "run r4" in page
    assert "2025-02" in page


def test_stats_of_an_empty_registry(ql_home: Path) -> None:
    st = ql.stats()
    assert st.n_runs == 0 and math.isnan(st.success_rate_pct)
    assert st.best().empty and st.histogram().empty and st.monthly().empty
    assert "no runs in this period" in st._repr_html_()


@pytest.mark.parametrize("period", ["1X", "0D", "month", "", 12])
def test_stats_rejects_an_unknown_period(period: object) -> None:
    with pytest.raises(ql.ConfigError, match="is not understood; write a number and a unit D, "
                                             "W, M or Y"):
        period_start(period)  # type: ignore[arg-type]


def test_period_start_units() -> None:
    now = day("2025-06-15")
    assert period_start("all", now) is None
    assert period_start("7D", now) == day("2025-06-08")
    assert period_start("2W", now) == day("2025-06-01")
    assert period_start("6M", now) == day("2024-12-15")
    assert period_start("1Y", now) == day("2024-06-15")
    assert period_start("YTD", now) == day("2025-01-01")


def test_analytics_loads_no_views_and_no_jobs_and_quantlab_wires_the_views() -> None:
    """analytics (a lower layer) imports neither its views (render) nor jobs; the public names
    (ql.compare, ql.Stats...) come with their HTML views."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "import quantlab\n"  # what the package's own start loads (its hooks) is not analytics'
        "before = set(sys.modules)\n"
        "import quantlab.analytics\n"
        "above = sorted(m for m in set(sys.modules) - before if m.startswith(('quantlab.render', "
        "'quantlab.jobs', 'quantlab.notebook', 'quantlab.reports')))\n"
        "import quantlab as ql\n"
        "ql.Stats\n"
        "print(json.dumps([above, 'quantlab.render.html' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    above, wired = json.loads(done.stdout.strip().splitlines()[-1])
    assert above == [] and wired


def test_runlist_and_stats_are_public_result_types() -> None:
    from quantlab.jobs.api import RunList

    assert ql.RunList is RunList and ql.Stats is analytics.Stats
    assert {"RunList", "Stats"} <= set(ql.__all__)
