"""The live run widget, driven by real events.

A scripted worker (real registry updates and real events on the embedded event stream, in the
same order as ``quantlab.jobs.runner`` makes them) walks a run through its states so that every
transition can be checked as it happens; real worker processes then check the same view
end to end, including the Cancel button.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import quantlab as ql
from quantlab.events import open_events
from quantlab.jobs import lifecycle
from quantlab.jobs.lifecycle import RunStatus
from quantlab.notebook.widget import TICK_SECONDS, RunWidget, wait_for_outcome
from quantlab.registry import open_registry
from quantlab.render.format import format_metric
from quantlab.strategies.usercode import attach_strategy_source, source_line_offset
from tests.support import notebook as support
from tests.support.notebook import Worker, wait_for

# fixtures (pytest finds them in the module's namespace)
nb_home = support.nb_home
worker = support.worker
slow_worker = support.slow_worker

SINGLE = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2020-01-01",
          "end": "2021-12-31", "params": {"fast": 10, "slow": 30}}


@pytest.fixture
def no_worker(nb_home: Path) -> Iterator[None]:
    """Hold the worker lock so that submit starts no worker: the test plays the worker."""
    fd = os.open(nb_home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield
    os.close(fd)


class ScriptedWorker:
    """Moves one run through its life like quantlab.jobs.runner does: one transition
    (compare-and-set registry update, then one event) per status change."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.registry = open_registry()

    def start(self) -> None:
        fields = {"started_at": time.time(), "worker": "scripted", "attempts": 1,
                  "step": "collecting market data", "position": None}
        assert lifecycle.transition(self.run_id, RunStatus.RUNNING, expect=RunStatus.QUEUED,
                                    fields=fields, event=lifecycle.Started("scripted", 1))

    def progress(self, fraction: float, step: str, bars: int, eta: float) -> None:
        self.registry.update_run(self.run_id, {"progress": fraction, "step": step,
                                               "bars_done": bars, "eta_seconds": eta})
        lifecycle.publish(self.run_id, lifecycle.Progress(
            progress=fraction, step=step, bars_done=bars, bars_delta=bars, done_units=bars,
            total_units=2 * bars, eta_seconds=eta))

    def log(self, message: str, level: str = "info") -> None:
        lifecycle.run_log(self.run_id, message, level)

    def fail(self, error: str, trace: str) -> None:
        assert lifecycle.transition(
            self.run_id, RunStatus.FAILED, expect=RunStatus.RUNNING,
            fields={"error": error, "traceback": trace},
            event=lifecycle.Failed("fragile_test_strategy", reason="error", error=error,
                                   traceback=trace))


@ql.strategy(name="fragile_test_strategy")
def fragile_test_strategy(bars: Any, n: int = 3) -> Any:
    import numpy as np

    ratio = float(bars.close[0, 0]) / 0
    return np.sign(bars.close * ratio)


def _queued_user_run() -> Any:
    config = attach_strategy_source({"strategy": "fragile_test_strategy", "symbols": ["AAA"],
                                     "params": {"n": 3}})
    return ql.submit(config)


def _trace_through(source: str) -> tuple[str, int]:
    """A worker's traceback through the shipped source's division by zero, and the line of
    that division counted from the strategy's own first line."""
    lines = source.splitlines()
    shipped_line = next(i for i, line in enumerate(lines, 1) if "/ 0" in line)
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/work/main/quantlab/strategies/base.py", line 142, in signals\n'
        "    raw = self.func(bars, **kwargs)\n"
        f'  File "<strategy fragile_test_strategy>", line {shipped_line}, in '
        "fragile_test_strategy\n"
        "ZeroDivisionError: float division by zero\n")
    return trace, shipped_line - source_line_offset(source)


