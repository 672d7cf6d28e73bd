"""The magics in an in-process IPython shell against the real registry, queue and worker.

Bad cells are checked for their message, for being shown as one short error line, and for
having queued nothing. Good cells are checked for what they recorded.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from quantlab.errors import ConfigError, QuantlabError, RunError, RunNotFound
from quantlab.render.format import format_metric
from tests.support import notebook as support
from tests.support.notebook import Worker

# fixtures (pytest finds them in the module's namespace)
nb_home = support.nb_home
worker = support.worker

GOOD = """strategy: sma_crossover
symbols: [AAA]
start: 2020-01-01
end: 2021-12-31
params: {fast: 10, slow: 30}
"""


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "quantlab")
    return ip


@pytest.fixture
def ip(shell: InteractiveShell, nb_home: Path) -> Iterator[InteractiveShell]:
    """The shell, in a fresh home, with displayed outputs captured in ``ip.display_pub.outputs``."""
    saved = shell.display_pub
    shell.display_pub = CapturingDisplayPublisher()
    try:
        yield shell
    finally:
        shell.display_pub = saved


@pytest.fixture
def no_worker(nb_home: Path) -> Iterator[None]:
    """Hold the worker lock so that submit starts no worker: what is queued stays queued."""
    fd = os.open(nb_home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield
    os.close(fd)


def run_cell(ip: InteractiveShell, source: str) -> Any:
    result = ip.run_cell(source, store_history=False)
    return result


def registry_count() -> int:
    from quantlab.registry import open_registry

    return int(open_registry().count_runs())


def short_error(result: Any) -> QuantlabError:
    """The error of a cell, checked to be shown as one line without a traceback."""
    err = result.error_in_exec
    assert isinstance(err, QuantlabError), err
    rendered = err._render_traceback_()
    assert len(rendered) == 1 and "Traceback" not in rendered[0]
    assert rendered[0].endswith(f"{type(err).__name__}\x1b[0m: {err}")
    return err


# -- bad cells: clear message, nothing queued ----------------------------------------------------


@pytest.mark.parametrize("body, message", [
    (GOOD + "comission: 0.001\n", "unknown key 'comission' — did you mean 'commission'?"),
    ("strategy: sma_crossover\nsymbols: [AAA\nparams: {fast: 10}\n",
     "YAML error on line 3 of the cell body"),
    ("strategy: sma_crosover\nsymbols: [AAA]\n",
     "unknown strategy 'sma_crosover' — did you mean 'sma_crossover'?"),
    ("strategy: sma_crossover\nsymbols: [ZZZ]\n", "unknown symbol 'ZZZ'"),
    ("strategy: sma_crossover\nsymbols: [AAA]\nstart: 2020-01-01\nend: 2019-01-01\n",
     "start 2020-01-01 must be before end 2019-01-01"),
    ("strategy: sma_crossover\nsymbols: [AAA]\nparams: {fats: 10}\n",
     "unknown parameter 'fats' for strategy 'sma_crossover' — did you mean 'fast'?"),
    ("strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: \"50..60\", slow: \"10..20:10\"}\n",
     "the sweep has no valid combination"),
    ("strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: \"50..5\"}\n",
     "params.fast: the range 50..5 is empty"),
    ("strategy: sma_crossover\nsymbols: [AAA]\nfill: open\n",
     "fill: 'open' is not allowed; use one of 'next_open' or 'close'"),
    ("  \n", "the %%backtest cell is empty"),
])
def test_a_bad_cell_fails_with_one_clear_line_and_queues_nothing(
        ip: InteractiveShell, body: str, message: str) -> None:
    result = run_cell(ip, "%%backtest --out should_not_exist\n" + body)
    err = short_error(result)
    assert isinstance(err, ConfigError)
    assert message in str(err)
    assert registry_count() == 0
    assert "should_not_exist" not in ip.user_ns


def test_the_unknown_key_error_names_the_field(ip: InteractiveShell) -> None:
    err = short_error(run_cell(ip, "%%backtest\n" + GOOD + "comission: 0.001\n"))
    assert err.field == "comission" and err.suggestion == "commission"


@pytest.mark.parametrize("cell, message", [
    ("%backtest strategy: sma_crossover", "%backtest is a cell magic"),
    ("%%backtest --wait", "the cell body is empty"),
    ("%%backtest --timeout 5\n" + GOOD, "--timeout only applies with --wait"),
    ("%%backtest --priority high\n" + GOOD, "argument --priority: invalid int value: 'high'"),
    ("%%backtest --out 1run\n" + GOOD, "--out '1run' is not a valid variable name"),
    ("%%backtest --name \"unclosed\n" + GOOD, "close the quotes around the value"),
    ("%%backtest --colour red\n" + GOOD, "unrecognized arguments: --colour red"),
])
def test_bad_magic_options_are_usage_errors(ip: InteractiveShell, cell: str,
                                           message: str) -> None:
    result = run_cell(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert message in str(result.error_in_exec)
    assert registry_count() == 0


# -- good cells ------------------------------------------------------------------------------


def test_options_are_recorded_and_out_binds_the_run(ip: InteractiveShell, no_worker: None) -> None:
    result = run_cell(ip, "%%backtest --name \"golden cross, large caps\" --tag trend "
                          "--tag quick --out run1 --priority 3\n" + GOOD + "tags: [mine]\n")
    assert result.error_in_exec is None
    run = ip.user_ns["run1"]
    assert result.result is run
    record = run.record
    assert record["status"] == "queued"
    assert record["name"] == "golden cross, large caps"
    assert record["tags"] == ["mine", "trend", "quick"]
    assert record["priority"] == 3
    assert record["config"]["params"] == {"fast": 10, "slow": 30}


def test_ranges_in_params_become_a_sweep(ip: InteractiveShell, no_worker: None) -> None:
    run_cell(ip, "%%backtest --out sweep\nstrategy: sma_crossover\nsymbols: [AAA]\nparams:\n"
                 "  fast: \"5..20:5\"\n  slow: {start: 30, stop: 61, step: 15}\n")
    params = ip.user_ns["sweep"].record["config"]["params"]
    assert params == {"fast": [5, 10, 15, 20], "slow": [30, 45, 60]}


def test_json_body_works_like_yaml(ip: InteractiveShell, no_worker: None) -> None:
    run_cell(ip, '%%backtest --out j\n{"strategy": "sma_crossover", "symbols": ["AAA"], '
                 '"params": {"fast": 10, "slow": 30}}')
    assert ip.user_ns["j"].record["config"]["params"] == {"fast": 10, "slow": 30}


def test_the_cell_value_displays_as_the_live_widget(ip: InteractiveShell,
                                                    no_worker: None) -> None:
    run_cell(ip, "%%backtest\n" + GOOD)
    bundles = [data for data, _ in _published(ip)]
    assert any("application/vnd.jupyter.widget-view+json" in b for b in bundles)
    (html,) = [b["text/html"] for b in bundles if "text/html" in b]
    assert 'data-status="queued"' in html and "position 1 of 1 in the queue" in html


def _published(ip: InteractiveShell) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(o["data"], o["metadata"]) for o in ip.display_pub.outputs]


@pytest.mark.slow
def test_wait_runs_to_the_end_and_the_cache_answers_a_repeat(ip: InteractiveShell,
                                                            worker: Worker) -> None:
    import quantlab as ql

    run_cell(ip, "%%backtest --wait --out a\n" + GOOD)
    first = ip.user_ns["a"]
    assert first.status == "completed"
    local = ql.backtest("AAA", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                        start="2020-01-01", end="2021-12-31", interval="1d")
    assert first.result().metrics["equity_final"] == pytest.approx(
        local.metrics["equity_final"], rel=1e-12)

    run_cell(ip, "%%backtest --wait --out b\n" + GOOD)
    assert ip.user_ns["b"].record["cached_from"] == first.id
    run_cell(ip, "%%backtest --wait --no-cache --out c\n" + GOOD)
    again = ip.user_ns["c"].record
    assert again["status"] == "completed" and not again.get("cached_from")
    assert again["metrics"]["equity_final"] == pytest.approx(local.metrics["equity_final"])


# -- notebook-defined strategies ---------------------------------------------------------------

STRATEGY_CELL = '''
import numpy as np
import quantlab as ql

THRESHOLD = 0.0

def momentum_sign(close, n):
    change = np.full(close.shape, np.nan)
    change[:, n:] = close[:, n:] / close[:, :-n] - 1.0
    return change

@ql.strategy(name="nb_momentum")
def nb_momentum(bars, n=10):
    change = momentum_sign(bars.close, n)
    return np.where(change > THRESHOLD, 1, np.where(change < -THRESHOLD, -1, 0))
'''


def test_a_notebook_strategy_travels_with_its_imports_helpers_and_constants(
        ip: InteractiveShell, no_worker: None) -> None:
    run_cell(ip, STRATEGY_CELL)
    run_cell(ip, "%%backtest --out mine\nstrategy: nb_momentum\nsymbols: [AAA]\n"
                 "params: {n: 20}\n")
    record = ip.user_ns["mine"].record
    source = record["config"]["strategy_source"]
    prelude, own = source.split("# --- strategy source (line 1 below) ---\n")
    assert "import numpy as np" in prelude
    assert "import quantlab as ql" in prelude
    assert "THRESHOLD = 0.0" in prelude
    assert "def momentum_sign(close, n):" in prelude
    assert own.startswith('@ql.strategy(name="nb_momentum")\ndef nb_momentum(bars, n=10):')

    # the shipped source alone rebuilds the strategy (what the worker does)
    from quantlab.strategies.usercode import load_shipped_strategy

    rebuilt = load_shipped_strategy("nb_momentum", source)
    assert rebuilt.params == {"n": 10}

    # editing the function gives another config hash: no stale cache hit
    run_cell(ip, STRATEGY_CELL.replace("THRESHOLD = 0.0", "THRESHOLD = 0.01"))
    run_cell(ip, "%%backtest --out edited\nstrategy: nb_momentum\nsymbols: [AAA]\n"
                 "params: {n: 20}\n")
    assert ip.user_ns["edited"].record["config_hash"] != record["config_hash"]


def test_a_notebook_strategy_params_are_checked_in_the_kernel(ip: InteractiveShell,
                                                              no_worker: None) -> None:
    run_cell(ip, STRATEGY_CELL)
    err = short_error(run_cell(ip, "%%backtest\nstrategy: nb_momentum\nsymbols: [AAA]\n"
                                   "params: {m: 20}\n"))
    assert "unknown parameter 'm' for strategy 'nb_momentum'" in str(err)
    assert "its parameters: n" in str(err)
    assert registry_count() == 0


def test_a_strategy_reading_notebook_data_is_refused_with_the_fix(ip: InteractiveShell) -> None:
    run_cell(ip, "import pandas as pd\nimport numpy as np\nimport quantlab as ql\n"
                 "weights_frame = pd.DataFrame({'w': [1.0]})\n"
                 "@ql.strategy(name='uses_frame')\n"
                 "def uses_frame(bars):\n"
                 "    return np.sign(bars.close * weights_frame['w'][0])\n")
    err = short_error(run_cell(ip, "%%backtest\nstrategy: uses_frame\nsymbols: [AAA]\n"))
    assert str(err) == (
        "strategy 'uses_frame' uses 'weights_frame' (DataFrame) from the notebook, which cannot "
        "travel to the workers: only imports, functions, classes and plain constants can. "
        "Compute it inside the function, pass it as a param, or load it there (e.g. from a file)")
    assert registry_count() == 0


# -- line magics ---------------------------------------------------------------------------------


def _queue(ip: InteractiveShell, name: str, fast: int, tag: str) -> Any:
    run_cell(ip, f"%%backtest --name {name} --tag {tag} --out tmp\nstrategy: sma_crossover\n"
                 f"symbols: [AAA]\nparams: {{fast: {fast}, slow: 50}}\n")
    return ip.user_ns["tmp"]


def test_backtests_lists_and_filters_runs(ip: InteractiveShell, no_worker: None) -> None:
    a = _queue(ip, "alpha", 10, "trend")
    b = _queue(ip, "beta", 20, "trend")
    c = _queue(ip, "gamma", 30, "other")
    found = run_cell(ip, "%backtests tag=trend").result
    assert found.ids == [b.id, a.id]  # newest first
    assert run_cell(ip, "%backtests gamma").result.ids == [c.id]
    assert run_cell(ip, "%backtests status=completed").result.ids == []
    html = run_cell(ip, "%backtests limit=2").result._repr_html_()
    assert c.id in html and b.id in html and a.id not in html
    assert "first 2 runs (limit=2)" in html
    err = short_error(run_cell(ip, "%backtests stauts=queued"))
    assert "unknown filter 'stauts' — did you mean 'status'?" in str(err)


def test_status_and_cancel(ip: InteractiveShell, no_worker: None,
                           capsys: pytest.CaptureFixture[str]) -> None:
    a = _queue(ip, "alpha", 10, "t")
    shown = run_cell(ip, f"%backtest_status {a.id}").result
    assert shown.id == a.id

    run_cell(ip, f"%backtest_cancel {a.id}")
    assert a.status == "cancelled"
    assert f"run {a.id} cancelled (it was queued)" in capsys.readouterr().out
    run_cell(ip, f"%backtest_cancel {a.id}")
    assert "had already ended (cancelled); nothing to cancel" in capsys.readouterr().out

    err = short_error(run_cell(ip, "%backtest_status NOSUCHRUN"))
    assert "no run 'NOSUCHRUN'" in str(err)
    result = run_cell(ip, "%backtest_cancel")
    assert isinstance(result.error_in_exec, UsageError)
    assert re.search(r"takes one run id", str(result.error_in_exec))


def test_compare_refuses_what_it_cannot_compare(ip: InteractiveShell, no_worker: None) -> None:
    a = _queue(ip, "alpha", 10, "t")
    b = _queue(ip, "beta", 20, "t")
    run_cell(ip, f"%backtest_cancel {a.id}")
    cases = [
        (f"{a.id}", ConfigError, "a comparison takes 2 to 5 runs, got 1; add runs to compare"),
        ("", ConfigError, "a comparison takes 2 to 5 runs, got 0; add runs to compare"),
        (f"{a.id} {b.id} {a.id}", ConfigError,
         f"run {a.id} is listed more than once; list each run once"),
        (" ".join(f"R{i}" for i in range(6)), ConfigError,
         "a comparison takes 2 to 5 runs, got 6; pick the 5 you want to see side by side"),
        (f"{a.id} {b.id}", RunError,
         f"run '{a.id}' is cancelled, so it has no result to compare; compare completed runs "
         f"only"),
        (f"{b.id}, {a.id}", RunError,
         f"run '{b.id}' is queued, so it has no result to compare; wait for it with "
         f"ql.get_run('{b.id}').wait()"),
        (f"NOSUCHRUN {a.id}", RunNotFound, "no run 'NOSUCHRUN' — list runs with ql.runs()"),
    ]
    for ids, kind, message in cases:
        err = short_error(run_cell(ip, f"%backtest_compare {ids}"))
        assert isinstance(err, kind), (ids, err)
        assert message in str(err), ids


def _completed(ip: InteractiveShell, name: str, fast: int) -> Any:
    run_cell(ip, f"%%backtest --wait --name \"{name}\" --out tmp\n" + GOOD.replace(
        "fast: 10", f"fast: {fast}"))
    run = ip.user_ns["tmp"]
    assert run.status == "completed", run.record.get("error")
    return run


def _shown_html(ip: InteractiveShell, value: Any) -> str:
    """What the notebook shows for a cell's value (its text/html)."""
    bundle, _ = ip.display_formatter.format(value)
    return str(bundle["text/html"])


