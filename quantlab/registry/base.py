"""The run registry's contract: the :class:`Registry` base class and the helpers its backends share.

A backend (:class:`~quantlab.registry.sqlite.SQLiteRegistry`,
:class:`~quantlab.registry.mongo.MongoRegistry`) implements the abstract methods; everything a
user can get wrong (filters, sort keys, metric thresholds, run fields) is validated here once,
so both backends raise the same errors with the same messages.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from quantlab.errors import (
    ConfigError,
    RunError,
    RunNotFound,
    SchemaError,
    did_you_mean,
)
from quantlab.registry.schema import RUN_STATUSES

SCHEMA_VERSION = 2

LOG_LEVELS = ("debug", "info", "warning", "error")
WHERE_OPS = (">=", "<=", "==", "!=", ">", "<")

# Every run document has these keys; insert_run fills the ones a caller leaves out.
RUN_DEFAULTS: dict[str, Any] = {
    "name": "",
    "user": None,
    "tags": [],
    "config": {},
    "config_hash": None,
    "strategy": None,
    "symbols": [],
    "engine_version": None,
    "data_fingerprint": None,
    "status": "queued",
    "progress": 0.0,
    "step": None,
    "bars_done": 0,
    "eta_seconds": None,
    "queued_at": None,  # filled with the insert time
    "started_at": None,
    "finished_at": None,
    "heartbeat_at": None,
    "worker": None,
    "attempts": 0,
    "error": None,
    "traceback": None,
    "metrics": {},
    "result_ref": None,
    "report_ref": None,
    "cached_from": None,
    "partial": False,
    "priority": 0,
    "estimated_seconds": None,
    "cancel_requested": False,
}

# Fields find_runs can sort by directly (each is an indexed or stored column in every backend);
# any other sort key must be a metric name.
SORT_FIELDS = (
    "queued_at", "started_at", "finished_at", "heartbeat_at", "name", "status", "strategy",
    "user", "progress", "priority", "attempts", "id",
)

_WHERE_CLAUSE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>[<>=!]+)\s*(?P<value>[-+]?[0-9_.eE+-]+%?)\s*$"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLOB_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")





# --------------------------------------------------------------------------- documents


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json_document(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A plain-JSON copy of ``doc`` (dates become ISO strings, numpy scalars Python numbers), so
    every backend stores and returns exactly the same document."""
    try:
        return dict(json.loads(json.dumps(doc, default=_json_default)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} cannot be stored: {exc}; store only strings, numbers, booleans, lists and "
            f"dicts (convert other objects with str() first)", field=what
        ) from None


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, default=_json_default, separators=(",", ":"))


def clean_metrics(metrics: Any) -> dict[str, float | None]:
    """Metric values as floats; NaN and infinities become None (undefined, e.g. a Sharpe ratio of
    a flat equity curve), because JSON cannot carry them and no threshold should match them."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ConfigError(
            f"run field 'metrics' must be a dict of metric name -> number, got "
            f"{type(metrics).__name__}", field="metrics"
        )
    cleaned: dict[str, float | None] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"metric name {name!r} is not valid; use letters, digits and underscores "
                f"(e.g. 'sharpe', 'max_drawdown_pct')", field="metrics"
            )
        if value is None:
            cleaned[name] = None
            continue
        if isinstance(value, bool | str | bytes):
            number = None
        else:
            try:
                number = float(value)  # int, float, numpy scalars
            except (TypeError, ValueError):
                number = None
        if number is None:
            raise ConfigError(
                f"metric '{name}' must be a number, got {value!r}", field="metrics"
            )
        cleaned[name] = number if math.isfinite(number) else None
    return cleaned


def _string_list(value: Any, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"run field '{field_name}' must be a list of strings, got {value!r}; "
            f"write e.g. {field_name}=['a', 'b']", field=field_name
        )
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(
                f"run field '{field_name}' must hold non-empty strings, got {item!r}",
                field=field_name,
            )
    return items


def check_status(status: Any) -> str:
    if status not in RUN_STATUSES:
        raise ConfigError(
            f"unknown run status {status!r}{did_you_mean(str(status), RUN_STATUSES)}; a run is one of "
            f"{', '.join(RUN_STATUSES)}", field="status"
        )
    return str(status)


def normalize_fields(fields: Mapping[str, Any], what: str = "run") -> dict[str, Any]:
    """Validate and normalise the run fields the registry indexes; other keys pass through."""
    for key in fields:
        if not isinstance(key, str) or not key or "." in key or key.startswith("$"):
            raise ConfigError(
                f"{what} field name {key!r} is not valid: names are non-empty strings without "
                f"'.' and not starting with '$' (to set one metric, pass the whole 'metrics' dict)",
                field=str(key),
            )
    out = to_json_document(fields, what)
    if "status" in out:
        check_status(out["status"])
    for key in ("tags", "symbols"):
        if key in out:
            out[key] = _string_list(out[key], key)
    if "metrics" in fields:
        out["metrics"] = clean_metrics(fields["metrics"])
    for key in ("queued_at", "started_at", "finished_at", "heartbeat_at"):
        if out.get(key) is not None:
            out[key] = to_epoch(out[key], key)
    for key in ("partial", "cancel_requested"):
        if key in out:
            out[key] = bool(out[key])
    return out


def new_run_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A complete run document from what the caller gave: defaults filled, fields checked."""
    run_id = doc.get("id")
    if not isinstance(run_id, str) or not run_id.strip():
        raise ConfigError(
            f"a run document needs a non-empty string 'id', got {run_id!r}; ids are created by "
            f"ql.submit", field="id"
        )
    full = {"id": run_id, **RUN_DEFAULTS, **normalize_fields(doc)}
    full["tags"] = list(full["tags"])
    full["symbols"] = list(full["symbols"])
    full["config"] = dict(full["config"] or {})
    full["metrics"] = dict(full["metrics"] or {})
    if full["queued_at"] is None:
        full["queued_at"] = time.time()
    return full


