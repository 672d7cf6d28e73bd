"""What a notification setting may say, checked without sending anything: the pure part of
notifications, low enough for ``config.py`` to validate a run's ``notify:`` block without
loading the dispatcher (:mod:`quantlab.notify`, which sends, imports from here).

Three parts:

- **Metric conditions** (``when: "sharpe > 1.5 and max_drawdown_pct > -20"``): a tokenizer and
  a recursive-descent parser, never ``eval``;
- **Webhook URLs**: their form, and that their host resolves only to public addresses;
- **Whole settings**: a run config's ``notify`` block (:func:`validate_notify_config`) and a
  user's notification preferences (:func:`validate_preferences`).

Every bad value raises :class:`~quantlab.errors.ConfigError` naming the field and the fix.

Conditions
----------
Never ``eval``: a tokenizer and a recursive-descent parser build a tiny tree of comparisons
joined by ``and``/``or``/``not``, which is then evaluated against a run's metrics. The grammar::

    condition  := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := operand CMP operand (CMP operand)*     # 1 < sharpe < 3 is a chain, as in Python
    operand    := ["-" | "+"] (NUMBER | METRIC)
    CMP        := "<" | "<=" | ">" | ">=" | "==" | "!="

Evaluation uses three-valued logic: a metric that a run does not have (``None``, NaN, absent,
e.g. ``profit_factor`` of a run without trades) makes its comparison *unknown*, ``not unknown``
stays unknown, and an unknown final answer does not notify. So ``not sharpe > 1`` does not fire
for a run that has no Sharpe ratio at all.

Webhook URLs
------------
A webhook URL must be http(s) and must not resolve to a loopback, private, link-local or
otherwise non-public address (unless ``QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1``): a webhook must not
become a way into the internal network. The same check runs again at send time (DNS can change
between validation and delivery), see :mod:`quantlab.notify.webhook`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import operator
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from quantlab.errors import ConfigError
from quantlab.settings import env_flag, redact


def private_webhooks_allowed() -> bool:
    """``QUANTLAB_WEBHOOK_ALLOW_PRIVATE``: whether webhooks may reach loopback/private addresses
    (read on every call, like every setting)."""
    return env_flag("QUANTLAB_WEBHOOK_ALLOW_PRIVATE", False)


# ============================================================================================
# Metric conditions

#: Every metric a condition may name: the engine's summary metrics. A copy of
#: ``quantlab.metrics.METRICS`` (a test keeps them equal): importing metrics.py would load Numba
#: into config validation, which needs none of it.
METRIC_NAMES: tuple[str, ...] = (
    "equity_final",
    "total_return_pct",
    "cagr_pct",
    "volatility_ann_pct",
    "sharpe",
    "sharpe_se",
    "psr",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "max_drawdown_duration",
    "n_trades",
    "open_trades",
    "win_rate_pct",
    "profit_factor",
    "expectancy_pct",
    "best_trade_pct",
    "worst_trade_pct",
    "avg_trade_pct",
    "exposure_pct",
    "buy_hold_return_pct",
    "commissions",
    "rejected_orders",
)

_EXAMPLE = "sharpe > 1.5 and max_drawdown_pct > -20"

_COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_KEYWORDS = {"and", "or", "not"}
# Spellings from other languages that people type; each maps to the one we accept.
_FOREIGN_SPELLINGS = {"&&": "and", "||": "or", "!": "not", "=": "==", "<>": "!=", "=>": ">=",
                      "=<": "<=", "&": "and", "|": "or"}


class ConditionError(ConfigError):
    """A metric condition does not parse or names an unknown metric.

    ``column`` is the 1-based position of the problem in the condition text, ``suggestion`` the
    nearest metric name for a misspelt one.
    """

    field: str | None = None
    column: int | None = None
    suggestion: str | None = None


# --------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "op", "lparen", "rparen", "end"
    text: str
    column: int  # 1-based
    value: float = 0.0


_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?%?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|<>|=>|=<|&&|\|\||[<>=!&|+\-])
  | (?P<lparen>\()
  | (?P<rparen>\))
    """,
    re.VERBOSE,
)


