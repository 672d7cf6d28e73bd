"""The ``quantlab`` command.

Subcommands live next to the code they drive and are imported only when used, so that
``quantlab --help`` is instant and one broken optional part cannot break the others.
"""

from __future__ import annotations

import importlib
import sys

import click

from quantlab.errors import QuantlabError

# command name -> ("module:attribute" of a click command or group, one-line help for the listing)
COMMANDS = {
    "data": ("quantlab.data.cli:data", "Import, fetch, list and remove market data."),
    "demo": ("quantlab.demo:demo", "Install the sample data and run a first backtest."),
    "notify": ("quantlab.notify.cli:notify",
               "Notifications: preferences, in-app list, delivery log, dispatcher."),
    "migrate": ("quantlab.registry.cli:migrate", "Upgrade the run registry's schema in place."),
    "worker": ("quantlab.jobs.cli:worker", "Run backtest workers on this machine."),
    "report": ("quantlab.reports.cli:report", "Execute the report notebook of runs (papermill)."),
    "rerun": ("quantlab.reports.cli:rerun", "Rerun runs without the cache; check they reproduce."),
    "dashboard": ("quantlab.dashboards.cli:dashboard",
                  "Serve the compare or analytics dashboard (Voila)."),
    "runs": ("quantlab.jobs.cli:runs", "List and search runs."),
    "status": ("quantlab.jobs.cli:status", "Show one run's status."),
    "cancel": ("quantlab.jobs.cli:cancel", "Cancel a queued or running run."),
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
