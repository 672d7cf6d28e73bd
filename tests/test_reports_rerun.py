"""``quantlab rerun``: real reruns through a worker, reproduced and drifted for each cause."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import quantlab as ql
from quantlab.reports.cli import rerun as rerun_cli
from quantlab.reports.rerun import metric_changes, parse_filters, rerun, select_runs
from tests.support.analytics import populated_home

pytestmark = pytest.mark.slow

SPECS = [
    {"name": "ddd cross", "strategy": "sma_crossover", "symbols": ["DDD"], "start": "2020-01-01",
     "params": {"fast": 10, "slow": 40}, "tags": ["repro"]},
    {"name": "eee cross", "strategy": "sma_crossover", "symbols": ["EEE"], "start": "2020-01-01",
     "params": {"fast": 10, "slow": 40}, "tags": ["repro"]},
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    with populated_home(tmp_path_factory.mktemp("rerun"), SPECS) as found:
        yield found


def test_metric_changes_tolerance() -> None:
    assert metric_changes({"a": 1.0, "b": None}, {"a": 1.0 + 1e-13, "b": None}) == {}
    assert metric_changes({"a": 1.0}, {"a": 1.01, "c": 2.0}) == {"a": (1.0, 1.01),
                                                                 "c": (None, 2.0)}


def test_parse_filters() -> None:
    assert parse_filters(["tag=a", "tag=b", "where=sharpe>1", "where=n_trades>=3",
                          "since=2024-01-01"]) == {
        "tag": ["a", "b"], "where": "sharpe>1, n_trades>=3", "since": "2024-01-01"}
    with pytest.raises(ql.ConfigError, match="unknown filter 'strategie' — did you mean "
                                             "'strategy'\\?; filter by status, strategy"):
        parse_filters(["strategie=sma"])
    with pytest.raises(ql.ConfigError, match="cannot read the filter 'tag'; write KEY=VALUE"):
        parse_filters(["tag"])


def test_rerun_needs_runs_or_filters() -> None:
    with pytest.raises(ql.ConfigError, match="say which runs to rerun: give run ids"):
        select_runs([], None)


def test_rerun_reproduces(home: tuple[Path, list[str]]) -> None:
    _, ids = home
    outcomes = rerun(ids)
    assert [o.status for o in outcomes] == ["reproduced", "reproduced"]
    first = outcomes[0]
    every_metric = len(ql.metrics.METRIC_INFO)  # each metric of the run compared (23)
    assert first.changes == {} and first.causes == [] and first.compared == every_metric
    new = ql.get_run(first.new_run_id or "")
    assert new.record["rerun_of"] == ids[0]
    assert new.record["cached_from"] is None  # really ran: the cache was off
    assert new.record["name"] == "rerun of ddd cross" and "rerun" in new.record["tags"]
    assert new.metrics == ql.get_run(ids[0]).metrics
    assert ql.get_run(ids[0]).record["last_rerun"]["status"] == "reproduced"
    assert first.line().startswith(f"{ids[0]} reproduced ({every_metric} metrics equal, rerun ")


def test_a_rerun_of_another_users_run_is_the_callers(home: tuple[Path, list[str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, ids = home
    owner = ql.get_run(ids[1]).record["user"]
    monkeypatch.setenv("QUANTLAB_USER", f"not-{owner}")
    (outcome,) = rerun(ids[1:])
    assert outcome.status == "reproduced"
    new = ql.get_run(outcome.new_run_id or "")
    assert new.record["user"] == f"not-{owner}" and new.record["rerun_of"] == ids[1]
    assert ql.get_run(ids[1]).record["user"] == owner  # the original stays its owner's
    new.cancel()  # the caller's own run: theirs to cancel (a finished run is left as it is)


def test_drift_from_an_older_engine(home: tuple[Path, list[str]]) -> None:
    from quantlab.registry import open_registry

    _, ids = home
    registry = open_registry()
    stored = registry.get_run(ids[1])
    # what an older engine recorded for the same run
    older = dict(stored["metrics"], total_return_pct=stored["metrics"]["total_return_pct"] + 1.5)
    registry.update_run(ids[1], {"engine_version": "0.9.0", "metrics": older})
    try:
        [outcome] = rerun([ids[1]])
    finally:
        registry.update_run(ids[1], {"engine_version": stored["engine_version"],
                                     "metrics": stored["metrics"]})
    assert outcome.status == "drifted"
    assert set(outcome.changes) == {"total_return_pct"}
    assert outcome.causes == [f"engine version 0.9.0 -> {ql.ENGINE_VERSION}"]
    assert outcome.line().startswith(f"{ids[1]} drifted: total_return_pct ")
    assert outcome.line().endswith(f"because: engine version 0.9.0 -> {ql.ENGINE_VERSION}")


def test_drift_from_changed_strategy_code(home: tuple[Path, list[str]]) -> None:
    from quantlab.registry import open_registry

    _, ids = home
    registry = open_registry()
    stored = registry.get_run(ids[1])
    key = f"{stored['result_ref']}summary.json"
    summary = registry.get_blob(key)
    doc = json.loads(summary)
    doc["config"]["strategy_source_hash"] = "0" * 64
    registry.put_blob(key, json.dumps(doc).encode())
    registry.update_run(ids[1], {"metrics": dict(stored["metrics"], sharpe=9.0)})
    try:
        [outcome] = rerun([ids[1]])
    finally:
        registry.put_blob(key, summary)
        registry.update_run(ids[1], {"metrics": stored["metrics"]})
    assert outcome.status == "drifted" and set(outcome.changes) == {"sharpe"}
    assert outcome.causes == [f"strategy code changed (sha256 000000000000 -> "
                              f"{json.loads(summary)['config']['strategy_source_hash'][:12]})"]


def test_drift_without_a_cause_is_called_non_determinism(home: tuple[Path, list[str]]) -> None:
    from quantlab.registry import open_registry

    _, ids = home
    registry = open_registry()
    stored = registry.get_run(ids[1])
    registry.update_run(ids[1], {"metrics": dict(stored["metrics"], n_trades=1.0)})
    try:
        [outcome] = rerun([ids[1]])
    finally:
        registry.update_run(ids[1], {"metrics": stored["metrics"]})
    assert outcome.status == "drifted"
    assert "not deterministic" in outcome.causes[0]


def test_cli_rerun_by_filter_and_drift_from_new_data(home: tuple[Path, list[str]]) -> None:
    _, ids = home
    runner = CliRunner()
    result = runner.invoke(rerun_cli, ["--filter", "tag=repro", "--filter",
                                       "text=cross", "--filter", "where=n_trades>=0"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    # reruns of the first test are tagged repro too and match; each line is one run
    assert lines[0].startswith(f"{ids[0]} reproduced")
    assert lines[1].startswith(f"{ids[1]} reproduced")
    assert all(" reproduced " in line for line in lines)

    # the data of DDD is revised (prices from mid-2022 on are 5 % lower): its run drifts
    bars = ql.data.load(["DDD"])
    frame = bars.frame("DDD")
    later = frame.index >= pd.Timestamp("2022-06-01")
    for column in ("open", "high", "low", "close"):
        frame.loc[later, column] *= 0.95
    ql.data.import_frame("DDD", frame)
    result = runner.invoke(rerun_cli, [ids[0], ids[1], "--json"])
    assert result.exit_code == 1, result.output
    first, second = (json.loads(line) for line in result.output.strip().splitlines())
    assert first["status"] == "drifted"
    assert first["causes"][0].startswith("data changed: DDD from 2022-06-01 on (")
    assert "total_return_pct" in first["changes"]
    assert second["status"] == "reproduced"


def test_cli_rerun_errors(home: tuple[Path, list[str]]) -> None:
    from quantlab.registry import open_registry

    runner = CliRunner()
    result = runner.invoke(rerun_cli, [])
    assert result.exit_code == 2 and "say which runs to rerun" in result.output
    result = runner.invoke(rerun_cli, ["--filter", "colour=red"])
    assert result.exit_code == 2 and "unknown filter 'colour'" in result.output
    open_registry().insert_run({"id": "a-failed-run", "status": "failed"})
    result = runner.invoke(rerun_cli, ["a-failed-run"])
    assert result.exit_code == 1
    assert ("a-failed-run error: run is failed; only completed runs can be rerun"
            in result.output)
