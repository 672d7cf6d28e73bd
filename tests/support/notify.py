"""A mailbox (SMTP server) and a webhook receiver of the tests' own, on free ports."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import ssl
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from quantlab.notify import settings as notify_settings
from quantlab.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.procs import free_port, wait_for

SECRET = "receiver-shared-secret-0123456789"


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def verified(self, secret: str = SECRET) -> bool:
        return verify_signature(secret, self.headers[TIMESTAMP_HEADER], self.body,
                                self.headers[SIGNATURE_HEADER])


class Mailbox:
    """An SMTP server on a free loopback port that keeps what it receives. ``replies`` are
    answers to DATA used in turn (e.g. "451 4.3.0 try again later"); then "250 OK"."""

    def __init__(self, *, require_auth: bool = False, **controller_options: Any) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.replies: list[str] = []
        self._lock = threading.Lock()
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with mailbox._lock:
                    if mailbox.replies:
                        return mailbox.replies.pop(0)
                    message = email.message_from_bytes(envelope.content,
                                                       policy=email.policy.default)
                    assert isinstance(message, EmailMessage)
                    mailbox.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                             message))
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                         auth_data: Any) -> AuthResult:
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"quant"
                  and auth_data.password == b"pa55word")
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {}
        if require_auth:
            kwargs = {"authenticator": authenticate, "auth_required": True,
                      "auth_require_tls": False}
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     **kwargs, **controller_options)
        self.controller.start()

    def settings(self, **overrides: Any) -> notify_settings.NotifySettings:
        base = dict(smtp_host="127.0.0.1", smtp_port=self.port, smtp_user=None,
                    smtp_password=None, smtp_ssl=False, smtp_starttls=False,
                    smtp_from="quantlab@lab.example.com", webhook_retries=3,
                    webhook_backoff=0.01, webhook_backoff_max=0.05)
        return dataclasses.replace(notify_settings.current(), **{**base, **overrides})

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, list[str],
                                                                       EmailMessage]]:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} email(s)",
                 interval=0.01)
        return list(self.messages)

    def close(self) -> None:
        self.controller.stop()


def run_doc(run_id: str = "01JRUN", name: str = "golden cross", **extra: Any) -> dict[str, Any]:
    doc = {"id": run_id, "name": name, "user": "tester", "status": "completed",
           "strategy": "sma_crossover", "symbols": ["AAA", "BBB"], "config": {"params": {}},
           "queued_at": 1_700_000_000.0, "started_at": 1_700_000_010.0,
           "finished_at": 1_700_000_135.0,
           "metrics": {"total_return_pct": 23.456, "sharpe": 1.734, "max_drawdown_pct": -12.3,
                       "n_trades": 42, "profit_factor": float("inf")}}
    return {**doc, **extra}


class Receiver:
    """A webhook receiver on a free loopback port. ``script`` says how to answer each request in
    turn: a status code, or ("sleep", seconds, code); after the script, 200."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.scheme = "https" if tls else "http"
        self.script: list[Any] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    action = receiver.script.pop(0) if receiver.script else 200
                if isinstance(action, tuple):
                    _, seconds, action = action
                    time.sleep(seconds)
                try:
                    self.send_response(action)
                    if 300 <= action < 400:
                        self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                    if action == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook?team=quant"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        wait_for(lambda: len(self.requests) >= count, timeout, f"{count} webhook request(s)",
                 interval=0.01)
        return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fast_settings(**overrides: Any) -> notify_settings.NotifySettings:
    """Settings with tiny backoffs so retries take milliseconds; private targets allowed."""
    base = dict(webhook_allow_private=True, webhook_timeout=5.0, webhook_retries=3,
                webhook_backoff=0.01, webhook_backoff_max=0.05)
    return dataclasses.replace(notify_settings.current(), **{**base, **overrides})
