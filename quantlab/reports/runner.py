"""Executing ``run_report.ipynb`` for a run with papermill, and keeping what it produced.

A report is the executed notebook (code, outputs, and the parameters papermill injected, so
anyone can run it again) and, by default, a static HTML page of its outputs without the code.
Both are written under ``QUANTLAB_HOME/reports`` (or where ``output`` says) and stored as blobs
next to the run's result (``runs/<id>/report.ipynb``, ``runs/<id>/report.html``), so that in
team mode every machine reaches them through the registry; the run's ``report_ref`` names the
blob to open (the HTML when there is one).
"""

from __future__ import annotations

import ast
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quantlab import settings as settings_mod
from quantlab.errors import ConfigError, QuantlabError, RunError, did_you_mean
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.registry import RunRecord, open_registry

log = logging.getLogger("quantlab.reports")

TEMPLATE = Path(__file__).with_name("run_report.ipynb")
HTML_TEMPLATE_DIR = Path(__file__).with_name("templates")
HTML_TEMPLATE = "quantlab_report.html.j2"
KERNEL_NAME = "python3"
# A run that is done enough to report on: completed, or cancelled with a partial result.
REPORTABLE = ("completed",)


def _this_python_kernel_manager() -> type:
    """A kernel manager whose kernel is this Python (``sys.executable -m ipykernel_launcher``),
    whatever kernelspec named "python3" the user's Jupyter paths hold: a report must run where
    QuantLab and the run's strategies are installed."""
    # jupyter_client, papermill and nbconvert load only when a report is made: together they take
    # seconds to import, which `%load_ext quantlab` and `quantlab --help` should not pay
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="QuantLab report kernel", language="python",
                resource_dir="", metadata={},
            )

    class ThisPythonKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return ThisPythonSpecs(data_dir=self.data_dir)

        # Over TCP, ipykernel warns "Kernel is running over TCP without encryption" into every
        # report's first output and `quantlab report`'s terminal. The report kernel is a child
        # on this machine: Unix sockets in a private directory are both quiet and private.
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return str(_ipc_directory() / "kernel")

    return ThisPythonKernelManager


def _ipc_directory() -> Path:
    """A short private directory (mode 0700) for the report kernels' Unix sockets, removed at
    exit; short because a socket path is limited to ~100 bytes."""
    global _IPC_DIR
    if _IPC_DIR is None:
        import atexit
        import shutil
        import tempfile

        _IPC_DIR = Path(tempfile.mkdtemp(prefix="ql-kernel-"))
        atexit.register(shutil.rmtree, _IPC_DIR, True)
    return _IPC_DIR


_IPC_DIR: Path | None = None


@dataclass(frozen=True)
class ReportFiles:
    """Where a report went: the executed notebook, its HTML (None with ``html=False``), and the
    registry blob key recorded as the run's ``report_ref``."""

    run_id: str
    notebook: Path
    html: Path | None
    report_ref: str


@dataclass(frozen=True)
class ReportOutcome:
    """One item of a batch: its parameters and either its files or the error it raised."""

    parameters: dict[str, Any]
    files: ReportFiles | None
    error: QuantlabError | None


def template_parameters() -> dict[str, Any]:
    """The report notebook's parameters and their defaults, read from its ``parameters`` cell."""
    import papermill  # heavy: see _this_python_kernel_manager

    inferred = papermill.inspect_notebook(str(TEMPLATE))
    # papermill gives each default as its source text; the template's are all literals
    return {name: ast.literal_eval(str(spec.get("default"))) for name, spec in inferred.items()}


def _check_parameters(parameters: Mapping[str, Any]) -> None:
    known = template_parameters()
    for name in parameters:
        if name not in known:
            raise ConfigError(
                f"unknown report parameter {name!r}{did_you_mean(name, known)}; the report takes "
                f"{', '.join(sorted(known))}", field=name,
            )


def _output_path(run_id: str, output: str | Path | None) -> Path:
    if output is None:
        return settings_mod.current().home / "reports" / f"{run_id}.ipynb"
    path = Path(output).expanduser()
    if path.is_dir() or str(output).endswith(("/", "\\")):
        return path / f"{run_id}.ipynb"
    if path.suffix != ".ipynb":
        raise ConfigError(
            f"report output {str(output)!r} must be a .ipynb file or a folder; write e.g. "
            f"--output reports/{run_id}.ipynb (the HTML goes next to it)", field="output",
        )
    return path


