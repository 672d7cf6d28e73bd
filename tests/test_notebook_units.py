"""Unit tests of the notebook pieces that need no worker: cell parsing, ranges, the run state
machine driven by events, the SVG charts, failure display, comparison and run-list filters."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quantlab.configtext import expand_param_ranges, parse_body, parse_range
from quantlab.durations import format_duration
from quantlab.errors import ConfigError
from quantlab.notebook.failure import failure_html, failure_text, user_frames
from quantlab.notebook.runlist import RunsTable, parse_filters
from quantlab.notebook.state import RunState, summary_line
from quantlab.render import figures
from quantlab.render.format import format_metric, metrics_table_html
from quantlab.render.results import best_rows, sweep_matrix
from quantlab.strategies.usercode import SOURCE_MARKER, load_shipped_strategy, source_line_offset
from tests.support import notebook as support

# -- cell body ---------------------------------------------------------------------------------


def test_body_yaml_and_json_give_the_same_config() -> None:
    yaml_body = "strategy: sma_crossover\nsymbols: [AAA, BBB]\nparams: {fast: 10, slow: 50}\n"
    json_body = '{"strategy": "sma_crossover", "symbols": ["AAA", "BBB"], ' \
                '"params": {"fast": 10, "slow": 50}}'
    assert parse_body(yaml_body) == parse_body(json_body) == {
        "strategy": "sma_crossover", "symbols": ["AAA", "BBB"], "params": {"fast": 10, "slow": 50}}


def test_body_yaml_error_names_the_line_of_the_cell() -> None:
    body = "strategy: sma_crossover\nsymbols: [AAA, BBB\ncash: 1000\n"
    with pytest.raises(ConfigError) as info:
        parse_body(body)
    message = str(info.value)
    assert "YAML error on line 3 of the cell body" in message
    assert "(while parsing a flow sequence that starts on line 2)" in message
    assert "close the list with ']'" in message
    assert info.value.line == 3


def test_body_with_unquoted_colon_points_at_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_body("strategy: sma_crossover\nname: a: b\n")
    assert "line 2" in str(info.value)
    assert "must be quoted" in str(info.value)


@pytest.mark.parametrize("body, expected", [
    ("", "the %%backtest cell is empty"),
    ("   \n", "the %%backtest cell is empty"),
    ("- a\n- b\n", "must be a mapping of config keys"),
    ("just words", "must be a mapping of config keys"),
    ("1: x\n", "config keys must be names"),
])
def test_body_shapes_that_are_not_a_config(body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_body(body)


@pytest.mark.parametrize(("body", "field", "line", "first"), [
    ("strategy: sma_crossover\nsymbols: [AAA]\nstrategy: rsi\n", "strategy", 3, 1),
    ("strategy: sma_crossover\nparams: {fast: 1, fast: 2}\n", "params.fast", 2, 2),
    ("strategy: sma_crossover\nparams:\n  fast: 5\n  slow: 50\n  fast: 10\n", "params.fast",
     5, 3),
    ("strategy: x\nnotify:\n  on: [failed]\n  to: [{email: a@b.c, email: d@e.f}]\n",
     "notify.to[0].email", 4, 4),
])
def test_a_key_given_twice_is_refused_naming_it(body: str, field: str, line: int,
                                                first: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_body(body)
    message = str(info.value)
    assert message.startswith(f"duplicate key '{field}' on line {line} of the cell body (it is "
                              f"already given on line {first})")
    assert "give each key once" in message
    assert info.value.field == field and info.value.line == line


def test_a_yaml_merge_key_may_be_overridden() -> None:
    body = "base: &b {fast: 5}\nparams:\n  <<: *b\n  fast: 10\n"
    assert parse_body(body)["params"] == {"fast": 10}


def test_yaml_dates_and_underscored_numbers_parse() -> None:
    config = parse_body("start: 2015-01-01\ncash: 100_000\ncommission: 0.001\n")
    assert str(config["start"]) == "2015-01-01"
    assert config["cash"] == 100_000
    assert config["commission"] == 0.001


# -- ranges ------------------------------------------------------------------------------------


def test_text_range_includes_both_ends() -> None:
    assert parse_range("5..10", field="params.fast") == [5, 6, 7, 8, 9, 10]
    assert parse_range("5..50:15", field="params.fast") == [5, 20, 35, 50]
    assert parse_range(" 10 .. 20 : 5 ", field="params.fast") == [10, 15, 20]


def test_float_range_has_no_binary_noise() -> None:
    assert parse_range("0.1..0.5:0.1", field="params.k") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_range({"start": 1.0, "stop": 2.0, "step": 0.25}, field="params.k") == [
        1.0, 1.25, 1.5, 1.75]


def test_mapping_range_follows_python_range() -> None:
    assert parse_range({"start": 5, "stop": 51, "step": 5}, field="p") == list(range(5, 51, 5))
    assert parse_range({"start": 5, "stop": 50, "step": 5}, field="p") == list(range(5, 50, 5))
    assert parse_range({"start": 3, "stop": 6}, field="p") == [3, 4, 5]


def test_values_that_are_not_ranges_pass_through() -> None:
    assert parse_range("fast", field="p") is None
    assert parse_range(10, field="p") is None
    assert parse_range([1, 2], field="p") is None
    assert expand_param_ranges({"fast": "5..7", "slow": [50, 100], "k": 2.0}) == {
        "fast": [5, 6, 7], "slow": [50, 100], "k": 2.0}
    combos = [{"fast": 5, "slow": 50}]
    assert expand_param_ranges(combos) is combos


@pytest.mark.parametrize("value, expected", [
    ("50..5", "is empty (it goes from 50 towards 5 with step 1); swap the ends"),
    ("5..50:0", "has a step of 0; use a positive step"),
    ({"start": 5}, "a range needs 'start' and 'stop'"),
    ({"start": "a", "stop": 5}, "range start must be a number, got 'a'"),
    ("1..100000000", "more than 1,000,000); use a larger step"),
    ({"start": 5, "stop": 5}, "contains no value; widen it"),
])
def test_bad_ranges_say_how_to_fix_them(value: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        parse_range(value, field="params.fast")
    assert info.value.field == "params.fast"
    assert str(info.value).startswith("params.fast: ")


# -- run state driven by events ----------------------------------------------------------------


@dataclass
class Ev:
    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = 1000.0
    run_id: str = "R1"


def _queued_state() -> RunState:
    return RunState.from_record({"id": "R1", "name": "golden cross", "status": "queued",
                                 "queued_at": 990.0, "position": 3, "estimated_seconds": 4.0})


def test_state_walks_queued_running_completed() -> None:
    state = _queued_state()
    assert state.queue_position == 3
    assert "position 3 in the queue" in summary_line(state, now=1000.0)
    assert "0:10 waiting" in summary_line(state, now=1000.0)
    assert "~0:04 to run" in summary_line(state, now=1000.0)

    assert state.apply(Ev(1, "started", {"worker": "w1", "attempts": 1}, ts=1001.0))
    assert state.status == "running" and state.queue_position is None
    assert state.apply(Ev(2, "progress", {"progress": 0.62, "step": "simulating",
                                          "bars_done": 1_200_000, "eta_seconds": 2.0}, ts=1004.0))
    assert state.progress == pytest.approx(0.62)
    line = summary_line(state, now=1004.0)
    assert line == "simulating · 1.2 M bars · 0:03 elapsed · ~0:02 left"

    assert state.apply(Ev(3, "log", {"message": "chunk 4 done", "level": "info"}, ts=1004.5))
    assert [entry.message for entry in state.log] == ["chunk 4 done"]

    assert state.apply(Ev(4, "completed", {"metrics": {"sharpe": 1.2}}, ts=1006.0))
    assert state.terminal and state.progress == 1.0
    assert state.elapsed(now=5000.0) == pytest.approx(5.0)  # frozen at the end
    assert summary_line(state) == "completed · 1.2 M bars · 0:05 elapsed"


def test_state_reads_the_progress_payload_workers_publish_in_its_one_spelling() -> None:
    from quantlab.jobs.lifecycle import Progress

    told = Progress(progress=0.5, step="simulating", bars_done=10, bars_delta=10, done_units=5,
                    total_units=10, eta_seconds=3.0).data()
    state = _queued_state()
    state.apply(Ev(1, "started", ts=1001.0))
    assert state.apply(Ev(2, "progress", told, ts=1002.0))
    assert (state.progress, state.eta_seconds, state.total_units) == (0.5, 3.0, 10)
    # the old spellings (percent, eta) are no longer read
    state.apply(Ev(3, "progress", {"percent": 90.0, "eta": 1.0}, ts=1003.0))
    assert state.progress == 0.5 and state.eta_seconds is None


def test_state_ignores_replayed_and_post_terminal_events() -> None:
    state = _queued_state()
    state.apply(Ev(5, "started", ts=1001.0))
    assert not state.apply(Ev(5, "progress", {"progress": 0.9}))  # same seq: a replay
    assert not state.apply(Ev(4, "progress", {"progress": 0.9}))  # older
    state.apply(Ev(6, "cancelled", {"partial": True}, ts=1002.0))
    assert state.status == "cancelled" and state.partial
    assert not state.apply(Ev(7, "progress", {"progress": 0.95}))
    assert state.status == "cancelled"
    # a stale record never reopens a finished run either
    state.update_from_record({"id": "R1", "status": "running", "progress": 0.5})
    assert state.status == "cancelled"


def test_state_requeued_after_worker_death_resumes() -> None:
    state = _queued_state()
    state.apply(Ev(1, "started", {"attempts": 1}, ts=1001.0))
    state.apply(Ev(2, "progress", {"progress": 0.4, "step": "simulating"}, ts=1002.0))
    state.apply(Ev(3, "queued", {"reason": "worker_lost", "attempts": 1}, ts=1010.0))
    assert state.status == "queued" and not state.terminal
    assert "resuming (attempt 2)" in summary_line(state, now=1011.0)
    state.apply(Ev(4, "started", {"attempts": 2}, ts=1012.0))
    assert state.status == "running" and state.attempts == 2


def test_state_failure_keeps_error_and_traceback() -> None:
    state = _queued_state()
    state.apply(Ev(1, "failed", {"error": "strategy 'x' raised ZeroDivisionError",
                                 "traceback": "Traceback ...\nZeroDivisionError: boom"}))
    assert state.status == "failed" and state.error.startswith("strategy 'x'")
    assert state.traceback.endswith("boom")


def test_state_from_record_with_logs_deduplicates_log_events() -> None:
    state = RunState.from_record({"id": "R1", "status": "running", "started_at": 1.0},
                                 [{"ts": 2.0, "level": "info", "message": "loaded 3 symbols"}])
    state.apply(Ev(9, "log", {"message": "loaded 3 symbols", "level": "info"}, ts=2.0))
    assert len(state.log) == 1


def test_durations_format() -> None:
    assert format_duration(3.4) == "0:03"
    assert format_duration(75) == "1:15"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(None) == "—"
    assert format_duration(float("nan")) == "—"
    assert format_duration(0.42) == "0:00.4"  # a quick run does not read "0:00"
    assert format_duration(0.97) == "0:00.9"  # never "0:01.0" next to "0:01"
    assert format_duration(-0.2) == "0:00.0"  # clocks of two machines a little apart


def test_one_duration_format_in_the_widget_the_run_list_and_the_report() -> None:
    """The widget's line, %backtests and the report header say a duration the same way."""
    from quantlab.notebook import runlist, state
    from quantlab.reports import sections

    assert state.format_duration is format_duration
    assert runlist.format_duration is format_duration
    assert sections.format_duration is format_duration
    running = RunState.from_record({"id": "R1", "status": "running", "started_at": 1000.0,
                                    "eta_seconds": 3723.0})
    assert "1:15 elapsed" in summary_line(running, now=1075.0)
    assert "~1:02:03 left" in summary_line(running, now=1075.0)
    header = sections.header_html({"id": "R1", "status": "completed", "started_at": 1000.0,
                                   "finished_at": 1075.4})
    assert "ran 1:15" in header
    quick = sections.header_html({"id": "R2", "status": "completed", "started_at": 1000.0,
                                  "finished_at": 1000.42})
    assert "ran 0:00.4" in quick