def test_widget_follows_each_state_from_the_event_stream(
        nb_home: Path, no_worker: None, capfd: pytest.CaptureFixture[str]) -> None:
    run = _queued_user_run()
    widget = RunWidget(run)
    assert widget.following
    assert widget.state.status == "queued"
    assert "position 1 of 1 in the queue" in widget.info.value
    assert "ql-run-queued" in widget._dom_classes
    script = ScriptedWorker(run.id)

    script.start()
    wait_for(lambda: widget.state.status == "running", 10, "running")
    wait_for(lambda: "ql-run-running" in widget._dom_classes, 10, "the running class")
    assert widget.progress.bar_style == "info"
    assert widget.cancel_button.layout.display is None  # Cancel is offered while it runs

    script.progress(0.5, "simulating", 1234, 3.0)
    wait_for(lambda: widget.progress.value == 0.5, 10, "progress 50 %")
    wait_for(lambda: "simulating · 1,234 bars" in widget.info.value, 10, "the step line")
    assert "~0:03 left" in widget.info.value
    assert widget.progress.description == "50%"

    script.log("chunk 7 of 14 done")
    wait_for(lambda: "chunk 7 of 14 done" in widget.log_html.value, 10, "the log tail")

    # a second view of the same run (another cell, or a kernel restart) starts from the present
    again = RunWidget(ql.get_run(run.id))
    assert again.state.status == "running" and again.progress.value == 0.5
    assert "chunk 7 of 14 done" in again.log_html.value

    source = run.record["config"]["strategy_source"]
    trace, user_line = _trace_through(source)
    script.fail("StrategyError: strategy 'fragile_test_strategy' raised ZeroDivisionError", trace)
    for view in (widget, again):
        assert wait_for_outcome(view, 10)
        wait_for(lambda v=view: not v.following, 10, "the follower thread to end")
        assert view.state.status == "failed"
        assert view.progress.bar_style == "danger"
        error_html = view.body.children[0].value
        assert "Run failed:</b> StrategyError: strategy &#x27;fragile_test_strategy&#x27;" in (
            error_html)
        assert (f"line {user_line} of strategy &#x27;fragile_test_strategy&#x27;"
                in error_html)
        assert "ratio = float(bars.close[0, 0]) / 0" in error_html
        assert "ql-run-failed" in view._dom_classes
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the follower threads never print


def test_queue_position_is_live(nb_home: Path, no_worker: None) -> None:
    first = ql.submit(SINGLE)
    second = ql.submit({**SINGLE, "params": {"fast": 12, "slow": 30}})
    widget = RunWidget(second)
    wait_for(lambda: "position 2 of 2 in the queue" in widget.info.value, 10, "position 2")
    first.cancel()
    wait_for(lambda: "position 1 of 1 in the queue" in widget.info.value, 10, "position 1")
    second.cancel()
    assert wait_for_outcome(widget, 10)
    assert widget.state.status == "cancelled"
    assert "cancelled before any result was kept" in widget.body.children[0].value


@pytest.mark.slow
def test_a_live_sweep_ends_as_its_results_view(nb_home: Path, worker: Worker) -> None:
    run = ql.submit({**SINGLE, "params": {"fast": [5, 10, 20], "slow": [30, 60]}})
    widget = RunWidget(run)
    assert wait_for_outcome(widget, 120)
    result = run.result()
    view = widget.body.children[0]
    assert widget.state.status == "completed" and widget.progress.value == 1.0
    assert widget.live.layout.display == "none"
    assert format_metric("sharpe", result.metrics["sharpe"]) in view.metrics_html.value
    assert view.tabs.titles == ("Sweep", "Chart", "Trades")
    assert view.sweep is not None and len(view.sweep.table) == 6
    # the metric dropdown redraws the heatmap
    view.sweep.metric.value = "total_return_pct"
    assert view.sweep.figure.layout.title.text == "Total return by fast × slow"
    # the same parameter on both axes is refused, in words, and the map stays
    view.sweep.y_param.value = "fast"
    assert "x and y are both &#x27;fast&#x27;" in view.sweep.message.value
    view.sweep.y_param.value = "(none)"
    assert view.sweep.figure.layout.title.text == "Total return by fast (best over slow)"
    # a cell of the map shows its own combination, the exact single run
    view.sweep.y_param.value = "slow"
    combo = view.sweep.show_cell("10", "60")
    single = ql.backtest("AAA", params={"fast": 10, "slow": 60}, start="2020-01-01",
                         end="2021-12-31")
    assert combo.metrics == single.metrics
    assert len(view.sweep.detail.children) == 2
    assert widget.state.last_seq == open_events().last_seq(run.id)


