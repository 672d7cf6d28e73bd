"""The ``quantlab`` command.

Subcommands live next to the code they drive and are imported only when used, so that
``quantlab --help`` is instant and one broken optional part cannot break the others. The
``worker`` command is here: a worker (``quantlab.jobs.worker``) is composed with the services of
the layers above jobs, the notification dispatcher and the metrics endpoint and subscriber.
``python -m quantlab worker`` is the same command (the embedded worker is started that way).
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import logging
import os
import sys
import tempfile
from collections.abc import Callable

import click

from quantlab.errors import QuantlabError

log = logging.getLogger("quantlab.jobs")

# command name -> ("module:attribute" of a click command or group, one-line help for the listing)
COMMANDS = {
    "data": ("quantlab.data.cli:data", "Import, fetch, list and remove market data."),
    "demo": ("quantlab.demo:demo", "Install the sample data and run a first backtest."),
    "notify": ("quantlab.notify.cli:notify",
               "Notifications: preferences, in-app list, delivery log, dispatcher."),
    "migrate": ("quantlab.registry.cli:migrate", "Upgrade the run registry's schema in place."),
    "worker": ("quantlab.cli:worker", "Run backtest workers on this machine."),
    "report": ("quantlab.reports.cli:report", "Execute the report notebook of runs (papermill)."),
    "rerun": ("quantlab.reports.cli:rerun", "Rerun runs without the cache; check they reproduce."),
    "dashboard": ("quantlab.dashboards.cli:dashboard",
                  "Serve the compare or analytics dashboard (Voila)."),
    "runs": ("quantlab.jobs.cli:runs", "List and search runs."),
    "status": ("quantlab.jobs.cli:status", "Show one run's status."),
    "cancel": ("quantlab.jobs.cli:cancel", "Cancel a queued or running run."),
    "diff": ("quantlab.cli:diff", "Why two runs differ: config, code, data, engine, metrics."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), cmd_name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List from the table above: importing every subcommand just to print --help is slow.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quantlab")
def cli() -> None:
    """QuantLab: backtests as jobs, from Jupyter or the command line."""


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="The diff as JSON.")
def diff(run_a: str, run_b: str, as_json: bool) -> None:
    """Why runs RUN_A and RUN_B differ: changed settings, strategy code, data (which symbols,
    from which bar), engine, metrics, where the equity curves part, trades only in one."""
    import json

    from quantlab.jobs.rundiff import diff as run_diff

    try:
        found = run_diff(run_a, run_b)
    except QuantlabError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(found.as_dict(), default=str) if as_json else str(found))


@click.command("worker")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs executed in parallel by this machine (processes when more than 1).")
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Load the Numba kernels with a tiny backtest before taking runs.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE first (it registers strategies with @ql.strategy).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics (no auth: see "
              "docs/operations.md).")
@click.option("--metrics-address", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              envvar="QUANTLAB_METRICS_ADDRESS",
              help="Address the metrics endpoint listens on; 0.0.0.0 (every interface) only "
              "behind a firewall or an authenticating proxy.")
@click.option("--idle-exit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop after SECONDS without queued or running runs (the "
              "worker that QuantLab starts by itself uses QUANTLAB_WORKER_IDLE_EXIT, 1800).")
def worker(workers: int, warm_up: bool, imports: tuple[str, ...], metrics_port: int | None,
           metrics_address: str, idle_exit: float | None) -> None:
    """Run QuantLab workers: they take runs from the queue (QUANTLAB_REDIS_URL, or the SQLite
    queue under QUANTLAB_HOME) until interrupted."""
    if metrics_port is not None:
        check_metrics_address(metrics_address, metrics_port)
    if metrics_port is not None and workers > 1:
        use_multiprocess_metrics()
    # imported here, after the metrics mode is chosen (prometheus_client reads it on import);
    # the worker's modules (Numba, Huey) also stay out of `quantlab --help`
    from quantlab import telemetry
    from quantlab.jobs.worker import serve

    try:
        code = serve(workers=workers, warm=warm_up, imports=imports, idle_exit=idle_exit,
                     services=functools.partial(start_worker_services, metrics_port,
                                                metrics_address),
                     beat=telemetry.beat_worker)
    except QuantlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


def check_metrics_address(address: str, port: int) -> None:
    """Refuse a metrics address that is not an IP address, before the worker starts (a host
    name would need DNS, and would hide which interface is exposed)."""
    if address == "localhost":
        return
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise click.BadParameter(
            f"{address!r} is not an IP address; give 127.0.0.1 (the default: this machine "
            f"only), an address of one of its interfaces, or 0.0.0.0 (every interface)",
            param_hint="'--metrics-address'") from None


def start_worker_services(metrics_port: int | None,
                          metrics_address: str = "127.0.0.1") -> Callable[[], None]:
    """Start what a worker serves besides runs, in this process; returns their stop: the
    notification dispatcher and, with a metrics port, the metrics endpoint (on
    ``metrics_address``) and the telemetry subscriber (both stand by while another worker of
    the home or team holds their lock)."""
    # imported here: in a `-w N` worker this runs in the spawned side process, whose metrics
    # mode comes from the environment it inherited
    from quantlab import telemetry
    from quantlab.notify import start_dispatcher_thread

    stops: list[Callable[[], None]] = []
    if metrics_port is not None:
        telemetry.start_http_server(metrics_port, addr=metrics_address)
        log.info("Prometheus metrics at http://%s:%s/metrics", _host(metrics_address),
                 metrics_port)
        if not _loopback(metrics_address):
            log.warning("the metrics endpoint listens on %s without authentication: anyone who "
                        "can reach this machine reads it; restrict it with a firewall or an "
                        "authenticating proxy (docs/operations.md)", metrics_address)
        stops.append(telemetry.start_subscriber_thread().stop)
    dispatcher = start_dispatcher_thread()
    if dispatcher is not None:
        stops.append(dispatcher.stop)

    def stop() -> None:
        for each in stops:
            each()

    return stop


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def use_multiprocess_metrics() -> None:
    """Let the ``-w N`` worker processes share one metrics endpoint (prometheus_client's
    multiprocess mode). Must run before prometheus_client is imported."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quantlab-metrics-")


def main(argv: list[str] | None = None) -> None:
    """Entry point: QuantLab errors print as one clear line, not a traceback."""
    try:
        cli.main(args=argv, prog_name="quantlab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except QuantlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