def tokenize(text: str, *, field: str = "when") -> list[Token]:
    """Split a condition into tokens; an unexpected character raises with its column."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            _fail(text, pos + 1, f"unexpected character {text[pos]!r}", field=field)
        assert match is not None
        kind = match.lastgroup or ""
        lexeme = match.group()
        column = pos + 1
        pos = match.end()
        if kind == "space":
            continue
        if kind == "number":
            if lexeme.endswith("%"):
                _fail(text, column, f"write {lexeme[:-1]!r} without '%': metrics ending in _pct "
                      "are already in percent", field=field)
            tokens.append(Token("number", lexeme, column, float(lexeme.replace("_", ""))))
        elif kind == "name":
            lowered = lexeme.lower()
            tokens.append(Token("op" if lowered in _KEYWORDS else "name",
                                lowered if lowered in _KEYWORDS else lexeme, column))
        else:
            if lexeme in _FOREIGN_SPELLINGS:
                _fail(text, column, f"{lexeme!r} is not an operator here; write "
                      f"{_FOREIGN_SPELLINGS[lexeme]!r}", field=field)
            tokens.append(Token(kind, lexeme, column))
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# --------------------------------------------------------------------------------------------
# Syntax tree

Truth = bool | None  # None: unknown (a metric the run does not have)


@dataclass(frozen=True)
class Operand:
    metric: str | None
    number: float = 0.0
    sign: float = 1.0

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        if self.metric is None:
            return self.number
        raw = metrics.get(self.metric)
        if raw is None or isinstance(raw, bool):
            return None
        try:
            number = float(raw)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(number) else self.sign * number

    def __str__(self) -> str:
        if self.metric is None:
            return f"{self.number:g}"
        return f"-{self.metric}" if self.sign < 0 else self.metric


@dataclass(frozen=True)
class Comparison:
    operands: tuple[Operand, ...]
    operators: tuple[str, ...]

    def evaluate(self, metrics: Mapping[str, Any]) -> Truth:
        values = [operand.value(metrics) for operand in self.operands]
        if any(value is None for value in values):
            return None
        return all(
            _COMPARATORS[op](float(left), float(right))  # type: ignore[arg-type]
            for op, left, right in zip(self.operators, values, values[1:])
        )

    def __str__(self) -> str:
        parts = [str(self.operands[0])]
        for op, operand in zip(self.operators, self.operands[1:]):
            parts += [op, str(operand)]
        return " ".join(parts)


@dataclass(frozen=True)
class Not:
    inner: Node

    def evaluate(self, metrics: Mapping[str, Any]) -> Truth:
        value = self.inner.evaluate(metrics)
        return None if value is None else not value

    def __str__(self) -> str:
        return f"not ({self.inner})"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]

    def evaluate(self, metrics: Mapping[str, Any]) -> Truth:
        # Kleene logic: a decisive value (False for and, True for or) wins over unknown.
        decisive = self.op == "or"
        unknown = False
        for item in self.items:
            value = item.evaluate(metrics)
            if value is None:
                unknown = True
            elif value == decisive:
                return decisive
        return None if unknown else not decisive

    def __str__(self) -> str:
        return f" {self.op} ".join(f"({item})" for item in self.items)


Node = Comparison | Not | BoolOp


@dataclass(frozen=True)
class Condition:
    """A parsed condition; ``matches(metrics)`` says whether a run's result satisfies it."""

    text: str
    tree: Node

    def matches(self, metrics: Mapping[str, Any] | None) -> bool:
        """True only when the condition is definitely true for these metrics."""
        return self.tree.evaluate(metrics or {}) is True

    @property
    def metrics(self) -> frozenset[str]:
        """The metric names the condition reads."""
        return frozenset(_names(self.tree))

    def __str__(self) -> str:
        return self.text


