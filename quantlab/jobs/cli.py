"""Click commands of the ``quantlab`` CLI for runs and workers.

Wired into the ``quantlab`` command as ``quantlab.jobs.cli:worker`` / ``:runs`` / ``:status`` /
``:cancel``.
"""

from __future__ import annotations

import json
import sys

import click

from quantlab.errors import QuantlabError


def _fail(exc: QuantlabError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.command("worker")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs executed in parallel by this machine (processes when more than 1).")
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Load the Numba kernels with a tiny backtest before taking runs.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE first (it registers strategies with @ql.strategy).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
def worker(workers: int, warm_up: bool, imports: tuple[str, ...], metrics_port: int | None) -> None:
    """Run QuantLab workers: they take runs from the queue (QUANTLAB_REDIS_URL, or the SQLite
    queue under QUANTLAB_HOME) until interrupted."""
    from quantlab.jobs.worker import serve

    try:
        code = serve(workers=workers, warm=warm_up, imports=imports, metrics_port=metrics_port)
    except QuantlabError as exc:
        _fail(exc)
        return
    sys.exit(code)


@click.command("runs")
@click.option("--status", multiple=True, help="queued, running, completed, failed, cancelled")
@click.option("--strategy", multiple=True)
@click.option("--symbol", multiple=True)
@click.option("--tag", multiple=True)
@click.option("--user", multiple=True)
@click.option("--text", default=None, help="Text in the run name.")
@click.option("--where", default=None, help="Metric thresholds, e.g. 'sharpe>1'.")
@click.option("--sort", default="-queued_at", show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document per line.")
def runs(status: tuple[str, ...], strategy: tuple[str, ...], symbol: tuple[str, ...],
         tag: tuple[str, ...], user: tuple[str, ...], text: str | None, where: str | None,
         sort: str, limit: int, as_json: bool) -> None:
    """List and search runs."""
    from quantlab.jobs import api

    try:
        found = api.runs(status=list(status) or None, strategy=list(strategy) or None,
                         symbol=list(symbol) or None, tag=list(tag) or None,
                         user=list(user) or None, text=text, where=where, sort=sort,
                         limit=limit)
    except QuantlabError as exc:
        _fail(exc)
        return
    if as_json:
        for doc in found.docs:
            click.echo(json.dumps(doc, default=str))
    else:
        click.echo(repr(found))


@click.command("status")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The whole run document as JSON.")
def status(run_id: str, as_json: bool) -> None:
    """Show one run."""
    from quantlab.jobs import api

    try:
        run = api.get_run(run_id)
        doc = run.record
    except QuantlabError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(doc, default=str, indent=2) if as_json else repr(run))


@click.command("cancel")
@click.argument("run_ids", nargs=-1, required=True)
def cancel(run_ids: tuple[str, ...]) -> None:
    """Cancel runs: queued ones at once, running ones at their next chunk."""
    from quantlab.jobs import api

    for run_id in run_ids:
        try:
            run = api.get_run(run_id).cancel()
        except QuantlabError as exc:
            _fail(exc)
            return
        click.echo(repr(run))
