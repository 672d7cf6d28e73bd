"""End to end: a run submitted with a ``notify`` block, executed by a real worker process,
announced by the dispatcher to a real webhook receiver and in the in-app list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import quantlab as ql
from quantlab.notify import store
from quantlab.notify.dispatcher import Dispatcher, DispatcherThread
from tests.support import jobs as support
from tests.support.jobs import SINGLE, SWEEP
from tests.support.notify import SECRET, Receiver
from tests.support.procs import wait_for

home = support.home

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def dispatcher(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DispatcherThread]:
    monkeypatch.setenv("QUANTLAB_WEBHOOK_ALLOW_PRIVATE", "1")  # the receiver is on 127.0.0.1
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF", "0.01")
    monkeypatch.delenv("QUANTLAB_NOTIFY_MAX_AGE", raising=False)
    # Run the dispatcher here, not in the worker, so that this test controls it.
    monkeypatch.setenv("QUANTLAB_NOTIFY_DISPATCHER", "0")
    thread = DispatcherThread(Dispatcher())
    yield thread
    thread.stop()


def wait_for_cursor() -> None:
    """Until the dispatcher has finished every delivery of every event published so far."""
    from quantlab.events import open_events

    wait_for(lambda: store.load_cursor() == open_events().last_seq(), 120,
             "the dispatcher to catch up")


def test_a_submitted_run_is_announced_with_its_real_metrics(
        home: Path, receiver: Receiver, dispatcher: DispatcherThread) -> None:
    ql.notifications.set_preferences(in_app=True, events=["completed"])
    hook = {"url": receiver.url, "secret": SECRET}
    run = ql.submit({**SINGLE, "notify": {"webhooks": [hook], "when": "n_trades >= 1"}},
                    name="notify me").wait(timeout=300)
    assert run.status == "completed", run.record["error"]
    (request,) = receiver.wait_for(1, timeout=120)
    assert request.verified()
    payload = request.json()
    record = run.record
    assert payload["run"]["id"] == record["id"] and payload["run"]["name"] == "notify me"
    assert payload["metrics"]["sharpe"] == pytest.approx(record["metrics"]["sharpe"])
    assert payload["metrics"]["n_trades"] == record["metrics"]["n_trades"] >= 1
    assert payload["run"]["duration_s"] == pytest.approx(
        record["finished_at"] - record["started_at"])
    wait_for_cursor()
    (note,) = ql.notifications.list()
    assert note["run_id"] == record["id"] and note["title"] == "Run 'notify me' completed"


def test_a_sweep_is_announced_once_with_its_best_parameters(
        home: Path, receiver: Receiver, dispatcher: DispatcherThread) -> None:
    ql.notifications.set_preferences(in_app=False, events=["sweep_finished"],
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    single = ql.submit(SINGLE).wait(timeout=300)
    sweep = ql.submit(SWEEP).wait(timeout=300)
    assert (single.status, sweep.status) == ("completed", "completed")
    wait_for_cursor()
    (request,) = receiver.wait_for(1, timeout=120)
    payload = request.json()
    assert payload["run"]["id"] == sweep.record["id"] and payload["run"]["sweep"] is True
    assert payload["run"]["best_params"] == sweep.record["best_params"]