def _reportable(run_id: str) -> RunRecord:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ConfigError(f"a report needs a run id, got {run_id!r}; list runs with "
                          f"`quantlab runs`", field="run_id")
    record = open_registry().get_run(run_id)
    status = record.get("status")
    if status not in REPORTABLE and not (status == "cancelled" and record.get("partial")):
        hint = ("wait for it to finish (ql.get_run(id).wait())" if status not in TERMINAL
                else "report on a completed run")
        raise RunError(f"run {run_id!r} is {status}, so there is nothing to report yet; {hint}",
                       run_id=run_id, status=status)
    return record


def _execute(run_id: str, output: Path, parameters: Mapping[str, Any], timeout: float | None
             ) -> None:
    import papermill  # heavy: see _this_python_kernel_manager
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    values = {"run_id": run_id, "quantlab_home": str(settings_mod.current().home),
              **parameters}
    try:
        papermill.execute_notebook(
            str(TEMPLATE), str(output), parameters=values, kernel_name=KERNEL_NAME,
            progress_bar=False, cwd=str(output.parent), execution_timeout=timeout,
            kernel_manager_class=_this_python_kernel_manager(),
        )
    except PapermillExecutionError as exc:
        raise RunError(
            f"the report of run {run_id!r} failed in cell {exc.exec_count}: {exc.ename}: "
            f"{exc.evalue}; the partly executed notebook is {output}", run_id=run_id,
            notebook=str(output),
        ) from None


def export_html(notebook: Path) -> Path:
    """The executed notebook as a static HTML page of its outputs (no code), loading nothing
    from the network."""
    import nbformat  # heavy: see _this_python_kernel_manager
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab", template_file=HTML_TEMPLATE,
        extra_template_paths=[str(HTML_TEMPLATE_DIR)],
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def run_report(run_id: str, output: str | Path | None = None, html: bool = True, *,
               parameters: Mapping[str, Any] | None = None,
               timeout: float | None = 600) -> ReportFiles:
    """Execute the report notebook for ``run_id`` and keep it: the executed ``.ipynb`` at
    ``output`` (default ``QUANTLAB_HOME/reports/<id>.ipynb``; a folder puts ``<id>.ipynb`` in
    it), its HTML next to it, both as registry blobs, and the run's ``report_ref`` set.

    ``parameters`` overrides the notebook's others (``max_trades``, ``sweep_metric``);
    ``timeout`` bounds each cell in seconds.
    """
    parameters = dict(parameters or {})
    _check_parameters(parameters)
    _reportable(run_id)
    notebook = _output_path(run_id, output)
    _execute(run_id, notebook, parameters, timeout)
    registry = open_registry()
    prefix = f"runs/{run_id}/"
    registry.put_blob(prefix + "report.ipynb", notebook.read_bytes())
    page = None
    ref = prefix + "report.ipynb"
    if html:
        page = export_html(notebook)
        registry.put_blob(prefix + "report.html", page.read_bytes())
        ref = prefix + "report.html"
    registry.update_run(run_id, {"report_ref": ref})
    log.info("report of run %s: %s", run_id, page or notebook)
    return ReportFiles(run_id, notebook, page, ref)


# --------------------------------------------------------------------------- batches


def load_parameter_sets(path: str | Path) -> list[dict[str, Any]]:
    """A batch file: a YAML or JSON list whose items are run ids or dicts with ``run_id`` and
    optionally ``output`` and report parameters."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the parameter file {str(path)!r}: {exc.strerror}",
                          field="params") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{str(path)!r} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}"
                          f": {exc}", field="params") from None
    return normalize_parameter_sets(data, str(path))


def normalize_parameter_sets(data: Any, where: str = "parameter sets") -> list[dict[str, Any]]:
    example = "e.g. [{run_id: 01J..., max_trades: 20}, {run_id: 01K...}]"
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where} must be a non-empty list of parameter sets, {example}",
                          field="params")
    sets = []
    for i, item in enumerate(data, start=1):
        if isinstance(item, str):
            item = {"run_id": item}
        if not isinstance(item, Mapping) or not item.get("run_id"):
            raise ConfigError(f"item {i} of {where} has no run_id; every set names the run to "
                              f"report on, {example}", field="params", item=i)
        sets.append(dict(item))
    return sets


def run_reports(parameter_sets: Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]],
                html: bool = True, *, timeout: float | None = 600) -> list[ReportOutcome]:
    """One report per parameter set (papermill batch); an error in one set is recorded in its
    outcome and the others still run."""
    outcomes = []
    for params in normalize_parameter_sets(list(parameter_sets)):
        extra = {k: v for k, v in params.items() if k not in ("run_id", "output")}
        try:
            files = run_report(str(params["run_id"]), params.get("output"), html,
                               parameters=extra, timeout=timeout)
        except QuantlabError as exc:
            outcomes.append(ReportOutcome(params, None, exc))
        else:
            outcomes.append(ReportOutcome(params, files, None))
    return outcomes