# -- formatting, figures, sweep matrix -------------------------------------------------------------


def test_metric_formats() -> None:
    assert format_metric("total_return_pct", 12.345) == "12.35 %"
    assert format_metric("sharpe", 1.23456) == "1.235"
    assert format_metric("n_trades", 42) == "42"
    assert format_metric("profit_factor", float("inf")) == "∞"
    assert format_metric("sharpe", float("nan")) == "—"
    html = metrics_table_html({"sharpe": 1.5, "total_return_pct": 10.0, "my_metric": 3.0})
    assert html.index("Total return") < html.index("Sharpe") < html.index("Other")


def test_comparison_lines_keep_a_spike_through_the_reduction() -> None:
    index = pd.date_range("2020-01-01", periods=50_000, freq="min")
    values = pd.DataFrame({"a": np.linspace(100, 200, 50_000)}, index=index)
    values.iloc[25_000, 0] = 50.0  # a spike the reduction must keep
    fig = figures.lines_figure(values, title="Equity")
    (line,) = fig.data
    assert len(line.y) <= 2 * figures.MAX_BUCKETS + 2 and min(line.y) == 50.0


def test_heatmap_cells_and_nan_for_invalid_combinations() -> None:
    table = pd.DataFrame({"fast": [5, 5, 10, 10], "slow": [10, 20, 10, 20],
                          "sharpe": [np.nan, 1.0, np.nan, -0.5]})
    matrix = sweep_matrix(table, "sharpe", "fast", "slow")
    assert list(matrix.columns) == [5, 10] and list(matrix.index) == [10, 20]
    assert matrix.loc[20, 5] == 1.0 and np.isnan(matrix.loc[10, 10])
    fig = figures.heatmap_figure(table, ["fast", "slow"], ["sharpe"], metric="sharpe",
                                 x="fast", y="slow")
    (heat,) = fig.data
    assert heat.text[1][0] == "1.00" and heat.text[0][1] == "n/a"  # rows slow, columns fast
    assert "fast=%{x}, slow=%{y}<br>Sharpe = %{text}" in heat.hovertemplate


