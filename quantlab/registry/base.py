"""The run registry's contract: the :class:`Registry` base class its backends implement.

A backend (:class:`~quantlab.registry.sqlite.SQLiteRegistry`,
:class:`~quantlab.registry.mongo.MongoRegistry`) implements the abstract methods; everything a
user can get wrong is validated before it reaches them, once for both backends, so they raise
the same errors with the same messages: run fields in :mod:`~quantlab.registry.schema`, filters,
sort keys and paging in :mod:`~quantlab.registry.query`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from quantlab.errors import RunError, RunNotFound, SchemaError
from quantlab.registry.query import RunQuery, RunSort, build_query, check_paging, parse_sort
from quantlab.registry.schema import SCHEMA_VERSION, RunRecord


class Registry(ABC):
    """Where every run, its logs, checkpoint, notifications and result blobs are kept.

    All methods are safe to call from many threads and processes at once. Times are epoch
    seconds (float). Documents go in and come out as plain JSON-compatible dicts; a run's is a
    :class:`~quantlab.registry.schema.RunRecord`.
    """

    SCHEMA_VERSION: int = SCHEMA_VERSION

    #: where the store is, for messages ("sqlite:///…/registry.sqlite", "mongodb://…/quantlab")
    location: str = ""

    # ---- runs -------------------------------------------------------------------------------

    @abstractmethod
    def insert_run(self, doc: RunRecord) -> None:
        """Store a new run. Missing keys get their defaults (:data:`RUN_DEFAULTS`: status
        "queued", queued_at now...). Raises RunError if a run with that id exists, ConfigError
        for an invalid field."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run document; RunNotFound if there is none."""

    @abstractmethod
    def update_run(
        self, run_id: str, fields: RunRecord, *, expect_status: Iterable[str] | None = None
    ) -> bool:
        """Set top-level ``fields`` (the keys of the record to change) atomically (a dict value such as ``metrics`` is replaced whole).

        With ``expect_status`` it is a compare-and-set: the update happens only if the run's
        current status is one of those, and the return value says whether it happened. This is
        how "completed exactly once" and "requeue after a worker died" stay race-free across
        processes. RunNotFound if the run does not exist.
        """

    def find_runs(
        self, *, status: Any = None, strategy: Any = None, symbol: Any = None, tag: Any = None,
        user: Any = None, since: Any = None, until: Any = None, text: str | None = None,
        where: Any = None, sort: str = "-queued_at", limit: int | None = 50, offset: int = 0,
    ) -> list[RunRecord]:
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
        return parse_sort(sort, self.metric_names)

    @abstractmethod
    def _find(self, query: RunQuery, sort: RunSort, limit: int | None, offset: int
              ) -> list[RunRecord]: ...

    @abstractmethod
    def _count(self, query: RunQuery) -> int: ...

    @abstractmethod
    def metric_names(self) -> set[str]:
        """Every metric name recorded on some run."""

    @abstractmethod
    def find_by_hash(self, config_hash: str) -> RunRecord | None:
        """The newest (by finished_at) completed, non-partial, non-cached run with this config
        hash: the result cache's lookup."""

    @abstractmethod
    def stale_runs(self, heartbeat_before: float) -> list[RunRecord]:
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

    @abstractmethod
    def get_notification(self, notification_id: str) -> dict[str, Any] | None:
        """One notification (whose ``user`` it is for, ``read`` ...), or None."""

    # ---- preferences -------------------------------------------------------------------------

    @abstractmethod
    def get_preferences(self, user: str) -> dict[str, Any]:
        """The user's preferences ({} if none were saved)."""

    @abstractmethod
    def set_preferences(self, user: str, prefs: Mapping[str, Any]) -> None:
        """Replace the user's preferences."""

    # ---- trial ledger (quantlab.research.ledger) ----------------------------------------------

    @abstractmethod
    def record_trials(self, group: str, trials: Mapping[str, float | None]) -> int:
        """Add ``{trial key: per-bar Sharpe ratio or None}`` to the ledger ``group`` (a strategy
        on a data set); a trial already there keeps its first entry, except that an unknown SR
        (None: a run cancelled before its result) is filled in by a known one. Returns how many
        were new."""

    @abstractmethod
    def trial_ledger(self, group: str) -> dict[str, float | None]:
        """Every trial of ``group``: ``{trial key: per-bar Sharpe ratio or None}``."""

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


def run_not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run '{run_id}' — list runs with ql.runs()", run_id=run_id)
