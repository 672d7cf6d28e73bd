"""``quantlab notify``: preferences, in-app notifications, the delivery log, the dispatcher."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
from typing import Any

import click

from quantlab import settings as settings_mod
from quantlab.notify import store
from quantlab.notifyspec import parse_condition
from quantlab.registry import open_registry


def _mask(secret: str | None) -> str:
    if not secret:
        return "(none)"
    return secret[:4] + "…" + f" ({len(secret)} chars)"


def _target(entry: dict[str, Any]) -> str:
    """A delivery's target as shown: a webhook's URL redacted."""
    target = str(entry.get("target"))
    return settings_mod.redact(target) if entry.get("channel") == "webhook" else target


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "—"


def _print_preferences(prefs: dict[str, Any], user: str, show_secrets: bool) -> None:
    click.echo(f"notification preferences of {user}:")
    email = prefs["email"] or "(none)"
    state = "on" if prefs["email_enabled"] else "off"
    click.echo(f"  email:    {email} ({state})")
    click.echo(f"  in-app:   {'on' if prefs['in_app'] else 'off'}")
    click.echo(f"  events:   {', '.join(prefs['events']) or '(none: nothing is sent)'}")
    click.echo(f"  when:     {prefs['when'] or '(always)'}")
    if not prefs["webhooks"]:
        click.echo("  webhooks: (none)")
    for hook in prefs["webhooks"]:
        url = str(hook.get("url"))
        if show_secrets:
            click.echo(f"  webhook:  {url}  secret {hook.get('secret')}")
        else:  # the URL's path is often a secret too (Slack's /services/T…/B…/token)
            click.echo(f"  webhook:  {settings_mod.redact(url)}  secret {_mask(hook.get('secret'))}")


@click.group()
def notify() -> None:
    """Notifications when runs end: preferences, in-app list, delivery log, dispatcher."""


@notify.command()
@click.option("--user", help="Whose preferences (default: you, QUANTLAB_USER).")
@click.option("--secrets", "show_secrets", is_flag=True,
              help="Print webhook secrets and URLs in full.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (secrets included).")
def show(user: str | None, show_secrets: bool, as_json: bool) -> None:
    """Show notification preferences."""
    prefs = store.get_preferences(user)
    if as_json:
        click.echo(json.dumps(prefs, indent=2))
        return
    _print_preferences(prefs, user or settings_mod.current().user, show_secrets)


@notify.command(name="set")
@click.option("--user", help="Whose preferences (default: you).")
@click.option("--email", help="Your email address.")
@click.option("--no-email", is_flag=True, help="Remove the email address.")
@click.option("--email-on/--email-off", "email_enabled", default=None,
              help="Turn email on or off (keeps the address).")
@click.option("--in-app/--no-in-app", "in_app", default=None, help="In-app notifications.")
@click.option("--events", help="Comma-separated: completed, failed, cancelled, sweep_finished.")
@click.option("--when", help="Only completed runs meeting this, e.g. 'sharpe > 1.5'.")
@click.option("--no-when", is_flag=True, help="Remove the condition (notify every run).")
@click.option("--add-webhook", metavar="URL", help="Add a webhook (needs --secret).")
@click.option("--secret", help="The new webhook's signing secret (16+ characters).")
@click.option("--remove-webhook", metavar="URL", help="Remove a webhook.")
def set_(user: str | None, email: str | None, no_email: bool, email_enabled: bool | None,
         in_app: bool | None, events: str | None, when: str | None, no_when: bool,
         add_webhook: str | None, secret: str | None, remove_webhook: str | None) -> None:
    """Change notification preferences (options not given keep their value)."""
    if email and no_email:
        raise click.UsageError("give --email ADDRESS or --no-email, not both")
    if when and no_when:
        raise click.UsageError("give --when CONDITION or --no-when, not both")
    if add_webhook and not secret:
        raise click.UsageError("--add-webhook needs --secret: the receiver verifies each request "
                               "with it; generate one with: python -c \"import secrets; "
                               "print(secrets.token_hex(32))\"")
    changes: dict[str, Any] = {}
    if email or no_email:
        changes["email"] = None if no_email else email
    if email_enabled is not None:
        changes["email_enabled"] = email_enabled
    if in_app is not None:
        changes["in_app"] = in_app
    if events is not None:
        changes["events"] = [e for e in (p.strip() for p in events.split(",")) if e]
    if when or no_when:
        changes["when"] = None if no_when else when
    reg = open_registry()
    if remove_webhook or add_webhook:
        changes["webhooks"] = store.edited_webhooks(user, add=add_webhook or None,
                                                    secret=secret or "",
                                                    remove=remove_webhook or None, reg=reg)
    # one save: a refused part (a bad condition, a bad URL) leaves everything as it was
    prefs = store.set_preferences(user, reg=reg, **changes)
    _print_preferences(prefs, user or settings_mod.current().user, False)


@notify.command(name="list")
@click.option("--user", help="Whose notifications (default: you).")
@click.option("--unread", is_flag=True, help="Only unread ones.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--mark-read", is_flag=True, help="Mark the listed ones read.")
def list_(user: str | None, unread: bool, limit: int, mark_read: bool) -> None:
    """List in-app notifications, newest first."""
    items = store.list_notifications(user, unread_only=unread, limit=limit)
    if not items:
        click.echo("no notifications" + (" unread" if unread else ""))
        return
    for item in items:
        flag = " " if item.get("read") else "*"
        click.echo(f"{flag} {_when(item.get('created_at'))}  {item.get('body') or item.get('title')}"
                   f"  [{item.get('id')}]")
        if mark_read and not item.get("read"):
            store.mark_read(item["id"])


@notify.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Mark every unread notification read.")
@click.option("--user", help="With --all: whose (default: you).")
def read(ids: tuple[str, ...], all_: bool, user: str | None) -> None:
    """Mark notifications read (by id, or --all)."""
    if not ids and not all_:
        raise click.UsageError("give notification ids (see `quantlab notify list`) or --all")
    if all_:
        click.echo(f"marked {store.mark_all_read(user)} notifications read")
        return
    missing = [i for i in ids if not store.mark_read(i)]
    if missing:
        raise click.ClickException(f"no notification {', '.join(missing)}; list them with "
                                   f"`quantlab notify list`")
    click.echo(f"marked {len(ids)} read")


@notify.command(name="log")
@click.option("--run", "run_id", help="Only deliveries of this run.")
@click.option("--status", type=click.Choice(["delivered", "failed", "pending"]))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def log_(run_id: str | None, status: str | None, limit: int) -> None:
    """Show the delivery log (every attempt: status code, latency, error)."""
    entries = store.list_deliveries(run_id=run_id, status=status, limit=limit)
    if not entries:
        click.echo("no deliveries")
        return
    for entry in entries:
        # redacted again here: a log written by an earlier release kept webhook URLs whole
        click.echo(f"{_when(entry.get('updated_at'))}  {entry.get('status'):<9} "
                   f"{entry.get('channel'):<7} {_target(entry)}  run {entry.get('run_id')} "
                   f"({entry.get('event')})")
        for attempt in entry.get("attempts") or []:
            code = attempt.get("status_code") or "—"
            error = f"  {settings_mod.redact_text(str(attempt['error']))}" \
                if attempt.get("error") else ""
            click.echo(f"    #{attempt.get('attempt')} {code} {attempt.get('latency_ms'):.0f} ms"
                       f"{error}")


@notify.command()
@click.option("--user", help="Whose channels (default: yours).")
def test(user: str | None) -> None:
    """Send a test notification to every channel of your preferences now."""
    # imported when used: `quantlab --help` and the other commands need no channel machinery
    from quantlab.notify.deliverer import send_test

    records = send_test(user)
    if not records:
        raise click.ClickException("nothing to send: no channel is on; set one with e.g. "
                                   "`quantlab notify set --email you@example.com`")
    failed = 0
    for record in records:
        last = (record.get("attempts") or [{}])[-1]
        detail = last.get("error") or f"status {last.get('status_code') or 'ok'}"
        click.echo(f"{record['status']:<9} {record['channel']:<7} {_target(record)}  "
                   f"{settings_mod.redact_text(str(detail))}")
        failed += record["status"] != "delivered"
    if failed:
        raise click.ClickException(f"{failed} of {len(records)} deliveries failed")


@notify.command()
@click.argument("condition")
def check(condition: str) -> None:
    """Check a metric condition, e.g. quantlab notify check 'sharpe > 1.5'."""
    parsed = parse_condition(condition)
    click.echo(f"ok: {parsed.tree}  (reads {', '.join(sorted(parsed.metrics))})")


@notify.command(name="run")
def run_() -> None:
    """Run the notification dispatcher in the foreground (Ctrl-C to stop)."""
    # imported when used, like send_test above (start-up cost of the whole CLI)
    from quantlab.notify.dispatcher import Dispatcher

    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    dispatcher = Dispatcher()
    redis_url = dispatcher.settings.redis_url
    click.echo(f"notification dispatcher for {dispatcher.settings.home}"
               f"{' / ' + settings_mod.redact(redis_url) if redis_url else ''} — Ctrl-C to stop")
    try:
        dispatcher.run(stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("dispatcher stopped")


notify.add_command(run_, name="serve")