# --------------------------------------------------------------------------- queries


def to_epoch(value: Any, field_name: str) -> float:
    """Epoch seconds from a number, a datetime/date (naive = local time, as Python does) or an ISO
    string."""
    if isinstance(value, bool):
        raise ConfigError(f"'{field_name}' must be a time, got {value!r}", field=field_name)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise ConfigError(
        f"'{field_name}' must be a time: epoch seconds, a datetime, or an ISO string like "
        f"'2024-06-01' or '2024-06-01T09:30:00+00:00'; got {value!r}", field=field_name
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
    if not isinstance(metric, str) or not _NAME.match(metric):
        raise ConfigError(
            f"{metric!r} is not a metric name (letters, digits, underscores); {_WHERE_FORMS}",
            field="where",
        )
    if op not in WHERE_OPS:
        hint = " (use '==' for equality)" if op == "=" else ""
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


def check_blob_key(key: str, what: str = "blob key") -> str:
    if not isinstance(key, str) or not _BLOB_KEY.match(key) or any(
        part in (".", "..") for part in key.split("/")
    ):
        raise ConfigError(
            f"{what} {key!r} is not valid; use a relative path of letters, digits and . _ - = "
            f"separated by '/', e.g. 'runs/<id>/equity.parquet'", field="key"
        )
    return key


def check_collection(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"collection name {name!r} is not valid; use letters, digits and underscores, "
            f"e.g. 'comparisons'", field="collection"
        )
    return name


# --------------------------------------------------------------------------- the base class


class Registry(ABC):
    """Where every run, its logs, checkpoint, notifications and result blobs are kept.

    All methods are safe to call from many threads and processes at once. Times are epoch
    seconds (float). Documents go in and come out as plain JSON-compatible dicts.
    """

    SCHEMA_VERSION: int = SCHEMA_VERSION

    #: where the store is, for messages ("sqlite:///…/registry.sqlite", "mongodb://…/quantlab")
    location: str = ""

    # ---- runs -------------------------------------------------------------------------------

    @abstractmethod
    def insert_run(self, doc: Mapping[str, Any]) -> None:
        """Store a new run. Missing keys get their defaults (status "queued", queued_at now...).
        Raises RunError if a run with that id exists, ConfigError for an invalid field."""

    @abstractmethod
    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run document; RunNotFound if there is none."""

    @abstractmethod
    def update_run(
        self, run_id: str, fields: Mapping[str, Any], *, expect_status: Iterable[str] | None = None
    ) -> bool:
        """Set top-level ``fields`` atomically (a dict value such as ``metrics`` is replaced whole).

        With ``expect_status`` it is a compare-and-set: the update happens only if the run's
        current status is one of those, and the return value says whether it happened. This is
        how "completed exactly once" and "requeue after a worker died" stay race-free across
        processes. RunNotFound if the run does not exist.
        """

    def find_runs(
        self, *, status: Any = None, strategy: Any = None, symbol: Any = None, tag: Any = None,
        user: Any = None, since: Any = None, until: Any = None, text: str | None = None,
        where: Any = None, sort: str = "-queued_at", limit: int | None = 50, offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Runs matching every given filter, sorted and paged.

        status/strategy/symbol/tag/user: a value or a list of values (any of them matches).
        since/until: bounds on queued_at (epoch seconds, datetime, or ISO string), inclusive.
        text: case-insensitive substring of the name. where: metric thresholds such as
        ``"sharpe>1, max_drawdown_pct>=-20"``; a run without that metric does not match.
        sort: a field of SORT_FIELDS or a metric name, "-" prefix for descending; runs lacking
        the key sort as smallest; ties are broken by queued_at then id, newest first.
        """
        query = build_query(status=status, strategy=strategy, symbol=symbol, tag=tag, user=user,
                            since=since, until=until, text=text, where=where)
        check_paging(limit, offset)
        return self._find(query, self._parse_sort(sort), limit, offset)

    def count_runs(
        self, *, status: Any = None, strategy: Any = None, symbol: Any = None, tag: Any = None,
        user: Any = None, since: Any = None, until: Any = None, text: str | None = None,
        where: Any = None,
    ) -> int:
        """How many runs find_runs would return without paging."""
        query = build_query(status=status, strategy=strategy, symbol=symbol, tag=tag, user=user,
                            since=since, until=until, text=text, where=where)
        return self._count(query)

    def _parse_sort(self, sort: str) -> RunSort:
        if not isinstance(sort, str) or not sort.lstrip("-+"):
            raise ConfigError(f"'sort' must be a field or metric name, got {sort!r}", field="sort")
        descending = sort.startswith("-")
        key = sort.lstrip("-+").strip()
        if key in SORT_FIELDS:
            return RunSort(key, descending, is_metric=False)
        known = self.metric_names()
        # A metric name can only be called unknown once some run has recorded metrics.
        if key in known or (not known and _NAME.match(key)):
            return RunSort(key, descending, is_metric=True)
        raise ConfigError(
            f"unknown sort key {key!r}{did_you_mean(key, (*SORT_FIELDS, *known))}; sort by one of "
            f"{', '.join(SORT_FIELDS)} or a recorded metric ({', '.join(sorted(known))}), with "
            f"a '-' prefix for descending, e.g. sort='-sharpe'", field="sort"
        )

    @abstractmethod
    def _find(self, query: RunQuery, sort: RunSort, limit: int | None, offset: int
              ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _count(self, query: RunQuery) -> int: ...

    @abstractmethod
    def metric_names(self) -> set[str]:
        """Every metric name recorded on some run."""

    @abstractmethod
    def find_by_hash(self, config_hash: str) -> dict[str, Any] | None:
        """The newest (by finished_at) completed, non-partial, non-cached run with this config
        hash: the result cache's lookup."""

    @abstractmethod
    def stale_runs(self, heartbeat_before: float) -> list[dict[str, Any]]:
        """Runs with status "running" whose last sign of life (heartbeat_at, else started_at)
        is older than ``heartbeat_before``: their worker probably died."""

    def delete_run(self, run_id: str) -> None:
        """Delete the run with its logs, checkpoint and result blobs (``runs/<id>/``).
        RunNotFound if absent.

        A run answered from the result cache (``cached_from``) shows its original's blobs, so
        blobs go with the last run that shows them: deleting an original whose cached copies
        remain keeps its blobs, and deleting the last copy of an original deleted earlier
        removes them."""
        doc = self.get_run(run_id)
        self._delete_run_records(run_id)
        if not self._cached_copies(run_id):
            self.delete_blobs(f"runs/{run_id}/")
        original = doc.get("cached_from")
        if original and not self._cached_copies(original) and not self._has_run(original):
            self.delete_blobs(f"runs/{original}/")

    def _has_run(self, run_id: str) -> bool:
        try:
            self.get_run(run_id)
        except RunNotFound:
            return False
        return True

    @abstractmethod
    def _delete_run_records(self, run_id: str) -> None:
        """Delete the run's document, logs and checkpoint (not its blobs). RunNotFound if
        absent."""

    @abstractmethod
    def _cached_copies(self, run_id: str) -> list[str]:
        """Ids of the runs answered from the cache of run ``run_id``."""

    # ---- logs --------------------------------------------------------------------------------

    @abstractmethod
    def append_log(self, run_id: str, message: str, level: str = "info",
                   ts: float | None = None) -> None:
        """Add a log line to a run (level: debug, info, warning, error)."""

    @abstractmethod
    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """``{ts, level, message}`` dicts oldest first; ``limit`` keeps the last N."""

    # ---- checkpoints -------------------------------------------------------------------------

    @abstractmethod
    def save_checkpoint(self, run_id: str, state: bytes, meta: Mapping[str, Any]) -> None:
        """Replace the run's checkpoint (one per run) atomically."""

    @abstractmethod
    def load_checkpoint(self, run_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """``(state, meta)`` of the run's checkpoint, or None."""

    @abstractmethod
    def delete_checkpoint(self, run_id: str) -> None:
        """Remove the run's checkpoint if it has one."""

    # ---- notifications -----------------------------------------------------------------------

    @abstractmethod
    def add_notification(self, doc: Mapping[str, Any]) -> str:
        """Store an in-app notification (``user``, ``run_id``, ``kind``, ``title``, ``body``...);
        adds ``id``, ``created_at`` and ``read=False``; returns the id."""

    @abstractmethod
    def list_notifications(self, user: str, *, unread_only: bool = False,
                           limit: int = 50) -> list[dict[str, Any]]:
        """A user's notifications, newest first."""

    @abstractmethod
    def mark_read(self, notification_id: str) -> bool:
        """Mark as read; False when there is no such notification."""

    # ---- preferences -------------------------------------------------------------------------

    @abstractmethod
    def get_preferences(self, user: str) -> dict[str, Any]:
        """The user's preferences ({} if none were saved)."""

    @abstractmethod
    def set_preferences(self, user: str, prefs: Mapping[str, Any]) -> None:
        """Replace the user's preferences."""

    # ---- generic documents (comparisons...) --------------------------------------------------

    @abstractmethod
    def save_document(self, collection: str, doc: Mapping[str, Any]) -> str:
        """Insert (or replace, when ``doc`` has an ``id``) a small document; returns its id."""

    @abstractmethod
    def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        """The document; RunError naming the collection if absent."""

    @abstractmethod
    def list_documents(self, collection: str, limit: int = 100) -> list[dict[str, Any]]:
        """The collection's documents, newest saved first."""

    @abstractmethod
    def delete_document(self, collection: str, doc_id: str) -> bool:
        """Delete; False when there was no such document."""

    # ---- blobs -------------------------------------------------------------------------------

    @abstractmethod
    def put_blob(self, key: str, data: bytes) -> None:
        """Store bytes under a key such as ``runs/<id>/equity.parquet``, replacing atomically."""

    @abstractmethod
    def get_blob(self, key: str) -> bytes:
        """The bytes; RunError if there is no such blob."""

    @abstractmethod
    def delete_blobs(self, prefix: str) -> int:
        """Delete every blob whose key starts with ``prefix``; returns how many."""

    # ---- schema ------------------------------------------------------------------------------

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version of the store as it is now."""

    @abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Upgrade an older store in place, keeping every run; returns (before, after)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections this object opened; do not use it afterwards (get a fresh one
        from :func:`quantlab.registry.open_registry` after :func:`quantlab.registry.reset`)."""

    # ---- shared helpers ----------------------------------------------------------------------

    def _too_new(self, found: int) -> SchemaError:
        return SchemaError(
            f"the registry at {self.location} has schema {found}, newer than this QuantLab "
            f"understands ({self.SCHEMA_VERSION}); upgrade quantlab (pip install -U quantlab) "
            f"in this environment", found=found, expected=self.SCHEMA_VERSION,
        )

    @staticmethod
    def _missing_blob(key: str, location: str) -> RunError:
        return RunError(
            f"no result blob {key!r} in the registry at {location}; the run may have been "
            f"deleted or not finished — check ql.get_run(<id>).status", key=key
        )

    @staticmethod
    def _missing_document(collection: str, doc_id: str) -> RunError:
        return RunError(
            f"no document {doc_id!r} in '{collection}'; list them with "
            f"registry.list_documents({collection!r})", collection=collection, id=doc_id
        )


def check_level(level: str) -> str:
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {level!r}{did_you_mean(str(level), LOG_LEVELS)}; use one of "
            f"{', '.join(LOG_LEVELS)}", field="level"
        )
    return level


def run_not_found(run_id: str) -> Exception:
    from quantlab.errors import RunNotFound

    return RunNotFound(f"no run '{run_id}' — list runs with ql.runs()", run_id=run_id)


def expected_statuses(expect_status: Iterable[str] | None) -> frozenset[str] | None:
    if expect_status is None:
        return None
    values = [expect_status] if isinstance(expect_status, str) else list(expect_status)
    return frozenset(check_status(v) for v in values)


def new_notification(doc: Mapping[str, Any]) -> dict[str, Any]:
    user = doc.get("user")
    if not isinstance(user, str) or not user:
        raise ConfigError(f"a notification needs the 'user' it is for, got {user!r}",
                          field="user")
    full = to_json_document(doc, "notification")
    full.setdefault("id", uuid.uuid4().hex)
    full["created_at"] = time.time()
    full["read"] = False
    return full


def with_id(doc: dict[str, Any]) -> dict[str, Any]:
    doc_id = doc.get("id") or uuid.uuid4().hex
    if not isinstance(doc_id, str):
        raise ConfigError(f"a document's 'id' must be a string, got {doc_id!r}", field="id")
    return {**doc, "id": doc_id}
