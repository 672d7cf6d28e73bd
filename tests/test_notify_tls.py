"""TLS: HTTPS webhooks and SMTP over STARTTLS/SSL, against local servers with a certificate made
for the test (trusted through SSL_CERT_FILE, as an install with a private CA would do)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from quantlab.notify.mail import send_email
from quantlab.notify.summary import summarize
from quantlab.notify.webhook import send_webhook
from tests.support.notify import SECRET, Mailbox, Receiver, fast_settings, run_doc


@dataclasses.dataclass
class Certificate:
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quantlab test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return Certificate(certfile, keyfile)


@pytest.fixture
def trusted(certificate: Certificate, monkeypatch: pytest.MonkeyPatch) -> Certificate:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.certfile))
    return certificate


@pytest.fixture
def https_receiver(certificate: Certificate) -> Iterator[Receiver]:
    server = Receiver(tls=certificate.server_context())
    yield server
    server.close()


PAYLOAD = {"type": "run.completed", "run": {"id": "R1"}}


def test_https_webhook_checks_the_certificate_against_the_host_name(
        trusted: Certificate, https_receiver: Receiver) -> None:
    # by name (SNI + host name check on "localhost", connection pinned to the checked address)
    by_name = https_receiver.url.replace("127.0.0.1", "localhost")
    result = send_webhook(by_name, SECRET, PAYLOAD, delivery_id="t1", event="completed",
                          settings=fast_settings())
    assert result.ok, result.attempts
    (request,) = https_receiver.requests
    assert request.verified() and request.headers["Host"].startswith("localhost:")


def test_an_untrusted_certificate_is_refused_without_retrying(
        https_receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    result = send_webhook(https_receiver.url, SECRET, PAYLOAD, delivery_id="t2",
                          event="completed", settings=fast_settings())
    assert result.status == "failed" and len(result.attempts) == 1
    assert "TLS certificate refused" in (result.error or "")
    assert https_receiver.requests == []


def test_email_over_starttls(trusted: Certificate) -> None:
    box = Mailbox(tls_context=trusted.server_context(), require_starttls=True)
    try:
        plain = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                           settings=box.settings(webhook_retries=0))
        assert plain.status == "failed" and plain.attempts[0].status_code == 530  # TLS required
        secure = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                            settings=box.settings(smtp_starttls=True))
        assert secure.ok and len(box.messages) == 1
    finally:
        box.close()


def test_email_over_implicit_tls(trusted: Certificate) -> None:
    box = Mailbox(ssl_context=trusted.server_context())
    try:
        result = send_email("alice@example.com", [summarize(run_doc(), "completed")],
                            settings=box.settings(smtp_ssl=True))
        assert result.ok, result.attempts
        assert box.messages[0][2]["Subject"].startswith("[QuantLab] Run 'golden cross'")
    finally:
        box.close()