@pytest.mark.slow
def test_compare_shows_the_runs_metrics_side_by_side(ip: InteractiveShell,
                                                     worker: Worker) -> None:
    from quantlab.analytics import Comparison

    a = _completed(ip, "fast crossover", 10)
    b = _completed(ip, "slow crossover", 20)
    comparison = run_cell(ip, f"%backtest_compare {a.id}, {b.id}").result
    assert isinstance(comparison, Comparison)
    assert comparison.run_ids == [a.id, b.id]

    page = _shown_html(ip, comparison)
    labels, rows = support.comparison_metrics(page)
    assert labels == ["fast crossover", "slow crossover"]
    sharpe = [a.record["metrics"]["sharpe"], b.record["metrics"]["sharpe"]]
    assert sharpe[0] != sharpe[1]
    assert rows["Sharpe"] == [format_metric("sharpe", v) for v in sharpe]
    assert support.comparison_best(page, "Sharpe") == [format_metric("sharpe", max(sharpe))]
    assert rows["Total return"] == [format_metric("total_return_pct", r.record["metrics"][
        "total_return_pct"]) for r in (a, b)]
    assert a.id in page and b.id in page
    # the parts the registry-record table did not have: correlation, drawdowns, config diff
    correlation = support.table_cells(page, "ql-compare-correlation")
    assert [text for text, _ in correlation[1]] == [
        "fast crossover", "1.00", f"{comparison.correlation.iloc[0, 1]:.2f}"]
    assert "all runs were in drawdown together on" in page
    config = support.table_cells(page, "ql-compare-config")
    assert [text for text, _ in config[1]] == ["params.fast", "params", "10", "20"]


