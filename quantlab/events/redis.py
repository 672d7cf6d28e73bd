"""Team event stream: Redis Streams.

Each event is appended, by one Lua script, to the run's stream and to the all-runs stream with
the explicit entry ID ``<seq>-0``, where ``seq`` comes from ``INCR`` on a counter. The script
runs atomically, so concurrent publishers on many machines can never write IDs out of order,
and a late subscriber replays with ``XRANGE``/``XREAD`` from any seq (Streams keep history;
pub/sub would not). Streams are capped with ``MAXLEN ~`` (10k per run, 100k for all runs: Redis
trims whole nodes, so a stream can briefly hold ~100 more) and a run's stream expires
``run_ttl`` seconds after its last event.

A new counter starts at the Redis server's clock in microseconds, not at 1: if Redis restarts
without persistence, its events are gone (keep them with ``appendonly yes`` if they matter), but
the sequence still moves forward, so a follower holding an old seq keeps receiving new events.

Publishing retries with exponential backoff for about 10 s when the connection drops (Redis
restarting, a failover) and checks idle connections before use. Reads retry only briefly
(``read_retries``): a follower that cannot read says so at once and retries in its own loop
(:func:`quantlab.events.outage.follow_through_outages`), so it can tell its user that it is
reconnecting and carry on from its last seq when Redis is back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from quantlab.errors import EventsUnavailable
from quantlab.events.base import Event, EventStream, check_read_args
from quantlab.settings import redact

_PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local ts = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local id = string.format('%d', seq) .. '-0'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], id,
           'run', ARGV[3], 'type', ARGV[4], 'ts', ts, 'data', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id,
           'run', ARGV[3], 'type', ARGV[4], 'ts', ts, 'data', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return {string.format('%d', seq), ts}
"""

# XREAD BLOCK is issued in slices of at most this long, well under the socket timeout, so a
# silently dead connection is noticed instead of blocking forever.
BLOCK_SLICE_SECONDS = 2.0
SOCKET_TIMEOUT_SECONDS = 10.0


def _seq(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class RedisEventStream(EventStream):
    def __init__(self, url: str, *, max_per_run: int = 10_000, max_total: int = 100_000,
                 run_ttl: int = 7 * 24 * 3600, prefix: str = "quantlab:{events}",
                 retries: int = 10, read_retries: int = 2):
        self.url = url
        self.location = redact(url)
        self.max_per_run = max_per_run
        self.max_total = max_total
        self.run_ttl = run_ttl
        self._seq_key = f"{prefix}:seq"
        self._all_key = f"{prefix}:all"
        self._run_prefix = f"{prefix}:run:"
        # ~0.05 s, 0.1 s ... capped at 2 s: about 10 s of retrying before giving up
        self.client = self._client(url, retries)
        # reads: ~0.15 s, then the follower's own loop retries (and says so)
        self.reader = self._client(url, read_retries)
        self._script = self.client.register_script(_PUBLISH)

    @staticmethod
    def _client(url: str, retries: int) -> redis.Redis:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=5,
            socket_connect_timeout=5,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
        )

    def _key(self, run_id: str | None) -> str:
        return self._all_key if run_id is None else self._run_prefix + run_id

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EventsUnavailable(
                f"cannot reach Redis at {self.location} for run events ({exc}); check that "
                f"redis-server is running and QUANTLAB_REDIS_URL is right", url=self.location
            ) from None

    def _append(self, run_id: str, type: str, payload: str) -> Event:
        seq, ts = self._call(
            self._script,
            keys=[self._seq_key, self._all_key, self._key(run_id)],
            args=[self.max_per_run, self.max_total, run_id, type, payload, self.run_ttl],
        )
        return Event(int(seq), run_id, type, float(ts), json.loads(payload))

    @staticmethod
    def _events(entries: list[tuple[str, dict[str, str]]]) -> list[Event]:
        return [Event(_seq(entry_id), f["run"], f["type"], float(f["ts"]), json.loads(f["data"]))
                for entry_id, f in entries]

    def read(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[Event]:
        check_read_args(run_id, after, limit)
        entries = self._call(self.reader.xrange, self._key(run_id), min=f"{after + 1}-0",
                             max="+", count=limit)
        return self._events(entries)

    def wait(self, run_id: str | None = None, after: int = 0, timeout: float = 1.0,
             limit: int = 1000) -> list[Event]:
        check_read_args(run_id, after, limit)
        if timeout <= 0:
            return self.read(run_id, after, limit)
        key = self._key(run_id)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # XREAD returns at once when entries after the ID exist, else blocks until one is
            # added (also to a stream that does not exist yet) or the block time runs out.
            block_ms = max(1, int(min(remaining, BLOCK_SLICE_SECONDS) * 1000))
            reply = self._call(self.reader.xread, {key: f"{after}-0"}, count=limit,
                               block=block_ms)
            if reply:
                return self._events(reply[0][1])

    def last_seq(self, run_id: str | None = None) -> int:
        entries = self._call(self.reader.xrevrange, self._key(run_id), max="+", min="-", count=1)
        return _seq(entries[0][0]) if entries else 0

    def close(self) -> None:
        self.client.close()
        self.reader.close()
