"""Redis event stream: surviving a Redis restart, and a clear error when Redis stays away."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from quantlab.events import EventsUnavailable
from quantlab.events.redis import RedisEventStream
from tests.support.procs import free_port
from tests.support.redis import RedisServer, start_redis

pytestmark = pytest.mark.redis


def test_client_reconnects_after_redis_restarts(tmp_path: Path) -> None:
    first = start_redis(tmp_path)
    stream = RedisEventStream(first.url)
    before = stream.publish("r", "started")
    first.proc.kill()
    first.proc.wait(timeout=10)

    servers: list[RedisServer] = []
    # Redis comes back a little later on the same port; publish must retry until then.
    timer = threading.Timer(0.5, lambda: servers.append(start_redis(tmp_path, first.port)))
    timer.start()
    try:
        after = stream.publish("r", "progress", {"progress": 0.5})
        timer.join()
        # The server kept nothing (no persistence), but the sequence still moves forward, so a
        # follower holding before.seq receives what comes next.
        assert after.seq > before.seq
        assert stream.read("r", after=before.seq) == [after]
        assert stream.wait(after=before.seq, timeout=5) == [after]
        assert stream.last_seq("r") == after.seq
    finally:
        timer.join()
        stream.close()
        for server in servers:
            server.proc.terminate()
            server.proc.wait(timeout=10)


def test_redis_that_stays_away_gives_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    stream = RedisEventStream(url, retries=1)
    with pytest.raises(EventsUnavailable) as info:
        stream.publish("r", "queued")
    assert str(info.value).startswith(f"cannot reach Redis at {url} for run events (")
    assert str(info.value).endswith(
        "check that redis-server is running and QUANTLAB_REDIS_URL is right")
