"""Fixtures and helpers shared by the notebook tests (this module holds no tests).

Test modules import the fixtures they use by name. Workers are real processes
(``python -m quantlab worker``), notebooks run in a real kernel (nbclient), and every
process a test starts is stopped at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import kill_group, wait_for

ROOT = Path(__file__).resolve().parents[2]  # the repository
NOTEBOOKS = ROOT / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# A cell that shows one sweep view (600 bars, 3 x 3 combinations): the saved notebook's size is
# tested (tests/test_notebook_widget.py) and measured (bench/bench_sweepstart.py) with it.
SWEEP_CELL = """import numpy as np, pandas as pd, quantlab as ql
from quantlab.notebook.display import display_result
rng = np.random.default_rng(3); n = 600
c = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
df = pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1e6},
                  index=pd.date_range("2019-01-01", periods=n, freq="B"))
view = display_result(ql.backtest(df, params={"fast": [5, 10, 20], "slow": [30, 60, 90]}))"""


@pytest.fixture
def nb_home(ql_home: Path, sample_data_dir: Path) -> Iterator[Path]:
    """A fresh embedded QUANTLAB_HOME holding the sample data. A worker that QuantLab spawned
    by itself in this home (``worker.pid``) is stopped at the end."""
    shutil.copytree(sample_data_dir, ql_home / "data")
    yield ql_home
    pid_file = ql_home / "worker.pid"
    if pid_file.exists():
        kill_group(int(pid_file.read_text()))


class Worker:
    """One worker process of the test's home."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        from quantlab.jobs.supervisor import worker_alive

        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        self.log_path = home / "test-worker.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quantlab", "worker", "--workers", "1"],
                env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: worker_alive() or self.proc.poll() is not None, 60, "the worker")
        assert self.proc.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        kill_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def worker(nb_home: Path) -> Iterator[Worker]:
    proc = Worker(nb_home)
    yield proc
    proc.stop()


@pytest.fixture
def slow_worker(nb_home: Path) -> Iterator[Worker]:
    """A worker slowed down (2 units per engine call, 50 ms apart) so a run can be watched and
    cancelled mid-way (knobs of quantlab.jobs.runner)."""
    proc = Worker(nb_home, env={"QUANTLAB_JOBS_MAX_CHUNK": "2",
                                "QUANTLAB_JOBS_CHUNK_DELAY": "0.05"})
    yield proc
    proc.stop()




# -- executed notebooks -------------------------------------------------------------------------


def execute_notebook(nb: Any, cwd: Path, timeout: int = 300) -> Any:
    """Run every cell in a fresh python3 kernel (environment of this process: QUANTLAB_HOME
    of the test); widget state is stored in the notebook's metadata."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}},
                            store_widget_state=True)
    client.execute()
    return nb


class WidgetTree:
    """The widget models an executed notebook stored, navigable from a cell's output."""

    def __init__(self, nb: Any) -> None:
        self.state: dict[str, Any] = nb.metadata["widgets"][WIDGET_STATE]["state"]

    def root(self, cell: Any) -> str:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view:
                return str(view["model_id"])
        raise AssertionError(f"no widget in the outputs of cell: {cell.source[:80]!r}")

    def model(self, model_id: str) -> dict[str, Any]:
        return self.state[model_id]["state"]

    def name(self, model_id: str) -> str:
        return str(self.state[model_id]["model_name"])

    def children(self, model_id: str) -> list[str]:
        return [c.removeprefix("IPY_MODEL_") for c in self.model(model_id).get("children", [])]

    def descendants(self, model_id: str) -> Iterator[str]:
        yield model_id
        for child in self.children(model_id):
            yield from self.descendants(child)

    def find(self, model_id: str, model_name: str) -> list[dict[str, Any]]:
        return [self.model(m) for m in self.descendants(model_id)
                if self.name(m) == model_name]

    def html(self, model_id: str) -> str:
        """All HTML widget values under ``model_id``, joined."""
        return "\n".join(m["value"] for m in self.find(model_id, "HTMLModel"))

    def with_class(self, model_id: str, css_class: str) -> list[dict[str, Any]]:
        return [self.model(m) for m in self.descendants(model_id)
                if css_class in self.model(m).get("_dom_classes", [])]


def cell_stdout(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def cell_html(cell: Any) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", []))


def last_json_line(cell: Any) -> dict[str, Any]:
    lines = [line for line in cell_stdout(cell).splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1]))


# -- comparisons as a researcher reads them ------------------------------------------------------


class _TableReader(HTMLParser):
    """The rows (header first) of the tables of one CSS class in an HTML string, as text."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class = css_class
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._depth = 0  # > 0 inside a matching table
        self._cell: list[str] | None = None
        self._style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            if self._depth:
                self._depth += 1
            elif self.css_class in (found.get("class") or "").split():
                self._depth = 1
                self.tables.append([])
        elif self._depth == 1 and tag == "tr":
            self.tables[-1].append([])
        elif self._depth == 1 and tag in ("td", "th"):
            self._cell, self._style = [], found.get("style") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._depth:
            self._depth -= 1
        elif self._depth == 1 and tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._style))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_cells(page: str, css_class: str) -> list[list[tuple[str, str]]]:
    """The one table of ``css_class`` in ``page``: rows of (text, inline style) cells."""
    reader = _TableReader(css_class)
    reader.feed(page)
    assert len(reader.tables) == 1, f"{len(reader.tables)} tables of class {css_class!r}"
    return reader.tables[0]


def comparison_metrics(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """A comparison's metrics table as shown: the run labels of its header, and each row's
    values by the row's label (``"Sharpe"``, ``"Max drawdown"``...)."""
    header, *rows = table_cells(page, "ql-compare-metrics")
    return ([text for text, _ in header[1:]],
            {row[0][0]: [text for text, _ in row[1:]] for row in rows})


def comparison_best(page: str, row_label: str) -> list[str]:
    """The values of the metrics row ``row_label`` that the comparison shows in bold."""
    _, *rows = table_cells(page, "ql-compare-metrics")
    (row,) = [r for r in rows if r[0][0] == row_label]
    return [text for text, style in row[1:] if "font-weight:bold" in style]
