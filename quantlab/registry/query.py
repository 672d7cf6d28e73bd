"""Run searches: the filters, metric thresholds, sort keys and paging of ``find_runs`` and
``count_runs``, validated once into a :class:`RunQuery` and a :class:`RunSort` that each backend
translates (SQL in :mod:`~quantlab.registry.sqlite`, a filter document in
:mod:`~quantlab.registry.mongo`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantlab.errors import ConfigError, did_you_mean
from quantlab.registry.schema import check_status, is_name, to_epoch

WHERE_OPS = (">=", "<=", "==", "!=", ">", "<")

# Fields find_runs can sort by directly (each is an indexed or stored column in every backend);
# any other sort key must be a metric name.
SORT_FIELDS = (
    "queued_at", "started_at", "finished_at", "heartbeat_at", "name", "status", "strategy",
    "user", "progress", "priority", "attempts", "id",
)

_WHERE_CLAUSE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>[<>=!]+)\s*(?P<value>[-+]?[0-9_.eE+-]+%?)\s*$"
)


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str
    value: float


@dataclass(frozen=True)
class RunQuery:
    """Validated filters of find_runs/count_runs, in a form every backend translates."""

    statuses: tuple[str, ...] | None = None
    strategies: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    users: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    where: tuple[Threshold, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RunSort:
    key: str
    descending: bool
    is_metric: bool


def _values(value: Any, field_name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise ConfigError(
            f"filter '{field_name}' must be a string or a list of strings, got {value!r}",
            field=field_name,
        )
    out = tuple(items)
    for item in out:
        if not isinstance(item, str):
            raise ConfigError(
                f"filter '{field_name}' must be a string or a list of strings, got {item!r}",
                field=field_name,
            )
    return out


_WHERE_FORMS = (
    "write thresholds as 'sharpe>1, max_drawdown_pct>=-20' or as a list of "
    "(metric, op, value) tuples, with op one of > >= < <= == !="
)


def parse_where(where: str | Sequence[Any] | None) -> tuple[Threshold, ...]:
    """``"sharpe>1, max_drawdown_pct>=-20"`` or ``[("sharpe", ">", 1)]`` -> thresholds."""
    if where is None:
        return ()
    if isinstance(where, str):
        clauses: list[tuple[Any, Any, Any]] = []
        for part in (p for p in where.split(",") if p.strip()):
            match = _WHERE_CLAUSE.match(part)
            if match is None:
                raise ConfigError(
                    f"cannot read the metric threshold {part.strip()!r}; {_WHERE_FORMS}",
                    field="where",
                )
            clauses.append((match["metric"], match["op"], match["value"]))
    elif isinstance(where, Sequence):
        clauses = []
        for item in where:
            if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 3:
                raise ConfigError(
                    f"metric threshold {item!r} is not a (metric, op, value) tuple; {_WHERE_FORMS}",
                    field="where",
                )
            clauses.append((item[0], item[1], item[2]))
    else:
        raise ConfigError(f"'where' cannot be {type(where).__name__}; {_WHERE_FORMS}", field="where")
    return tuple(_threshold(*clause) for clause in clauses)


def _threshold(metric: Any, op: Any, value: Any) -> Threshold:
    if not isinstance(metric, str) or not is_name(metric):
        raise ConfigError(
            f"{metric!r} is not a metric name (letters, digits, underscores); {_WHERE_FORMS}",
            field="where",
        )
    if op not in WHERE_OPS:
        # '=>' is '>=' written backwards; '>>' a doubled key: both have a nearest valid op
        guess = str(op)[::-1] if str(op)[::-1] in WHERE_OPS else str(op)
        hint = (" (use '==' for equality)" if op == "="
                else did_you_mean(guess, WHERE_OPS, 0.5))
        raise ConfigError(
            f"unknown comparison {op!r} in the threshold on '{metric}'{hint}; valid: "
            f"{' '.join(WHERE_OPS)}", field="where"
        )
    if isinstance(value, str):
        text = value.replace("_", "")
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(
                f"threshold value {value!r} for '{metric}' is not a number; {_WHERE_FORMS}",
                field="where",
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ConfigError(
            f"threshold value {value!r} for '{metric}' is not a number; {_WHERE_FORMS}",
            field="where",
        )
    return Threshold(metric, str(op), number)


def build_query(
    *, status: Any = None, strategy: Any = None, symbol: Any = None, tag: Any = None,
    user: Any = None, since: Any = None, until: Any = None, text: str | None = None,
    where: Any = None,
) -> RunQuery:
    statuses = _values(status, "status")
    for item in statuses or ():
        check_status(item)
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"filter 'text' must be a string, got {text!r}", field="text")
    return RunQuery(
        statuses=statuses,
        strategies=_values(strategy, "strategy"),
        symbols=_values(symbol, "symbol"),
        tags=_values(tag, "tag"),
        users=_values(user, "user"),
        since=None if since is None else to_epoch(since, "since"),
        until=None if until is None else to_epoch(until, "until"),
        text=text or None,
        where=parse_where(where),
    )


def check_paging(limit: int | None, offset: int) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"'limit' must be a whole number >= 0 or None, got {limit!r}",
                          field="limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"'offset' must be a whole number >= 0, got {offset!r}", field="offset")



def parse_sort(sort: str, known_metrics: Callable[[], Iterable[str]]) -> RunSort:
    """``"-sharpe"`` -> sort by the metric ``sharpe``, descending. ``known_metrics`` gives the
    metric names recorded on some run (asked only for a key that is not a field: it is a query);
    a key that is neither a field nor one of them is refused once some run has metrics."""
    if not isinstance(sort, str) or not sort.lstrip("-+"):
        raise ConfigError(f"'sort' must be a field or metric name, got {sort!r}", field="sort")
    descending = sort.startswith("-")
    key = sort.lstrip("-+").strip()
    if key in SORT_FIELDS:
        return RunSort(key, descending, is_metric=False)
    known = set(known_metrics())
    # A metric name can only be called unknown once some run has recorded metrics.
    if key in known or (not known and is_name(key)):
        return RunSort(key, descending, is_metric=True)
    raise ConfigError(
        f"unknown sort key {key!r}{did_you_mean(key, (*SORT_FIELDS, *known))}; sort by one of "
        f"{', '.join(SORT_FIELDS)} or a recorded metric ({', '.join(sorted(known))}), with "
        f"a '-' prefix for descending, e.g. sort='-sharpe'", field="sort"
    )


def check_known_values(field_name: str, asked: Iterable[str], known: Iterable[str],
                       how: str) -> None:
    """Refuse a filter value nothing has (``strategy:sma_crosover``), naming the closest known
    one. For explaining an empty search: a value that matches no run is not an error by itself
    (the run may come), so callers ask only once a search found nothing."""
    choices = sorted(set(known))
    for value in asked:
        if value not in choices:
            raise ConfigError(
                f"no run has {field_name} {value!r}{did_you_mean(value, choices)}; {how}",
                field=field_name,
            )


def check_threshold_metrics(thresholds: Iterable[Threshold], known_metrics: Iterable[str]
                            ) -> None:
    """Refuse a threshold on a metric no run records (``sharpee>1``), once some run has
    metrics, naming the closest recorded metric."""
    known = sorted(set(known_metrics))
    for threshold in thresholds:
        if known and threshold.metric not in known:
            raise ConfigError(
                f"no run records the metric {threshold.metric!r}"
                f"{did_you_mean(threshold.metric, known)}; thresholds can use "
                f"{', '.join(known)}", field="where",
            )