def test_sweep_matrix_reduces_other_params_to_their_best() -> None:
    table = pd.DataFrame({"a": [1, 1, 2, 2], "b": [1, 1, 1, 1], "c": [0, 1, 0, 1],
                          "sharpe": [0.1, 0.9, 0.3, 0.2],
                          "volatility_ann_pct": [10.0, 30.0, 5.0, 8.0]})
    assert sweep_matrix(table, "sharpe", "a", "b").loc[1].tolist() == [0.9, 0.3]
    # lower volatility is better: the best is the minimum
    assert sweep_matrix(table, "volatility_ann_pct", "a", "b").loc[1].tolist() == [10.0, 5.0]
    one_param = sweep_matrix(table, "sharpe", "a", None)
    assert one_param.shape == (1, 2)
    assert best_rows(table, "sharpe", 2)["sharpe"].tolist() == [0.9, 0.3]


# -- failures in the researcher's code ---------------------------------------------------------

SHIPPED = "\n".join([
    "import numpy as np",
    "import quantlab as ql",
    SOURCE_MARKER,
    "@ql.strategy",
    "def fragile(bars, n=3):",
    "    x = float(bars.close[0, 0])",
    "    y = x / 0",
    "    return np.sign(y)",
    "",
])

TRACE = """Traceback (most recent call last):
  File "/work/main/quantlab/strategies/base.py", line 140, in signals
    raw = self.func(bars, **kwargs)
  File "<strategy fragile>", line 7, in fragile
ZeroDivisionError: division by zero

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.11/site-packages/numpy/core/x.py", line 1, in f
quantlab.errors.StrategyError: strategy 'fragile' raised ZeroDivisionError: division by zero
"""


