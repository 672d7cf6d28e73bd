"""``quantlab data``: import, list, fetch, remove and sample market data."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
import pandas as pd

from quantlab.errors import QuantlabError

F = TypeVar("F", bound=Callable[..., Any])


def _clear_errors(func: F) -> F:
    """QuantLab errors become one-line click errors (exit code 1), not tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QuantlabError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _table(frame: pd.DataFrame) -> str:
    return frame.to_string(index=False) if len(frame) else "(nothing)"


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        src, sep, dst = pair.rpartition("=")
        if not sep or not src or not dst:
            raise click.BadParameter(
                f"{pair!r}: write SOURCE=TARGET, e.g. --column 'Adj Close=close'",
                param_hint="--column")
        out[src] = dst
    return out


@click.group()
def data() -> None:
    """Import, fetch, list and remove market data (stored under QUANTLAB_HOME/data)."""


@data.command("import")
@click.argument("symbol")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--mode", type=click.Choice(["replace", "extend"]), default="replace",
              show_default=True, help="extend merges with stored bars; new bars win on overlap.")
@click.option("--date-column", help="Column holding the timestamps (default: date/datetime/...).")
@click.option("--date-format", help="strftime format of the dates, e.g. '%d/%m/%Y'.")
@click.option("--column", "columns", multiple=True, metavar="SOURCE=TARGET",
              help="Rename a column, e.g. --column 'Adj Close=close' (repeatable).")
@click.option("--timezone", help="Time zone of naive timestamps, e.g. America/New_York.")
@click.option("--interval", help="Bar interval (default: inferred), e.g. 1d, 5min.")
@click.option("--source", help="Source label stored with the bars (default: csv:<file>).")
@click.option("--adjusted/--unadjusted", default=False, show_default=True,
              help="Whether prices are split/dividend adjusted.")
@click.option("--sort", is_flag=True, help="Sort the rows by time (e.g. newest-first files).")
@click.option("--sep", help="Field separator (default: detected from the header: , ; tab |).")
@click.option("--encoding", help="Text encoding (default: UTF-8, or UTF-16 by its mark), "
              "e.g. latin-1.")
@_clear_errors
def import_cmd(symbol: str, path: str, mode: str, date_column: str | None,
               date_format: str | None, columns: tuple[str, ...], timezone: str | None,
               interval: str | None, source: str | None, adjusted: bool, sort: bool,
               sep: str | None, encoding: str | None) -> None:
    """Import a CSV file of OHLCV bars as SYMBOL."""
    from quantlab.data import import_csv

    summary = import_csv(symbol, path, mode=mode, date_column=date_column,
                         date_format=date_format, columns=_mapping(columns) or None,
                         timezone=timezone, interval=interval, source=source,
                         adjusted=adjusted, sort=sort, sep=sep, encoding=encoding)
    click.echo(f"{summary.symbol} {summary.interval}: wrote {summary.rows_written} bars "
               f"({summary.new_rows} new, {summary.updated_rows} replaced); stored "
               f"{summary.rows} bars from {summary.first} to {summary.last}")


@data.command("list")
@click.option("--interval", help="Only this interval.")
@_clear_errors
def list_cmd(interval: str | None) -> None:
    """List the stored symbols."""
    from quantlab.data import canonical_interval, symbols

    frame = symbols()
    if interval:
        frame = frame[frame["interval"] == canonical_interval(interval)]
    shown = frame[["name", "interval", "first", "last", "rows", "source", "adjusted",
                   "synthetic"]]
    click.echo(_table(shown))


@data.command("fetch")
@click.argument("symbols", nargs=-1, required=True)
@click.option("--provider", default="alphavantage", show_default=True)
@click.option("--interval", default="1d", show_default=True,
              help="1d, or intraday 1min/5min/15min/30min/60min.")
@click.option("--force", is_flag=True, help="Download the whole history again and replace.")
@click.option("--unadjusted", is_flag=True, help="As-traded prices (TIME_SERIES_DAILY).")
@_clear_errors
def fetch_cmd(symbols: tuple[str, ...], provider: str, interval: str, force: bool,
              unadjusted: bool) -> None:
    """Download SYMBOLS into the store (only what is missing)."""
    from quantlab.data import fetch

    options: dict[str, Any] = {"adjusted": False} if unadjusted else {}
    result = fetch(list(symbols), provider=provider, interval=interval, force=force, **options)
    click.echo(_table(result.drop(columns=["note"])))
    for note in result["note"]:
        if note:
            click.echo(f"note: {note}")


@data.command("remove")
@click.argument("symbol")
@click.option("--interval", help="Only this interval (default: every interval).")
@_clear_errors
def remove_cmd(symbol: str, interval: str | None) -> None:
    """Delete SYMBOL's stored bars."""
    from quantlab.data import remove

    removed = remove(symbol, interval)
    click.echo(f"removed {symbol.strip().upper()} ({', '.join(removed)})")


@data.command("sample")
@click.option("--no-minute", is_flag=True, help="Skip AAA's one-minute bars.")
@click.option("--force", is_flag=True, help="Rewrite the sample even if installed.")
@_clear_errors
def sample_cmd(no_minute: bool, force: bool) -> None:
    """Install the synthetic sample symbols AAA..JJJ (offline, deterministic)."""
    from quantlab.data import sample

    click.echo(_table(sample(minute=not no_minute, force=force)))