def _names(node: Node) -> list[str]:
    if isinstance(node, Comparison):
        return [o.metric for o in node.operands if o.metric is not None]
    if isinstance(node, Not):
        return _names(node.inner)
    return [name for item in node.items for name in _names(item)]


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str, field: str, known: tuple[str, ...]) -> None:
        self.text = text
        self.field = field
        self.known = known
        self.tokens = tokenize(text, field=field)
        self.pos = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_op(self, text: str) -> bool:
        return self.token.kind == "op" and self.token.text == text

    def fail(self, message: str, token: Token | None = None) -> None:
        _fail(self.text, (token or self.token).column, message, field=self.field)

    def found(self) -> str:
        return "the end of the condition" if self.token.kind == "end" else repr(self.token.text)

    def parse(self) -> Node:
        if self.token.kind == "end":
            self.fail("the condition is empty")
        tree = self.or_expr()
        if self.token.kind == "rparen":
            self.fail("')' closes a parenthesis that was never opened")
        if self.token.kind != "end":
            self.fail(f"expected 'and', 'or' or the end of the condition, found {self.found()}")
        return tree

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_op("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.is_op("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Node:
        if self.is_op("not"):
            self.advance()
            return Not(self.not_expr())
        if self.token.kind == "lparen":
            opening = self.advance()
            inner = self.or_expr()
            if self.token.kind != "rparen":
                self.fail(f"expected ')' to close the '(' at column {opening.column}, "
                          f"found {self.found()}")
            self.advance()
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        operands = [self.operand()]
        operators: list[str] = []
        while self.token.kind == "op" and self.token.text in _COMPARATORS:
            operators.append(self.advance().text)
            operands.append(self.operand())
        if not operators:
            first = operands[0]
            self.fail(f"expected a comparison (<, <=, >, >=, ==, !=) after '{first}', found "
                      f"{self.found()}; e.g. {first} > 1")
        return Comparison(tuple(operands), tuple(operators))

    def operand(self) -> Operand:
        sign = 1.0
        if self.token.kind == "op" and self.token.text in ("+", "-"):
            sign = -1.0 if self.advance().text == "-" else 1.0
        token = self.token
        if token.kind == "number":
            self.advance()
            return Operand(None, sign * token.value)
        if token.kind == "name":
            self.advance()
            self.check_metric(token)
            return Operand(token.text, sign=sign)
        self.fail(f"expected a number or a metric name, found {self.found()}")
        raise AssertionError("unreachable")

    def check_metric(self, token: Token) -> None:
        if token.text in self.known:
            return
        nearest = difflib.get_close_matches(token.text.lower(), self.known, n=1, cutoff=0.5)
        hint = (f"did you mean '{nearest[0]}'?" if nearest
                else "known metrics: " + ", ".join(self.known))
        _fail(self.text, token.column, f"unknown metric '{token.text}' — {hint}",
              field=self.field, suggestion=nearest[0] if nearest else None)


def _fail(text: str, column: int, problem: str, *, field: str, **extra: Any) -> None:
    pointer = " " * (column - 1) + "^"
    raise ConditionError(
        f"{field}: {problem} (column {column}).\n  {text}\n  {pointer}\n"
        f"A condition compares metrics with numbers, e.g. {_EXAMPLE!r}.",
        field=field, column=column, text=text, **extra,
    )


def parse_condition(
    text: str, *, field: str = "when", metrics: tuple[str, ...] = METRIC_NAMES
) -> Condition:
    """Parse ``text`` into a :class:`Condition`, or raise :class:`ConditionError`.

    ``field`` names the setting the text came from in error messages (``notify.when``).
    """
    if not isinstance(text, str):
        raise ConditionError(
            f"{field} must be a condition written as text, e.g. {_EXAMPLE!r}; got "
            f"{type(text).__name__}", field=field,
        )
    return Condition(text.strip(), _Parser(text.strip(), field, metrics).parse())


# ============================================================================================
# Webhook URLs and whole settings

#: The run endings a user can subscribe to. ``sweep_finished``: a sweep (a run over more than
#: one parameter set) completed — for people who want to hear about sweeps but not single runs.
EVENT_KINDS: tuple[str, ...] = ("completed", "failed", "cancelled", "sweep_finished")
DEFAULT_EVENTS: tuple[str, ...] = ("completed", "failed")
MIN_SECRET_LENGTH = 16

NOTIFY_KEYS = ("webhooks", "email", "when", "events")
PREFERENCE_KEYS = ("email", "email_enabled", "in_app", "webhooks", "events", "when")

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]$"
)
_SECRET_HINT = "generate one with: python -c \"import secrets; print(secrets.token_hex(32))\""
AddressInfo = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------------------------
# Addresses


def is_public_address(address: AddressInfo) -> bool:
    """True for a globally routable unicast address; False for loopback, private (10/8,
    172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — cloud metadata lives there),
    carrier-grade NAT, multicast, reserved and unspecified addresses, and for an IPv6 address
    that carries such an IPv4 address (IPv4-mapped, IPv4-compatible ``::a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``)."""
    embedded = embedded_ipv4(address)
    if embedded is not None and not is_public_address(embedded):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_6TO4 = ipaddress.IPv6Network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: AddressInfo) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, in any form that a host may route to it:
    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64
    (``64:ff9b::a.b.c.d``) and 6to4 (``2002:AABB:CCDD::``); None for an IPv4 address or
    another IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve_host(host: str, port: int) -> list[AddressInfo]:
    """Every address ``host`` resolves to (a literal IP resolves to itself, without DNS)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[AddressInfo] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed webhook URL."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path + query, what goes on the request line


def parse_webhook_url(url: Any, *, field: str = "webhooks.url") -> WebhookTarget:
    """Parse and check the form of a webhook URL (no DNS); raises ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"{field}: a webhook URL must be text like 'https://hooks.example.com/quantlab'; "
            f"got {url!r}", field=field,
        )
    url = url.strip()
    shown = redact(url)  # messages and logs never quote a webhook's token or password
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{field}: {shown!r} is not an http(s) URL; only http:// and https:// webhooks are "
            f"supported — write e.g. 'https://{parts.netloc or 'hooks.example.com'}/...'",
            field=field, url=shown,
        )
    if not parts.hostname:
        raise ConfigError(f"{field}: {shown!r} has no host name; write e.g. "
                          f"'https://hooks.example.com/quantlab'", field=field, url=shown)
    if parts.username or parts.password:
        raise ConfigError(
            f"{field}: {shown!r} carries credentials; remove 'user:password@' — receivers "
            f"authenticate QuantLab by the request's HMAC signature (the webhook's secret)",
            field=field, url=shown,
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{field}: {shown!r} has an invalid port; use a number from 1 to 65535",
                          field=field, url=shown) from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return WebhookTarget(url, parts.scheme, parts.hostname, port, path)


