"""Walk-forward analysis and combinatorial purged cross-validation as queued runs
(quantlab.jobs.validation; issue 15 §4): real worker processes (tests.support.jobs), the
result equal to the in-kernel call on the same config, progress per fold, cancel keeping the
finished folds, the config key's errors, the views' figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.config import BacktestConfig
from quantlab.errors import ConfigError
from quantlab.research import CrossValidation, WalkForward
from tests.support import jobs as support
from tests.support.engine import random_walk
from tests.support.jobs import SLOW, WAIT, Workers, wait_for

home = support.home
workers = support.workers
no_worker = support.no_worker

GRID = {"fast": [5, 10], "slow": [30, 60]}
WF = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2019-01-01",
      "end": "2022-12-31", "params": GRID, "commission": 0.001, "select": "sortino",
      "walk_forward": {"train": 250, "test": 120}}
CV = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2019-01-01",
      "end": "2022-12-31", "params": GRID,
      "cross_validate": {"groups": 6, "test_groups": 2, "embargo": 5}}


def in_kernel_bars(config: dict[str, Any]) -> Any:
    from quantlab.engine.api import load_bars

    return load_bars(config["symbols"], start=config["start"], end=config["end"])


def in_kernel_walk_forward(config: dict[str, Any]) -> WalkForward:
    spec = config["walk_forward"]
    return ql.walk_forward(in_kernel_bars(config), config["strategy"], config["params"],
                           train=spec["train"], test=spec["test"], select=config["select"],
                           commission=config["commission"])


def in_kernel_cross_validation(config: dict[str, Any]) -> CrossValidation:
    return ql.cross_validate(in_kernel_bars(config), config["strategy"], config["params"],
                             **config["cross_validate"])


def fold_steps(run: ql.Run) -> list[str]:
    return [e.data["step"] for e in run.events()
            if e.type == "progress" and str(e.data.get("step", "")).startswith(("fold", "split"))]


# ---- queued equals in-kernel -----------------------------------------------------------------


def test_a_queued_walk_forward_equals_the_in_kernel_one(home: Path, workers: Workers) -> None:
    workers.start()
    run = ql.submit(WF)
    run.wait(timeout=WAIT)
    assert run.status == "completed", run.record.get("error")
    found = run.result()
    direct = in_kernel_walk_forward(WF)
    assert isinstance(found, WalkForward) and not found.partial
    pd.testing.assert_frame_equal(found.folds, direct.folds)
    pd.testing.assert_series_equal(found.equity, direct.equity)
    assert found.metrics == direct.metrics and found.efficiency == direct.efficiency
    assert ql.get_run(run.id).result().folds.equals(direct.folds)
    # the registry's metrics are the out-of-sample curve's (search and compare use them)
    record = run.record
    assert record["metrics"]["sharpe"] == pytest.approx(direct.metrics["sharpe"], abs=0)
    assert record["name"] == "sma_crossover walk-forward on AAA"
    assert record["best_params"] == direct.params == {
        "fast": direct.folds["fast"].iloc[-1], "slow": direct.folds["slow"].iloc[-1]}
    found_runs = ql.runs(where=f"sharpe>{direct.metrics['sharpe'] - 1e-9}")
    assert [r.id for r in found_runs] == [run.id]
    # progress: one event at each fold's start, in order, each with a moving percent
    n = len(direct.folds)
    steps = fold_steps(run)
    assert list(dict.fromkeys(steps)) == [f"fold {k} of {n}" for k in range(1, n + 1)]
    progress = [e.data["progress"] for e in run.events() if e.type == "progress"]
    assert progress == sorted(progress) and progress[-1] >= 0.95
    # the widget's line under its progress bar names the fold while the run is in it
    from quantlab.notebook.state import RunState, summary_line

    state = RunState(run.id)
    for event in run.events():
        state.apply(event)
        if event.type == "progress" and event.data["step"] == f"fold 2 of {n}":
            break
    assert summary_line(state).startswith(f"fold 2 of {n} · ")


def test_a_queued_cross_validation_equals_the_in_kernel_one(home: Path,
                                                           workers: Workers) -> None:
    workers.start(env=SLOW)  # its block sums in parts of 2 combinations: the same numbers
    run = ql.submit(CV)
    run.wait(timeout=WAIT)
    assert run.status == "completed", run.record.get("error")
    found = run.result()
    direct = in_kernel_cross_validation(CV)
    assert isinstance(found, CrossValidation) and not found.partial
    pd.testing.assert_frame_equal(found.splits, direct.splits)
    pd.testing.assert_frame_equal(found.paths, direct.paths)
    np.testing.assert_array_equal(found.sharpe, direct.sharpe)
    assert (found.purge, found.embargo) == (direct.purge, direct.embargo)
    # the registry's Sharpe ratio of a cross-validation: the median path Sharpe ratio
    assert run.record["metrics"]["sharpe"] == float(np.median(direct.sharpe))
    assert run.record["metrics"]["paths"] == len(direct.sharpe) == 5  # C(6,2) * 2 / 6
    assert run.record["name"] == "sma_crossover cross-validation on AAA"
    steps = fold_steps(run)
    assert steps[0] == "split 1 of 15" and steps[-1] == "split 15 of 15"


def test_block_sums_in_parts_are_the_sums_in_one(small: pd.DataFrame) -> None:
    from quantlab.engine.api import load_bars
    from quantlab.engine.simulation import Simulation
    from quantlab.research.blocksums import block_sums

    grid = {"fast": [5, 10, 15], "slow": [30, 60]}
    bounds = np.array([0, 100, 250, 400, 640])
    whole = block_sums(Simulation(load_bars(small), "sma_crossover", grid), bounds).sums
    sim = Simulation(load_bars(small), "sma_crossover", grid)
    parts = [block_sums(sim, bounds, stop, first).sums for first, stop in ((0, 2), (2, 5),
                                                                           (5, 6))]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


# ---- cancel ----------------------------------------------------------------------------------


def test_cancel_mid_way_keeps_the_finished_folds(home: Path, workers: Workers) -> None:
    workers.start(env=SLOW)  # 2 combinations per engine call, 50 ms between calls
    config = {**WF, "params": {"fast": [5, 10, 15, 20], "slow": [30, 60, 90]}}
    run = ql.submit(config)
    wait_for(lambda: "fold 3 of" in " ".join(fold_steps(run)), WAIT, "fold 3 started")
    run.cancel()
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "cancelled" and record["partial"] is True
    found = run.result()
    assert isinstance(found, WalkForward) and found.partial
    kept = len(found.folds)
    direct = in_kernel_walk_forward(config)
    assert 2 <= kept < len(direct.folds) == found.n_folds
    pd.testing.assert_frame_equal(found.folds, direct.folds.iloc[:kept])
    # the stitched curve of the finished folds is the in-kernel one's first part
    pd.testing.assert_series_equal(found.equity, direct.equity.iloc[:len(found.equity)])
    cancelled = [e for e in run.events() if e.type == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].data["combinations_done"] == kept
    assert "PARTIAL" in repr(found)


def test_a_walk_forwards_finished_folds_round_trip_through_its_checkpoint(home: Path) -> None:
    from quantlab.research.walkforward import WalkForwardPlan, folds_bytes, folds_from_bytes

    plan = WalkForwardPlan(in_kernel_bars(WF), WF["strategy"], GRID, train=250, test=120,
                           select="sortino", commission=0.001)
    outcomes = [plan.run_fold(k) for k in range(len(plan.folds))]
    half = len(outcomes) // 2
    assert half >= 2
    saved = folds_from_bytes(folds_bytes(outcomes[:half]))
    assert [o.chosen for o in saved] == [o.chosen for o in outcomes[:half]]
    whole, resumed = plan.assemble(outcomes), plan.assemble(saved + outcomes[half:])
    pd.testing.assert_frame_equal(resumed.folds, whole.folds)
    pd.testing.assert_series_equal(resumed.equity, whole.equity)
    assert resumed.metrics == whole.metrics and resumed.efficiency == whole.efficiency


def killed_after_its_checkpoint(workers: Workers, config: dict[str, Any], env: dict[str, str]
                                ) -> tuple[ql.Run, str, list[Any]]:
    """Run ``config`` on one of two workers, kill -9 that one once the run has a checkpoint,
    and wait for the other to finish it: the run, its one "resumed from checkpoint" log line,
    and the events of its second attempt."""
    env = {**env, "QUANTLAB_HEARTBEAT_TIMEOUT": "3", "QUANTLAB_CHECKPOINT_SECONDS": "0.2"}
    procs = [workers.start(env=env), workers.start(env=env)]
    run = ql.submit(config)
    wait_for(lambda: "checkpoint" in support.event_types(run), WAIT, "the run's checkpoint")
    support.kill_the_runs_worker(run, procs)
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "completed", record.get("error")
    assert record["attempts"] == 2
    resumed = [line["message"] for line in run.logs()
               if "resumed from checkpoint:" in line["message"]]
    assert len(resumed) == 1
    events = run.events()
    second = [i for i, e in enumerate(events) if e.type == "started"][1]
    return run, resumed[0], events[second:]


def test_a_walk_forward_whose_worker_is_killed_resumes_at_its_next_fold(
        home: Path, workers: Workers) -> None:
    config = {**WF, "params": {"fast": [5, 10, 15, 20], "slow": [30, 60, 90]}}
    run, resumed, later = killed_after_its_checkpoint(workers, config, SLOW)
    done = re.search(r": (\d+) of \d+ folds done", resumed)
    assert done is not None
    kept = int(done.group(1))
    assert kept >= 1
    # the second attempt began at the fold after the checkpoint's
    steps = [e.data["step"] for e in later
             if e.type == "progress" and str(e.data.get("step", "")).startswith("fold")]
    assert steps[0].startswith(f"fold {kept + 1} of")
    found, direct = run.result(), in_kernel_walk_forward(config)
    assert isinstance(found, WalkForward) and not found.partial
    pd.testing.assert_frame_equal(found.folds, direct.folds)
    pd.testing.assert_series_equal(found.equity, direct.equity)
    assert found.metrics == direct.metrics and found.efficiency == direct.efficiency


def test_a_cross_validations_block_sums_round_trip_through_its_checkpoint(home: Path) -> None:
    from quantlab.research.crossval import CrossValidationPlan

    def plan(params: Any = GRID) -> CrossValidationPlan:
        return CrossValidationPlan(in_kernel_bars(CV), CV["strategy"], params,
                                   **CV["cross_validate"])

    done = plan()
    done.prepare()
    whole = done.assemble([done.run_split(i) for i in range(len(done.splits))])
    resumed = plan()
    assert resumed.load_sums(done.sums_bytes())
    assert resumed.purge == done.purge
    again = resumed.assemble([resumed.run_split(i) for i in range(len(resumed.splits))])
    pd.testing.assert_frame_equal(again.splits, whole.splits)
    pd.testing.assert_frame_equal(again.paths, whole.paths)
    # sums of another grid are not taken up
    other = plan({"fast": [5, 10, 20], "slow": [30, 60]})
    assert not other.load_sums(done.sums_bytes())
    assert other.purge is None


def test_a_cross_validation_whose_worker_is_killed_resumes_at_its_splits(
        home: Path, workers: Workers) -> None:
    # 2 combinations per engine call and 0.2 s between calls and between splits: the 15
    # splits after the checkpoint of the sums take 3 s
    run, resumed, later = killed_after_its_checkpoint(
        workers, CV, {**SLOW, "QUANTLAB_JOBS_CHUNK_DELAY": "0.2"})
    assert "the returns of all 4 combinations summed per block" in resumed
    # the second attempt did not sum the blocks again
    assert not [e for e in later if e.type == "progress"
                and e.data.get("step") == "returns summed per block"]
    found, direct = run.result(), in_kernel_cross_validation(CV)
    assert isinstance(found, CrossValidation) and not found.partial
    pd.testing.assert_frame_equal(found.splits, direct.splits)
    pd.testing.assert_frame_equal(found.paths, direct.paths)
    assert found.purge == direct.purge


def test_the_time_limit_ends_a_walk_forward_failed_with_its_finished_folds(
        home: Path, workers: Workers) -> None:
    # 2 combinations per engine call, 0.3 s between calls: a fold takes about 2 s
    workers.start(env={**SLOW, "QUANTLAB_JOBS_CHUNK_DELAY": "0.3", "QUANTLAB_MAX_DURATION": "6"})
    config = {**WF, "params": {"fast": [5, 10, 15, 20], "slow": [30, 60, 90]},
              "walk_forward": {"train": 150, "test": 60}}
    run = ql.submit(config)
    run.wait(timeout=WAIT)
    record = run.record
    assert record["status"] == "failed" and "QUANTLAB_MAX_DURATION" in record["error"]
    failed = [e for e in run.events() if e.type == "failed"]
    assert len(failed) == 1 and failed[0].data["reason"] == "timeout"
    if record["partial"]:  # a fold finished within the limit (a loaded machine may not get one)
        found = run.result()
        assert isinstance(found, WalkForward) and found.partial
        assert f"its {len(found.folds)} finished folds are kept" in record["error"]


# ---- the config key --------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ({"grups": 6}, "cross_validate: unknown key 'grups' — did you mean 'groups'?"),
    ({"groups": 1}, "cross_validate: groups=1 must be a whole number of at least 2 (10 is "
                    "usual)"),
    ({"groups": 4, "test_groups": 4}, "cross_validate: test_groups=4 must be a whole number "
                                      "from 1 to groups - 1 = 3 (2 is usual)"),
    ({"groups": 2.5}, "cross_validate: groups=2.5 must be a whole number of at least 2"),
    ({"purge": -3}, "cross_validate: purge=-3 must be a whole number of bars >= 0"),
    ({"embargo": "5d"}, "cross_validate: embargo='5d' must be a whole number of bars >= 0"),
    ("yes", "cross_validate: expected a mapping of name: value, got 'yes'"),
])
def test_a_bad_cross_validate_key_names_the_fix(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        BacktestConfig.from_any({**CV, "cross_validate": spec})
    assert caught.value.fields["field"] == "cross_validate"


def test_walk_forward_and_cross_validate_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="walk_forward and cross_validate are two analyses"):
        BacktestConfig.from_any({**CV, "walk_forward": {"train": 250, "test": 120}})


def test_a_plain_config_keeps_its_canonical_form() -> None:
    plain = {k: v for k, v in CV.items() if k != "cross_validate"}
    canonical = BacktestConfig.from_any(plain).canonical()
    assert "cross_validate" not in canonical and "walk_forward" not in canonical
    spec = BacktestConfig.from_any(CV).canonical()["cross_validate"]
    assert spec == {"groups": 6, "test_groups": 2, "purge": None, "embargo": 5}


def test_windows_the_data_cannot_hold_are_refused_before_queueing(home: Path,
                                                                 no_worker: None) -> None:
    from quantlab.registry import open_registry

    with pytest.raises(ConfigError, match=r"train \+ test = 2000 \+ 120 = 2120 bars is longer "
                                          r"than the data \(1034 bars\)"):
        ql.submit({**WF, "walk_forward": {"train": 2000, "test": 120}})
    with pytest.raises(ConfigError, match="1034 bars are too few for 600 groups"):
        ql.submit({**CV, "cross_validate": {"groups": 600}})
    assert open_registry().count_runs() == 0


def test_a_backtest_cell_with_walk_forward_is_queued(home: Path, no_worker: None) -> None:
    from quantlab.notebook.magics import BacktestMagics

    cell = ("strategy: sma_crossover\nsymbols: [AAA]\nstart: 2019-01-01\nend: 2022-12-31\n"
            "params: {fast: [5, 10], slow: [30, 60]}\nwalk_forward: {train: 1y, test: 6M}\n")
    run = BacktestMagics(shell=None).backtest("", cell)
    assert isinstance(run, ql.Run) and run.status == "queued"
    assert run.record["config"]["walk_forward"]["train"] == "1y"
    # the queue's estimate counts each fold's training sweep: folds x train bars per combination
    plain = ql.submit(cell.replace("walk_forward: {train: 1y, test: 6M}\n", ""))
    index = in_kernel_bars({"symbols": ["AAA"], "start": "2019-01-01",
                            "end": "2022-12-31"}).index
    train = int(index.searchsorted(index[0] + pd.DateOffset(years=1)))
    test = int(index.searchsorted(index[0] + pd.DateOffset(months=6)))
    folds = (len(index) - train) // test
    assert run.record["work_units"] == pytest.approx(
        plain.record["work_units"] * folds * train / len(index))


# ---- the views -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return random_walk(640, seed=7)


def test_the_walk_forward_view_draws_equity_params_and_is_vs_oos(small: pd.DataFrame) -> None:
    wf = ql.walk_forward(small, "sma_crossover", params={"fast": [5, 10], "slow": [30, 60]},
                         train=200, test=100)
    fig = wf.figure()
    names = [t.name for t in fig.data]
    assert names == ["out-of-sample equity", "fast", "slow", "in-sample sharpe",
                     "out-of-sample sharpe"]
    equity, fast = fig.data[0], fig.data[1]
    assert list(equity.y) == list(wf.equity.to_numpy())
    assert list(fast.y) == [*wf.folds["fast"], wf.folds["fast"].iloc[-1]]  # a step per fold
    assert list(fig.data[3].y) == list(wf.folds["is_sharpe"])
    assert list(fig.data[4].y) == list(wf.folds["oos_sharpe"])
    # a dotted line at each fold boundary (test starts after the first)
    boundaries = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(boundaries) == len(wf.folds) - 1
    page = wf._repr_html_()
    assert "ql-walkforward" in page and "oos_sharpe" in page and "Plotly.newPlot" in page


def test_the_cross_validation_view_is_a_histogram_and_a_summary(small: pd.DataFrame) -> None:
    from quantlab.render.validation import cross_validation_summary

    cv = ql.cross_validate(small, "sma_crossover", params={"fast": [5, 10], "slow": [30, 60]},
                           groups=6, test_groups=2, purge=10)
    fig = cv.figure()
    assert [t.type for t in fig.data] == ["histogram"]
    assert list(fig.data[0].x) == list(cv.sharpe)
    table = cross_validation_summary(cv).set_index("statistic")["value"]
    assert table["median Sharpe"] == float(np.median(cv.sharpe))
    assert table["paths"] == len(cv.sharpe) == 5
    page = cv._repr_html_()
    assert "Combinatorial purged cross-validation" in page and "median Sharpe" in page


def test_the_run_widget_shows_the_walk_forward_view(small: pd.DataFrame) -> None:
    from quantlab.notebook.results import ResultsView, ValidationView, results_view

    wf = ql.walk_forward(small, "sma_crossover", params={"fast": [5, 10], "slow": [30, 60]},
                         train=200, test=100)
    view = results_view(wf, heading="<b>done</b>")
    assert isinstance(view, ValidationView) and not isinstance(view, ResultsView)
    assert view.figure.data[0].name == "out-of-sample equity"


# ---- the REST API ----------------------------------------------------------------------------


def test_the_rest_api_queues_a_walk_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from tests.support.server import JupyterProcess, Worker, quantlab_env

    home, root = tmp_path / "home", tmp_path / "root"
    root.mkdir()
    env = quantlab_env(home, tmp_path / "jupyter")
    for key in ("QUANTLAB_HOME", "QUANTLAB_USER", "QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL",
                "QUANTLAB_QUEUE_MAX"):
        if key in env:
            monkeypatch.setenv(key, env[key])
        else:
            monkeypatch.delenv(key, raising=False)
    ql.data.sample()
    worker = Worker(env, tmp_path / "worker.log")
    server = JupyterProcess(env, root, tmp_path / "server.log")
    try:
        worker.wait_alive(home)
        server.wait_ready()
        text = ("strategy: sma_crossover\nsymbols: [AAA]\nstart: 2019-01-01\nend: 2022-12-31\n"
                "params: {fast: [5, 10], slow: [30, 60]}\ncommission: 0.001\nselect: sortino\n"
                "walk_forward: {train: 250, test: 120}\n")
        status, record = server.request("POST", "/quantlab/api/runs", {"config": text})
        assert status == 201, record
        run = ql.get_run(record["id"])
        run.wait(timeout=WAIT)
        assert run.status == "completed", run.record.get("error")
        found = run.result()
        assert isinstance(found, WalkForward)
        pd.testing.assert_frame_equal(found.folds, in_kernel_walk_forward(WF).folds)
        status, bad = server.request("POST", "/quantlab/api/runs", {
            "config": text.replace("walk_forward: {train: 250, test: 120}",
                                   "cross_validate: {groups: 6, tset_groups: 2}")})
        assert status == 400 and "did you mean 'test_groups'?" in json.dumps(bad)
    finally:
        server.stop()
        worker.stop()
