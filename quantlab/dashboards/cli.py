"""The ``quantlab dashboard compare|analytics`` command.

Wired into the ``quantlab`` command as ``quantlab.dashboards.cli:dashboard``.
"""

from __future__ import annotations

import os
import sys

import click

from quantlab.dashboards.serve import ServeOptions, served_url, voila_command, voila_env
from quantlab.errors import QuantlabError


@click.command("dashboard")
@click.argument("name", type=click.Choice(["compare", "analytics"]))
@click.option("--port", type=click.IntRange(1, 65535), default=8866, show_default=True,
              help="TCP port to serve on.")
@click.option("--ip", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 to serve the network).")
@click.option("--preheat/--no-preheat", default=True, show_default=True,
              help="Keep a kernel that has already run the imports, so the first page is fast.")
@click.option("--pool-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pre-heated kernels kept ready.")
@click.option("--cull-idle", type=click.IntRange(min=0), default=600, show_default=True,
              help="Seconds of inactivity after which a visitor's kernel is shut down "
                   "(0: never).")
@click.option("--cull-interval", type=click.IntRange(min=1), default=60, show_default=True,
              help="Seconds between two checks for idle kernels.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def dashboard(name: str, port: int, ip: str, preheat: bool, pool_size: int, cull_idle: int,
              cull_interval: int, open_browser: bool) -> None:
    """Serve the NAME dashboard (compare or analytics) with Voila until interrupted.

    A saved comparison opens at http://HOST:PORT/?comparison=<id> (set QUANTLAB_DASHBOARD_URL to
    the address people use, so that Comparison.url points there).
    """
    options = ServeOptions(port=port, ip=ip, preheat=preheat, pool_size=pool_size,
                           cull_idle_timeout=cull_idle, cull_interval=cull_interval,
                           open_browser=open_browser)
    try:
        command = voila_command(name, options)
    except QuantlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"serving the {name} dashboard at {served_url(options)} (Ctrl-C stops it)")
    sys.stdout.flush()
    # Become Voila (no wrapper process left behind): a signal to this pid reaches the server.
    os.execve(command[0], command, voila_env())