def check_webhook_url(
    url: Any, *, field: str = "webhooks.url", allow_private: bool | None = None
) -> WebhookTarget:
    """Parse ``url`` and refuse it if its host resolves to a non-public address.

    ``allow_private`` defaults to ``QUANTLAB_WEBHOOK_ALLOW_PRIVATE``.
    """
    target = parse_webhook_url(url, field=field)
    if allow_private is None:
        allow_private = private_webhooks_allowed()
    if allow_private:
        return target
    try:
        addresses = resolve_host(target.host, target.port)
    except OSError as exc:
        raise ConfigError(
            f"{field}: the host of {redact(target.url)!r} cannot be resolved ({exc}); check the spelling "
            f"of '{target.host}' and this machine's DNS", field=field, url=redact(target.url),
        ) from None
    refuse_private_addresses(target, addresses, field=field)
    return target


def refuse_private_addresses(target: WebhookTarget, addresses: Sequence[Any], *,
                             field: str = "url") -> None:
    """ConfigError if any of the host's addresses is not public: the check made when a webhook
    is saved and again, against the addresses actually dialled, when it is sent."""
    refused = [a for a in addresses if not is_public_address(a)]
    if refused:
        raise ConfigError(
            f"{field}: {redact(target.url)!r} resolves to {refused[0]}, a loopback/private/link-local "
            f"address; webhooks may only reach public addresses, so they cannot be used to reach "
            f"the internal network. Use a public URL, or (on a trusted install) set "
            f"QUANTLAB_WEBHOOK_ALLOW_PRIVATE=1", field=field, url=redact(target.url), address=str(refused[0]),
        )


# --------------------------------------------------------------------------------------------
# Values


def check_email(address: Any, *, field: str = "email") -> str:
    """A plausible email address, trimmed; raises ConfigError naming the field."""
    if not isinstance(address, str) or not _EMAIL_RE.match(address.strip()):
        raise ConfigError(
            f"{field}: {address!r} is not an email address; write it like "
            f"'alice@example.com'", field=field, value=address,
        )
    return address.strip()


def check_secret(secret: Any, *, field: str = "webhooks.secret") -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigError(
            f"{field}: every webhook needs a secret (text) that signs its requests so the "
            f"receiver can verify them; {_SECRET_HINT}", field=field,
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{field}: the webhook secret is {len(secret)} characters long; use at least "
            f"{MIN_SECRET_LENGTH} so signatures cannot be guessed — {_SECRET_HINT}", field=field,
        )
    return secret


def check_events(events: Any, *, field: str = "events") -> list[str]:
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, list | tuple):
        raise ConfigError(f"{field}: give a list of events from {list(EVENT_KINDS)}, e.g. "
                          f"['completed', 'failed']", field=field)
    checked: list[str] = []
    for raw in events:
        name = str(raw).strip().lower().replace(" ", "_").replace("-", "_")
        if name not in EVENT_KINDS:
            nearest = difflib.get_close_matches(name, EVENT_KINDS, n=1, cutoff=0.5)
            hint = f"did you mean '{nearest[0]}'? " if nearest else ""
            raise ConfigError(f"{field}: unknown event {raw!r}; {hint}choose from "
                              f"{', '.join(EVENT_KINDS)}", field=field, value=raw,
                              suggestion=nearest[0] if nearest else None)
        if name not in checked:
            checked.append(name)
    return checked


def check_condition(text: Any, *, field: str = "when") -> str | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    return str(parse_condition(text, field=field))


