"""Run reports executed for real with papermill, their content checked against the run's own
numbers; report batches; the CLI. Runs are real: submitted to a worker this module starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import quantlab as ql
from quantlab.render.format import format_metric
from quantlab.reports import sections
from quantlab.reports.cli import report as report_cli
from quantlab.reports.runner import (
    load_parameter_sets,
    run_report,
    run_reports,
    template_parameters,
)
from tests.support.analytics import RUN_SPECS, populated_home

pytestmark = pytest.mark.slow

SWEEP = {"name": "sma sweep", "strategy": "sma_crossover", "symbols": ["AAA"],
         "start": "2019-01-01", "params": {"fast": [5, 10, 20], "slow": [50, 100]}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    with populated_home(tmp_path_factory.mktemp("reports"), [RUN_SPECS[0], SWEEP]) as found:
        yield found


def outputs_html(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(out.get("data", {}).get("text/html", "") for cell in nb.cells
                     if cell.cell_type == "code" for out in cell.get("outputs", []))


def metrics_metadata(notebook: Path) -> dict[str, Any]:
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("quantlab")
            if meta:
                return dict(meta["metrics"])
    raise AssertionError("no metrics metadata in the report")


# --------------------------------------------------------------------------- pure sections


def test_monthly_returns_from_month_end_equity() -> None:
    index = pd.to_datetime(["2023-12-28", "2023-12-29", "2024-01-15", "2024-01-31",
                            "2024-02-29", "2024-04-30"])
    equity = pd.Series([100.0, 110.0, 99.0, 121.0, 108.9, 130.68], index=index)
    table = sections.monthly_returns(equity)
    assert table.loc[2023, "Dec"] == pytest.approx(10.0)  # from the first value
    assert table.loc[2024, "Jan"] == pytest.approx(10.0)  # 121 / 110
    assert table.loc[2024, "Feb"] == pytest.approx(-10.0)
    assert np.isnan(table.loc[2024, "Mar"])  # no bar in March
    assert table.loc[2024, "Apr"] == pytest.approx(20.0)
    assert table.loc[2024, "Year"] == pytest.approx((130.68 / 110 - 1) * 100)
    assert table.loc[2023, "Year"] == pytest.approx(10.0)


def test_whole_number_metrics_from_numpy_get_the_best_highlight() -> None:
    """Bar and order counts come out of the metrics frame as np.int64: still numbers to rank."""
    from types import SimpleNamespace

    from quantlab.analytics import Comparison
    from quantlab.render.html import comparison_metrics_html
    from tests.support.notebook import comparison_best

    def compared(duration: int, rejected: int, sharpe: float) -> Any:
        equity = pd.Series([100.0, 95.0, 104.0], index=pd.date_range("2020-01-01", periods=3))
        return SimpleNamespace(equity=equity, config={"strategy": "sma_crossover"}, metrics={
            "max_drawdown_duration": np.int64(duration), "rejected_orders": np.int64(rejected),
            "sharpe": np.float64(sharpe)})

    cmp = Comparison.from_results({"A": compared(40, 3, 0.5), "B": compared(12, 0, 1.5)})
    page = comparison_metrics_html(cmp)
    assert comparison_best(page, "Max drawdown duration") == [format_metric(
        "max_drawdown_duration", 12)]  # lower is better
    assert comparison_best(page, "Rejected orders") == ["0"]
    assert comparison_best(page, "Sharpe") == ["1.500"]


def test_template_parameters_are_the_tagged_cell() -> None:
    assert template_parameters() == {"run_id": "", "quantlab_home": None, "max_trades": 50,
                                     "sweep_metric": None}


def test_report_kernel_is_this_python() -> None:
    import sys

    from quantlab.reports.runner import _this_python_kernel_manager

    manager = _this_python_kernel_manager()(kernel_name="python3")
    assert manager.kernel_spec.argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]


# --------------------------------------------------------------------------- real reports


def test_report_of_a_run_shows_its_numbers(home: tuple[Path, list[str]]) -> None:
    qlhome, (run_id, _) = home
    files = run_report(run_id)
    assert files.notebook == qlhome / "reports" / f"{run_id}.ipynb"
    assert files.html == qlhome / "reports" / f"{run_id}.html"
    run = ql.get_run(run_id)
    record, result = run.record, run.result()
    assert metrics_metadata(files.notebook) == record["metrics"]
    page = outputs_html(files.notebook)
    for name in ("total_return_pct", "sharpe", "max_drawdown_pct", "win_rate_pct",
                 "equity_final"):
        assert format_metric(name, record["metrics"][name]) in page, name
    assert f"{len(result.trades):,} closed trades" in page
    assert record["name"] in page and run_id in page
    # monthly returns: the last year's total equals the equity's own year-on-year change
    equity = result.equity
    last_year = equity.index[-1].year
    year_change = (equity[equity.index.year == last_year].iloc[-1]
                   / equity[equity.index.year == last_year - 1].iloc[-1] - 1) * 100
    row = re.search(rf"<th[^>]*>{last_year}</th>(.*?)</tr>", page, re.S)
    assert row is not None
    assert re.findall(r">(-?[0-9.]+)</td>", row.group(1))[-1] == f"{year_change:.2f}"
    assert "a single backtest: no parameter sweep" in page


# What a report loads, checked in a fresh interpreter (this process has the notebook loaded):
# the template's cells run as the report kernel runs them, then the runner makes the report.
RENDER_A_REPORT = """
import json, sys
import nbformat
from quantlab.reports.runner import TEMPLATE, run_report