def test_user_frames_are_numbered_from_the_strategy_source() -> None:
    assert source_line_offset(SHIPPED) == 3
    frames = user_frames(TRACE, SHIPPED)
    assert len(frames) == 1
    frame = frames[0]
    assert frame.function == "fragile" and frame.line == 4
    assert dict(frame.excerpt)[4] == "    y = x / 0"
    assert min(dict(frame.excerpt)) == 2 and max(dict(frame.excerpt)) == 5


def test_failure_views_show_the_users_line() -> None:
    config = {"strategy": "fragile", "strategy_source": SHIPPED}
    text = failure_text("strategy 'fragile' raised ZeroDivisionError", TRACE, config)
    assert "in fragile, line 4 of strategy 'fragile':" in text
    assert "->    4 |     y = x / 0" in text
    html = failure_html("strategy 'fragile' raised ZeroDivisionError", TRACE, config)
    assert "line 4 of strategy &#x27;fragile&#x27;" in html
    assert "full traceback (worker)" in html


def test_a_failed_run_says_its_traceback_is_below_where_it_is() -> None:
    from quantlab.strategies import Strategy

    def raising(bars: Any, fast: int = 1) -> Any:
        raise ValueError("boom")

    with pytest.raises(Exception) as caught:
        Strategy(raising, name="raising").signals(None, {"fast": 1})  # type: ignore[arg-type]
    assert "above" not in str(caught.value) and "its traceback shows where" in str(caught.value)
    config = {"strategy": "fragile", "strategy_source": SHIPPED}
    legacy = "strategy 'fragile' raised ValueError: boom; see the traceback above for where"
    html = failure_html(legacy, TRACE, config)
    assert "traceback above" not in html
    assert "its traceback shows where (full traceback below)" in html
    # the folded traceback does come after the error line
    assert html.index("full traceback below") < html.index("<details>")
    assert "above" not in failure_text(legacy, TRACE, config)
    assert "below" not in failure_text(legacy, TRACE, config)  # the text view shows none