@pytest.mark.slow
def test_cancel_button_stops_a_sweep_and_keeps_its_finished_part(
        nb_home: Path, slow_worker: Worker) -> None:
    grid = {"fast": list(range(5, 45)), "slow": [50, 100, 150, 200]}
    run = ql.submit({**SINGLE, "params": grid})
    widget = RunWidget(run)
    wait_for(lambda: widget.state.status == "running" and widget.state.progress > 0.1, 60,
             "the sweep to be under way")
    widget.cancel_button.click()
    assert widget.cancel_button.disabled
    # said at once, before the worker has stopped the sweep
    assert 'class="ql-cancelling">cancelling…' in widget.info.value
    assert wait_for_outcome(widget, 30)
    assert "cancelling…" not in widget.info.value
    assert widget.state.status == "cancelled" and widget.state.partial
    view = widget.body.children[0]
    finished = len(view.sweep.table)
    assert 0 < finished < 160
    assert "partial: the run was cancelled" in view.sweep.summary.value
    assert run.result().partial


@pytest.mark.slow
def test_a_raising_notebook_strategy_shows_the_users_line(nb_home: Path,
                                                           worker: Worker) -> None:
    run = _queued_user_run()
    widget = RunWidget(run)
    assert wait_for_outcome(widget, 60)
    assert widget.state.status == "failed"
    source = run.record["config"]["strategy_source"]
    _, user_line = _trace_through(source)
    error_html = widget.body.children[0].value
    assert f"line {user_line} of strategy &#x27;fragile_test_strategy&#x27;" in error_html
    assert "ZeroDivisionError" in error_html


def test_a_deleted_run_stops_the_follower_with_a_note(nb_home: Path, no_worker: None) -> None:

    run = ql.submit(SINGLE)
    widget = RunWidget(run)
    open_registry().delete_run(run.id)
    wait_for(lambda: not widget.following, 10, "the follower to stop")
    assert f"run {run.id} is no longer in the registry (deleted)" in widget.info.value


def test_apply_drives_a_widget_without_a_thread(nb_home: Path, no_worker: None) -> None:
    from quantlab.events import Event

    run = ql.submit(SINGLE)
    widget = RunWidget(run, follow=False)
    assert not widget.following
    base = widget.state.last_seq
    assert widget.apply(Event(base + 1, run.id, "started", time.time(), {"attempts": 1}))
    assert widget.apply(Event(base + 2, run.id, "progress", time.time(),
                              {"progress": 0.25, "step": "computing indicators"}))
    assert widget.progress.value == 0.25 and "computing indicators" in widget.info.value
    assert not widget.apply(Event(base + 2, run.id, "progress", time.time(), {"progress": 0.9}))
    assert widget.progress.value == 0.25  # a replayed event changes nothing