# -- reports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, message", [
    ("", "%backtest_report takes one run id, e.g. %backtest_report 01J8ZQ4...; list runs with "
         "%backtests"),
    ("ID1 ID2", "%backtest_report takes one run id"),
    ("ID1 --output", "argument --output: expected one argument"),
    ("ID1 --output \"unclosed", "%backtest_report options: No closing quotation; close the "
                                "quotes around the value"),
    ("ID1 --colour red", "unrecognized arguments: --colour red"),
])
def test_report_usage_errors(ip: InteractiveShell, line: str, message: str) -> None:
    result = run_cell(ip, f"%backtest_report {line}")
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert message in str(result.error_in_exec)


def test_report_of_an_unknown_or_unfinished_run_says_what_to_do(ip: InteractiveShell,
                                                                 no_worker: None) -> None:
    err = short_error(run_cell(ip, "%backtest_report NOSUCHRUN"))
    assert isinstance(err, RunNotFound)
    assert str(err) == "no run 'NOSUCHRUN' — list runs with ql.runs()"
    queued = _queue(ip, "alpha", 10, "t")
    err = short_error(run_cell(ip, f"%backtest_report {queued.id}"))
    assert isinstance(err, RunError)
    assert str(err) == (f"run '{queued.id}' is queued, so there is nothing to report yet; wait "
                        f"for it to finish (ql.get_run(id).wait())")
    assert not (_home() / "reports").exists()


