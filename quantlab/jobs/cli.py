"""Click commands of the ``quantlab`` CLI for runs.

Wired into the ``quantlab`` command as ``quantlab.jobs.cli:runs`` / ``:status`` / ``:cancel``
(``quantlab worker`` is composed in :mod:`quantlab.cli`, with the services of higher layers).
"""

from __future__ import annotations

import json
import sys

import click

from quantlab.errors import QuantlabError
from quantlab.jobs import api


def _fail(exc: QuantlabError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


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
    for run_id in run_ids:
        try:
            run = api.get_run(run_id).cancel()
        except QuantlabError as exc:
            _fail(exc)
            return
        click.echo(repr(run))
