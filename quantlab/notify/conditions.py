"""A small, safe language for metric conditions: ``sharpe > 1.5 and max_drawdown_pct > -20``.

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
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from quantlab.errors import ConfigError

#: Every metric a condition may name (the engine's summary metrics).
METRIC_NAMES: tuple[str, ...] = (
    "equity_final",
    "total_return_pct",
    "cagr_pct",
    "volatility_ann_pct",
    "sharpe",
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