def _home() -> Path:
    from quantlab.settings import current

    return current().home.resolve()


@pytest.mark.slow
def test_report_writes_the_files_links_them_and_records_the_ref(
        ip: InteractiveShell, worker: Worker, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.notebook import reportview
    from quantlab.registry import open_registry

    run = _completed(ip, "reported", 10)
    notebooks = tmp_path / "notebooks"  # the notebook's folder: the kernel's working directory
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    monkeypatch.setattr(reportview, "served_roots", lambda: [])

    view = run_cell(ip, f"%backtest_report {run.id} --output out/").result
    notebook, page = notebooks / "out" / f"{run.id}.ipynb", notebooks / "out" / f"{run.id}.html"
    assert (view.files.notebook.resolve(), view.files.html.resolve()) == (notebook, page)
    assert notebook.is_file() and page.is_file()
    assert format_metric("sharpe", run.record["metrics"]["sharpe"]) in page.read_text()
    assert run.record["report_ref"] == f"runs/{run.id}/report.html"
    assert open_registry().get_blob(f"runs/{run.id}/report.html") == page.read_bytes()
    shown = _shown_html(ip, view)
    assert f'<a href="out/{run.id}.html"' in shown and f'<a href="out/{run.id}.ipynb"' in shown
    assert repr(view) == (f"report of run {run.id}\n  HTML report: {page}\n"
                          f"  executed notebook: {notebook}")

    # without HTML, in the default place: outside what the server serves, so absolute paths
    view = run_cell(ip, f"%backtest_report {run.id} --no-html").result
    default = _home() / "reports" / f"{run.id}.ipynb"
    assert view.files.notebook.resolve() == default and default.is_file()
    assert view.files.html is None and not default.with_suffix(".html").exists()
    assert run.record["report_ref"] == f"runs/{run.id}/report.ipynb"
    shown = _shown_html(ip, view)
    assert f"<code>{default}</code>" in shown and "<a " not in shown
    assert "HTML report" not in shown
    assert repr(view) == f"report of run {run.id}\n  executed notebook: {default}"

    err = short_error(run_cell(ip, f"%backtest_report {run.id} --output report.txt"))
    assert "report output 'report.txt' must be a .ipynb file or a folder" in str(err)


def test_a_result_displays_as_the_results_view(ip: InteractiveShell) -> None:
    import quantlab as ql

    result = ql.backtest("AAA", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                         start="2020-01-01", end="2021-12-31", interval="1d")
    ip.user_ns["res"] = result
    run_cell(ip, "res")
    ((bundle, _),) = _published(ip)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert format_metric("sharpe", result.metrics["sharpe"]) in bundle["text/html"]
