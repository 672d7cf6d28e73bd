"""notebooks/examples/*.ipynb executed by a real kernel; values checked against the registry."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from quantlab.render.format import format_metric
from tests.support import notebook as support
from tests.support.notebook import (
    NOTEBOOKS,
    WidgetTree,
    cell_html,
    execute_notebook,
    last_json_line,
)

# fixtures (pytest finds them in the module's namespace)
nb_home = support.nb_home

pytestmark = pytest.mark.slow


def test_portfolio_and_risk_example(nb_home: Path, tmp_path: Path) -> None:
    import quantlab as ql

    nb = nbformat.read(NOTEBOOKS / "examples" / "portfolio_and_risk.ipynb", as_version=4)
    execute_notebook(nb, tmp_path)
    ids = last_json_line(nb.cells[-1])
    rotation, hedged = ql.get_run(ids["rotation"]), ql.get_run(ids["hedged"])
    assert rotation.status == hedged.status == "completed"

    # the rotation is a 3 x 3 sweep over the ten symbols sharing one account
    table = rotation.result().table
    assert sorted(zip(table["lookback"], table["top_n"])) == [
        (lb, n) for lb in (20, 60, 120) for n in (1, 2, 3)]
    assert rotation.record["symbols"] == ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG",
                                          "HHH", "III", "JJJ"]
    config = hedged.record["config"]
    assert (config["allow_short"], config["stop_loss"], config["take_profit"]) == (
        True, 0.05, 0.15)

    tree = WidgetTree(nb)
    rotation_view = tree.root(nb.cells[3])
    assert "ql-run-completed" in tree.model(rotation_view)["_dom_classes"]
    (heatmap,) = tree.with_class(rotation_view, "ql-heatmap")  # the sweep's heatmap
    figure = heatmap["outputs"][0]["data"]["application/vnd.plotly.v1+json"]
    assert figure["layout"]["title"]["text"] == "Deflated Sharpe by lookback × top_n"

    compare = cell_html(nb.cells[6])
    labels, rows = support.comparison_metrics(compare)
    assert labels == ["momentum rotation", "crossover long/short with stops"]
    assert rows["Sharpe"] == [format_metric("sharpe", run.record["metrics"]["sharpe"])
                              for run in (rotation, hedged)]
    assert rows["Total return"] == [
        format_metric("total_return_pct", run.record["metrics"]["total_return_pct"])
        for run in (rotation, hedged)]
    for run in (rotation, hedged):
        assert run.id in compare
    config = {row[0][0] for row in support.table_cells(compare, "ql-compare-config")[1:]}
    assert {"strategy", "symbols", "allow_short"} <= config
    history = cell_html(nb.cells[8])
    assert "momentum rotation" in history and "crossover long/short with stops" in history

    # the yearly returns the notebook printed are those of the run's equity
    equity = rotation.result().equity
    yearly = equity.resample("YE").last().pct_change().dropna() * 100
    assert ids["yearly"] == pytest.approx({str(k.year): v for k, v in yearly.items()},
                                          abs=1e-6)
