"""Contract tests of the event stream, run against SQLite and a real redis-server."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quantlab.errors import ConfigError
from quantlab.events import EVENT_TYPES, Event, EventStream, open_events, reset
from quantlab.events.redis import RedisEventStream
from quantlab.events.sqlite import SQLiteEventStream

StreamFactory = Callable[..., EventStream]


def open_backend(kind: str, location: str, **options: Any) -> EventStream:
    if kind == "sqlite":
        return SQLiteEventStream(Path(location), **options)
    return RedisEventStream(location, **options)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, location) of an empty store."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "events.sqlite")
    return "redis", request.getfixturevalue("redis_url")


@pytest.fixture
def make_stream(backend: tuple[str, str]) -> Iterator[StreamFactory]:
    opened: list[EventStream] = []

    def make(**options: Any) -> EventStream:
        stream = open_backend(*backend, **options)
        opened.append(stream)
        return stream

    yield make
    for stream in opened:
        stream.close()


@pytest.fixture
def stream(make_stream: StreamFactory) -> EventStream:
    return make_stream()


def publish_mixed(stream: EventStream) -> list[Event]:
    return [
        stream.publish("a", "queued", {"name": "golden cross"}),
        stream.publish("b", "queued"),
        stream.publish("a", "started", {"worker": "w1"}),
        stream.publish("a", "progress", {"progress": 0.5, "step": "simulating"}),
        stream.publish("b", "started", {"worker": "w2"}),
        stream.publish("a", "completed", {"metrics": {"sharpe": 1.2}}),
    ]


def test_events_come_back_in_order_with_their_data(stream: EventStream) -> None:
    before = time.time()
    published = publish_mixed(stream)
    after = time.time()
    seqs = [e.seq for e in published]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert stream.read() == published
    assert stream.read("a") == [published[i] for i in (0, 2, 3, 5)]
    assert stream.read("b") == [published[1], published[4]]
    assert published[3].data == {"progress": 0.5, "step": "simulating"}
    assert published[1].data == {}
    assert all(before - 1 <= e.ts <= after + 1 for e in published)
    assert stream.read("nobody") == []


def test_replay_from_any_sequence_number(stream: EventStream) -> None:
    published = publish_mixed(stream)
    for i, event in enumerate(published):
        assert stream.read(after=event.seq) == published[i + 1:]
        assert stream.read(event.run_id, after=event.seq) == [
            e for e in published[i + 1:] if e.run_id == event.run_id]
    assert stream.read(after=0) == published
    pages: list[Event] = []
    after = 0
    while page := stream.read(after=after, limit=4):
        pages += page
        after = page[-1].seq
    assert pages == published


def test_last_seq_per_run_and_overall(stream: EventStream) -> None:
    assert stream.last_seq() == 0 and stream.last_seq("a") == 0
    published = publish_mixed(stream)
    assert stream.last_seq() == published[-1].seq
    assert stream.last_seq("b") == published[4].seq


def test_concurrent_publishers_never_reorder(stream: EventStream) -> None:
    def publish(run_id: str) -> None:
        for i in range(60):
            stream.publish(run_id, "progress", {"i": i})

    threads = [threading.Thread(target=publish, args=(f"run{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = stream.read(limit=10_000)
    assert len(everything) == 240
    assert [e.seq for e in everything] == sorted({e.seq for e in everything})
    for k in range(4):
        assert [e.data["i"] for e in everything if e.run_id == f"run{k}"] == list(range(60))


def test_wait_returns_existing_events_at_once_and_nothing_after_timeout(
    stream: EventStream,
) -> None:
    published = publish_mixed(stream)
    assert stream.wait("a", after=published[2].seq, timeout=30) == [published[3], published[5]]
    assert stream.wait("a", after=published[5].seq, timeout=0.2) == []
    assert stream.wait(after=published[5].seq, timeout=0) == []


def test_wait_wakes_on_publish_from_another_thread(stream: EventStream) -> None:
    first = stream.publish("t", "queued")
    timer = threading.Timer(0.2, stream.publish, args=("t", "started", {"worker": "thread"}))
    timer.start()
    got = stream.wait("t", after=first.seq, timeout=30)
    timer.join()
    assert [(e.type, e.data) for e in got] == [("started", {"worker": "thread"})]


def _publish_later(kind: str, location: str, run_id: str) -> None:
    stream = open_backend(kind, location)
    time.sleep(0.2)
    stream.publish(run_id, "progress", {"from": "child process"})
    stream.publish(run_id, "completed", {})


def test_wait_wakes_on_publish_from_another_process(backend: tuple[str, str],
                                                    stream: EventStream) -> None:
    start = stream.publish("p", "queued")
    child = multiprocessing.get_context("spawn").Process(
        target=_publish_later, args=(*backend, "p"))
    child.start()
    got: list[Event] = []
    after = start.seq
    while len(got) < 2:
        batch = stream.wait("p", after=after, timeout=60)
        assert batch, "no event from the child process within 60 s"
        got += batch
        after = batch[-1].seq
    child.join(timeout=60)
    assert child.exitcode == 0
    assert [(e.type, e.data) for e in got] == [("progress", {"from": "child process"}),
                                                ("completed", {})]


def test_follow_yields_live_events_until_stopped(stream: EventStream) -> None:
    stop = threading.Event()
    seen: list[Event] = []

    def consume() -> None:
        for event in stream.follow("f", stop=stop):
            seen.append(event)
            if event.type == "completed":
                stop.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    published = [stream.publish("f", "started"), stream.publish("other", "started"),
                 stream.publish("f", "progress", {"progress": 1.0}),
                 stream.publish("f", "completed")]
    consumer.join(timeout=60)
    assert not consumer.is_alive()
    assert seen == [published[0], published[2], published[3]]
    # a late subscriber replays everything, and an idle follower ends by itself
    assert list(stream.follow(idle_timeout=0.3)) == published
    assert list(stream.follow("f", after=published[2].seq, idle_timeout=0.3)) == [published[3]]


def test_streams_are_bounded_and_keep_the_newest(make_stream: StreamFactory) -> None:
    stream = make_stream(max_per_run=100, max_total=300)
    published = [stream.publish("long", "progress", {"i": i}) for i in range(1000)]
    kept = stream.read("long", limit=5000)
    # Redis trims whole stream nodes (MAXLEN ~), the SQLite table every 100 events: both keep
    # at least the newest max_per_run and at most one node/batch more.
    assert 100 <= len(kept) <= 200
    assert kept == published[-len(kept):]
    for i in range(500):
        stream.publish(f"run{i % 5}", "log", {"i": i})
    assert 300 <= len(stream.read(limit=5000)) <= 400
    assert stream.last_seq("long") == published[-1].seq


def test_unknown_event_type_names_the_valid_ones(stream: EventStream) -> None:
    with pytest.raises(ConfigError) as info:
        stream.publish("x", "progres", {"progress": 0.1})
    assert str(info.value) == (
        "unknown event type 'progres' — did you mean 'progress'?; an event is one of "
        + ", ".join(EVENT_TYPES))
    assert stream.read() == []


@pytest.mark.parametrize(("args", "message"), [
    (("x", "log", {"value": float("nan")}), r"event data of a 'log' event is not JSON: .*not "
                                            r"NaN or infinity"),
    (("x", "log", {"when": object()}), r"event data of a 'log' event is not JSON"),
    (("x", "log", ["not", "a", "dict"]), r"event data must be a dict, got list"),
    (("", "log", None), r"an event needs the id of its run, got ''"),
])
def test_bad_payloads_are_refused(stream: EventStream, args: tuple[Any, ...],
                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        stream.publish(*args)
    assert stream.read() == []


def test_bad_read_arguments(stream: EventStream) -> None:
    with pytest.raises(ConfigError, match=r"'after' must be a sequence number >= 0, got -1; "
                                          r"pass the seq of the last event you saw"):
        stream.read(after=-1)
    with pytest.raises(ConfigError, match=r"'limit' must be a whole number >= 1, got 0"):
        stream.wait(limit=0)


def test_open_events_follows_the_settings(ql_home: Path, monkeypatch: pytest.MonkeyPatch,
                                          redis_url: str) -> None:
    reset()
    local = open_events()
    assert isinstance(local, SQLiteEventStream)
    assert local.path == ql_home / "events.sqlite"
    assert open_events() is local
    local.publish("r", "queued")
    monkeypatch.setenv("QUANTLAB_REDIS_URL", redis_url)
    team = open_events()
    assert isinstance(team, RedisEventStream)
    assert team.read() == []  # a different store
    reset()
