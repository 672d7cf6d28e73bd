"""The ``quantlab report`` and ``quantlab rerun`` commands.

Wired into the ``quantlab`` command as ``quantlab.reports.cli:report`` and
``quantlab.reports.cli:rerun``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from quantlab.errors import ConfigError, QuantlabError
from quantlab.reports import rerun as rerun_mod
from quantlab.reports.runner import load_parameter_sets, run_reports


def _fail(exc: QuantlabError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _parameters(items: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values are read as YAML scalars (``20`` is a number)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"cannot read the report parameter {item!r}; write NAME=VALUE, "
                              f"e.g. -p max_trades=20", field="parameter")
        out[name.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


@click.command("report")
@click.argument("run_ids", nargs=-1)
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Where the executed notebook goes (.ipynb file, or a folder for several "
                   "runs); default QUANTLAB_HOME/reports/<id>.ipynb. The HTML goes next to it.")
@click.option("--html/--no-html", default=True, show_default=True,
              help="Also write the report as a static HTML page (outputs only, no code).")
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None,
              help="A YAML or JSON list of parameter sets (run_id, output, max_trades, "
                   "sweep_metric): one report per set, a papermill batch.")
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE",
              help="A report parameter for every report, e.g. -p max_trades=20.")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds a notebook cell may run.")
def report(run_ids: tuple[str, ...], output: str | None, html: bool, params_file: str | None,
           parameters: tuple[str, ...], timeout: float) -> None:
    """Execute the run report notebook (papermill) for RUN_IDS, or for every parameter set of
    --params; the report is linked from each run's record (report_ref)."""
    try:
        common = _parameters(parameters)
        sets: list[dict[str, Any]] = []
        if params_file:
            sets += load_parameter_sets(params_file)
        if len(run_ids) > 1 and output and not output.endswith("/") and output.endswith(".ipynb"):
            raise ConfigError(f"--output {output} is one file but {len(run_ids)} runs were given; "
                              f"pass a folder (e.g. --output reports/)", field="output")
        sets += [{"run_id": run_id, **({"output": output} if output else {})}
                 for run_id in run_ids]
        if not sets:
            raise ConfigError("say which run to report on: quantlab report RUN_ID, or a batch "
                              "with --params sets.yaml", field="run_id")
        sets = [{**common, **item} for item in sets]
    except QuantlabError as exc:
        _fail(exc)
        return
    failed = 0
    for outcome in run_reports(sets, html=html, timeout=timeout):
        run_id = outcome.parameters["run_id"]
        if outcome.files is None:
            failed += 1
            click.echo(f"{run_id} error: {outcome.error}", err=True)
            continue
        shown = outcome.files.html or outcome.files.notebook
        click.echo(f"{run_id} report: {shown}"
                   + (f" (notebook {outcome.files.notebook})" if outcome.files.html else ""))
    if failed:
        sys.exit(1)


@click.command("rerun")
@click.argument("run_ids", nargs=-1)
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Select runs like `quantlab runs`: status, strategy, symbol, tag, user, since, "
                   "until, text, where (e.g. 'where=sharpe>1'). Completed runs by default.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Rerun at most this many of the runs the filters match.")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds to wait for each rerun.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run.")
def rerun(run_ids: tuple[str, ...], filters: tuple[str, ...], limit: int | None,
          timeout: float, as_json: bool) -> None:
    """Rerun runs from their stored configs without the cache, and print each as `reproduced`
    or `drifted` (with what changed: data, engine version, strategy code). Exits with 1 when
    any run did not reproduce."""
    def show(outcome: rerun_mod.RerunOutcome) -> None:
        click.echo(json.dumps(outcome.as_dict(), default=str) if as_json else outcome.line())

    try:
        parsed = rerun_mod.parse_filters(filters)
        outcomes = rerun_mod.rerun(list(run_ids), filters=parsed or None, limit=limit,
                                   timeout=timeout, on_outcome=show)
    except QuantlabError as exc:
        _fail(exc)
        return
    if not outcomes:
        click.echo("no runs matched", err=True)
        sys.exit(1)
    if any(o.status != "reproduced" for o in outcomes):
        sys.exit(1)
