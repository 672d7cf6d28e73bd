"""The team registry: MongoDB through pymongo, result blobs in GridFS.

Workers on many machines share one MongoDB, so nothing here needs a shared filesystem: run
documents live in ``runs`` (``_id`` = run id, the run's fields at top level so they can be
indexed), checkpoints in ``checkpoints`` (inline up to 8 MiB, GridFS beyond), result blobs in
the GridFS bucket ``blobs``. Indexes mirror the SQLite backend's: status, strategy, user,
queued_at, config_hash, name, multikey symbols/tags, and a wildcard index on ``metrics.*``.

Schema 1 (before indexes and defaults) was bare run documents; schema 2 adds the indexes, the
``meta`` collection with the schema version and the recorded metric names, and fills default
values of fields older documents lack.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from quantlab.errors import ConfigError, RunError, ServerUnreachable, require
from quantlab.registry.base import Registry, run_not_found
from quantlab.registry.query import RunQuery, RunSort
from quantlab.registry.schema import (
    RUN_DEFAULTS,
    SCHEMA_VERSION,
    RunRecord,
    as_run_record,
    check_blob_key,
    check_collection,
    check_level,
    expected_statuses,
    new_notification,
    new_run_document,
    normalize_fields,
    to_json_document,
    with_id,
)
from quantlab.settings import redact

# Checkpoints bigger than this go to GridFS (a MongoDB document is limited to 16 MiB).
INLINE_CHECKPOINT_BYTES = 8 * 1024 * 1024

_OPS_MONGO = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "==": "$eq", "!=": "$ne"}

_RUN_INDEXES: list[list[tuple[str, int]]] = [
    [("status", 1), ("queued_at", -1)],
    [("strategy", 1), ("queued_at", -1)],
    [("user", 1), ("queued_at", -1)],
    [("queued_at", -1)],
    [("config_hash", 1), ("finished_at", -1)],
    [("name", 1)],
    [("symbols", 1)],
    [("tags", 1)],
    [("metrics.$**", 1)],
    [("status", 1), ("heartbeat_at", 1)],
]


def _strip_id(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(doc or {})
    out.pop("_id", None)
    return out


def _run(doc: Mapping[str, Any]) -> RunRecord:
    """A stored run without MongoDB's ``_id`` (its copy of ``id``)."""
    return as_run_record(_strip_id(doc))


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _reachable(method: _Method) -> _Method:
    """``method`` raising ``ServerUnreachable`` when MongoDB does not answer (down, restarting,
    unreachable network: pymongo's ``ConnectionFailure`` family) instead of pymongo's error."""
    @functools.wraps(method)
    def call(self: MongoRegistry, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except self._errors.ConnectionFailure as exc:
            raise self._unreachable(exc) from None
    return call  # type: ignore[return-value]


def _every_call_reachable(cls: type[MongoRegistry]) -> type[MongoRegistry]:
    """Wrap each method the class defines (the base class's methods reach MongoDB only through
    them), so every registry call maps a lost connection the same way."""
    for name, value in list(vars(cls).items()):
        if callable(value) and name not in ("__init__", "_unreachable", "close"):
            setattr(cls, name, _reachable(value))
    return cls


@_every_call_reachable
class MongoRegistry(Registry):
    """Registry in the MongoDB database ``db_name`` at ``url`` (or on a given ``client``)."""

    def __init__(self, url: str | None = None, db_name: str = "quantlab", *, client: Any = None,
                 auto_migrate: bool = True, server_selection_timeout_ms: int = 10_000):
        pymongo = require("pymongo", "mongo", "the MongoDB registry")
        self._gridfs = require("gridfs", "mongo", "the MongoDB registry")
        self._errors = pymongo.errors
        self._owns_client = client is None
        if client is None:
            if not url:
                raise ConfigError("MongoRegistry needs a url such as mongodb://host:27017 "
                                  "(QUANTLAB_MONGO_URL)", field="QUANTLAB_MONGO_URL")
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=server_selection_timeout_ms)
        self.client = client
        self.location = f"{redact(url or 'mongodb://(client)')} (database '{db_name}')"
        self.db = client[db_name]
        self.runs = self.db["runs"]
        self._fs = self._gridfs.GridFS(self.db, collection="blobs")
        self._checkpoint_fs = self._gridfs.GridFS(self.db, collection="checkpoint_states")
        self._url = redact(url or "")
        self._open_store(auto_migrate)

    def _unreachable(self, exc: Exception) -> ServerUnreachable:
        """The error a lost or refused connection to MongoDB becomes: the (redacted) URL and
        the fix, never pymongo's traceback."""
        fix = ("check that the server is running and QUANTLAB_MONGO_URL is right, or unset "
               "QUANTLAB_MONGO_URL to use the local SQLite registry")
        return ServerUnreachable(f"cannot reach MongoDB at {self.location}: {exc}. "
                                 f"{fix[0].upper()}{fix[1:]}", url=self._url, fix=fix)

    # ---- schema ------------------------------------------------------------------------------

    def schema_version(self) -> int:
        meta = self.db["meta"].find_one({"_id": "schema"})
        if meta is not None:
            return int(meta["version"])
        return 1 if self.runs.find_one({}, {"_id": 1}) is not None else 0

    def _open_store(self, auto_migrate: bool) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise self._too_new(version)
        if version == 0 or (version < SCHEMA_VERSION and auto_migrate):
            self.migrate()

    def migrate(self) -> tuple[int, int]:
        before = self.schema_version()
        if before > SCHEMA_VERSION:
            raise self._too_new(before)
        if before < SCHEMA_VERSION:
            # Every step is idempotent, so two processes migrating at once do no harm.
            for keys in _RUN_INDEXES:
                self.runs.create_index(keys)
            self.db["logs"].create_index([("run_id", 1), ("ts", 1), ("_id", 1)])
            self.db["notifications"].create_index([("user", 1), ("created_at", -1)])
            self.db["documents"].create_index([("collection", 1), ("saved_at", -1)])
            for key, default in RUN_DEFAULTS.items():
                self.runs.update_many({key: {"$exists": False}}, {"$set": {key: default}})
            for doc in self.runs.find({"id": {"$exists": False}}, {"_id": 1}):
                self.runs.update_one({"_id": doc["_id"]}, {"$set": {"id": doc["_id"]}})
            names: set[str] = set()
            for doc in self.runs.find({"metrics": {"$ne": {}}}, {"metrics": 1}):
                names.update((doc.get("metrics") or {}).keys())
            self._record_metric_names(names)
            self.db["meta"].update_one({"_id": "schema"},
                                       {"$set": {"version": SCHEMA_VERSION}}, upsert=True)
        return before, self.schema_version()

    def _record_metric_names(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            self.db["meta"].update_one({"_id": "metric_names"},
                                       {"$addToSet": {"names": {"$each": names}}}, upsert=True)

    def metric_names(self) -> set[str]:
        doc = self.db["meta"].find_one({"_id": "metric_names"})
        return set(doc["names"]) if doc else set()

    # ---- runs --------------------------------------------------------------------------------

    def insert_run(self, doc: RunRecord) -> None:
        full = new_run_document(doc)
        try:
            self.runs.insert_one({"_id": full["id"], **full})
        except self._errors.DuplicateKeyError:
            raise RunError(
                f"a run with id '{full['id']}' already exists; ids must be unique — let "
                f"ql.submit create them", run_id=full["id"]
            ) from None
        self._record_metric_names(full["metrics"])

    def get_run(self, run_id: str) -> RunRecord:
        doc = self.runs.find_one({"_id": run_id})
        if doc is None:
            raise run_not_found(run_id)
        return _run(doc)

    def update_run(self, run_id: str, fields: RunRecord, *,
                   expect_status: Iterable[str] | None = None) -> bool:
        changes = normalize_fields(fields)
        if changes.pop("id", run_id) != run_id:
            raise ConfigError(f"a run's id cannot change (tried '{run_id}' -> "
                              f"'{fields['id']}')", field="id")
        expected = expected_statuses(expect_status)
        selector: dict[str, Any] = {"_id": run_id}
        if expected is not None:
            selector["status"] = {"$in": sorted(expected)}
        if changes:
            matched = self.runs.update_one(selector, {"$set": changes}).matched_count
        else:
            matched = self.runs.count_documents(selector, limit=1)
        if "metrics" in changes:
            self._record_metric_names(changes["metrics"])
        if matched:
            return True
        if self.runs.count_documents({"_id": run_id}, limit=1) == 0:
            raise run_not_found(run_id)
        return False

    def _filter(self, query: RunQuery) -> dict[str, Any]:
        flt: dict[str, Any] = {}
        for key, values in (("status", query.statuses), ("strategy", query.strategies),
                            ("user", query.users), ("symbols", query.symbols),
                            ("tags", query.tags)):
            if values is not None:
                flt[key] = {"$in": list(values)}
        span: dict[str, float] = {}
        if query.since is not None:
            span["$gte"] = query.since
        if query.until is not None:
            span["$lte"] = query.until
        if span:
            flt["queued_at"] = span
        if query.text:
            flt["name"] = {"$regex": re.escape(query.text), "$options": "i"}
        thresholds = []
        for t in query.where:
            condition: dict[str, Any] = {_OPS_MONGO[t.op]: t.value}
            if t.op == "!=":
                # $ne alone would match runs that lack the metric; they must not match.
                condition["$gt"] = float("-inf")
            thresholds.append({f"metrics.{t.metric}": condition})
        if thresholds:
            flt["$and"] = thresholds
        return flt

    def _find(self, query: RunQuery, sort: RunSort, limit: int | None, offset: int
              ) -> list[RunRecord]:
        key = f"metrics.{sort.key}" if sort.is_metric else ("_id" if sort.key == "id" else sort.key)
        order = [(key, -1 if sort.descending else 1), ("queued_at", -1), ("_id", -1)]
        cursor = self.runs.find(self._filter(query)).sort(order).skip(offset)
        if limit is not None:
            if limit == 0:
                return []
            cursor = cursor.limit(limit)
        return [_run(doc) for doc in cursor]

    def _count(self, query: RunQuery) -> int:
        return int(self.runs.count_documents(self._filter(query)))

    def find_by_hash(self, config_hash: str) -> RunRecord | None:
        docs = list(
            self.runs.find({"config_hash": config_hash, "status": "completed",
                            "partial": {"$ne": True}, "cached_from": None})
            .sort([("finished_at", -1), ("queued_at", -1)]).limit(1)
        )
        return _run(docs[0]) if docs else None

    def stale_runs(self, heartbeat_before: float) -> list[RunRecord]:
        t = float(heartbeat_before)
        flt = {"status": "running", "$or": [
            {"heartbeat_at": {"$lt": t}},
            {"heartbeat_at": None, "started_at": {"$lt": t}},
            {"heartbeat_at": None, "started_at": None, "queued_at": {"$lt": t}},
        ]}
        return [_run(d) for d in self.runs.find(flt).sort([("queued_at", 1)])]

    def _delete_run_records(self, run_id: str) -> None:
        if self.runs.delete_one({"_id": run_id}).deleted_count == 0:
            raise run_not_found(run_id)
        self.db["logs"].delete_many({"run_id": run_id})
        self.delete_checkpoint(run_id)

    def _cached_copies(self, run_id: str) -> list[str]:
        return [str(doc["_id"]) for doc in self.runs.find({"cached_from": run_id}, {"_id": 1})]

    # ---- logs --------------------------------------------------------------------------------

    def append_log(self, run_id: str, message: str, level: str = "info",
                   ts: float | None = None) -> None:
        check_level(level)
        self.db["logs"].insert_one({"run_id": run_id, "ts": time.time() if ts is None else float(ts),
                                    "level": level, "message": str(message)})

    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        logs = self.db["logs"]
        if limit is None:
            docs = list(logs.find({"run_id": run_id}).sort([("ts", 1), ("_id", 1)]))
        elif limit <= 0:
            docs = []
        else:
            docs = list(logs.find({"run_id": run_id}).sort([("ts", -1), ("_id", -1)])
                        .limit(int(limit)))[::-1]
        return [{"ts": d["ts"], "level": d["level"], "message": d["message"]} for d in docs]

    # ---- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, run_id: str, state: bytes, meta: Mapping[str, Any]) -> None:
        data = bytes(state)
        doc: dict[str, Any] = {"meta": to_json_document(meta, "checkpoint meta"),
                               "saved_at": time.time(), "state": None, "state_file": None}
        if len(data) <= INLINE_CHECKPOINT_BYTES:
            doc["state"] = data
        else:
            doc["state_file"] = self._checkpoint_fs.put(data, filename=run_id)
        old = self.db["checkpoints"].find_one_and_replace({"_id": run_id}, doc, upsert=True)
        if old and old.get("state_file") is not None:
            self._checkpoint_fs.delete(old["state_file"])

    def load_checkpoint(self, run_id: str) -> tuple[bytes, dict[str, Any]] | None:
        for _ in range(3):  # a concurrent save may delete the GridFS file we were about to read
            doc = self.db["checkpoints"].find_one({"_id": run_id})
            if doc is None:
                return None
            if doc.get("state_file") is None:
                return bytes(doc["state"]), dict(doc["meta"])
            try:
                return self._checkpoint_fs.get(doc["state_file"]).read(), dict(doc["meta"])
            except self._gridfs.errors.NoFile:
                continue
        return None

    def delete_checkpoint(self, run_id: str) -> None:
        old = self.db["checkpoints"].find_one_and_delete({"_id": run_id})
        if old and old.get("state_file") is not None:
            self._checkpoint_fs.delete(old["state_file"])

    # ---- notifications -----------------------------------------------------------------------

    def add_notification(self, doc: Mapping[str, Any]) -> str:
        full = new_notification(doc)
        self.db["notifications"].insert_one({"_id": full["id"], **full})
        return str(full["id"])

    def list_notifications(self, user: str, *, unread_only: bool = False,
                           limit: int = 50) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"user": user}
        if unread_only:
            flt["read"] = False
        cursor = self.db["notifications"].find(flt).sort([("created_at", -1), ("_id", -1)])
        return [_strip_id(d) for d in cursor.limit(int(limit))]

    def mark_read(self, notification_id: str) -> bool:
        result = self.db["notifications"].update_one({"_id": notification_id},
                                                     {"$set": {"read": True}})
        return bool(result.matched_count)

    def get_notification(self, notification_id: str) -> dict[str, Any] | None:
        doc = self.db["notifications"].find_one({"_id": notification_id})
        return None if doc is None else _strip_id(doc)

    # ---- preferences -------------------------------------------------------------------------

    def get_preferences(self, user: str) -> dict[str, Any]:
        doc = self.db["preferences"].find_one({"_id": user})
        return dict(doc["prefs"]) if doc else {}

    def set_preferences(self, user: str, prefs: Mapping[str, Any]) -> None:
        self.db["preferences"].replace_one(
            {"_id": user}, {"prefs": to_json_document(prefs, "preferences")}, upsert=True
        )

    # ---- trial ledger ------------------------------------------------------------------------

    def record_trials(self, group: str, trials: Mapping[str, float | None]) -> int:
        now = time.time()
        docs = {f"{group}/{key}": {
            "_id": f"{group}/{key}", "group": group, "trial": key, "recorded_at": now,
            "sr": None if sr is None or not math.isfinite(sr) else float(sr)}
            for key, sr in trials.items()}
        known = {d["_id"]: d.get("sr") for d in self.db["trials"].find(
            {"_id": {"$in": list(docs)}}, {"_id": 1, "sr": 1})}
        for key, sr in known.items():
            # a trial keeps its first entry; only an SR it did not know (a cancelled run's)
            # is filled in by a later one
            if sr is None and docs[key]["sr"] is not None:
                self.db["trials"].update_one({"_id": key, "sr": None},
                                             {"$set": {"sr": docs[key]["sr"]}})
        new = [doc for key, doc in docs.items() if key not in known]
        if not new:
            return 0
        try:
            return len(self.db["trials"].insert_many(new, ordered=False).inserted_ids)
        except self._errors.BulkWriteError as exc:  # another writer recorded some meanwhile
            return int(exc.details.get("nInserted", 0))

    def trial_ledger(self, group: str) -> dict[str, float | None]:
        found = self.db["trials"].find({"group": group}, {"trial": 1, "sr": 1})
        return {d["trial"]: d.get("sr") for d in found}

    # ---- documents ---------------------------------------------------------------------------

    def save_document(self, collection: str, doc: Mapping[str, Any]) -> str:
        check_collection(collection)
        full = with_id(to_json_document(doc, f"document for '{collection}'"))
        self.db["documents"].replace_one(
            {"_id": f"{collection}/{full['id']}"},
            {"collection": collection, "saved_at": time.time(), "doc": full}, upsert=True,
        )
        return str(full["id"])

    def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        check_collection(collection)
        found = self.db["documents"].find_one({"_id": f"{collection}/{doc_id}"})
        if found is None:
            raise self._missing_document(collection, doc_id)
        return dict(found["doc"])

    def list_documents(self, collection: str, limit: int = 100) -> list[dict[str, Any]]:
        check_collection(collection)
        cursor = self.db["documents"].find({"collection": collection}).sort([("saved_at", -1)])
        return [dict(d["doc"]) for d in cursor.limit(int(limit))]

    def delete_document(self, collection: str, doc_id: str) -> bool:
        check_collection(collection)
        result = self.db["documents"].delete_one({"_id": f"{collection}/{doc_id}"})
        return bool(result.deleted_count)

    # ---- blobs -------------------------------------------------------------------------------

    def put_blob(self, key: str, data: bytes) -> None:
        check_blob_key(key)
        new_id = self._fs.put(bytes(data), filename=key)
        # Readers pick the newest version, so dropping the older ones afterwards is safe.
        for old in self._fs.find({"filename": key, "_id": {"$ne": new_id}}):
            self._fs.delete(old._id)

    def get_blob(self, key: str) -> bytes:
        check_blob_key(key)
        for _ in range(3):  # a concurrent put may delete the version we were reading
            try:
                return bytes(self._fs.get_last_version(filename=key).read())
            except self._gridfs.errors.NoFile:
                break
            except self._gridfs.errors.CorruptGridFile:
                continue
        raise self._missing_blob(key, self.location)

    def delete_blobs(self, prefix: str) -> int:
        check_blob_key(prefix.rstrip("/"), "blob prefix")
        deleted = 0
        for grid_file in self._fs.find({"filename": {"$regex": "^" + re.escape(prefix)}}):
            self._fs.delete(grid_file._id)
            deleted += 1
        return deleted

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
