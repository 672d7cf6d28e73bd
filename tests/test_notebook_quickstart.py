"""notebooks/quickstart.ipynb, executed by a real kernel in a fresh embedded QUANTLAB_HOME.

The notebook is run once per module; each test checks what a researcher would see in it — the
widget state saved in the notebook and the printed values — against the registry and results
read independently here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from quantlab.render.format import format_metric
from tests.support.notebook import (
    NOTEBOOKS,
    WidgetTree,
    cell_html,
    cell_stdout,
    comparison_metrics,
    execute_notebook,
    last_json_line,
    table_cells,
)
from tests.support.procs import kill_group

pytestmark = pytest.mark.slow


def _cell(nb: Any, starts_with: str) -> Any:
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith(starts_with):
            return cell
    raise AssertionError(f"no code cell starting with {starts_with!r}")


IDS_CELL = ('import json\n'
            'print(json.dumps({"first": first.id, "sweep": sweep.id, "mine": mine.id}))')


def test_the_quickstart_talks_to_researchers_not_to_tests() -> None:
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    for cell in nb.cells:
        assert not re.search(r"\btests?\b", cell.source, re.IGNORECASE), cell.source


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The quickstart executed from a fresh, empty home (it installs the sample data itself).

    The notebook's kernel spawns the embedded worker itself, as it would for a researcher;
    this fixture stops it afterwards.
    """
    home = tmp_path_factory.mktemp("quickstart-home")
    work = tmp_path_factory.mktemp("quickstart-cwd")
    saved = {k: os.environ.get(k) for k in ("QUANTLAB_HOME", "QUANTLAB_USER",
                                             "QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL")}
    os.environ.update({"QUANTLAB_HOME": str(home), "QUANTLAB_USER": "tester"})
    os.environ.pop("QUANTLAB_REDIS_URL", None)
    os.environ.pop("QUANTLAB_MONGO_URL", None)
    try:
        nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
        # the test's own last cell (not the researcher's): the ids of the notebook's runs
        nb.cells.append(nbformat.v4.new_code_cell(IDS_CELL))
        execute_notebook(nb, work)
        yield nb, home
    finally:
        pid_file = home / "worker.pid"
        if pid_file.exists():
            kill_group(int(pid_file.read_text()))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def in_home(executed: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The executed notebook, this process pointed at its home, and the ids of its runs."""
    nb, home = executed
    monkeypatch.setenv("QUANTLAB_HOME", str(home))
    ids = last_json_line(nb.cells[-1])
    return nb, ids


def test_first_backtest_widget_shows_the_runs_metrics_and_trades(in_home: Any) -> None:
    import quantlab as ql

    nb, ids = in_home
    run = ql.get_run(ids["first"])
    record, result = run.record, run.result()
    assert record["status"] == "completed"
    assert record["name"] == "golden cross on AAA" and record["tags"] == ["quickstart"]
    assert record["config"]["params"] == {"fast": 20, "slow": 100}
    assert record["config"]["commission"] == 0.001

    cell = _cell(nb, "%%backtest --name \"golden cross on AAA\"")
    tree = WidgetTree(nb)
    root = tree.root(cell)
    assert "ql-run-completed" in tree.model(root)["_dom_classes"]
    html = tree.html(root)
    assert ids["first"] in html
    for metric in ("sharpe", "total_return_pct", "max_drawdown_pct", "n_trades"):
        assert format_metric(metric, result.metrics[metric]) in html
    outputs = [o["data"] for m in tree.find(root, "OutputModel") for o in m["outputs"]]
    assert any(f"{len(result.trades):,} closed trades" in d.get("text/html", "")
               for d in outputs)
    # the figure is plotly's own output: price with trades, equity, buy & hold, drawdown
    (figure,) = [d["application/vnd.plotly.v1+json"] for d in outputs
                 if "application/vnd.plotly.v1+json" in d]
    names = {t.get("name") for t in figure["data"]}
    assert {"Equity", "Buy & hold", "Drawdown", "SMA(20)", "SMA(100)", "Long entry"} <= names
    (progress,) = tree.find(root, "FloatProgressModel")
    assert progress["value"] == 1.0 and progress["bar_style"] == "success"
    (tabs,) = tree.find(root, "TabModel")
    assert tabs["titles"] == ["Chart", "Trades"]
    # the static fallback (viewers without widgets) says the same
    assert format_metric("sharpe", result.metrics["sharpe"]) in cell_html(cell)

    # the next cell printed the same numbers from run.result()
    printed = cell_stdout(_cell(nb, "res = first.result()"))
    assert f"Sharpe {result.metrics['sharpe']:.3f}" in printed
    assert f"{len(result.trades)} closed trades" in printed


def test_results_equal_a_local_backtest_of_the_same_config(in_home: Any) -> None:
    import quantlab as ql

    _, ids = in_home
    remote = ql.get_run(ids["first"]).result()
    local = ql.backtest("AAA", strategy="sma_crossover", params={"fast": 20, "slow": 100},
                        start="2015-01-01", end="2024-12-31", interval="1d", cash=100_000,
                        commission=0.001)
    assert remote.metrics["equity_final"] == pytest.approx(local.metrics["equity_final"],
                                                           rel=1e-12)
    assert len(remote.trades) == len(local.trades)


def test_sweep_shows_a_heatmap_of_sharpe_over_fast_and_slow(in_home: Any) -> None:
    import quantlab as ql

    nb, ids = in_home
    result = ql.get_run(ids["sweep"]).result()
    table = result.table
    # fast 5..50 step 5 (10 values) x slow 50..200 step 25 (7 values), fast >= slow skipped
    assert sorted(table["fast"].unique()) == list(range(5, 51, 5))
    assert sorted(table["slow"].unique()) == list(range(50, 201, 25))
    assert len(table) == 69
    best = table.sort_values("sharpe", ascending=False).iloc[0]
    assert result.params == {"fast": int(best["fast"]), "slow": int(best["slow"])}

    cell = _cell(nb, "%%backtest --name \"SMA sweep on AAA\"")
    tree = WidgetTree(nb)
    root = tree.root(cell)
    (tabs,) = tree.find(root, "TabModel")
    assert tabs["titles"][0] == "Sweep"
    dropdowns = {d["description"]: d for d in tree.find(root, "DropdownModel")}
    assert set(dropdowns) == {"Metric", "x", "y"}
    # ranked by deflated Sharpe by default (the sweep's N deflates each Sharpe; issue 15)
    assert dropdowns["Metric"]["_options_labels"][dropdowns["Metric"]["index"]] == \
        "Deflated Sharpe"
    assert "Sharpe" in dropdowns["Metric"]["_options_labels"]
    assert dropdowns["x"]["_options_labels"][dropdowns["x"]["index"]] == "fast"
    assert dropdowns["y"]["_options_labels"][dropdowns["y"]["index"]] == "slow"
    html = tree.html(root)
    (heatmap,) = tree.with_class(root, "ql-heatmap")  # plotly's output; clicks: a small widget
    figure = heatmap["outputs"][0]["data"]["application/vnd.plotly.v1+json"]
    (trace,) = figure["data"]
    assert figure["layout"]["title"]["text"] == "Deflated Sharpe by fast × slow"
    # every valid cell of the heatmap carries its value; the skipped fast=50, slow=50 is n/a
    from quantlab.render.overfitting import sweep_view

    ranked, _ = sweep_view(result)
    row = ranked[(ranked["fast"] == 10) & (ranked["slow"] == 100)].iloc[0]
    cell = trace["text"][trace["y"].index("100")][trace["x"].index("10")]
    assert cell == f"{row['dsr']:.2f}"
    assert trace["text"][trace["y"].index("50")][trace["x"].index("50")] == "n/a"
    assert "69 combinations" in html
    printed = cell_stdout(_cell(nb, "table = sweep.result().table"))
    assert f"69 combinations; best by Sharpe: {result.params}" in printed


def test_notebook_defined_strategy_ran_on_the_worker(in_home: Any) -> None:
    import numpy as np
    import pandas as pd

    import quantlab as ql

    nb, ids = in_home
    run = ql.get_run(ids["mine"])
    record = run.record
    assert record["status"] == "completed", record.get("error")
    assert "def zscore_reversion(bars, lookback=20, entry=1.5):" in (
        record["config"]["strategy_source"])

    # the same function, defined here, gives the same result locally
    @ql.strategy(name="zscore_reversion")
    def zscore_reversion(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
        signals = np.zeros(bars.close.shape, dtype=np.int8)
        for i, close in enumerate(bars.close):
            series = pd.Series(close)
            mean = series.rolling(lookback).mean()
            z = (series - mean) / series.rolling(lookback).std()
            signals[i, (z < -entry).to_numpy()] = 1
            signals[i, (z > entry).to_numpy()] = -1
        return signals

    local = ql.backtest("AAA", strategy="zscore_reversion", params={"lookback": 30, "entry": 2.0},
                        interval="1d", cash=100_000, commission=0.001)
    assert run.result().metrics["equity_final"] == pytest.approx(local.metrics["equity_final"])
    tree = WidgetTree(nb)
    root = tree.root(_cell(nb, "%%backtest --name \"z-score reversion on AAA\""))
    assert "ql-run-completed" in tree.model(root)["_dom_classes"]


def test_the_memoised_indicator_cell_sweeps_as_a_plain_strategy_would(in_home: Any) -> None:
    import numpy as np
    import pandas as pd

    import quantlab as ql

    nb, _ = in_home

    # the same sweep, written here without @ql.indicator
    @ql.strategy(name="zscore_unmemoised")
    def zscore_unmemoised(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
        s = pd.Series(bars.close[0])
        z = ((s - s.rolling(lookback).mean()) / s.rolling(lookback).std()).to_numpy()
        return np.where(z < -entry, 1, np.where(z > entry, -1, 0))

    plain = ql.backtest("AAA", "zscore_unmemoised",
                        {"lookback": [20, 30, 40], "entry": [1.5, 2.0, 2.5]},
                        interval="1d", cash=100_000, commission=0.001)
    printed = cell_stdout(_cell(nb, "@ql.indicator"))
    assert printed.strip() == (f"9 combinations; best by Sharpe: {plain.params}, "
                               f"Sharpe {plain.metrics['sharpe']:.3f}")


def test_comparison_and_run_list(in_home: Any) -> None:
    import quantlab as ql

    nb, ids = in_home
    compare = cell_html(_cell(nb, "%backtest_compare"))
    first, mine = ql.get_run(ids["first"]).record, ql.get_run(ids["mine"]).record
    assert ids["first"] in compare and ids["mine"] in compare
    labels, rows = comparison_metrics(compare)
    assert labels == ["golden cross on AAA", "z-score reversion on AAA"]
    assert rows["Sharpe"] == [format_metric("sharpe", first["metrics"]["sharpe"]),
                              format_metric("sharpe", mine["metrics"]["sharpe"])]
    assert rows["Max drawdown"] == [
        format_metric("max_drawdown_pct", first["metrics"]["max_drawdown_pct"]),
        format_metric("max_drawdown_pct", mine["metrics"]["max_drawdown_pct"])]
    # the correlation of their daily returns, as ql.compare computes it here
    cmp = ql.compare([ids["first"], ids["mine"]])
    correlation = table_cells(compare, "ql-compare-correlation")
    assert correlation[1][2][0] == f"{cmp.correlation.iloc[0, 1]:.2f}"
    listing = cell_html(_cell(nb, "%backtests tag=quickstart"))
    for run_id in ids.values():
        assert run_id in listing
    # sorted by Sharpe, best first, among the completed runs with a Sharpe
    sharpe = {k: ql.get_run(v).record.get("metrics", {}).get("sharpe") for k, v in ids.items()}
    ranked = [k for k, v in sorted(((k, v) for k, v in sharpe.items() if v is not None),
                                   key=lambda kv: -kv[1])]
    positions = [listing.index(ids[k]) for k in ranked]
    assert positions == sorted(positions)


def test_get_run_in_the_notebook_shows_the_same_view(in_home: Any) -> None:
    nb, _ = in_home
    tree = WidgetTree(nb)
    again = tree.root(_cell(nb, "ql.get_run(first.id)"))
    first = tree.root(_cell(nb, "%%backtest --name \"golden cross on AAA\""))
    assert "ql-run-completed" in tree.model(again)["_dom_classes"]
    metrics_again = tree.with_class(again, "ql-metrics")[0]["value"]
    assert metrics_again == tree.with_class(first, "ql-metrics")[0]["value"]


def test_quickstart_is_stored_without_outputs() -> None:
    """The notebook in the repository is clean: outputs come from executing it."""
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 6


def test_a_restarted_kernel_gets_the_run_back(in_home: Any, tmp_path: Path) -> None:
    """A new kernel (a restart) displays ``ql.get_run(id)`` as the same results view."""
    nb, ids = in_home
    fresh = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import quantlab as ql\n%load_ext quantlab"),
        nbformat.v4.new_code_cell(f"ql.get_run({ids['sweep']!r})"),
    ])
    fresh.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}
    execute_notebook(fresh, tmp_path)
    tree = WidgetTree(fresh)
    root = tree.root(fresh.cells[1])
    assert "ql-run-completed" in tree.model(root)["_dom_classes"]
    (heatmap,) = tree.with_class(root, "ql-heatmap")  # plotly's output of the heatmap
    figure = heatmap["outputs"][0]["data"]["application/vnd.plotly.v1+json"]
    assert figure["layout"]["title"]["text"] == "Deflated Sharpe by fast × slow"
    original = WidgetTree(nb)
    sweep_root = original.root(_cell(nb, "%%backtest --name \"SMA sweep on AAA\""))
    assert (tree.with_class(root, "ql-metrics")[0]["value"]
            == original.with_class(sweep_root, "ql-metrics")[0]["value"])