def test_shipped_strategy_loads_and_its_traceback_names_the_line(ql_home: Any) -> None:
    from quantlab.bars import Bars

    strat = load_shipped_strategy("fragile", SHIPPED)
    assert strat.name == "fragile" and strat.params == {"n": 3}
    index = pd.date_range("2020-01-01", periods=4, freq="D")
    close = np.array([[1.0, 2.0, 3.0, 4.0]])
    bars = Bars(index=index, symbols=("AAA",), open=close, high=close, low=close, close=close,
                volume=close, interval="1d", meta={})
    import traceback

    with pytest.raises(Exception) as info:
        strat.signals(bars, {"n": 3})
    trace = "".join(traceback.format_exception(info.value))
    assert 'File "<strategy fragile>", line 7, in fragile' in trace
    assert "y = x / 0" in trace  # the source is in linecache: tracebacks show the line


# -- comparison and run list -------------------------------------------------------------------


def _compared(sharpe: float, dd: float, fast: int, moves: list[float]) -> Any:
    """A result as ql.compare reads it from the registry: an equity curve, metrics, config."""
    from types import SimpleNamespace

    equity = pd.Series(moves, index=pd.date_range("2020-01-01", periods=len(moves)))
    config = {"strategy": "sma_crossover", "symbols": ["AAA"], "params": {"fast": fast,
                                                                          "slow": 50}}
    return SimpleNamespace(equity=equity, config=config, metrics={
        "sharpe": sharpe, "max_drawdown_pct": dd, "volatility_ann_pct": 12.0})


