"""``quantlab migrate``: upgrade the registry's schema in place."""

from __future__ import annotations

import click

from quantlab import settings as _settings
from quantlab.registry import open_registry


@click.command("migrate")
def migrate() -> None:
    """Upgrade the run registry (SQLite or MongoDB) to this QuantLab's schema, keeping every run."""
    registry = open_registry(_settings.current(), auto_migrate=False)
    try:
        before, after = registry.migrate()
        if before == after:
            click.echo(f"registry at {registry.location}: schema {after}, already current")
        else:
            kept = registry.count_runs()
            click.echo(f"registry at {registry.location}: schema {before} -> {after} "
                       f"({kept} runs kept)")
    finally:
        registry.close()
