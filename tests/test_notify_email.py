"""Email over SMTP against a real local SMTP server (aiosmtpd): bodies, digests, auth, retries."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from quantlab.notify import settings as notify_settings
from quantlab.notify.mail import build_message, send_email
from quantlab.notify.summary import summarize
from tests.support.notify import Mailbox, run_doc
from tests.support.procs import free_port


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.close()


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    markup = message.get_body(("html",))
    assert text is not None and markup is not None
    return text.get_content(), markup.get_content()


def test_one_run_one_email_with_text_and_html(mailbox: Mailbox) -> None:
    summary = summarize(run_doc(), "completed", public_url="https://lab.example.com")
    result = send_email("alice@example.com", [summary], settings=mailbox.settings())
    assert result.ok and [a.status_code for a in result.attempts] == [250]
    ((sender, recipients, message),) = mailbox.messages
    assert sender == "quantlab@lab.example.com" and recipients == ["alice@example.com"]
    assert message["Subject"] == ("[QuantLab] Run 'golden cross' completed: Total return 23.46%, "
                                  "Sharpe 1.73, Max drawdown -12.30%")
    assert message.get_content_type() == "multipart/alternative"
    text, markup = bodies(message)
    assert "Run:       01JRUN" in text
    assert "Duration:  2:05" in text  # started_at -> finished_at
    assert "Profit factor  ∞" in text
    assert "Open it: https://lab.example.com/quantlab/runs/01JRUN" in text
    assert "<td>1.73</td>" in markup and "href='https://lab.example.com/quantlab/runs/01JRUN'" in markup


def test_a_sweep_email_names_the_best_parameters(mailbox: Mailbox) -> None:
    doc = run_doc(combinations=[{"fast": 10}, {"fast": 20}], best_params={"fast": 20, "slow": 100})
    send_email("alice@example.com", [summarize(doc, "completed")], settings=mailbox.settings())
    message = mailbox.messages[0][2]
    assert message["Subject"].startswith("[QuantLab] Sweep 'golden cross' completed")
    text, markup = bodies(message)
    assert "Best:      fast=20, slow=100" in text
    assert "<th align='left'>Best parameters</th><td>fast=20, slow=100</td>" in markup


def test_failed_run_email_carries_the_error(mailbox: Mailbox) -> None:
    doc = run_doc(status="failed", metrics={}, error="StrategyError: signals have NaN at bar 12")
    send_email("alice@example.com", [summarize(doc, "failed")], settings=mailbox.settings())
    ((_, _, message),) = mailbox.messages
    assert message["Subject"] == ("[QuantLab] Run 'golden cross' failed: StrategyError: signals "
                                  "have NaN at bar 12")
    text, markup = bodies(message)
    assert "Error: StrategyError: signals have NaN at bar 12" in text
    assert "Error: StrategyError" in markup


def test_html_escapes_what_users_typed(mailbox: Mailbox) -> None:
    doc = run_doc(name="<script>alert(1)</script>")
    send_email("alice@example.com", [summarize(doc, "completed")], settings=mailbox.settings())
    _, markup = bodies(mailbox.messages[0][2])
    assert "<script>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup


def test_a_digest_summarises_several_runs_in_one_email(mailbox: Mailbox) -> None:
    summaries = [
        summarize(run_doc("R1", "fast"), "completed"),
        summarize(run_doc("R2", "slow", metrics={"sharpe": 0.4}), "completed"),
        summarize(run_doc("R3", "broken", status="failed", metrics={}, error="boom"), "failed"),
    ]
    result = send_email("alice@example.com", summaries, settings=mailbox.settings())
    assert result.ok
    ((_, _, message),) = mailbox.messages
    assert message["Subject"] == "[QuantLab] 3 runs finished (2 completed, 1 failed)"
    text, markup = bodies(message)
    assert text.count("\n- ") == 3
    assert "- Run 'broken' failed: boom  [R3, 2:05]" in text
    assert markup.count("<tr><td>") == 3
    assert "<li>broken: boom</li>" in markup


def test_a_temporary_refusal_is_retried(mailbox: Mailbox) -> None:
    mailbox.replies = ["451 4.3.0 mailbox busy, try again"]
    result = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                        settings=mailbox.settings())
    assert result.ok
    assert [(a.status_code, a.error) for a in result.attempts] == [
        (451, "SMTP 451: 4.3.0 mailbox busy, try again"), (250, None)]
    assert len(mailbox.messages) == 1


def test_a_permanent_refusal_is_not_retried(mailbox: Mailbox) -> None:
    mailbox.replies = ["554 5.7.1 rejected", "250 OK"]
    result = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                        settings=mailbox.settings())
    assert result.status == "failed"
    assert [a.status_code for a in result.attempts] == [554]
    assert mailbox.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_credentials_are_used_and_a_wrong_password_is_final() -> None:
    box = Mailbox(require_auth=True)
    try:
        summary = summarize(run_doc(), "completed")
        good = send_email("alice@example.com", [summary],
                          settings=box.settings(smtp_user="quant", smtp_password="pa55word"))
        assert good.ok and len(box.messages) == 1
        bad = send_email("alice@example.com", [summary],
                         settings=box.settings(smtp_user="quant", smtp_password="wrong"))
        assert bad.status == "failed"
        assert len(bad.attempts) == 1 and bad.attempts[0].status_code == 535
        anonymous = send_email("alice@example.com", [summary], settings=box.settings())
        assert anonymous.status == "failed" and anonymous.attempts[0].status_code == 530
        assert len(box.messages) == 1
    finally:
        box.close()


def test_server_down_is_retried_then_logged() -> None:
    settings = dataclasses.replace(notify_settings.current(), smtp_host="127.0.0.1",
                                   smtp_port=free_port(), webhook_retries=1,
                                   webhook_backoff=0.01)
    result = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                        settings=settings)
    assert result.status == "failed"
    assert len(result.attempts) == 2
    assert "ConnectionRefusedError" in (result.error or "")


def test_email_without_smtp_settings_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTLAB_SMTP_HOST", raising=False)
    result = send_email("alice@example.com", [summarize(run_doc(), "completed")])
    assert result.status == "failed" and len(result.attempts) == 1
    assert "email is not configured: set QUANTLAB_SMTP_HOST" in (result.error or "")


def test_smtp_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("QUANTLAB_SMTP_STARTTLS", "yes")
    monkeypatch.setenv("QUANTLAB_SMTP_USER", "bot@example.com")
    monkeypatch.delenv("QUANTLAB_SMTP_PORT", raising=False)
    monkeypatch.delenv("QUANTLAB_SMTP_FROM", raising=False)
    s = notify_settings.current()
    assert (s.smtp_host, s.smtp_port, s.smtp_starttls, s.smtp_ssl, s.smtp_from) == (
        "smtp.example.com", 587, True, False, "bot@example.com")
    monkeypatch.setenv("QUANTLAB_SMTP_SSL", "1")
    with pytest.raises(Exception, match=r"QUANTLAB_SMTP_SSL and QUANTLAB_SMTP_STARTTLS are both "
                                        r"on; use SSL .* or STARTTLS"):
        notify_settings.current()
    monkeypatch.setenv("QUANTLAB_SMTP_STARTTLS", "maybe")
    with pytest.raises(Exception, match=r"QUANTLAB_SMTP_STARTTLS='maybe' is not a yes/no value"):
        notify_settings.current()
    monkeypatch.setenv("QUANTLAB_SMTP_STARTTLS", "0")
    monkeypatch.setenv("QUANTLAB_SMTP_PORT", "twenty-five")
    with pytest.raises(Exception, match=r"QUANTLAB_SMTP_PORT='twenty-five' is not a whole number"):
        notify_settings.current()


def test_build_message_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        build_message([], "alice@example.com", "quantlab@localhost")