def test_comparison_shows_labels_formatted_metrics_and_the_best_in_bold() -> None:
    """What %backtest_compare shows (the ql.compare Comparison): a column per run named after
    it, each metric formatted as in the results view, the better value of each in bold."""
    from quantlab.analytics import Comparison
    from quantlab.render import html  # noqa: F401  (the HTML views, as %backtest_compare loads)

    results = {"A": _compared(0.5, -30.0, 10, [100.0, 90.0, 95.0, 70.0, 80.0]),
               "B": _compared(1.5, -10.0, 20, [100.0, 101.0, 91.0, 99.0, 104.0])}
    records = {"A": {"name": "slow one"}, "B": {"name": "fast one"}}
    page = Comparison.from_results(results, records=records)._repr_html_()

    labels, rows = support.comparison_metrics(page)
    assert labels == ["slow one", "fast one"]
    assert rows["Sharpe"] == [format_metric("sharpe", 0.5), format_metric("sharpe", 1.5)]
    assert rows["Sharpe"] == ["0.500", "1.500"]
    assert rows["Max drawdown"] == ["-30.00 %", "-10.00 %"]
    assert support.comparison_best(page, "Sharpe") == ["1.500"]
    assert support.comparison_best(page, "Max drawdown") == ["-10.00 %"]  # the shallower one
    assert support.comparison_best(page, "Volatility (ann.)") == ["12.00 %", "12.00 %"]  # a tie
    config = support.table_cells(page, "ql-compare-config")
    assert [text for text, _ in config[1]] == ["params.fast", "params", "10", "20"]
    assert "Correlation" in page and "Drawdowns" in page


# -- report links --------------------------------------------------------------------------------


def test_report_links_are_relative_to_the_notebook_when_the_server_can_serve_them(
        tmp_path: Any) -> None:
    from quantlab.notebook.reportview import link_href

    root, here = tmp_path / "root", tmp_path / "root" / "research"
    here.mkdir(parents=True)
    assert link_href(here / "out" / "r 1.html", here, []) == "out/r%201.html"
    # elsewhere under the server's root: up from the notebook's folder
    assert link_href(root / "reports" / "r.html", here, [root]) == "../reports/r.html"
    assert link_href(root / "reports" / "r.html", here, []) is None  # no server known
    # Jupyter does not serve hidden folders, nor anything outside its root
    assert link_href(root / ".quantlab" / "reports" / "r.html", here, [root]) is None
    assert link_href(tmp_path / "elsewhere" / "r.html", here, [root]) is None
    # a root that does not hold the notebook is another server's: its files are not linked
    other = tmp_path / "other"
    assert link_href(other / "r.html", here, [other]) is None


def test_report_view_links_what_it_can_and_names_the_rest(tmp_path: Any) -> None:
    from quantlab.notebook.reportview import ReportView
    from quantlab.reports.runner import ReportFiles

    here = tmp_path / "nb"
    here.mkdir()
    files = ReportFiles("01RUN", tmp_path / "home" / "reports" / "01RUN.ipynb",
                        here / "01RUN.html", "runs/01RUN/report.html")
    view = ReportView.of(files, cwd=here, roots=[])
    page = view._repr_html_()
    assert '<a href="01RUN.html" title="' + str(here / "01RUN.html") + '">01RUN.html</a>' in page
    assert f"executed notebook: <code>{tmp_path / 'home' / 'reports' / '01RUN.ipynb'}</code>" in (
        page)
    assert "runs/01RUN/report.html" in page
    assert repr(view) == (f"report of run 01RUN\n  HTML report: {here / '01RUN.html'}\n"
                          f"  executed notebook: {tmp_path / 'home' / 'reports' / '01RUN.ipynb'}")


def test_run_list_filters_parse_like_a_search_box() -> None:
    assert parse_filters('status=completed,failed tag=trend sharpe>1 "golden cross" limit=5') == {
        "status": ["completed", "failed"], "tag": "trend", "where": "sharpe>1",
        "text": "golden cross", "limit": 5}
    assert parse_filters("where=max_drawdown_pct>=-20 sharpe>=1")["where"] == (
        "max_drawdown_pct>=-20, sharpe>=1")
    assert parse_filters("")["limit"] == 20


