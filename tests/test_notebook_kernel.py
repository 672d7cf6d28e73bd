"""The magics and the widget in a real kernel (nbclient): short errors, live updates from the
follower thread while other cells run, and loading the extension from IPython's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

from quantlab.render.format import format_metric
from tests.support import notebook as support
from tests.support.notebook import WidgetTree, Worker, cell_stdout, execute_notebook

# fixtures (pytest finds them in the module's namespace)
nb_home = support.nb_home
slow_worker = support.slow_worker

pytestmark = pytest.mark.slow


def notebook(*sources: str) -> Any:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def test_a_bad_cell_is_one_error_line_and_stops_the_notebook(nb_home: Path,
                                                             tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    nb = notebook(
        "import quantlab as ql\n%load_ext quantlab",
        "%%backtest\nstrategy: sma_crossover\nsymbols: [AAA]\ncomission: 0.001",
        "print('never reached')",
    )
    with pytest.raises(CellExecutionError):
        execute_notebook(nb, tmp_path)
    (error,) = nb.cells[1].outputs
    assert error["output_type"] == "error"
    assert error["ename"] == "ConfigError"
    assert error["evalue"] == "unknown key 'comission' — did you mean 'commission'?"
    assert len(error["traceback"]) == 1  # no traceback through QuantLab's internals
    assert not nb.cells[2].get("outputs")
    from quantlab.registry import open_registry

    assert open_registry().count_runs() == 0


def test_the_widget_updates_itself_while_other_cells_run(nb_home: Path, slow_worker: Worker,
                                                        tmp_path: Path) -> None:
    """Without --wait the cell returns while the run is queued; the follower thread turns the
    same output into the results view (state the front end receives, saved by nbclient)."""
    nb = notebook(
        "import quantlab as ql\n%load_ext quantlab",
        "%%backtest --out live\nstrategy: sma_crossover\nsymbols: [AAA, BBB]\n"
        "params: {fast: \"5..30\", slow: [50, 100]}",
        # the follower ticks once a second; on a loaded machine it may take longer to draw
        "import time\nimport ipywidgets.widgets.widget as w\n"
        "from quantlab.notebook.widget import RunWidget, wait_for_outcome\nlive.wait()\n"
        "shown = [v for v in list(w._instances.values())\n"
        "         if isinstance(v, RunWidget) and v.run_id == live.id]\n"
        "assert len(shown) == 1 and wait_for_outcome(shown[0], 120)\n"
        "time.sleep(1)  # its last state messages reach the client while the cell runs\n"
        "print(live.id)",
    )
    execute_notebook(nb, tmp_path)
    import quantlab as ql

    run = ql.get_run(cell_stdout(nb.cells[2]).strip())
    # the cell itself answered before the run ended
    assert nb.cells[1].outputs[0]["data"]["text/plain"].split(" · ")[2] in ("queued", "running")
    tree = WidgetTree(nb)
    root = tree.root(nb.cells[1])
    assert "ql-run-completed" in tree.model(root)["_dom_classes"]
    html = tree.html(root)
    assert format_metric("sharpe", run.result().metrics["sharpe"]) in html
    (heatmap,) = tree.with_class(root, "ql-heatmap")  # the sweep's heatmap (plotly's output)
    figure = heatmap["outputs"][0]["data"]["application/vnd.plotly.v1+json"]
    assert figure["layout"]["title"]["text"] == "Deflated Sharpe by fast × slow"  # ranked by DSR


def test_listing_quantlab_in_ipython_extensions_loads_it_at_kernel_start(
        nb_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.InteractiveShellApp.extensions = ['quantlab']\n")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = notebook("%backtests")
    execute_notebook(nb, tmp_path)
    (output,) = nb.cells[0].outputs
    assert output["output_type"] == "execute_result"
    assert "no runs match" in output["data"]["text/html"]