notebook = nbformat.read(TEMPLATE, as_version=4)
cells = [c.source for c in notebook.cells if c.cell_type == "code"]
namespace = {"run_id": sys.argv[1], "quantlab_home": None, "max_trades": 5,
             "sweep_metric": None}
for source in cells[1:]:  # the first cell holds the parameters' defaults
    exec(source, namespace)
run_report(sys.argv[1], sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] == "ipywidgets" or m.startswith("quantlab.notebook"))))
"""


def test_rendering_a_report_loads_no_widgets_and_no_notebook_package(
        home: tuple[Path, list[str]], tmp_path: Path) -> None:
    qlhome, (run_id, _) = home
    done = subprocess.run(
        [sys.executable, "-c", RENDER_A_REPORT, run_id, str(tmp_path / "r.ipynb")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "QUANTLAB_HOME": str(qlhome)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "r.html").exists()  # the report was made, not skipped


def test_report_is_kept_and_linked_from_the_run(home: tuple[Path, list[str]]) -> None:
    from quantlab.registry import open_registry

    _, (run_id, _) = home
    files = run_report(run_id)
    record = ql.get_run(run_id).record
    assert record["report_ref"] == f"runs/{run_id}/report.html" == files.report_ref
    registry = open_registry()
    assert files.html is not None
    assert registry.get_blob(files.report_ref) == files.html.read_bytes()
    assert registry.get_blob(f"runs/{run_id}/report.ipynb") == files.notebook.read_bytes()
    html = files.html.read_text()
    # outputs only: no code, and no text about cells the page leaves out
    assert "closed trades" in html and "sections.charts_html" not in html
    assert "parameters cell" not in html
    assert not re.search(r"<script[^>]+src=\"https?://", html)  # nothing from a CDN
    assert html.count("Plotly.newPlot") >= 1 and "plotly.js v" in html  # plotly.js inline
    # papermill recorded the parameters, so the notebook reruns as it ran
    nb = nbformat.read(files.notebook, as_version=4)
    assert nb.metadata["papermill"]["parameters"]["run_id"] == run_id


def test_report_of_a_sweep_has_its_heatmap(home: tuple[Path, list[str]], tmp_path: Path
                                           ) -> None:
    _, (_, sweep_id) = home
    files = run_report(sweep_id, output=tmp_path / "sweep.ipynb", html=False)
    assert files.html is None and files.notebook == tmp_path / "sweep.ipynb"
    assert ql.get_run(sweep_id).record["report_ref"] == f"runs/{sweep_id}/report.ipynb"
    page = outputs_html(files.notebook)
    table = ql.get_run(sweep_id).result().table
    assert "6 combinations" in page
    assert "Sharpe by fast" in page and "colorbar" in page
    # a click on a cell shows its combination: each cell's equity is in the page
    best = table.sort_values("sharpe", ascending=False).iloc[0]
    cells = json.loads(page.split('class="ql-cells">', 1)[1].split("</script>", 1)[0])
    assert f"{int(best['fast'])}|{int(best['slow'])}" in cells
    assert "Sharpe along each parameter" in page


def test_report_parameters_change_the_report(home: tuple[Path, list[str]], tmp_path: Path
                                             ) -> None:
    _, (run_id, _) = home
    files = run_report(run_id, output=tmp_path, html=False, parameters={"max_trades": 3})
    assert files.notebook == tmp_path / f"{run_id}.ipynb"
    n_trades = len(ql.get_run(run_id).result().trades)
    assert f"rows 1–3 of {n_trades}" in outputs_html(files.notebook)


def test_report_rejects_bad_requests(home: tuple[Path, list[str]], tmp_path: Path) -> None:
    from quantlab.registry import open_registry

    _, (run_id, _) = home
    with pytest.raises(ql.ConfigError, match=r"unknown report parameter 'max_trade' — did you "
                                             r"mean 'max_trades'\?; the report takes"):
        run_report(run_id, parameters={"max_trade": 3})
    with pytest.raises(ql.ConfigError, match=r"must be a \.ipynb file or a folder"):
        run_report(run_id, output=tmp_path / "report.pdf")
    with pytest.raises(ql.RunNotFound, match="no run 'nope'"):
        run_report("nope")
    open_registry().insert_run({"id": "still-queued", "status": "queued"})
    with pytest.raises(ql.RunError, match="run 'still-queued' is queued, so there is nothing to "
                                          "report yet; wait for it"):
        run_report("still-queued")


def test_batch_report_from_a_yaml_file(home: tuple[Path, list[str]], tmp_path: Path) -> None:
    _, (run_id, sweep_id) = home
    batch = tmp_path / "sets.yaml"
    batch.write_text(f"- run_id: {run_id}\n  max_trades: 2\n  output: {tmp_path}/a.ipynb\n"
                     f"- {sweep_id}\n- run_id: nope\n")
    sets = load_parameter_sets(batch)
    assert sets[1] == {"run_id": sweep_id}
    outcomes = run_reports(sets, html=False)
    assert [o.files is not None for o in outcomes] == [True, True, False]
    assert outcomes[0].files is not None and outcomes[0].files.notebook == tmp_path / "a.ipynb"
    assert "rows 1–2 of" in outputs_html(tmp_path / "a.ipynb")
    assert "no run 'nope'" in str(outcomes[2].error)


def test_batch_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"max_trades": 3}]))
    with pytest.raises(ql.ConfigError, match=r"item 1 of .*bad\.json has no run_id"):
        load_parameter_sets(bad)
    bad.write_text("{not json")
    with pytest.raises(ql.ConfigError, match="is not valid JSON"):
        load_parameter_sets(bad)
    with pytest.raises(ql.ConfigError, match="cannot read the parameter file"):
        load_parameter_sets(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("{}")
    with pytest.raises(ql.ConfigError, match="must be a non-empty list of parameter sets"):
        load_parameter_sets(tmp_path / "empty.yaml")


def test_cli_report(home: tuple[Path, list[str]], tmp_path: Path) -> None:
    _, (run_id, sweep_id) = home
    runner = CliRunner()
    result = runner.invoke(report_cli, [run_id, sweep_id, "--output", f"{tmp_path}/",
                                        "-p", "max_trades=4"])
    assert result.exit_code == 0, result.output
    assert f"{run_id} report: {tmp_path / (run_id + '.html')}" in result.output
    assert (tmp_path / f"{sweep_id}.html").exists()
    assert "rows 1–4 of" in outputs_html(tmp_path / f"{run_id}.ipynb")
    missing = runner.invoke(report_cli, [])
    assert missing.exit_code == 2
    assert "say which run to report on" in missing.output
    bad = runner.invoke(report_cli, [run_id, "-p", "max_trades"])
    assert bad.exit_code == 2 and "write NAME=VALUE" in bad.output
    failed = runner.invoke(report_cli, ["nope"])
    assert failed.exit_code == 1 and "nope error: no run 'nope'" in failed.output