def test_run_list_badges_go_in_the_status_cells_only() -> None:
    """A run named like a status keeps its name as text; its status cell gets the badge."""
    records = [{"id": "01A", "name": "failed", "status": "completed", "strategy": "sma"},
               {"id": "01B", "name": "<b>x</b>", "status": "failed", "strategy": "sma"}]
    page = RunsTable(records, {"limit": 20})._repr_html_()
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert cells[0][1] == "failed" and cells[1][1] == "&lt;b&gt;x&lt;/b&gt;"  # names: text
    assert "ql-status-completed" in cells[0][2] and ">completed</span>" in cells[0][2]
    assert "ql-status-failed" in cells[1][2]


def test_run_list_shows_the_queue_wait_and_one_duration_format() -> None:
    records = [{"id": "01A", "name": "quick", "status": "completed", "queued_at": 1000.0,
                "started_at": 1004.0, "finished_at": 1004.7},
               {"id": "01B", "name": "slow", "status": "completed", "queued_at": 1000.0,
                "started_at": 1000.2, "finished_at": 1075.2}]
    table = RunsTable(records, {"limit": 20})
    page = table._repr_html_()
    header = re.findall(r"<th[^>]*>(.*?)</th>", page.split("<tbody>")[0])
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    waited, took = header.index("waited"), header.index("duration")
    assert [c[waited] for c in cells] == ["0:04", "0:00.2"]
    assert [c[took] for c in cells] == ["0:00.7", "1:15"]
    for row in cells:  # every duration reads as a clock: no "0.7 s"
        assert all(re.fullmatch(r"\d+:\d\d(\.\d)?", row[i]) for i in (waited, took))
    assert table.to_frame()["queue_wait_s"].round(1).tolist() == [4.0, 0.2]


