"""The dispatcher end to end: real run documents in the real registry, real events on the real
event stream (SQLite in a tmp QUANTLAB_HOME; Redis for team mode), a real HTTP receiver and a
real SMTP server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import quantlab as ql
from quantlab.errors import ConfigError
from quantlab.events.lock import RedisLock
from quantlab.notify import store
from quantlab.notify.cli import notify as notify_cli
from quantlab.notify.dispatcher import Dispatcher, DispatcherThread, start_dispatcher_thread
from quantlab.notify.planning import plan_deliveries
from quantlab.registry import Registry, open_registry
from tests.support.notify import SECRET, Mailbox, Receiver
from tests.support.procs import wait_for

METRICS = {"total_return_pct": 31.5, "sharpe": 1.9, "max_drawdown_pct": -11.0, "n_trades": 25}




@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.close()


@pytest.fixture
def home(ql_home: Path, monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox) -> Path:
    monkeypatch.setenv("QUANTLAB_WEBHOOK_ALLOW_PRIVATE", "1")  # the receiver is on 127.0.0.1
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF", "0.01")
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF_MAX", "0.05")
    monkeypatch.setenv("QUANTLAB_WEBHOOK_RETRIES", "3")
    monkeypatch.setenv("QUANTLAB_NOTIFY_DIGEST_WINDOW", "0")
    monkeypatch.setenv("QUANTLAB_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("QUANTLAB_SMTP_PORT", str(mailbox.port))
    monkeypatch.setenv("QUANTLAB_SMTP_FROM", "quantlab@lab.example.com")
    monkeypatch.setenv("QUANTLAB_PUBLIC_URL", "https://lab.example.com/")
    for var in ("QUANTLAB_SMTP_USER", "QUANTLAB_SMTP_PASSWORD", "QUANTLAB_SMTP_SSL",
                "QUANTLAB_SMTP_STARTTLS", "QUANTLAB_NOTIFY_MAX_AGE",
                "QUANTLAB_NOTIFY_DISPATCHER"):
        monkeypatch.delenv(var, raising=False)
    return ql_home


@pytest.fixture
def dispatchers() -> Iterator[list[DispatcherThread]]:
    started: list[DispatcherThread] = []
    yield started
    for thread in started:
        thread.stop()


def start(dispatchers: list[DispatcherThread]) -> DispatcherThread:
    thread = DispatcherThread(Dispatcher())
    dispatchers.append(thread)
    return thread


def registry() -> Registry:
    return open_registry()


def events() -> Any:
    from quantlab.events import open_events

    return open_events()


def finish_run(run_id: str, status: str = "completed", *, metrics: dict[str, Any] | None = None,
               user: str = "tester", config: dict[str, Any] | None = None,
               **fields: Any) -> int:
    """Insert a run document that went through its life, publish its events; returns the seq
    of its last event."""
    now = time.time()
    doc = {"id": run_id, "name": f"run {run_id}", "user": user, "status": status,
           "strategy": "sma_crossover", "symbols": ["AAA"],
           "config": config or {"strategy": "sma_crossover", "params": {"fast": 10}},
           "queued_at": now - 60, "started_at": now - 50, "finished_at": now,
           "metrics": METRICS if metrics is None else metrics, **fields}
    if status == "failed":
        doc["error"] = "StrategyError: the strategy raised ZeroDivisionError"
    registry().insert_run(doc)
    stream = events()
    stream.publish(run_id, "queued", {"position": 1})
    stream.publish(run_id, "started", {"worker": "w1"})
    stream.publish(run_id, "progress", {"progress": 0.5})
    data = {"metrics": doc["metrics"]} if status == "completed" else {"error": doc.get("error")}
    return int(stream.publish(run_id, status, data).seq)


def caught_up() -> bool:
    """The dispatcher has handled (and saved its cursor past) every published event."""
    return store.load_cursor() == events().last_seq()


def deliveries(run_id: str) -> list[dict[str, Any]]:
    return store.list_deliveries(run_id=run_id, limit=100)


# --------------------------------------------------------------------------------------------


def test_a_completed_run_is_told_on_every_channel(home: Path, receiver: Receiver,
                                                  mailbox: Mailbox, dispatchers: list) -> None:
    ql.notifications.set_preferences(email="alice@example.com", in_app=True,
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    start(dispatchers)
    finish_run("R1")
    (request,) = receiver.wait_for(1)
    assert request.verified()
    payload = request.json()
    assert payload["type"] == "run.completed"
    assert payload["run"]["id"] == "R1" and payload["run"]["status"] == "completed"
    assert payload["run"]["duration_s"] == pytest.approx(50, abs=1)
    assert payload["metrics"]["sharpe"] == 1.9
    assert payload["links"]["run"] == "https://lab.example.com/quantlab/runs/R1"
    assert payload["delivery_id"] == request.headers["X-QuantLab-Delivery"]
    ((_, recipients, message),) = mailbox.wait_for(1)
    assert recipients == ["alice@example.com"]
    assert message["Subject"].startswith("[QuantLab] Run 'run R1' completed: Total return 31.50%")
    (note,) = wait_for(lambda: ql.notifications.list())
    assert note["run_id"] == "R1" and note["kind"] == "completed" and note["read"] is False
    assert note["title"] == "Run 'run R1' completed"
    wait_for(caught_up)
    log = {d["channel"]: d for d in deliveries("R1")}
    assert set(log) == {"webhook", "email", "in_app"}
    assert all(d["status"] == "delivered" for d in log.values())
    assert log["webhook"]["attempts"][0]["status_code"] == 200
    assert "secret" not in log["webhook"]  # secrets never land in the log
    assert ql.notifications.mark_read(note["id"]) is True
    assert ql.notifications.list(unread_only=True) == []
    assert ql.notifications.mark_read("no-such-id") is False


def test_conditions_gate_completed_runs_but_not_failures(home: Path, receiver: Receiver,
                                                         dispatchers: list) -> None:
    ql.notifications.set_preferences(in_app=False, events=["completed", "failed"],
                                     when="sharpe > 1.5 and max_drawdown_pct > -20",
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    start(dispatchers)
    finish_run("GOOD", metrics={**METRICS, "sharpe": 2.0})
    finish_run("MEH", metrics={**METRICS, "sharpe": 1.0})
    finish_run("NOSHARPE", metrics={"n_trades": 0})
    finish_run("BROKE", status="failed")
    finish_run("STOPPED", status="cancelled")  # not subscribed
    wait_for(caught_up)
    told = [r.json()["run"]["id"] for r in receiver.requests]
    assert sorted(told) == ["BROKE", "GOOD"]
    failed = next(r.json() for r in receiver.requests if r.json()["run"]["id"] == "BROKE")
    assert failed["type"] == "run.failed"
    assert failed["run"]["error"] == "StrategyError: the strategy raised ZeroDivisionError"


def test_a_run_config_adds_targets_and_its_own_condition(home: Path, receiver: Receiver,
                                                         mailbox: Mailbox, dispatchers: list
                                                         ) -> None:
    ql.notifications.set_preferences(in_app=True, events=["completed"], when="sharpe > 100")
    block = {"webhooks": [{"url": receiver.url, "secret": SECRET}],
             "email": ["bob@example.com"], "when": "n_trades > 100"}
    start(dispatchers)
    finish_run("FEW", config={"notify": block}, metrics={**METRICS, "n_trades": 5})
    finish_run("MANY", config={"notify": block}, metrics={**METRICS, "n_trades": 200})
    finish_run("PLAIN", metrics={**METRICS, "sharpe": 3})  # the user's own condition fails
    wait_for(caught_up)
    assert [r.json()["run"]["id"] for r in receiver.requests] == ["MANY"]
    assert [(m[1], m[2]["Subject"].split(":")[0]) for m in mailbox.wait_for(1)] == [
        (["bob@example.com"], "[QuantLab] Run 'run MANY' completed")]
    assert [n["run_id"] for n in ql.notifications.list()] == ["MANY"]


def test_sweep_finished_subscribers_hear_only_of_sweeps(home: Path, receiver: Receiver,
                                                        dispatchers: list) -> None:
    ql.notifications.set_preferences(in_app=False, events=["sweep_finished"],
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    start(dispatchers)
    finish_run("SINGLE")
    finish_run("SWEEP", combinations=[{"fast": 10}, {"fast": 20}, {"fast": 50}],
               best_params={"fast": 20})
    wait_for(caught_up)
    (request,) = receiver.requests
    run = request.json()["run"]
    assert run["id"] == "SWEEP" and run["sweep"] is True and run["best_params"] == {"fast": 20}


def test_a_restart_neither_repeats_nor_misses(home: Path, receiver: Receiver,
                                              dispatchers: list) -> None:
    ql.notifications.set_preferences(webhooks=[{"url": receiver.url, "secret": SECRET}])
    first = start(dispatchers)
    finish_run("A")
    receiver.wait_for(1)
    wait_for(caught_up)
    first.stop()
    assert not first.alive
    finish_run("B")  # ends while no dispatcher runs
    start(dispatchers)
    receiver.wait_for(2)
    wait_for(caught_up)
    assert sorted(r.json()["run"]["id"] for r in receiver.requests) == ["A", "B"]
    assert [n["run_id"] for n in ql.notifications.list()] == ["B", "A"]


def test_a_lost_cursor_replays_without_duplicates(home: Path, receiver: Receiver,
                                                  mailbox: Mailbox, dispatchers: list) -> None:
    """If the cursor write is lost (a crash), replayed events find their deliveries logged."""
    ql.notifications.set_preferences(email="alice@example.com",
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    first = start(dispatchers)
    finish_run("A")
    wait_for(lambda: len(receiver.requests) == 1 and len(mailbox.messages) == 1)
    wait_for(caught_up)
    first.stop()
    store.save_cursor(0)  # as if the dispatcher died before it could record its progress
    start(dispatchers)
    wait_for(caught_up)
    finish_run("B")
    wait_for(lambda: len(receiver.requests) == 2)
    wait_for(caught_up)
    assert [r.json()["run"]["id"] for r in receiver.requests] == ["A", "B"]
    assert len(mailbox.wait_for(2)) == 2
    assert len(ql.notifications.list()) == 2


def test_a_delivery_interrupted_by_a_stop_is_resumed(home: Path, receiver: Receiver,
                                                     dispatchers: list,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF", "30")  # the retry waits until the stop
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF_MAX", "30")
    ql.notifications.set_preferences(in_app=False,
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    receiver.script = [503]
    first = start(dispatchers)
    finish_run("R1")
    wait_for(lambda: [d for d in deliveries("R1") if d["attempts"]])
    first.stop()
    (entry,) = deliveries("R1")
    assert entry["status"] == "pending" and len(entry["attempts"]) == 1
    assert store.load_cursor() < events().last_seq()  # the event is not done with
    monkeypatch.setenv("QUANTLAB_WEBHOOK_BACKOFF", "0.01")
    start(dispatchers)
    receiver.wait_for(2)
    wait_for(caught_up)
    (entry,) = deliveries("R1")
    assert entry["status"] == "delivered"
    assert [(a["attempt"], a["status_code"]) for a in entry["attempts"]] == [(1, 503), (2, 200)]
    assert len(receiver.requests) == 2


def test_a_failing_webhook_blocks_nothing_and_is_logged(home: Path, receiver: Receiver,
                                                        dispatchers: list) -> None:
    from tests.support.procs import free_port, wait_for

    dead = f"http://127.0.0.1:{free_port()}/gone"
    ql.notifications.set_preferences(webhooks=[{"url": dead, "secret": SECRET},
                                               {"url": receiver.url, "secret": SECRET}])
    start(dispatchers)
    finish_run("R1")
    finish_run("R2")
    receiver.wait_for(2)
    wait_for(caught_up)
    assert sorted(r.json()["run"]["id"] for r in receiver.requests) == ["R1", "R2"]
    failed = ql.notifications.deliveries(status="failed")
    assert sorted(d["run_id"] for d in failed) == ["R1", "R2"]
    for entry in failed:
        assert entry["target"] == dead
        assert [a["attempt"] for a in entry["attempts"]] == [1, 2, 3, 4]
        assert all("ConnectionRefusedError" in a["error"] for a in entry["attempts"])
        assert entry["error"].startswith("ConnectionRefusedError")
    assert len(ql.notifications.list()) == 2  # in-app went through meanwhile


def test_runs_ending_together_make_one_digest(home: Path, mailbox: Mailbox, dispatchers: list,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_NOTIFY_DIGEST_WINDOW", "2")
    ql.notifications.set_preferences(email="alice@example.com", in_app=False)
    for run_id in ("D1", "D2", "D3"):
        finish_run(run_id, status="failed" if run_id == "D3" else "completed")
    start(dispatchers)  # reads all three at once: they fall in one window
    ((_, _, message),) = mailbox.wait_for(1)
    wait_for(caught_up)
    assert message["Subject"] == "[QuantLab] 3 runs finished (2 completed, 1 failed)"
    assert len(mailbox.messages) == 1
    log = ql.notifications.deliveries()
    assert sorted(d["run_id"] for d in log) == ["D1", "D2", "D3"]
    assert {d["digest_size"] for d in log} == {3}
    assert {d["status"] for d in log} == {"delivered"}


def test_only_one_dispatcher_delivers_and_a_standby_takes_over(home: Path, receiver: Receiver,
                                                               dispatchers: list) -> None:
    ql.notifications.set_preferences(webhooks=[{"url": receiver.url, "secret": SECRET}])
    one, two = start(dispatchers), start(dispatchers)
    active = wait_for(lambda: [t for t in (one, two) if t.dispatcher.delivering.is_set()])
    assert len(active) == 1
    finish_run("R1")
    receiver.wait_for(1)
    wait_for(caught_up)
    active[0].stop()
    standby = two if active[0] is one else one
    wait_for(standby.dispatcher.delivering.is_set)
    finish_run("R2")
    receiver.wait_for(2)
    wait_for(caught_up)
    assert sorted(r.json()["run"]["id"] for r in receiver.requests) == ["R1", "R2"]


def test_events_older_than_max_age_are_not_notified(home: Path, receiver: Receiver,
                                                    dispatchers: list,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ql.notifications.set_preferences(webhooks=[{"url": receiver.url, "secret": SECRET}])
    finish_run("OLD")
    monkeypatch.setenv("QUANTLAB_NOTIFY_MAX_AGE", "0")
    start(dispatchers)
    wait_for(caught_up)
    assert receiver.requests == [] and ql.notifications.list() == []


def test_team_mode_over_redis(home: Path, receiver: Receiver, dispatchers: list,
                              redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_REDIS_URL", redis_url)
    ql.notifications.set_preferences(webhooks=[{"url": receiver.url, "secret": SECRET}])
    one, two = start(dispatchers), start(dispatchers)
    wait_for(lambda: one.dispatcher.delivering.is_set() or two.dispatcher.delivering.is_set())
    finish_run("TEAM")
    receiver.wait_for(1)
    wait_for(caught_up)
    assert [r.json()["run"]["id"] for r in receiver.requests] == ["TEAM"]
    assert one.dispatcher.delivering.is_set() != two.dispatcher.delivering.is_set()


def test_redis_lease_is_exclusive_and_notices_a_loss(redis_url: str) -> None:
    import threading

    import redis

    first = RedisLock(redis_url, key="test:lock", ttl=0.3)
    second = RedisLock(redis_url, key="test:lock", ttl=0.3)
    stop = threading.Event()
    assert first.acquire(stop)
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    assert second.acquire(stop, poll=0.05) is False  # still held (renewed past its ttl)
    first.release()
    assert second.acquire(threading.Event(), poll=0.05)
    redis.Redis.from_url(redis_url).delete("test:lock")  # e.g. Redis lost it
    assert second.lost.wait(5)
    second.release()


def test_start_dispatcher_thread_is_once_per_process(home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    thread = start_dispatcher_thread()
    try:
        assert thread is not None and thread.alive
        assert start_dispatcher_thread() is thread
    finally:
        assert thread is not None
        thread.stop()
    assert not thread.alive
    monkeypatch.setenv("QUANTLAB_NOTIFY_DISPATCHER", "0")
    assert start_dispatcher_thread() is None


# --------------------------------------------------------------------------------------------
# The public API and the CLI


def test_preferences_round_trip_and_refuse_bad_values(home: Path, receiver: Receiver) -> None:
    defaults = ql.notifications.get_preferences()
    assert defaults == {"email": None, "email_enabled": True, "in_app": True, "webhooks": [],
                        "events": ["completed", "failed"], "when": None}
    ql.notifications.set_preferences(email="alice@example.com", when="sharpe > 1")
    ql.notifications.add_webhook(receiver.url, SECRET)
    prefs = ql.notifications.get_preferences()
    assert prefs["email"] == "alice@example.com" and prefs["when"] == "sharpe > 1"
    assert prefs["webhooks"] == [{"url": receiver.url, "secret": SECRET}]
    with pytest.raises(ConfigError, match="did you mean 'sharpe'"):
        ql.notifications.set_preferences(when="sharp > 1", email="bob@example.com")
    assert ql.notifications.get_preferences() == prefs  # nothing was saved
    ql.notifications.set_preferences(when=None)
    assert ql.notifications.get_preferences()["when"] is None
    ql.notifications.remove_webhook(receiver.url)
    with pytest.raises(ConfigError, match=r"no webhook .* in your preferences \(yours: none\)"):
        ql.notifications.remove_webhook(receiver.url)
    # other features' keys in the same preferences document are kept
    registry().set_preferences("tester", {**registry().get_preferences("tester"),
                                          "theme": "dark"})
    ql.notifications.set_preferences(in_app=False)
    assert registry().get_preferences("tester")["theme"] == "dark"


def test_plan_without_a_user_uses_only_the_config() -> None:
    block: dict[str, Any] = {"email": ["ops@example.com"]}
    run = {"id": "X", "user": None, "metrics": {}, "config": {"notify": block}}
    planned = plan_deliveries(run, "failed", None)
    assert [(d.channel, d.target, d.source) for d in planned] == []  # no events subscribed
    block["events"] = ["failed"]
    planned = plan_deliveries(run, "failed", None)
    assert [(d.channel, d.target, d.source) for d in planned] == [
        ("email", "ops@example.com", "config")]
    assert plan_deliveries(run, "progress", None) == []


def test_test_notification_reaches_every_channel(home: Path, receiver: Receiver,
                                                 mailbox: Mailbox) -> None:
    ql.notifications.set_preferences(email="alice@example.com",
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    records = ql.notifications.test()
    assert sorted((r["channel"], r["status"]) for r in records) == [
        ("email", "delivered"), ("in_app", "delivered"), ("webhook", "delivered")]
    assert receiver.requests[0].json()["type"] == "run.test"
    assert receiver.requests[0].verified()
    assert mailbox.messages[0][2]["Subject"] == "[QuantLab] QuantLab test notification"
    assert ql.notifications.list()[0]["title"] == "QuantLab test notification"


def test_cli(home: Path, receiver: Receiver, mailbox: Mailbox) -> None:
    runner = CliRunner()
    out = runner.invoke(notify_cli, ["set", "--email", "alice@example.com", "--events",
                                     "completed,failed,sweep_finished", "--when",
                                     "sharpe > 1.5", "--add-webhook", receiver.url,
                                     "--secret", SECRET])
    assert out.exit_code == 0, out.output
    assert "email:    alice@example.com (on)" in out.output
    assert f"webhook:  {receiver.url}  secret rece… (33 chars)" in out.output
    assert SECRET not in out.output
    shown = runner.invoke(notify_cli, ["show"])
    assert "when:     sharpe > 1.5" in shown.output
    assert "events:   completed, failed, sweep_finished" in shown.output

    bad = runner.invoke(notify_cli, ["set", "--when", "sharpe >"])
    assert isinstance(bad.exception, ConfigError)
    assert "column 9" in str(bad.exception)
    missing_secret = runner.invoke(notify_cli, ["set", "--add-webhook", receiver.url])
    assert missing_secret.exit_code == 2 and "--add-webhook needs --secret" in missing_secret.output

    tested = runner.invoke(notify_cli, ["test"])
    assert tested.exit_code == 0, tested.output
    assert tested.output.count("delivered") == 3
    listed = runner.invoke(notify_cli, ["list", "--unread"])
    assert "* " in listed.output and "QuantLab test notification" in listed.output
    assert runner.invoke(notify_cli, ["read", "--all"]).output.strip() == \
        "marked 1 notifications read"
    assert runner.invoke(notify_cli, ["list", "--unread"]).output.strip() == \
        "no notifications unread"
    log = runner.invoke(notify_cli, ["log"])
    assert log.output.count("delivered") == 3 and "#1 200" in log.output
    checked = runner.invoke(notify_cli, ["check", "sharpe > 1 and not calmar < 0.5"])
    assert checked.output.startswith("ok: ") and "calmar, sharpe" in checked.output
    runner.invoke(notify_cli, ["set", "--email-off", "--no-in-app",
                               "--remove-webhook", receiver.url])
    failed_test = runner.invoke(notify_cli, ["test"])
    assert failed_test.exit_code == 1 and "nothing to send: no channel is on" in failed_test.output


def test_a_refused_set_saves_none_of_its_changes(home: Path, receiver: Receiver) -> None:
    # `notify set` changes several things at once: a refused part (here the condition) must
    # leave everything as it was, the new webhook included
    runner = CliRunner()
    bad = runner.invoke(notify_cli, ["set", "--add-webhook", receiver.url, "--secret", SECRET,
                                     "--email", "bob@example.com", "--when", "sharp > 1"])
    assert isinstance(bad.exception, ConfigError)
    assert "did you mean 'sharpe'" in str(bad.exception)
    prefs = ql.notifications.get_preferences()
    assert prefs["webhooks"] == [] and prefs["email"] is None and prefs["when"] is None
    gone = runner.invoke(notify_cli, ["set", "--remove-webhook", receiver.url])
    assert isinstance(gone.exception, ConfigError)
    assert "no webhook" in str(gone.exception) and "`quantlab notify show`" in str(gone.exception)


def test_notify_run_serves_in_its_own_process_until_sigterm(home: Path,
                                                            receiver: Receiver) -> None:
    import os
    import signal
    import subprocess
    import sys

    ql.notifications.set_preferences(in_app=False,
                                     webhooks=[{"url": receiver.url, "secret": SECRET}])
    finish_run("BEFORE")  # ended before the dispatcher ever ran: still told (cursor starts at 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from quantlab.notify.cli import notify; notify(['run'])"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        finish_run("DURING")
        receiver.wait_for(2)
        wait_for(caught_up)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "notification dispatcher for" in out and out.strip().endswith("dispatcher stopped")
    assert sorted(r.json()["run"]["id"] for r in receiver.requests) == ["BEFORE", "DURING"]


def test_a_webhook_token_in_the_path_is_shown_redacted_everywhere(
        home: Path, receiver: Receiver, dispatchers: list) -> None:
    # a Slack-style URL whose path is the secret: the delivery log (registry), `notify log`,
    # `notify show` and `notify test` show it redacted; the request still goes to the full URL
    from tests.support.procs import free_port

    token = "T000/B000/XXXXSECRET"
    live = receiver.url.replace("/hook?team=quant", f"/services/{token}")
    dead = f"http://127.0.0.1:{free_port()}/services/{token}"
    ql.notifications.set_preferences(in_app=False,
                                     webhooks=[{"url": dead, "secret": SECRET},
                                               {"url": live, "secret": SECRET}])
    start(dispatchers)
    finish_run("R1")
    receiver.wait_for(1)
    wait_for(caught_up)
    assert receiver.requests[0].path == f"/services/{token}"
    logged = deliveries("R1")
    assert sorted(d["target"] for d in logged) == sorted(
        [dead.replace(token, "***"), live.replace(token, "***")])
    assert "XXXXSECRET" not in repr(logged)

    runner = CliRunner()
    log = runner.invoke(notify_cli, ["log"])
    assert log.exit_code == 0, log.output
    assert f"webhook {dead.replace(token, '***')}  run R1" in log.output
    assert "#1 — " in log.output and "ConnectionRefusedError" in log.output
    shown = runner.invoke(notify_cli, ["show"])
    assert f"webhook:  {live.replace(token, '***')}  secret rece…" in shown.output
    tested = runner.invoke(notify_cli, ["test"])
    assert "delivered webhook" in tested.output
    for output in (log.output, shown.output, tested.output):
        assert "XXXXSECRET" not in output
    assert "XXXXSECRET" in runner.invoke(notify_cli, ["show", "--secrets"]).output

    # the redacted form, as shown, removes the one webhook it names
    removed = runner.invoke(notify_cli, ["set", "--remove-webhook", dead.replace(token, "***")])
    assert removed.exit_code == 0, removed.output
    assert [h["url"] for h in ql.notifications.get_preferences()["webhooks"]] == [live]
