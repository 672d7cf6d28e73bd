"""Validation of a run's ``notify`` block and of user preferences.

No test reaches the internet: "public" URLs use a literal public IP (93.184.216.34) that is only
validated, never contacted; private ones use literal private IPs and ``localhost``.
"""

from __future__ import annotations

import pytest

from quantlab.errors import ConfigError
from quantlab.notifyspec import (
    check_webhook_url,
    is_public_address,
    validate_notify_config,
    validate_preferences,
)

PUBLIC = "https://93.184.216.34/hooks/quantlab"
SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture(autouse=True)
def _no_private_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTLAB_WEBHOOK_ALLOW_PRIVATE", raising=False)


def test_a_full_notify_block_is_normalised() -> None:
    out = validate_notify_config({
        "webhooks": [{"url": PUBLIC, "secret": SECRET}],
        "email": "alice@example.com",
        "when": "  sharpe > 1.5 and max_drawdown_pct > -20 ",
        "events": ["Completed", "sweep finished"],
    })
    assert out == {
        "webhooks": [{"url": PUBLIC, "secret": SECRET}],
        "email": ["alice@example.com"],
        "when": "sharpe > 1.5 and max_drawdown_pct > -20",
        "events": ["completed", "sweep_finished"],
    }


def test_an_empty_block_follows_the_user_preferences() -> None:
    assert validate_notify_config({}) == {"webhooks": [], "email": [], "when": None,
                                          "events": None}
    assert validate_notify_config(None)["events"] is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "https://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
    ],
)
def test_private_and_loopback_webhooks_are_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_notify_config({"webhooks": [{"url": url, "secret": SECRET}]})
    err = info.value
    assert err.field == "notify.webhooks[0].url"
    message = str(err)
    assert "loopback/private/link-local address" in message
    assert "cannot be used to reach the internal network" in message
    assert "QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1" in message


def test_private_webhooks_are_allowed_on_a_trusted_install(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("QUANTLAB_WEBHOOK_ALLOW_PRIVATE", "1")
    out = validate_notify_config({"webhooks": [{"url": "http://127.0.0.1:9/x", "secret": SECRET}]})
    assert out["webhooks"][0]["url"] == "http://127.0.0.1:9/x"


def test_public_addresses_are_recognised() -> None:
    import ipaddress

    assert is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert is_public_address(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))
    assert not is_public_address(ipaddress.ip_address("fd00::1"))
    assert not is_public_address(ipaddress.ip_address("224.0.0.1"))


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://93.184.216.34/x", "is not an http(s) URL; only http:// and https://"),
        ("file:///etc/passwd", "is not an http(s) URL"),
        ("93.184.216.34/hook", "is not an http(s) URL"),
        ("https://", "has no host name"),
        ("https://user:pw@93.184.216.34/x", "carries credentials; remove 'user:password@'"),
        ("https://93.184.216.34:99999/x", "has an invalid port"),
        ("", "a webhook URL must be text"),
    ],
)
def test_malformed_webhook_urls(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_webhook_url(url, field="notify.webhooks[0].url")
    assert fragment in str(info.value)
    assert str(info.value).startswith("notify.webhooks[0].url: ")


def test_unresolvable_host_is_refused_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_dns(*args: object, **kwargs: object) -> None:  # no test may query a real resolver
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ConfigError, match=r"cannot be resolved .*check the spelling of "
                                          r"'hooks.quantlab.invalid'"):
        check_webhook_url("https://hooks.quantlab.invalid/x")


@pytest.mark.parametrize(
    ("block", "field", "fragment"),
    [
        ({"webhooks": [{"url": PUBLIC}]}, "notify.webhooks[0].secret",
         "every webhook needs a secret"),
        ({"webhooks": [{"url": PUBLIC, "secret": "short"}]}, "notify.webhooks[0].secret",
         "the webhook secret is 5 characters long; use at least 16"),
        ({"webhooks": [{"url": PUBLIC, "secret": SECRET, "method": "PUT"}]},
         "notify.webhooks[0].method", "unknown key 'method'"),
        ({"webhooks": PUBLIC}, "notify.webhooks", "give a list of {url, secret} entries"),
        ({"webhooks": ["https://93.184.216.34/x"]}, "notify.webhooks[0]",
         "a webhook is a mapping {url, secret}"),
        ({"email": ["alice@example.com", "bob at example.com"]}, "notify.email[1]",
         "'bob at example.com' is not an email address; write it like 'alice@example.com'"),
        ({"email": "alice@localhost"}, "notify.email[0]", "is not an email address"),
        ({"email": 42}, "notify.email", "give an address or a list of addresses"),
        ({"when": "sharpe >> 1"}, "notify.when", "expected a number or a metric name"),
        ({"when": "sharp > 1"}, "notify.when", "did you mean 'sharpe'?"),
        ({"events": ["complete"]}, "notify.events", "unknown event 'complete'; did you mean "
                                                    "'completed'?"),
        ({"events": 3}, "notify.events", "give a list of events"),
        ({"emails": ["a@b.co"]}, "notify.emails", "unknown key 'emails' — did you mean 'email'?"),
        ({"webhook": []}, "notify.webhook", "did you mean 'webhooks'?"),
    ],
)
def test_bad_notify_blocks_name_the_field_and_the_fix(block: dict, field: str, fragment: str
                                                      ) -> None:
    with pytest.raises(ConfigError) as info:
        validate_notify_config(block)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_notify_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"notify: expected a mapping like \{email"):
        validate_notify_config(["alice@example.com"])