@pytest.mark.parametrize("line, expected", [
    ("stauts=completed", "unknown filter 'stauts' — did you mean 'status'?"),
    ("limit=ten", "limit must be a whole number, got 'ten'"),
    ("offset=-1", "offset must not be negative"),
    ('text="unclosed', "close the quotes"),
])
def test_run_list_filter_errors(line: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_filters(line)


def test_attach_strategy_source_to_a_dict_and_a_config_model(ql_home: Any) -> None:
    import quantlab as ql
    from quantlab.strategies.usercode import attach_strategy_source

    @ql.strategy(name="unit_always_long")
    def unit_always_long(bars: Any, k: int = 1) -> Any:
        return np.ones(bars.close.shape, dtype=np.int8) * k

    as_dict = attach_strategy_source({"strategy": "unit_always_long", "symbols": ["AAA"]})
    assert "def unit_always_long(bars: Any, k: int = 1) -> Any:" in as_dict["strategy_source"]
    assert "import numpy as np" in as_dict["strategy_source"]
    model = ql.BacktestConfig.from_any({"strategy": "unit_always_long", "symbols": ["AAA"]},
                                       check=False)
    shipped = attach_strategy_source(model)
    assert shipped.strategy_source == as_dict["strategy_source"]
    assert model.strategy_source is None  # the caller's config is not changed
    builtin = {"strategy": "sma_crossover", "symbols": ["AAA"]}
    assert attach_strategy_source(builtin) is builtin


def test_a_large_heatmap_is_one_trace_of_every_cell() -> None:
    fast, slow = np.arange(5, 51), np.arange(10, 201)
    grid = pd.DataFrame([(f, s, float(np.sin(f) + s / 100)) for f in fast for s in slow],
                        columns=["fast", "slow", "sharpe"])
    fig = figures.heatmap_figure(grid, ["fast", "slow"], ["sharpe"], metric="sharpe", x="fast",
                                 y="slow")
    (heat,) = fig.data
    assert np.asarray(heat.z).shape == (191, 46)
    assert heat.z[-1][0] == pytest.approx(np.sin(5) + 2.0)  # the top row is the largest slow
    assert len(figures.figure_html(fig)) < 600_000


@pytest.mark.parametrize("body, message", [
    ("    return None", "strategy 'shaped' returned NoneType; it must return a NumPy array"),
    ("    return np.ones(3)", "strategy 'shaped' returned signals of shape (3,); expected (4,)"),
])
def test_a_shipped_strategy_with_a_bad_return_value_says_so(ql_home: Any, body: str,
                                                            message: str) -> None:
    from quantlab.bars import Bars
    from quantlab.errors import StrategyError

    source = "\n".join(["import numpy as np", "import quantlab as ql", SOURCE_MARKER,
                        "@ql.strategy(name='shaped')", "def shaped(bars):", body, ""])
    strat = load_shipped_strategy("shaped", source)
    close = np.array([[1.0, 2.0, 3.0, 4.0]])
    bars = Bars(index=pd.date_range("2020-01-01", periods=4, freq="D"), symbols=("AAA",),
                open=close, high=close, low=close, close=close, volume=close, interval="1d",
                meta={})
    with pytest.raises(StrategyError, match=re.escape(message)):
        strat.signals(bars, {})


def test_a_shipped_source_that_does_not_load_names_the_strategy(ql_home: Any) -> None:
    from quantlab.errors import StrategyError

    with pytest.raises(StrategyError, match=re.escape(
            "the source of strategy 'broken' failed to load on the worker: "
            "ModuleNotFoundError: No module named 'not_installed_anywhere'")):
        load_shipped_strategy("broken", "import not_installed_anywhere\n")
    with pytest.raises(StrategyError, match=re.escape(
            "the shipped source does not define strategy 'absent'")):
        load_shipped_strategy("absent", "x = 1\n")


def test_charts_and_tables_are_well_formed_markup() -> None:
    import xml.etree.ElementTree as ET

    from quantlab.render.format import html_table

    table = html_table(["name", "value"], [["<script>", 1.5]])
    assert "&lt;script&gt;" in table and "<script>" not in table
    ET.fromstring(table.split("</style>", 1)[1])


def test_the_root_cause_is_named_only_when_the_error_does_not_say_it() -> None:
    from quantlab.notebook.failure import root_exception_line

    assert root_exception_line(TRACE) == "ZeroDivisionError: division by zero"
    said = failure_html("StrategyError: strategy 'fragile' raised ZeroDivisionError", TRACE, {})
    assert "caused by" not in said
    unsaid = failure_html("RunError: the run failed", TRACE, {})
    assert "caused by: <code>ZeroDivisionError: division by zero</code>" in unsaid


def test_load_ext_starts_the_worker_in_the_background(ql_home: Any,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import os
    import signal

    from IPython.core.interactiveshell import InteractiveShell

    import quantlab
    from quantlab.jobs.supervisor import PID_FILE, worker_alive
    from quantlab.notebook import prestart_worker
    from quantlab.settings import current
    from tests.support.procs import wait_for

    # off (as for every other test): nothing starts
    assert prestart_worker() is None
    assert not worker_alive(current())

    def why() -> str:  # what the starting thread logged, and the worker's own log
        log_file = ql_home / "worker.log"
        return (f"logged: {caplog.text or 'nothing'}\nworker.log: "
                f"{log_file.read_text()[-2000:] if log_file.exists() else 'none'}")

    caplog.set_level(logging.WARNING, logger="quantlab.notebook")
    monkeypatch.setenv("QUANTLAB_PRESTART_WORKER", "1")
    quantlab.load_ipython_extension(InteractiveShell.instance())
    try:
        # %load_ext returned at once; the worker comes up by itself, before any submit. This
        # thread's probes of the worker lock run beside the starting thread's (they once took
        # each other for a live worker, and none was started)
        wait_for(lambda: worker_alive(current()), 120, "the worker started at %load_ext",
                 interval=0.05, detail=why)
    finally:
        pid_file = ql_home / PID_FILE
        wait_for(pid_file.exists, 60, "the worker's pid file", interval=0.05, detail=why)
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        wait_for(lambda: not worker_alive(current()), 60, "the worker to stop", interval=0.05)
    # team mode: workers are services, none is started
    monkeypatch.setenv("QUANTLAB_REDIS_URL", "redis://127.0.0.1:1/0")
    assert prestart_worker() is None
