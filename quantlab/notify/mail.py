"""Email over SMTP: one message per run, or one digest for runs that ended close together.

Each message has a plain-text and an HTML body (``multipart/alternative``). Everything taken
from a run (its name, its error) is escaped in the HTML: run names are user input.
"""

from __future__ import annotations

import html
import smtplib
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from quantlab.durations import format_duration
from quantlab.notify import settings as notify_settings
from quantlab.notify.delivery import (
    Attempt,
    DeliveryResult,
    Outcome,
    RetryPolicy,
    deliver_with_retries,
)
from quantlab.notify.summary import (
    KEY_METRICS,
    RunSummary,
    format_metric,
    metric_label,
)

_TABLE_METRICS = ("total_return_pct", "sharpe", "max_drawdown_pct", "n_trades")


def subject_for(summaries: Sequence[RunSummary]) -> str:
    if len(summaries) == 1:
        return f"[QuantLab] {summaries[0].headline()}"
    counts = Counter(s.event for s in summaries)
    parts = [f"{counts[e]} {e}" for e in ("completed", "failed", "cancelled", "test") if counts[e]]
    return f"[QuantLab] {len(summaries)} runs finished ({', '.join(parts)})"


def _params(params: dict[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


def _text_single(summary: RunSummary) -> str:
    lines = [summary.headline(), ""]
    lines.append(f"Run:       {summary.run_id}")
    lines.append(f"Status:    {summary.status}{' (partial results)' if summary.partial else ''}")
    if summary.strategy:
        lines.append(f"Strategy:  {summary.strategy}")
    if summary.symbols:
        lines.append(f"Symbols:   {', '.join(summary.symbols)}")
    lines.append(f"Duration:  {format_duration(summary.duration)}")
    if summary.sweep and summary.best_params:
        lines.append(f"Best:      {_params(summary.best_params)}")
    if summary.error:
        lines += ["", f"Error: {summary.error}"]
    shown = [n for n in KEY_METRICS if n in summary.metrics]
    if shown:
        lines += ["", "Metrics:"]
        width = max(len(metric_label(n)) for n in shown)
        lines += [f"  {metric_label(n):<{width}}  {format_metric(n, summary.metrics[n])}"
                  for n in shown]
    if summary.links.get("run"):
        lines += ["", f"Open it: {summary.links['run']}"]
    return "\n".join(lines)


def _html_single(summary: RunSummary) -> str:
    esc = html.escape
    rows = [("Run", esc(summary.run_id)), ("Status", esc(summary.status)),
            ("Duration", esc(format_duration(summary.duration)))]
    if summary.strategy:
        rows.insert(2, ("Strategy", esc(summary.strategy)))
    if summary.symbols:
        rows.insert(3, ("Symbols", esc(", ".join(summary.symbols))))
    if summary.sweep and summary.best_params:
        rows.append(("Best parameters", esc(_params(summary.best_params))))
    rows += [(esc(metric_label(n)), esc(format_metric(n, summary.metrics[n])))
             for n in KEY_METRICS if n in summary.metrics]
    table = "".join(f"<tr><th align='left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    error = f"<p style='color:#b00020'>Error: {esc(summary.error)}</p>" if summary.error else ""
    link = (f"<p><a href='{esc(summary.links['run'])}'>Open the run</a></p>"
            if summary.links.get("run") else "")
    return (f"<html><body><h2>{esc(summary.headline())}</h2>{error}"
            f"<table cellpadding='4'>{table}</table>{link}</body></html>")


def _text_digest(summaries: Sequence[RunSummary]) -> str:
    lines = [subject_for(summaries).removeprefix("[QuantLab] "), ""]
    for s in summaries:
        lines.append(f"- {s.headline()}  [{s.run_id}, {format_duration(s.duration)}]")
        if s.links.get("run"):
            lines.append(f"  {s.links['run']}")
    return "\n".join(lines)


def _html_digest(summaries: Sequence[RunSummary]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(metric_label(n))}</th>" for n in _TABLE_METRICS)
    body = []
    for s in summaries:
        name = esc(s.name)
        if s.links.get("run"):
            name = f"<a href='{esc(s.links['run'])}'>{name}</a>"
        cells = "".join(f"<td>{esc(format_metric(n, s.metrics.get(n)))}</td>"
                        for n in _TABLE_METRICS)
        body.append(f"<tr><td>{name}</td><td>{esc(s.event)}</td>"
                    f"<td>{esc(format_duration(s.duration))}</td>{cells}</tr>")
    errors = "".join(f"<li>{esc(s.name)}: {esc(s.error)}</li>" for s in summaries if s.error)
    title = esc(subject_for(summaries).removeprefix("[QuantLab] "))
    return (f"<html><body><h2>{title}</h2><table cellpadding='4'><tr><th>Run</th><th>Event</th>"
            f"<th>Duration</th>{head}</tr>{''.join(body)}</table>"
            f"{'<h3>Errors</h3><ul>' + errors + '</ul>' if errors else ''}</body></html>")


def build_message(
    summaries: Sequence[RunSummary], recipient: str, sender: str
) -> EmailMessage:
    """The email for one run, or a digest of several, with text and HTML bodies."""
    if not summaries:
        raise ValueError("an email needs at least one run")
    message = EmailMessage()
    message["Subject"] = subject_for(summaries)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="quantlab")
    if len(summaries) == 1:
        text, markup = _text_single(summaries[0]), _html_single(summaries[0])
    else:
        text, markup = _text_digest(summaries), _html_digest(summaries)
    message.set_content(text)
    message.add_alternative(markup, subtype="html")
    return message


def _smtp_outcome(exc: Exception) -> Outcome:
    """Transient problems (network, 4xx replies) are retried; 5xx replies are final."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = bool(codes) and all(400 <= code < 500 for code in codes)
        return Outcome(ok=False, status_code=codes[0] if codes else None,
                       error=f"recipient refused: {exc.recipients}", retriable=transient)
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return Outcome(ok=False, status_code=exc.smtp_code, error=f"SMTP {exc.smtp_code}: "
                       f"{message}", retriable=400 <= exc.smtp_code < 500)
    if isinstance(exc, ssl.SSLCertVerificationError):  # retrying will not fix a certificate
        return Outcome(ok=False, error=f"TLS certificate of the SMTP server refused: "
                       f"{exc.verify_message}", retriable=False)
    if isinstance(exc, TimeoutError):
        return Outcome(ok=False, error="timed out talking to the SMTP server", retriable=True)
    return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}",
                   retriable=isinstance(exc, OSError | smtplib.SMTPException))


def send_once(message: EmailMessage, settings: notify_settings.NotifySettings) -> Outcome:
    """Hand one message to the SMTP server. Never raises for SMTP/network problems."""
    if not settings.smtp_host:
        return Outcome(ok=False, error="email is not configured: set QUANTLAB_SMTP_HOST (and "
                       "QUANTLAB_SMTP_PORT, _USER, _PASSWORD, _STARTTLS or _SSL, _FROM) where "
                       "the notification dispatcher runs", retriable=False)
    client: smtplib.SMTP
    try:
        if settings.smtp_ssl:
            client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port,
                                      timeout=settings.smtp_timeout,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                                  timeout=settings.smtp_timeout)
        with client:
            if settings.smtp_starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                client.login(settings.smtp_user, settings.smtp_password or "")
            refused = client.send_message(message)
    except Exception as exc:
        return _smtp_outcome(exc)
    if refused:  # one message has one recipient here; a partial refusal is still a refusal
        return Outcome(ok=False, status_code=250, error=f"recipient refused: {refused}")
    return Outcome(ok=True, status_code=250, response="accepted")


def send_email(
    recipient: str,
    summaries: Sequence[RunSummary],
    *,
    settings: notify_settings.NotifySettings | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    stop: threading.Event | None = None,
) -> DeliveryResult:
    """Send the email (or digest) about ``summaries`` to ``recipient``, with retries."""
    settings = settings or notify_settings.current()
    message = build_message(summaries, recipient, settings.smtp_from)
    policy = RetryPolicy(settings.webhook_retries, settings.webhook_backoff,
                         settings.webhook_backoff_max)
    return deliver_with_retries(lambda: send_once(message, settings), policy,
                                on_attempt=on_attempt, stop=stop)