def test_secret_hint_says_how_to_make_one() -> None:
    with pytest.raises(ConfigError, match=r"secrets.token_hex\(32\)"):
        validate_notify_config({"webhooks": [{"url": PUBLIC, "secret": ""}]})


def test_preferences_get_defaults_and_are_checked() -> None:
    prefs = validate_preferences({"email": " alice@example.com "})
    assert prefs == {"email": "alice@example.com", "email_enabled": True, "in_app": True,
                     "webhooks": [], "events": ["completed", "failed"], "when": None}
    with pytest.raises(ConfigError, match="in_app: expected true or false, got 'yes'"):
        validate_preferences({"in_app": "yes"})
    with pytest.raises(ConfigError, match=r"preferences: unknown key 'in-app' — did you mean "
                                          r"'in_app'\?"):
        validate_preferences({"in-app": False})
    with pytest.raises(ConfigError, match="loopback/private"):
        validate_preferences({"webhooks": [{"url": "http://192.168.1.1/", "secret": SECRET}]})


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://[::127.0.0.1]/hook", "::7f00:1"),  # IPv4-compatible loopback
        ("http://[::10.1.2.3]/hook", "::a01:203"),  # IPv4-compatible private
        ("http://[64:ff9b::127.0.0.1]/hook", "64:ff9b::7f00:1"),  # NAT64 loopback
        ("http://[64:ff9b::169.254.169.254]/x", "64:ff9b::a9fe:a9fe"),  # NAT64 metadata
        ("http://[64:ff9b::192.168.1.1]/hook", "64:ff9b::c0a8:101"),  # NAT64 private
        ("http://[2002:7f00:1::]/hook", "2002:7f00:1::"),  # 6to4 of 127.0.0.1
        ("http://[2002:a00:1::1]/hook", "2002:a00:1::1"),  # 6to4 of 10.0.0.1
        ("http://[2002:c0a8:101::5]/hook", "2002:c0a8:101::5"),  # 6to4 of 192.168.1.1
    ],
)
def test_ipv6_forms_of_private_and_loopback_addresses_are_refused(url: str, address: str
                                                                  ) -> None:
    with pytest.raises(ConfigError) as info:
        validate_notify_config({"webhooks": [{"url": url, "secret": SECRET}]})
    message = str(info.value)
    assert f"resolves to {address}, a loopback/private/link-local address" in message
    assert "QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1" in message
    assert info.value.address == address


def test_a_host_resolving_to_a_nat64_loopback_is_refused(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import socket

    def nat64(host: str, port: int, **kwargs: object) -> list:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::7f00:1", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", nat64)
    with pytest.raises(ConfigError, match=r"resolves to 64:ff9b::7f00:1, a loopback"):
        check_webhook_url("https://hooks.quantlab.invalid/x")


def test_embedded_public_ipv4_addresses_stay_allowed() -> None:
    import ipaddress

    for text in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"):
        assert is_public_address(ipaddress.ip_address(text)), text


def test_a_refused_webhook_message_never_quotes_its_token() -> None:
    url = "http://[::127.0.0.1]/services/T000/B000/XXXXSECRET"
    with pytest.raises(ConfigError) as info:
        validate_notify_config({"webhooks": [{"url": url, "secret": SECRET}]})
    assert "XXXXSECRET" not in str(info.value)
    assert "'http://[::127.0.0.1]/services/***' resolves to ::7f00:1" in str(info.value)
    assert "XXXXSECRET" not in str(info.value.url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis.lab:6379/0", "redis://:***@redis.lab:6379/0"),
        ("redis://default:s3cret@redis.lab:6379", "redis://default:***@redis.lab:6379"),
        ("mongodb://u:s3cret@db:27017/ql?authSource=admin", "mongodb://u:***@db:27017/ql?authSource=admin"),
        ("redis://redis.lab:6379/0?password=s3cret", "redis://redis.lab:6379/0?password=***"),
        ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/services/***"),
        ("https://discord.com/api/webhooks/1234/s3cret", "https://discord.com/api/webhooks/***"),
        ("https://api.telegram.org/bot12:s3cret/sendMessage", "https://api.telegram.org/***"),
        ("https://fn.example.net/api/hook?code=s3cret&team=q", "https://fn.example.net/api/hook?code=***&team=q"),
        ("https://s3cret@hooks.example.com/x", "https://***@hooks.example.com/x"),
        ("http://127.0.0.1:8080/hook?team=quant", "http://127.0.0.1:8080/hook?team=quant"),
        ("/home/alice/.quantlab", "/home/alice/.quantlab"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    from quantlab.settings import redact, redact_text

    assert redact(url) == shown
    assert redact_text(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"


def test_settings_print_without_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab import settings
    from quantlab.notify import settings as notify_settings

    monkeypatch.setenv("QUANTLAB_REDIS_URL", "redis://:s3cret-pw@redis.lab:6379/0")
    monkeypatch.setenv("QUANTLAB_MONGO_URL", "mongodb://ql:s3cret-pw@mongo.lab/ql")
    monkeypatch.setenv("QUANTLAB_SMTP_PASSWORD", "s3cret-pw")
    shown = repr(settings.current()) + repr(notify_settings.current())
    assert "s3cret-pw" not in shown
    assert "redis_url='redis://:***@redis.lab:6379/0'" in shown
    assert "mongo_url='mongodb://ql:***@mongo.lab/ql'" in shown
    assert "smtp_password='***'" in shown