def test_the_follower_survives_an_unreadable_event_stream(
        nb_home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """One failed wait (Redis restarting in team mode) pauses the view; it does not end it."""
    from quantlab.errors import EventsUnavailable

    events = open_events()
    real_wait = events.wait
    view: dict[str, RunWidget] = {}
    shown_at_wait: list[str] = []  # the info line as each wait starts

    def wait_failing_once(*args: Any, **kwargs: Any) -> Any:
        shown_at_wait.append(view["widget"].info.value if view else "")
        if len(shown_at_wait) == 1:  # the store is restarting
            raise EventsUnavailable("cannot reach Redis (restarting)")
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(events, "wait", wait_failing_once)
    run = ql.submit(SINGLE)
    widget = view["widget"] = RunWidget(run)
    assert widget.events is events
    wait_for(lambda: len(shown_at_wait) > 2, 10, "the follower to read the stream again")
    assert "live updates paused (EventsUnavailable: cannot reach Redis" in shown_at_wait[1]
    assert "live updates" not in widget.info.value  # the note went once the stream was back
    script = ScriptedWorker(run.id)
    script.start()
    script.fail("StrategyError: boom", "Traceback (most recent call last):\n")
    assert wait_for_outcome(widget, 10)
    assert widget.state.status == "failed"


def test_a_widget_keeps_following_the_home_its_run_was_created_under(
        nb_home: Path, tmp_path: Path) -> None:
    """The follower thread reads the registry of its run's settings, fixed when the widget is
    built: a kernel whose QUANTLAB_HOME changes later (or a test after it) is not touched."""
    lock = os.open(nb_home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)  # a worker seems alive: the run stays queued
    try:
        run = ql.submit({"strategy": "sma_crossover", "symbols": ["AAA"],
                         "params": {"fast": 10, "slow": 30}})
        widget = RunWidget(run)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("QUANTLAB_HOME", str(elsewhere))
                time.sleep(3 * TICK_SECONDS + 0.5)  # a queued run is reconciled every tick
                assert not (elsewhere / "registry.sqlite").exists()
            assert widget.state.queue_position == 1
        finally:
            widget.stop()
    finally:
        os.close(lock)


# -- a run's first seconds and a saved sweep view (issue 17: rough edge 15, the view's size) ------


def test_the_widget_says_which_step_runs_and_how_far_before_any_bar(
        nb_home: Path, no_worker: None) -> None:
    """Before its first simulated chunk a run says what it does (computing indicators,
    compiling the engine) with the step's own count, not "0 bars"."""
    from quantlab.jobs.execution import STEP_COMPILING, STEP_INDICATORS, step_progress

    run = ql.submit(SINGLE)
    widget = RunWidget(run)
    script = ScriptedWorker(run.id)
    script.start()
    for step, done, total in ((STEP_INDICATORS, 120, 300), (STEP_COMPILING, 7, 22)):
        lifecycle.publish(run.id, lifecycle.Progress(
            progress=step_progress(step, done, total), step=step, bars_done=0, bars_delta=0,
            done_units=0, total_units=500, eta_seconds=None, step_done=done, step_total=total))
        wait_for(lambda s=step, d=done, t=total: f"{s} · {d}/{t}" in widget.info.value, 10,
                 f"the {step} line")
        assert "0 bars" not in widget.info.value
        assert 0 < widget.progress.value < 0.05
    widget.stop()


def test_step_progress_moves_between_the_step_start_points() -> None:
    from quantlab.jobs.execution import (
        STEP_COMPILING,
        STEP_DATA,
        STEP_INDICATORS,
        STEP_OVERFITTING,
        STEP_PROGRESS,
        STEP_SAVING,
        STEP_SIMULATING,
        step_progress,
    )

    order = [STEP_DATA, STEP_INDICATORS, STEP_COMPILING, STEP_SIMULATING, STEP_OVERFITTING,
             STEP_SAVING]
    assert [STEP_PROGRESS[s] for s in order] == sorted(STEP_PROGRESS[s] for s in order)
    for step, after in ((STEP_INDICATORS, STEP_COMPILING), (STEP_COMPILING, STEP_SIMULATING),
                        (STEP_SIMULATING, STEP_OVERFITTING), (STEP_OVERFITTING, STEP_SAVING)):
        assert step_progress(step, 0, 10) == STEP_PROGRESS[step]
        assert STEP_PROGRESS[step] < step_progress(step, 5, 10) < STEP_PROGRESS[after]
        assert step_progress(step, 10, 10) == pytest.approx(STEP_PROGRESS[after])
    assert step_progress(STEP_INDICATORS, 0, 0) == STEP_PROGRESS[STEP_INDICATORS]
    assert step_progress(STEP_SAVING, 7, 7) == STEP_PROGRESS[STEP_SAVING]  # not a counted step


# A saved notebook with a sweep view stays under this: its own content (a 600-bar chart's data,
# ~0.2 MB, the heatmap and tables) is well under it, and one copy of plotly.js (4.8 MB, in
# plotly/package_data/plotly.min.js) in the widget state is far over it.
SAVED_SWEEP_NOTEBOOK_BYTES = 1_000_000


def test_a_saved_notebook_with_a_sweep_view_carries_no_plotly_js(
        nb_home: Path, tmp_path: Path) -> None:
    import nbformat

    from tests.support.notebook import SWEEP_CELL, WidgetTree, execute_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SWEEP_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    execute_notebook(nb, tmp_path)
    path = tmp_path / "sweep.ipynb"
    nbformat.write(nb, path)
    text = path.read_text()
    assert path.stat().st_size < SAVED_SWEEP_NOTEBOOK_BYTES, path.stat().st_size
    assert "plotly.js v" not in text  # the library's banner: no copy of it is saved
    # the heatmap is saved as plotly's own output (its data only), with its click widget
    tree = WidgetTree(nb)
    root = tree.root(nb.cells[0])
    (heatmap,) = tree.with_class(root, "ql-heatmap")
    figure = heatmap["outputs"][0]["data"]["application/vnd.plotly.v1+json"]
    assert figure["layout"]["title"]["text"] == "Deflated Sharpe by fast × slow"
    (clicks,) = tree.find(root, "AnyModel")
    assert clicks["target"] in heatmap["_dom_classes"]
    assert len(clicks["_esm"]) < 2_000


def test_a_click_on_the_heatmap_reaches_python_through_its_small_widget(
        nb_home: Path) -> None:
    from quantlab.notebook.results import SweepPanel

    sweep = ql.backtest("AAA", params={"fast": [5, 10], "slow": [30, 60]}, start="2020-01-01",
                        end="2021-12-31")
    panel = SweepPanel(sweep)
    assert panel.clicks.target in panel.map_output._dom_classes
    # what the browser side sends for a click on the cell fast=10, slow=60
    panel.clicks._message(panel.clicks, {"x": "10", "y": "60"}, [])
    assert len(panel.detail.children) == 2
    single = ql.backtest("AAA", params={"fast": 10, "slow": 60}, start="2020-01-01",
                         end="2021-12-31")
    assert "Equity of fast=10, slow=60" in json.dumps(panel.detail.children[0].outputs[0]["data"])
    assert sweep.combination(fast=10, slow=60).metrics == single.metrics


def test_two_kernels_sweep_views_target_different_maps(nb_home: Path) -> None:
    """The click widget finds its map by a class on the page, and two notebooks (two kernels)
    share the page in a Lab: each kernel's first sweep view must still have its own class
    (a per-kernel counter gave both "ql-heatmap-1")."""
    import subprocess
    import sys

    first_view = ("import quantlab as ql\nfrom quantlab.notebook.results import SweepPanel\n"
                  "s = ql.backtest('AAA', params={'fast': [5, 10], 'slow': [30, 60]}, "
                  "start='2020-01-01', end='2020-12-31')\nprint(SweepPanel(s).clicks.target)")
    targets = [subprocess.run([sys.executable, "-c", first_view], capture_output=True,
                              text=True, check=True, timeout=300).stdout.split()[-1]
               for _ in range(2)]
    assert targets[0] != targets[1] and all(t.startswith("ql-heatmap-") for t in targets)
