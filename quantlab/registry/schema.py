"""The run record's schema: what a run document holds, its defaults, and the checks every stored
field goes through (declared here once, so both backends store the same document and raise the
same errors; :mod:`quantlab.jobs.lifecycle` says which status transitions are allowed).

:class:`RunRecord` names every key QuantLab writes to a run document, with its type;
:data:`RUN_DEFAULTS` gives each key but ``id`` its default, and ``insert_run`` fills the ones a
caller leaves out. A record may carry more keys (a user's own fields pass through untouched), but
QuantLab's code reads and writes only these.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import PurePath
from typing import Any, TypedDict, cast

from quantlab.errors import ConfigError, did_you_mean

SCHEMA_VERSION = 2
"""The version of the stores' layout (tables, indexes); ``Registry.migrate`` upgrades older ones."""


class RunStatus(StrEnum):
    """A run's status. A ``StrEnum``: each member equals its string (``RunStatus.QUEUED ==
    "queued"``), so records and events keep plain strings."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATUSES: tuple[str, ...] = tuple(RunStatus)


class RunRecord(TypedDict, total=False):
    """A run document, as ``Registry.get_run`` returns it and ``insert_run``/``update_run`` take
    it. Every key is optional in the type because an update names only the keys it changes;
    a stored run has all of them (``insert_run`` fills :data:`RUN_DEFAULTS`). Times are epoch
    seconds."""

    # -- identity and what was asked for (written at submit) --
    id: str
    name: str
    user: str | None
    tags: list[str]
    config: dict[str, Any]  # the canonical config
    config_hash: str | None  # None while a symbol still has to be fetched
    strategy: str | None
    symbols: list[str]
    interval: str | None
    engine_version: str | None
    data_fingerprint: str | None
    data_chunks: dict[str, Any] | None  # per-symbol fingerprints by chunk of rows (run diff)
    priority: int
    # -- the queue --
    status: str  # a RunStatus value
    queued_at: float | None  # filled with the insert time
    task_id: str | None  # the queue message that will run it (deleted from the queue on cancel)
    position: int | None  # 1-based place in the queue when submitted; None once it runs
    work_units: float | None  # simulated bars: bars x symbols x combinations (for estimates)
    combinations: int | None  # parameter combinations (1 for a single backtest)
    fetch_symbols: list[str]  # symbols the worker fetches before it runs
    estimated_seconds: float | None
    requeued_at: float | None  # when the reaper last put it back (its worker died)
    cancel_requested: bool
    # -- execution --
    started_at: float | None
    heartbeat_at: float | None
    worker: str | None
    attempts: int
    progress: float  # fraction 0..1
    step: str | None
    bars_done: int
    eta_seconds: float | None
    # -- the outcome --
    finished_at: float | None
    error: str | None
    traceback: str | None
    metrics: dict[str, float | None]  # NaN/inf stored as None
    result_ref: str | None  # blob prefix, "runs/<id>/"
    result_blobs: list[str]  # blob names under result_ref
    best_params: dict[str, Any] | None  # the parameters of the result (a sweep's best)
    partial: bool  # a cancelled sweep's finished part, or a merged sweep missing a shard
    cached_from: str | None  # the run whose result a cache hit reuses
    overfitting: dict[str, Any] | None  # a sweep's PBO, DSR of its best ... (quantlab.research)
    report_ref: str | None
    # -- reruns (quantlab.reports.rerun) --
    rerun_of: str | None
    last_rerun: dict[str, Any] | None  # {run_id, status, at, ...} of the latest rerun


RUN_DEFAULTS: RunRecord = {
    "name": "",
    "user": None,
    "tags": [],
    "config": {},
    "config_hash": None,
    "strategy": None,
    "symbols": [],
    "interval": None,
    "engine_version": None,
    "data_fingerprint": None,
    "data_chunks": None,
    "priority": 0,
    "status": RunStatus.QUEUED.value,
    "queued_at": None,
    "task_id": None,
    "position": None,
    "work_units": None,
    "combinations": None,
    "fetch_symbols": [],
    "estimated_seconds": None,
    "requeued_at": None,
    "cancel_requested": False,
    "started_at": None,
    "heartbeat_at": None,
    "worker": None,
    "attempts": 0,
    "progress": 0.0,
    "step": None,
    "bars_done": 0,
    "eta_seconds": None,
    "finished_at": None,
    "error": None,
    "traceback": None,
    "metrics": {},
    "result_ref": None,
    "result_blobs": [],
    "best_params": None,
    "partial": False,
    "cached_from": None,
    "overfitting": None,
    "report_ref": None,
    "rerun_of": None,
    "last_rerun": None,
}
"""Every key of :class:`RunRecord` but ``id``, with the value a new run starts with."""

RUN_FIELDS: frozenset[str] = frozenset(RunRecord.__annotations__)
"""The keys of a run record (what QuantLab writes to a run document)."""

TIME_FIELDS = ("queued_at", "started_at", "finished_at", "heartbeat_at", "requeued_at")
_FLAG_FIELDS = ("partial", "cancel_requested")
_LIST_FIELDS = ("tags", "symbols")

LOG_LEVELS = ("debug", "info", "warning", "error")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLOB_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")


def is_name(text: str) -> bool:
    """A metric or collection name: letters, digits and underscores, not starting with a digit."""
    return bool(_NAME.match(text))


def as_run_record(doc: Mapping[str, Any]) -> RunRecord:
    """A stored document (plain JSON) as the :class:`RunRecord` it is. Not checked at run time:
    the writes are typed (``insert_run``/``update_run`` take a RunRecord, so mypy checks every
    key and value QuantLab writes), and tests/test_registry_record.py checks real runs'
    documents against the declared types."""
    return cast(RunRecord, dict(doc))


# --------------------------------------------------------------------------- plain JSON


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


# --------------------------------------------------------------------------- field checks


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
        if not isinstance(name, str) or not is_name(name):
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


def expected_statuses(expect_status: Iterable[str] | None) -> frozenset[str] | None:
    """The statuses an ``update_run(..., expect_status=...)`` compares against, checked."""
    if expect_status is None:
        return None
    values = [expect_status] if isinstance(expect_status, str) else list(expect_status)
    return frozenset(check_status(v) for v in values)


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
    for key in _LIST_FIELDS:
        if key in out:
            out[key] = _string_list(out[key], key)
    if "metrics" in fields:
        out["metrics"] = clean_metrics(fields["metrics"])
    for key in TIME_FIELDS:
        if out.get(key) is not None:
            out[key] = to_epoch(out[key], key)
    for key in _FLAG_FIELDS:
        if key in out:
            out[key] = bool(out[key])
    return out


def new_run_document(doc: Mapping[str, Any]) -> RunRecord:
    """A complete run document from what the caller gave: defaults filled, fields checked."""
    run_id = doc.get("id")
    if not isinstance(run_id, str) or not run_id.strip():
        raise ConfigError(
            f"a run document needs a non-empty string 'id', got {run_id!r}; ids are created by "
            f"ql.submit", field="id"
        )
    given = normalize_fields(doc)
    # a fresh copy of the defaults: their lists and dicts must not be shared between runs
    full = as_run_record({"id": run_id, **copy.deepcopy(RUN_DEFAULTS), **given})
    full["config"] = dict(full.get("config") or {})
    full["metrics"] = dict(full.get("metrics") or {})
    if full.get("queued_at") is None:
        full["queued_at"] = time.time()
    return full


# --------------------------------------------------------------------------- other documents


def check_level(level: str) -> str:
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {level!r}{did_you_mean(str(level), LOG_LEVELS)}; use one of "
            f"{', '.join(LOG_LEVELS)}", field="level"
        )
    return level


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
    if not isinstance(name, str) or not is_name(name):
        raise ConfigError(
            f"collection name {name!r} is not valid; use letters, digits and underscores, "
            f"e.g. 'comparisons'", field="collection"
        )
    return name


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
