"""ql.compare over real runs: submitted to a worker, loaded back from the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import quantlab as ql
from quantlab.analytics import Comparison, daily_equity, drawdown_periods
from tests.support.analytics import RUN_SPECS, populated_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    with populated_home(tmp_path_factory.mktemp("cmp"), RUN_SPECS) as found:
        yield found


def test_compare_real_runs(home: tuple[Path, list[str]]) -> None:
    _, ids = home
    cmp = ql.compare(ids)
    records = [ql.get_run(i).record for i in ids]
    results = [ql.get_run(i).result() for i in ids]
    assert cmp.run_ids == ids
    assert [cmp.labels[i] for i in ids] == [r["name"] for r in records]
    for run_id, record in zip(ids, records):
        for name, value in record["metrics"].items():
            assert cmp.metrics.loc[run_id, name] == pytest.approx(value, nan_ok=True), name
    # the common period starts with the latest run (2019) and every curve is rebased there
    start = cmp.equity.index[0]
    assert cmp.common_period is not None and cmp.common_period[0] == start
    assert start.year == 2019
    assert cmp.equity.iloc[0].tolist() == pytest.approx([100.0, 100.0, 100.0])
    first = daily_equity(results[0].equity)
    assert cmp.equity[ids[0]].iloc[-1] == pytest.approx(first.iloc[-1] / first.loc[start] * 100)
    # a run's deepest drawdown is the engine's own max drawdown metric
    for run_id, record, result in zip(ids, records, results):
        table = cmp.drawdowns.largest
        deepest = table[(table["run"] == run_id) & (table["rank"] == 1)]["depth_pct"]
        assert deepest.iloc[0] == pytest.approx(record["metrics"]["max_drawdown_pct"])
        assert deepest.iloc[0] == pytest.approx(
            drawdown_periods(result.equity, top=1)["depth_pct"].iloc[0])
    diff = cmp.config_diff
    assert diff.loc["params.fast", ids[0]] == "10" and diff.loc["params.fast", ids[1]] == "20"
    assert diff.loc["commission", ids[1]] == "0.001"
    assert diff.loc["strategy", ids[2]] == "rsi_reversion"
    assert diff.loc["symbols"].tolist()[1:] == ["AAA", "BBB", "CCC"]


def test_saved_comparison_loads_by_id(home: tuple[Path, list[str]]) -> None:
    _, ids = home
    comparison_id = ql.compare(ids[:2]).save(title="two crosses")
    loaded = Comparison.load(comparison_id)
    assert loaded.run_ids == ids[:2] and loaded.id == comparison_id
    assert ql.compare([ql.get_run(i) for i in ids[:2]]).run_ids == ids[:2]  # Run objects
    assert loaded.title == "two crosses"
    assert loaded.url is not None and loaded.url.endswith(f"?comparison={comparison_id}")
    with pytest.raises(ql.RunError, match="no document 'nope' in 'comparisons'"):
        Comparison.load("nope")
