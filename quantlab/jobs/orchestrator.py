"""The submit side of a run's life, and the reaper every worker runs.

``submit`` validates the config in the caller, answers a cache hit at once, enforces the queue
limit, checks the home and the queue, records the run ``queued`` and only then enqueues its id
(atomic: a submit that raises leaves nothing to execute). ``cancel`` takes a queued run off
the queue or asks a running one to stop at its next chunk. ``reap`` puts runs whose worker died
back on the queue (and re-enqueues queued runs whose queue message was lost).

Every status change goes through :func:`quantlab.jobs.lifecycle.transition` (a compare-and-set
on the registry status, then one event), so that two processes racing on a run cannot both win.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sqlite3
import statistics
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from quantlab import data
from quantlab import settings as settings_mod
from quantlab.config import BacktestConfig
from quantlab.engine import ENGINE_VERSION, sweep_combinations, validate
from quantlab.errors import (
    ConfigError,
    QuantlabError,
    QueueFull,
    RunError,
    RunNotFound,
    ServerUnreachable,
    StoreUnavailable,
)
from quantlab.fileio import check_writable
from quantlab.jobs import lifecycle, queue, slots, validation
from quantlab.jobs.execution import stale_after
from quantlab.jobs.fingerprint import check_symbols, config_hash, data_chunks, data_fingerprint
from quantlab.jobs.isolation import audit_in_sandbox
from quantlab.jobs.lifecycle import TERMINAL, RunStatus, run_log, transition
from quantlab.jobs.ownership import check_owner
from quantlab.jobs.supervisor import ensure_worker, watch_worker
from quantlab.registry import RunRecord, open_registry
from quantlab.registry._sqlite_conn import environment_error
from quantlab.research.audit import audit_before_queue
from quantlab.settings import Settings, redact, redact_text
from quantlab.strategies.usercode import attach_strategy_source, user_strategy

log = logging.getLogger("quantlab.jobs")

QUEUED, RUNNING = RunStatus.QUEUED, RunStatus.RUNNING
__all__ = ["TERMINAL", "cancel", "new_run_id", "queue_position", "reap", "run_log",
           "stale_after", "submit"]
# A run whose worker died this many times is failed instead of re-queued (a poison run must
# not take every worker down in turn).
MAX_ATTEMPTS = 3
# Bars per second of simulated work assumed before any run has been timed on this install.
DEFAULT_THROUGHPUT = 2e7
# Fixed cost of a run (load data, save results) in the duration estimate.
RUN_OVERHEAD_SECONDS = 0.05


# -- ids and events ------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 characters, sortable by time."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


# -- estimates -----------------------------------------------------------------------------------

_UNIT_TRADING_DAYS = {"d": 1.0, "w": 5.0, "mo": 21.0}
_UNIT_MINUTES = {"min": 1.0, "h": 60.0}


def approx_bars(config: BacktestConfig) -> float:
    """Bars per symbol the config spans, from its dates and interval (for estimates only)."""
    end = config.end.timestamp() if config.end else time.time()
    start = config.start.timestamp() if config.start else end - 10 * 365.25 * 86400
    trading_days = max(1.0, (end - start) / 86400) * 252 / 365.25
    match = re.fullmatch(r"(\d+)(min|h|d|w|mo)", config.interval)
    if not match:
        return trading_days
    n, unit = float(match.group(1)), match.group(2)
    if unit in _UNIT_TRADING_DAYS:
        return trading_days / (n * _UNIT_TRADING_DAYS[unit])
    return trading_days * 390 / (n * _UNIT_MINUTES[unit])  # a 6.5-hour trading day


def work_units(config: BacktestConfig, combinations: int) -> float:
    """Simulated bars: bars x symbols x parameter combinations."""
    return approx_bars(config) * len(config.symbols) * max(1, combinations)


def throughput(settings: Settings | None = None) -> float:
    """Median simulated bars per second of the recent completed runs on this install."""
    rates = []
    for doc in open_registry(settings).find_runs(status=RunStatus.COMPLETED, limit=30):
        units, start, end = doc.get("work_units"), doc.get("started_at"), doc.get("finished_at")
        if doc.get("cached_from") or not units or not start or not end or end <= start:
            continue
        seconds = end - start - RUN_OVERHEAD_SECONDS
        rates.append(units / max(seconds, 1e-3))
    return statistics.median(rates) if rates else DEFAULT_THROUGHPUT


def estimate_seconds(units: float, settings: Settings | None = None) -> float:
    return round(RUN_OVERHEAD_SECONDS + units / throughput(settings), 3)


def queue_position(doc: Mapping[str, Any], settings: Settings | None = None) -> int | None:
    """1-based position of a queued run (higher priority first, then first come), else None."""
    if doc.get("status") != QUEUED:
        return None
    ahead = 0
    mine = (-(doc.get("priority") or 0), doc.get("queued_at") or 0.0, doc["id"])
    for other in open_registry(settings).find_runs(status=QUEUED, limit=None):
        key = (-(other.get("priority") or 0), other.get("queued_at") or 0.0, other["id"])
        if key < mine:
            ahead += 1
    return ahead + 1


# -- submit ----------------------------------------------------------------------------------------


def submit(config: Any, *, cache: bool = True, priority: int = 0, name: str | None = None,
           tags: Any = None, user: str | None = None,
           settings: Settings | None = None) -> RunRecord:
    """Validate, answer from the cache or queue the run; returns its registry document.

    Atomic for the caller: if it raises, nothing will execute; if it returns, the run executes
    once. Every check that can fail (config, home writable, queue reachable, worker startable)
    runs before the run is recorded; the run is recorded ``queued`` with step ``submitting``
    (not on the queue yet, and the reaper does not re-enqueue it), its ``queued`` event told,
    and only then its message sent, the step that commits it. A failure after the record undoes it (see
    :func:`_undo_submit`). Environment failures raise :class:`~quantlab.errors.StoreUnavailable`
    (``HomeNotWritable``, ``DiskFull``, ``ServerUnreachable``) naming the path or URL and the fix.
    """
    settings = settings or settings_mod.current()
    # A strategy defined in this kernel (@ql.strategy in a notebook) travels as source text.
    config = attach_strategy_source(config)
    overrides: dict[str, Any] = {"name": name}
    if tags is not None:
        overrides["tags"] = tags
    cfg = BacktestConfig.from_any(config, check=False, **overrides)
    cfg.check()
    _check_kernel_strategy_params(cfg)
    to_fetch = check_symbols(cfg.symbols, cfg.interval)
    # walk-forward / cross-validation: window sizes against the data (unless still to fetch)
    work_factor = validation.check_before_queue(cfg, with_data=not to_fetch)
    _check_priority(priority)
    _check_windows(cfg, to_fetch)
    check_home_writable(settings)
    registry = open_registry(settings)
    now = time.time()
    run_id = new_run_id(now)
    user = user or settings.user
    fingerprint = None if to_fetch else data_fingerprint(cfg)
    # a peeking notebook strategy: ConfigError; a source this process did not define is
    # audited in a sandbox (user code never runs in a Jupyter server handling a REST submit)
    audit_before_queue(cfg, fingerprint, settings, run_shipped=audit_in_sandbox)
    digest = config_hash(cfg, fingerprint) if fingerprint is not None else None
    base = _base_document(cfg, run_id, user, priority, now, digest, fingerprint)
    if fingerprint is not None:
        base["data_chunks"] = data_chunks(cfg)
    if cache and digest is not None:
        hit = registry.find_by_hash(digest)
        if hit is not None:
            check_queue_reachable(settings)  # the events share its server
            return _cached_run(base, hit, settings)
    _check_queue_room(settings)
    check_queue_reachable(settings)
    if not settings.redis_url:
        ensure_worker(settings)  # a worker that cannot start fails the submit before the record
    combos = cfg.combinations()
    units = work_units(cfg, combos) * work_factor  # a walk-forward sweeps each fold
    message = queue.message(run_id, priority, settings)
    doc = {
        **base,
        "step": SUBMITTING, "work_units": units, "combinations": combos,
        "fetch_symbols": to_fetch, "estimated_seconds": estimate_seconds(units, settings),
        "task_id": str(message.id),
    }
    doc["position"] = queue_position({**doc, "status": QUEUED}, settings)
    try:
        transition(run_id, QUEUED, expect=None, fields=doc, settings=settings,
                   event=lifecycle.Queued(
                       position=doc["position"], priority=priority,
                       estimated_seconds=doc["estimated_seconds"],
                       cached=False if cache and digest is not None else None))
        queue.send(message, settings)  # the commit: from here on the run will execute
    except Exception as exc:
        raise _undo_submit(run_id, message, exc, settings) from exc
    with contextlib.suppress(Exception):  # cosmetic: a worker may have taken it already
        registry.update_run(run_id, {"step": "queued"}, expect_status=(QUEUED,))
    if not settings.redis_url:
        watch_worker(settings)
    try:
        return registry.get_run(run_id)
    except Exception:  # queued: the caller gets the run even if the registry blinked now
        return {**doc, "status": QUEUED}  # type: ignore[typeddict-item]


# ``step`` of a run recorded but not yet on the queue (its submit is under way).
SUBMITTING = "submitting"
# A run still ``submitting`` after this many seconds, and not on the queue, was left by a
# submit that died (a killed kernel): the reaper ends it failed (it never ran).
SUBMIT_GRACE = 60.0
# Seconds a submit keeps trying to reach the queue's Redis (rides through a restart).
REACH_FOR = 2.0


def check_home_writable(settings: Settings) -> None:
    """``HomeNotWritable``/``DiskFull`` (naming QUANTLAB_HOME and the fix) when the home that the
    registry, queue, events or worker lock live in cannot be written. Skipped when none of them
    is there (Redis and MongoDB)."""
    if settings.redis_url and settings.mongo_url:
        return
    check_writable(settings.home)


def check_queue_reachable(settings: Settings) -> None:
    """``ServerUnreachable`` (naming the URL without its password, and the fix) when the queue's
    Redis (also the event store's) does not answer within ``REACH_FOR`` seconds."""
    if not settings.redis_url:
        return
    conn = queue.huey_app(settings).storage.conn
    deadline = time.monotonic() + REACH_FOR
    delay = 0.05
    while True:
        try:
            conn.ping()
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise _unreachable(settings, exc) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _unreachable(settings: Settings, exc: BaseException) -> ServerUnreachable:
    url = redact(settings.redis_url or "")
    fix = ("start redis-server there, or fix QUANTLAB_REDIS_URL; nothing was queued, so "
           "submit again once it answers")
    return ServerUnreachable(
        f"cannot reach the queue's Redis at {url} ({redact_text(str(exc))}); {fix}",
        url=url, fix=fix)


def _undo_submit(run_id: str, message: Any, exc: Exception,
                 settings: Settings) -> QuantlabError:
    """Undo a submit that failed after the run was recorded (its event could not be told, or
    its message not sent): the message deleted from the queue in case it went out, the run deleted (or, if the
    registry refuses that too, ended failed), so that nothing executes. Returns the error to
    raise: a QuantLab one, naming where it failed and that nothing was created."""
    with contextlib.suppress(Exception):
        queue.remove(str(message.id), settings)
    undone = "nothing was created"
    try:
        open_registry(settings).delete_run(run_id)
    except RunNotFound:
        pass  # the insert itself failed
    except Exception:
        undone = "the run is recorded as failed and will not execute"
        error = f"not submitted: {redact_text(str(exc))}"
        try:
            transition(run_id, RunStatus.FAILED, expect=QUEUED, settings=settings,
                       fields={"error": error, "step": "not submitted"},
                       event=lifecycle.Failed(strategy=None, reason="error", error=error))
        except Exception:  # the registry is away: the reaper fails it (still ``submitting``)
            undone = "the run will not execute"
    if isinstance(exc, StoreUnavailable):
        return restate(exc, f"{exc.message} ({undone})", run_id=run_id)
    if isinstance(exc, QuantlabError):
        return exc
    shown = redact_text(str(exc))
    if not isinstance(exc, OSError | sqlite3.Error | RedisError):  # not the environment: a bug
        return RunError(f"could not submit the run ({type(exc).__name__}: {shown}); {undone}",
                        run_id=run_id)
    if settings.redis_url:
        return restate(_unreachable(settings, exc), None, run_id=run_id)
    where = settings.home / queue.QUEUE_FILE
    found = environment_error(exc, where) if isinstance(exc, sqlite3.Error) else None
    if found is not None:  # the queue's SQLite file: read-only, full ...
        return restate(found, f"{found.message} ({undone})", run_id=run_id)
    fix = f"check that {where} is writable and not locked by a hung process, then submit again"
    return StoreUnavailable(f"could not put the run on the queue ({shown}); {undone}. {fix}",
                            path=str(where), fix=fix, run_id=run_id)


def restate(exc: StoreUnavailable, message: str | None, **extra: Any) -> StoreUnavailable:
    """``exc`` again (same class and fields) with ``message`` instead, and ``extra`` fields."""
    fields = {**exc.fields, **extra}
    again = type(exc).__new__(type(exc))
    StoreUnavailable.__init__(again, message or exc.message, **fields)
    return again


def _check_kernel_strategy_params(cfg: BacktestConfig) -> None:
    """The config model skips the params check of a shipped strategy (workers cannot see the
    kernel's registry); a strategy registered in this kernel is checked here, before queueing."""
    found = user_strategy(cfg.strategy) if cfg.strategy_source else None
    if found is None:
        return
    combos, skipped = sweep_combinations(found.name, cfg.params)
    if not combos:
        raise ConfigError(
            f"the sweep over {found.name} params has no valid combination ({skipped} skipped "
            f"as invalid); widen or fix the ranges in params", field="params")


# |priority| at most this: any ordering a team needs fits, and the registry stores it as a
# 64-bit integer (10**30 could not be recorded).
MAX_PRIORITY = 1_000_000


def _check_priority(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(
            f"priority must be a whole number (higher runs first, default 0), got {priority!r}",
            field="priority",
        )
    if abs(priority) > MAX_PRIORITY:
        # (str() of a huge int is refused by Python itself: show its size)
        shown = (f"{priority:,}" if abs(priority) < 10**15 else
                 f"a number of about {int(abs(priority).bit_length() * 0.30103) + 1} digits")
        raise ConfigError(
            f"priority must be between -{MAX_PRIORITY:,} and {MAX_PRIORITY:,} (higher runs first, "
            f"default 0), got {shown}", field="priority",
        )


def _check_windows(cfg: BacktestConfig, to_fetch: list[str]) -> None:
    """A built-in strategy's window (``slow``, ``period`` ...) as long as the data it will run
    on can form no signal: refused here, where the data is known, rather than run to a silent
    zero-trade result. Symbols still to be fetched are the worker's to count."""
    if to_fetch or cfg.strategy_source is not None \
            or cfg.strategy not in validate.WINDOW_PARAMS:
        return
    start, end = cfg.data_window()
    counts = data.bar_counts(list(cfg.symbols), start, end, cfg.interval)
    span = "".join((f" from {start}" if start else "", f" to {end}" if end else ""))
    validate.check_windows(cfg.strategy, cfg.params, counts, f"{cfg.interval} bars{span}")


def _base_document(cfg: BacktestConfig, run_id: str, user: str, priority: int, now: float,
                   digest: str | None, fingerprint: str | None) -> dict[str, Any]:
    return {
        "id": run_id,
        "name": cfg.name or default_name(cfg),
        "user": user,
        "tags": list(cfg.tags),
        "config": cfg.canonical(),
        "config_hash": digest,
        "strategy": cfg.strategy,
        "symbols": list(cfg.symbols),
        "interval": cfg.interval,
        "engine_version": str(ENGINE_VERSION),
        "data_fingerprint": fingerprint,
        "priority": priority,
        "queued_at": now,
    }


def default_name(cfg: BacktestConfig) -> str:
    shown = ", ".join(cfg.symbols[:3]) + (f" +{len(cfg.symbols) - 3}" if len(cfg.symbols) > 3
                                          else "")
    kind = " sweep" if cfg.is_sweep else ""
    if cfg.walk_forward is not None or cfg.cross_validate is not None:
        kind = " walk-forward" if cfg.walk_forward is not None else " cross-validation"
    return f"{cfg.strategy}{kind} on {shown}"


def _check_queue_room(settings: Settings) -> None:
    if settings.queue_max is None:
        return
    queued = open_registry(settings).count_runs(status=QUEUED)
    if queued >= settings.queue_max:
        raise QueueFull(
            f"the queue is full: {queued} runs are waiting (QUANTLAB_QUEUE_MAX="
            f"{settings.queue_max}); nothing was created. Wait for runs to finish, cancel "
            f"some (ql.runs(status='queued')), or raise QUANTLAB_QUEUE_MAX",
            queued=queued, limit=settings.queue_max,
        )


def _cached_run(base: dict[str, Any], hit: Mapping[str, Any],
                settings: Settings) -> RunRecord:
    """A new run that reuses the result of ``hit`` (same config hash): inserted queued (never
    enqueued) and completed at once. Its events tell ``cached`` and no execution (0 s)."""
    run_id = base["id"]
    now = base["queued_at"]
    fields = {
        "step": "cached", "progress": 1.0, "started_at": now, "finished_at": now,
        "heartbeat_at": None, "metrics": hit.get("metrics") or {},
        "result_ref": hit.get("result_ref"), "result_blobs": hit.get("result_blobs") or [],
        "cached_from": hit["id"], "partial": False, "bars_done": hit.get("bars_done") or 0,
        "best_params": hit.get("best_params"), "overfitting": hit.get("overfitting"),
    }
    try:
        transition(run_id, QUEUED, expect=None, settings=settings,
                   fields={**base, "step": "cached", "estimated_seconds": 0.0},
                   event=lifecycle.Queued(priority=base["priority"], cached=True))
        transition(run_id, RunStatus.COMPLETED, expect=QUEUED, fields=fields, settings=settings,
                   event=lifecycle.Completed(strategy=base["strategy"], cached=True,
                                             metrics=fields["metrics"], cached_from=hit["id"]))
    except Exception as exc:
        # Never enqueued: left queued, the reaper would take it for a lost message and execute
        # it after this submit raised. It ends failed instead, so nothing executes (if the
        # store is away too, or nothing was inserted, there is nothing more to do).
        error = f"the cached result could not be recorded: {exc}"
        with contextlib.suppress(Exception):
            transition(run_id, RunStatus.FAILED, expect=QUEUED, settings=settings,
                       fields={"error": error},
                       event=lifecycle.Failed(strategy=base["strategy"], reason="error",
                                              error=error))
        raise
    return open_registry(settings).get_run(run_id)


# -- cancel ----------------------------------------------------------------------------------------


def cancel(run_id: str, settings: Settings | None = None, *,
           user: str | None = None) -> RunRecord:
    """Cancel a run: a queued one ends ``cancelled`` at once; a running one is asked to stop at
    its next chunk (its worker records what was finished). A finished run is left as it is.

    ``user`` is who asks (default: the settings' user, ``QUANTLAB_USER``): only the run's owner
    or an admin (``QUANTLAB_ADMINS``) may cancel it; anyone else gets ``NotOwner``, and the run
    is left as it is."""
    settings = settings or settings_mod.current()
    registry = open_registry(settings)
    doc = registry.get_run(run_id)
    check_owner(doc, user or settings.user, "cancel")
    if doc["status"] == QUEUED:
        fields = {"cancel_requested": True, "error": "cancelled before it started"}
        event = lifecycle.Cancelled(strategy=doc.get("strategy"), reason="cancelled",
                                    while_=QUEUED)
        if transition(run_id, RunStatus.CANCELLED, expect=QUEUED, fields=fields, event=event,
                      settings=settings):
            _off_the_queue(queue.remove, doc.get("task_id"), run_id, settings)
            return registry.get_run(run_id)
        doc = registry.get_run(run_id)
    # not a transition: a running run's worker sees the request and makes it
    if doc["status"] == RUNNING and registry.update_run(
            run_id, {"cancel_requested": True}, expect_status=(RUNNING,)):
        run_log(run_id, "cancel requested; stopping at the next chunk", settings=settings)
        # a split sweep's shards that no worker took yet go now (its coordinator also takes
        # them off when it stops, and a shard that starts for it returns at once)
        _off_the_queue(queue.remove_shards, run_id, run_id, settings)
    return registry.get_run(run_id)


def _off_the_queue(remove: Any, what: Any, run_id: str, settings: Settings) -> None:
    try:
        remove(what, settings)
    except Exception:  # the status is what counts: a message left is a no-op when it comes
        log.warning("could not take queue messages of run %s off the queue", run_id,
                    exc_info=True)


# -- reaper ----------------------------------------------------------------------------------------


# Seconds the reaper waits before it looks again at a queued run missing from the queue.
LOST_RECHECK = 0.5


def reap(settings: Settings | None = None, *, now: float | None = None,
         orphans_older_than: float = 5.0) -> list[str]:
    """Re-queue running runs whose worker stopped heart-beating, and re-enqueue queued runs whose
    queue message is gone (a queue restarted without persistence). Returns the re-queued ids."""
    settings = settings or settings_mod.current()
    now = time.time() if now is None else now
    registry = open_registry(settings)
    requeued = []
    for doc in registry.stale_runs(now - stale_after()):
        if _recover(doc, settings, now):
            requeued.append(doc["id"])
    old_queued = [d for d in registry.find_runs(status=QUEUED, limit=None)
                  if (d.get("queued_at") or now) < now - orphans_older_than]
    # a run still being submitted is not re-enqueued: its submit may yet fail and raise
    _fail_abandoned_submits([d for d in old_queued if d.get("step") == SUBMITTING
                             and (d.get("queued_at") or now) < now - SUBMIT_GRACE], settings)
    old_queued = [d for d in old_queued if d.get("step") != SUBMITTING]
    for doc in _lost_messages(old_queued, settings):
        log.warning("run %s was queued but not on the queue; re-enqueued", doc["id"])
        task_id = queue.enqueue(doc["id"], doc.get("priority") or 0, settings)
        registry.update_run(doc["id"], {"task_id": task_id}, expect_status=(QUEUED,))
        slots.forget(doc["id"], settings)
        requeued.append(doc["id"])
    return requeued


def _fail_abandoned_submits(docs: list[RunRecord], settings: Settings) -> None:
    """End failed the runs whose submit died between recording them and sending their message
    (the kernel was killed): their submitter never heard back, so they must not execute."""
    for doc in _lost_messages(docs, settings):
        error = (f"its submit did not finish within {SUBMIT_GRACE:g} s (the submitting process "
                 f"died or lost the queue); it never ran: submit it again")
        log.warning("run %s: %s", doc["id"], error)
        transition(doc["id"], RunStatus.FAILED, expect=QUEUED, settings=settings,
                   fields={"error": error, "step": "not submitted"},
                   event=lifecycle.Failed(strategy=doc.get("strategy"), reason="error",
                                          error=error))


def _lost_messages(old_queued: list[RunRecord], settings: Settings) -> list[RunRecord]:
    """The queued runs whose message is really gone. A run missing from the queue is looked at
    again a moment later (``LOST_RECHECK``): a worker may have just taken its message to start
    it, or to put it back because the concurrency limit is reached. It is lost only if it is
    then in no live worker's hand, still on no queue, still queued, and its message was not
    sent again meanwhile (the same ``task_id``: a worker that put it back and another that took
    it at once leave a new one)."""
    if not old_queued:
        return []
    waiting = queue.queued_run_ids(settings)
    missing = [d for d in old_queued if d["id"] not in waiting]
    if not missing:
        return []
    time.sleep(LOST_RECHECK)
    # in this order: a worker drops its mark only after it sent the message again or took
    # the run, so a mark gone by now means a message back on the queue, or a run not queued
    held = slots.in_hand([d["id"] for d in missing], settings)
    waiting = queue.queued_run_ids(settings)
    registry = open_registry(settings)
    lost = []
    for doc in missing:
        if doc["id"] in held or doc["id"] in waiting:
            continue
        try:
            now_doc = registry.get_run(doc["id"])
        except RunError:  # deleted meanwhile (a submit that could not queue it)
            continue
        # started meanwhile, or its message sent again (a put-back, another reaper: a new id)
        if now_doc["status"] != QUEUED or now_doc.get("task_id") != doc.get("task_id"):
            continue
        lost.append(doc)
    return lost


def _recover(doc: Mapping[str, Any], settings: Settings, now: float) -> bool:
    """End or re-queue one run whose worker died; True if it was re-queued."""
    run_id = doc["id"]
    lost = f"worker {doc.get('worker')} stopped responding"
    strategy, reason = doc.get("strategy"), "worker_lost"
    # executed from its start to the last sign of life of its worker
    last_seen, started = doc.get("heartbeat_at") or now, doc.get("started_at") or now
    seconds = round(max(0.0, last_seen - started), 4)
    if doc.get("cancel_requested"):
        transition(run_id, RunStatus.CANCELLED, expect=RUNNING, settings=settings,
                   fields={"finished_at": now, "error": f"cancelled; {lost}"},
                   event=lifecycle.Cancelled(strategy, seconds, reason=reason, while_=RUNNING))
        return False
    if (doc.get("attempts") or 0) >= MAX_ATTEMPTS:
        message = (f"{lost} on each of {doc.get('attempts')} attempts; the run was given up. "
                   f"It may exhaust a worker's memory: try fewer symbols, bars or combinations")
        transition(run_id, RunStatus.FAILED, expect=RUNNING, settings=settings,
                   fields={"finished_at": now, "error": message},
                   event=lifecycle.Failed(strategy, seconds, reason=reason, error=message), note=message, level="error")
        return False
    fields = {"worker": None, "step": "re-queued", "heartbeat_at": None, "requeued_at": now}
    event = lifecycle.Queued(priority=doc.get("priority") or 0, reason="worker_lost",
                             attempts=doc.get("attempts"), worker=doc.get("worker"))
    if not transition(run_id, QUEUED, expect=RUNNING, fields=fields, event=event,
                      note=f"{lost}; re-queued to resume from its last checkpoint",
                      level="warning", settings=settings):
        return False
    task_id = queue.enqueue(run_id, doc.get("priority") or 0, settings)
    open_registry(settings).update_run(run_id, {"task_id": task_id}, expect_status=(QUEUED,))
    return True
