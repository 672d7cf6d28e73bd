"""The typed run record: every key QuantLab writes to a run document is a ``RunRecord`` key with a
default in ``RUN_DEFAULTS``, and holds a value of the declared type.

The defaults are checked against the type statically; the keys the code writes are checked on the
documents of real runs (submit, an embedded worker running them, cancels, a cache hit, the
reaper), so a key added to the jobs code without a declaration fails here.
"""

from __future__ import annotations

import os
import shutil
import time
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

import quantlab as ql
from quantlab.registry import RUN_DEFAULTS, RunRecord, open_registry
from quantlab.registry.schema import RUN_FIELDS, new_run_document
from tests.support.procs import kill_group, wait_for

WAIT = 300.0  # hang guard only: a worker's first run may compile Numba kernels

SINGLE = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2020-01-01",
          "end": "2020-12-31", "params": {"fast": 10, "slow": 30}}
SWEEP = {"strategy": "sma_crossover", "symbols": ["AAA"], "start": "2019-01-01",
         "end": "2022-12-31", "params": {"fast": list(range(5, 45, 5)), "slow": [50, 100, 150]}}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a stored (plain JSON) value has the declared type."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            _conforms(k, key) and _conforms(v, item) for k, v in value.items())
    if isinstance(value, bool) and hint is not bool:
        return False  # JSON booleans are not numbers here
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


HINTS = get_type_hints(RunRecord)


def _wrong_types(doc: typing.Mapping[str, Any]) -> dict[str, Any]:
    return {key: doc[key] for key in doc if key in HINTS and not _conforms(doc[key], HINTS[key])}


def test_every_record_key_but_id_has_a_default_of_its_type() -> None:
    assert set(RUN_FIELDS) == set(HINTS)
    assert set(RUN_DEFAULTS) == RUN_FIELDS - {"id"}
    assert _wrong_types(RUN_DEFAULTS) == {}


def test_a_new_document_holds_every_key_and_shares_no_default_list() -> None:
    first = new_run_document({"id": "a"})
    second = new_run_document({"id": "b"})
    assert set(first) == RUN_FIELDS and first["status"] == "queued"
    first["fetch_symbols"].append("AAA")
    first["result_blobs"].append("equity.parquet")
    assert second["fetch_symbols"] == [] and second["result_blobs"] == []
    assert RUN_DEFAULTS["fetch_symbols"] == [] and RUN_DEFAULTS["result_blobs"] == []


@pytest.fixture
def home(ql_home: Path, sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An embedded home with the sample data, whose worker (spawned by the first submit) is
    slow enough for a sweep to be cancelled while it runs; the worker is killed at the end."""
    shutil.copytree(sample_data_dir, ql_home / "data")
    monkeypatch.setenv("QUANTLAB_JOBS_MAX_CHUNK", "2")
    monkeypatch.setenv("QUANTLAB_JOBS_CHUNK_DELAY", "0.05")
    yield ql_home
    pid_file = ql_home / "worker.pid"
    if pid_file.exists():
        kill_group(int(pid_file.read_text()))


def test_every_key_the_jobs_code_writes_is_a_record_key_with_a_default(home: Path) -> None:
    completed = ql.submit(SINGLE).wait(timeout=WAIT)
    cached = ql.submit(SINGLE)
    sweep = ql.submit(SWEEP)
    behind = ql.submit({**SINGLE, "params": {"fast": 5, "slow": 40}})
    behind.cancel()  # queued behind the sweep, or just started: either ending writes its keys
    wait_for(lambda: sweep.record.get("progress", 0) > 0.1, WAIT, "the sweep to be running")
    sweep.cancel().wait(timeout=WAIT)
    behind.wait(timeout=WAIT)
    assert completed.status == "completed" and cached.record["cached_from"] == completed.id
    assert sweep.status in ("cancelled", "completed")  # it may finish before the cancel lands
    docs = [run.record for run in (completed, cached, sweep, behind)]
    docs.append(_requeued_by_the_reaper())
    for doc in docs:
        assert set(doc) - RUN_FIELDS == set(), f"undeclared keys in run {doc['id']}"
        assert set(doc) == RUN_FIELDS, f"run {doc['id']} lacks a default"
        assert _wrong_types(doc) == {}, f"run {doc['id']} holds values of the wrong type"


def _requeued_by_the_reaper() -> dict[str, Any]:
    """A running run whose worker stopped heart-beating long ago, after the reaper took it back
    (the worker then runs it again: the test kills the worker, so the document is read here)."""
    from quantlab.jobs import orchestrator

    registry = open_registry()
    long_ago = time.time() - 24 * 3600
    registry.insert_run({"id": f"stale-{os.getpid()}", "status": "running",
                         "started_at": long_ago, "heartbeat_at": long_ago,
                         "worker": "gone:1", "attempts": 1, "config": SINGLE})
    assert f"stale-{os.getpid()}" in orchestrator.reap()
    return dict(registry.get_run(f"stale-{os.getpid()}"))