def check_bool(value: Any, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: expected true or false, got {value!r}", field=field)
    return value


def check_webhooks(
    webhooks: Any, *, field: str = "webhooks", allow_private: bool | None = None
) -> list[dict[str, str]]:
    if isinstance(webhooks, Mapping):
        webhooks = [webhooks]
    if not isinstance(webhooks, list | tuple):
        raise ConfigError(f"{field}: give a list of {{url, secret}} entries, e.g. "
                          f"[{{url: 'https://hooks.example.com/q', secret: '...'}}]", field=field)
    checked: list[dict[str, str]] = []
    for index, hook in enumerate(webhooks):
        where = f"{field}[{index}]"
        if not isinstance(hook, Mapping):
            raise ConfigError(f"{where}: a webhook is a mapping {{url, secret}}, got {hook!r}",
                              field=where)
        _reject_unknown(hook, ("url", "secret"), where)
        target = check_webhook_url(hook.get("url"), field=f"{where}.url",
                                   allow_private=allow_private)
        secret = check_secret(hook.get("secret"), field=f"{where}.secret")
        checked.append({"url": target.url, "secret": secret})
    return checked


def check_emails(emails: Any, *, field: str = "email") -> list[str]:
    if isinstance(emails, str):
        emails = [emails]
    if not isinstance(emails, list | tuple):
        raise ConfigError(f"{field}: give an address or a list of addresses, e.g. "
                          f"['alice@example.com']", field=field)
    checked: list[str] = []
    for index, address in enumerate(emails):
        value = check_email(address, field=f"{field}[{index}]")
        if value not in checked:
            checked.append(value)
    return checked


def _reject_unknown(mapping: Mapping[str, Any], allowed: tuple[str, ...], field: str) -> None:
    for key in mapping:
        if key not in allowed:
            nearest = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean '{nearest[0]}'?" if nearest else f"use {', '.join(allowed)}"
            raise ConfigError(f"{field}: unknown key {key!r} — {hint}", field=f"{field}.{key}",
                              suggestion=nearest[0] if nearest else None)


# --------------------------------------------------------------------------------------------
# Whole documents


def validate_notify_config(
    notify: Any, *, field: str = "notify", allow_private: bool | None = None
) -> dict[str, Any]:
    """Validate a run config's ``notify`` block and return it normalised.

    Accepts ``{webhooks: [{url, secret}], email: address | [addresses], when: "<condition>",
    events: [...]}`` (every key optional) and returns all four keys: ``webhooks`` and ``email``
    as lists, ``when`` and ``events`` as ``None`` when not given (the run then follows its
    user's preferences). Raises :class:`ConfigError` naming ``notify.<key>`` and the fix.
    """
    if notify is None:
        notify = {}
    if not isinstance(notify, Mapping):
        raise ConfigError(f"{field}: expected a mapping like {{email: ['alice@example.com'], "
                          f"when: 'sharpe > 1'}}, got {notify!r}", field=field)
    _reject_unknown(notify, NOTIFY_KEYS, field)
    events = notify.get("events")
    return {
        "webhooks": check_webhooks(notify.get("webhooks") or [], field=f"{field}.webhooks",
                                   allow_private=allow_private),
        "email": check_emails(notify.get("email") or [], field=f"{field}.email"),
        "when": check_condition(notify.get("when"), field=f"{field}.when"),
        "events": None if events is None else check_events(events, field=f"{field}.events"),
    }


def default_preferences() -> dict[str, Any]:
    return {
        "email": None,
        "email_enabled": True,
        "in_app": True,
        "webhooks": [],
        "events": list(DEFAULT_EVENTS),
        "when": None,
    }


def validate_preferences(
    prefs: Mapping[str, Any] | None, *, allow_private: bool | None = None
) -> dict[str, Any]:
    """A user's notification preferences, checked and completed with the defaults.

    Keys: ``email`` (address or None), ``email_enabled``, ``in_app``, ``webhooks`` ([{url,
    secret}]), ``events`` (from :data:`EVENT_KINDS`), ``when`` (a metric condition or None).
    """
    prefs = dict(prefs or {})
    _reject_unknown(prefs, PREFERENCE_KEYS, "preferences")
    merged = {**default_preferences(), **prefs}
    email = merged["email"]
    return {
        "email": None if not email else check_email(email, field="email"),
        "email_enabled": check_bool(merged["email_enabled"], field="email_enabled"),
        "in_app": check_bool(merged["in_app"], field="in_app"),
        "webhooks": check_webhooks(merged["webhooks"] or [], allow_private=allow_private),
        "events": check_events(merged["events"] or [], field="events"),
        "when": check_condition(merged["when"], field="when"),
    }
