"""Alpha Vantage provider against a local HTTP server speaking its documented JSON format.

No test reaches the internet; the rate limiter and backoff run on a fake clock, so no test
sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.data.providers import History, Known, Provider
from quantlab.data.ratelimit import RateLimiter
from tests.support.data import (
    FakeAlphaVantage,
    bars_frame,
    split_history,
)
from tests.support.procs import free_port

RATE_NOTE = ("Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per "
             "day. Please subscribe to any of the premium plans at "
             "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits.")


class FakeClock:
    """Wall time that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self, start: str) -> None:
        self.now = pd.Timestamp(start).timestamp()
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def av(ql_home: Path) -> Iterator[FakeAlphaVantage]:
    server = FakeAlphaVantage()
    yield server
    server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2024-05-08 22:30:00+00:00")  # a Wednesday, after the New York close


def options(av: FakeAlphaVantage, clock: FakeClock, **extra: Any) -> dict[str, Any]:
    return {"api_key": "testkey", "base_url": av.url, "clock": clock.time,
            "sleep": clock.sleep, **extra}


def test_fetch_stores_split_adjusted_bars(av: FakeAlphaVantage, clock: FakeClock) -> None:
    raw = split_history()
    av.data["IBM"] = raw
    result = ql.data.fetch("ibm", **options(av, clock))
    assert result.iloc[0][["symbol", "status", "rows"]].tolist() == ["IBM", "downloaded", 300]
    assert av.functions() == [("TIME_SERIES_DAILY_ADJUSTED", "full")]
    sent = av.requests[0]
    assert (sent["symbol"], sent["apikey"], sent["datatype"]) == ("IBM", "testkey", "json")
    frame = ql.data.load("IBM").frame("IBM")
    np.testing.assert_allclose(frame["close"], raw["adj"].round(4), rtol=1e-9)
    ratio = raw["adj"].round(4) / raw["close"].round(4)
    np.testing.assert_allclose(frame["open"], raw["open"].round(4) * ratio, rtol=1e-9)
    np.testing.assert_allclose(frame["low"], raw["low"].round(4) * ratio, rtol=1e-9)
    # no fake halving at the split: volume before it is counted in post-split shares
    np.testing.assert_allclose(frame["volume"].iloc[:150], (raw["volume"].iloc[:150]
                                                              .astype(int) * 2))
    assert abs(frame["close"].iloc[150] / frame["close"].iloc[149] - 1) < 0.1
    row = ql.data.symbols().iloc[0]
    assert (row["source"], bool(row["adjusted"]), bool(row["synthetic"])) == (
        "alphavantage", True, False)


def test_second_fetch_is_skipped_then_asks_only_for_the_missing_days(
        av: FakeAlphaVantage, clock: FakeClock) -> None:
    raw = split_history()
    av.data["IBM"] = raw.iloc[:-3]  # the server is three days behind at first
    ql.data.fetch("IBM", **options(av, clock))
    assert ql.data.fetch("IBM", **options(av, clock)).iloc[0]["status"] == "up to date"
    assert len(av.requests) == 1  # nothing was asked

    clock.now += 3 * 86_400 + 3 * 86_400 / 2  # Saturday: Wed..Fri sessions have closed
    av.data["IBM"] = raw
    result = ql.data.fetch("IBM", **options(av, clock)).iloc[0]
    assert (result["status"], result["new_rows"], result["rows"]) == ("updated", 3, 300)
    assert av.functions()[-1] == ("TIME_SERIES_DAILY_ADJUSTED", "compact")
    np.testing.assert_allclose(ql.data.load("IBM").close[0], raw["adj"].round(4))


def test_a_new_dividend_rewrites_the_adjusted_history(av: FakeAlphaVantage,
                                                      clock: FakeClock) -> None:
    raw = split_history()
    av.data["IBM"] = raw.iloc[:-1]
    ql.data.fetch("IBM", **options(av, clock))
    clock.now += 2 * 86_400
    rerated = raw.copy()
    rerated.iloc[:-1, rerated.columns.get_loc("adj")] *= 0.99  # dividend: past adj closes move
    rerated.iloc[-1, rerated.columns.get_loc("div")] = 1.0
    av.data["IBM"] = rerated
    result = ql.data.fetch("IBM", **options(av, clock)).iloc[0]
    assert result["status"] == "downloaded" and "re-adjusted" in result["note"]
    assert av.functions()[-2:] == [("TIME_SERIES_DAILY_ADJUSTED", "compact"),
                                   ("TIME_SERIES_DAILY_ADJUSTED", "full")]
    np.testing.assert_allclose(ql.data.load("IBM").close[0], rerated["adj"].round(4))


def test_missing_key_fails_before_any_request(av: FakeAlphaVantage, clock: FakeClock) -> None:
    opts = options(av, clock)
    del opts["api_key"]
    with pytest.raises(ql.ProviderError, match=r"the API key is invalid or missing: set "
                       r"ALPHAVANTAGE_API_KEY=\.\.\. \(get a free key at alphavantage\.co"):
        ql.data.fetch("IBM", **opts)
    assert av.requests == []


def test_invalid_key_and_unknown_symbol_answers(av: FakeAlphaVantage, clock: FakeClock) -> None:
    with pytest.raises(ql.ProviderError, match=r"the API key is invalid or missing: set "
                       r"ALPHAVANTAGE_API_KEY=.*Alpha Vantage answered: 'the parameter apikey"):
        ql.data.fetch("IBM", **options(av, clock, api_key="wrong"))
    with pytest.raises(ql.ProviderError, match=r"Alpha Vantage does not know symbol 'XXXX' — "
                       r"check the ticker \(e\.g\. 'IBM'\)") as info:
        ql.data.fetch("XXXX", **options(av, clock))
    assert info.value.symbol == "XXXX"
    assert ql.data.symbols().empty  # nothing half-written


def test_transient_failures_are_retried_with_backoff(av: FakeAlphaVantage,
                                                     clock: FakeClock) -> None:
    av.data["IBM"] = split_history()
    av.script = [(503, "Service Unavailable"), (429, "Too Many Requests"), (502, "")]
    result = ql.data.fetch("IBM", **options(av, clock, backoff=1.5))
    assert result.iloc[0]["rows"] == 300
    assert len(av.requests) == 4
    assert clock.sleeps == [1.5, 3.0, 6.0]


def test_persistent_outage_gives_up_with_a_clear_error(av: FakeAlphaVantage,
                                                       clock: FakeClock) -> None:
    av.script = [(500, "boom")] * 10
    with pytest.raises(ql.ProviderError, match=r"Alpha Vantage answered HTTP 500 for "
                       r"TIME_SERIES_DAILY_ADJUSTED IBM; gave up after 3 attempts"):
        ql.data.fetch("IBM", **options(av, clock, max_retries=2))
    assert len(av.requests) == 3 and clock.sleeps == [2.0, 4.0]


def test_unreachable_server_is_retried_then_reported(ql_home: Path, clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{free_port()}/query"  # nothing listens there
    with pytest.raises(ql.ProviderError, match=r"cannot reach Alpha Vantage \(ConnectionError\) "
                       r"for TIME_SERIES_DAILY_ADJUSTED IBM; gave up after 2 attempts"):
        ql.data.fetch("IBM", api_key="k", base_url=url, clock=clock.time, sleep=clock.sleep,
                      max_retries=1)
    assert clock.sleeps == [2.0]


def test_rate_limit_answer_waits_and_retries(av: FakeAlphaVantage, clock: FakeClock) -> None:
    av.data["IBM"] = split_history()
    av.script = [(200, {"Note": "Thank you for using Alpha Vantage! Our standard API call "
                                "frequency is 5 calls per minute and 500 calls per day."})]
    assert ql.data.fetch("IBM", **options(av, clock)).iloc[0]["rows"] == 300
    assert clock.sleeps == [60.0]


def test_rate_limit_answer_that_persists_becomes_an_error(av: FakeAlphaVantage,
                                                          clock: FakeClock) -> None:
    av.script = [(200, {"Information": RATE_NOTE})] * 5
    with pytest.raises(ql.ProviderError, match=r"Alpha Vantage kept answering with its rate limit "
                       r"for TIME_SERIES_DAILY_ADJUSTED IBM after 2 waits: .*25 a day; fetch "
                       r"again later \(what is stored is kept\)"):
        ql.data.fetch("IBM", **options(av, clock, rate_limit_retries=2, rate_limit_wait=10))
    assert clock.sleeps == [10.0, 20.0]


def test_premium_endpoint_falls_back_to_unadjusted(av: FakeAlphaVantage,
                                                   clock: FakeClock) -> None:
    raw = split_history()
    av.data["IBM"] = raw
    av.premium_only = True
    with pytest.raises(ql.ProviderError, match=r"TIME_SERIES_DAILY_ADJUSTED is a premium Alpha "
                       r"Vantage endpoint for this key; pass adjusted=False"):
        ql.data.fetch("IBM", **options(av, clock, adjusted=True))
    with pytest.warns(UserWarning, match="storing as-traded daily prices"):
        ql.data.fetch("IBM", **options(av, clock))
    assert av.functions()[-1] == ("TIME_SERIES_DAILY", "full")
    np.testing.assert_allclose(ql.data.load("IBM").close[0], raw["close"].round(4))
    assert not ql.data.symbols().iloc[0]["adjusted"]


def test_intraday_bars_are_stored_in_new_york_time(av: FakeAlphaVantage,
                                                   clock: FakeClock) -> None:
    frame = bars_frame("2024-05-08 04:00", 150, freq="5min")
    av.intraday["IBM"] = frame
    result = ql.data.fetch("IBM", interval="60min", **options(av, clock))
    sent = av.requests[0]
    assert (sent["function"], sent["interval"], sent["outputsize"], sent["adjusted"],
            sent["extended_hours"]) == ("TIME_SERIES_INTRADAY", "60min", "full", "true", "true")
    assert result.iloc[0]["interval"] == "1h"
    bars = ql.data.load("IBM", interval="1h")
    assert str(bars.index.tz) == "America/New_York"
    assert bars.index[0] == pd.Timestamp("2024-05-08 04:00", tz="America/New_York")
    np.testing.assert_allclose(bars.close[0], frame["close"].round(4))


def test_unknown_provider_and_interval(ql_home: Path) -> None:
    with pytest.raises(ql.ConfigError, match=r"unknown data provider 'yahoo'; registered "
                       r"providers: alphavantage"):
        ql.data.fetch("IBM", provider="yahoo")
    with pytest.raises(ql.ConfigError, match=r"alphavantage does not serve interval '1w'; use "
                       r"one of 1min, 5min, 15min, 30min, 1h, 1d"):
        ql.data.fetch("IBM", interval="1w", api_key="k")
    with pytest.raises(ql.ConfigError, match=r"needs a subclass of quantlab\.data\.Provider"):
        ql.data.register_provider("bad", dict)  # type: ignore[arg-type]


class CsvLikeProvider(Provider):
    """A provider of the tests' own: serves a fixed frame, counts calls."""

    name = "fixture"
    intervals = ("1d",)
    calls: ClassVar[list[Known | None]] = []

    def history(self, symbol: str, interval: str, known: Known | None) -> History:
        CsvLikeProvider.calls.append(known)
        frame = bars_frame("2024-01-01", 20, seed=3)
        if known is not None:
            return History(frame[frame.index >= known.last], adjusted=False, complete=False)
        return History(frame.iloc[:15], adjusted=False, complete=True)


def test_registered_provider_is_used_by_fetch(ql_home: Path) -> None:
    ql.data.register_provider("fixture", CsvLikeProvider)
    assert "fixture" in ql.data.providers()
    clock = FakeClock("2024-06-03 12:00+00:00")
    first = ql.data.fetch("Z", provider="fixture", clock=clock.time).iloc[0]
    assert (first["status"], first["rows"]) == ("downloaded", 15)
    clock.now += 3 * 86_400
    second = ql.data.fetch("Z", provider="fixture", clock=clock.time).iloc[0]
    assert (second["status"], second["new_rows"], second["rows"]) == ("updated", 5, 20)
    last_known = CsvLikeProvider.calls[-1]
    assert last_known is not None and last_known.rows == 15


def test_fetch_will_not_overwrite_imported_data(av: FakeAlphaVantage, clock: FakeClock) -> None:
    av.data["IBM"] = split_history()
    ql.data.import_frame("IBM", bars_frame("2020-01-01", 5))
    with pytest.raises(ql.DataError, match=r"IBM 1d holds bars from 'frame', not from "
                       r"alphavantage; remove them first .* or pass force=True"):
        ql.data.fetch("IBM", **options(av, clock))
    assert av.requests == []
    ql.data.fetch("IBM", force=True, **options(av, clock))
    assert len(ql.data.load("IBM").index) == 300


def test_rate_limiter_waits_for_each_window() -> None:
    clock = FakeClock("2024-01-01")
    limiter = RateLimiter([(2, 60.0), (3, 3600.0)], clock=clock.time, sleep=clock.sleep)
    waits = []
    for _ in range(5):
        waits.append(limiter.acquire())
        clock.now += 1
    # calls at t=0, 1; the 3rd waits for the minute window (t=60); the 4th for the hour
    # window (t=3600, when the call of t=0 ages out); the 5th (t=3601) fits both windows
    assert waits == [0.0, 0.0, 58.0, 3600.0 - 61.0, 0.0]
    assert limiter.waited == sum(waits)


def test_free_tier_limiter_spaces_out_many_fetches(av: FakeAlphaVantage,
                                                   clock: FakeClock) -> None:
    for i in range(7):
        av.data[f"S{i}"] = split_history(120)
    ql.data.fetch([f"S{i}" for i in range(7)], **options(av, clock))
    assert len(av.requests) == 7
    assert clock.sleeps == [60.0]  # the 6th request waited for the minute window


def test_session_ends_skip_weekends_and_respect_the_close() -> None:
    from quantlab.data.providers import last_session_end

    ny = "America/New_York"
    wed_1500 = pd.Timestamp("2024-05-08 15:00", tz=ny).tz_convert("UTC")
    assert last_session_end(wed_1500, intraday=False) == pd.Timestamp("2024-05-07 16:00", tz=ny)
    wed_1700 = pd.Timestamp("2024-05-08 17:00", tz=ny).tz_convert("UTC")
    assert last_session_end(wed_1700, intraday=False) == pd.Timestamp("2024-05-08 16:00", tz=ny)
    assert last_session_end(wed_1700, intraday=True) == pd.Timestamp("2024-05-07 20:00", tz=ny)
    sunday = pd.Timestamp("2024-05-12 12:00", tz=ny).tz_convert("UTC")
    assert last_session_end(sunday, intraday=False) == pd.Timestamp("2024-05-10 16:00", tz=ny)


def test_a_daily_fetch_during_the_session_is_repeated_after_the_close(
        av: FakeAlphaVantage) -> None:
    clock = FakeClock("2024-05-08 15:00-04:00")  # Wednesday, market open
    av.data["IBM"] = split_history()
    ql.data.fetch("IBM", **options(av, clock))
    clock.now += 1800  # 15:30: nothing new can be final yet
    assert ql.data.fetch("IBM", **options(av, clock)).iloc[0]["status"] == "up to date"
    clock.now += 3600  # 16:30: today's bar is final now
    assert ql.data.fetch("IBM", **options(av, clock)).iloc[0]["status"] == "updated"
    assert av.functions()[-1] == ("TIME_SERIES_DAILY_ADJUSTED", "compact")
    assert len(av.requests) == 2


def test_intraday_update_asks_for_the_latest_bars_only(av: FakeAlphaVantage) -> None:
    frame = bars_frame("2024-05-08 04:00", 160, seed=4, freq="5min")  # to 17:15
    av.intraday["IBM"] = frame.iloc[:150]  # the server is at 16:25 New York time
    clock = FakeClock("2024-05-08 16:30-04:00")
    ql.data.fetch("IBM", interval="5min", **options(av, clock))
    clock.now += 60  # a minute later nothing new can have closed
    assert ql.data.fetch("IBM", interval="5min", **options(av, clock)).iloc[0][
        "status"] == "up to date"
    clock.now += 3000  # 17:21: ten more bars
    av.intraday["IBM"] = frame
    result = ql.data.fetch("IBM", interval="5min", **options(av, clock)).iloc[0]
    assert (result["status"], result["new_rows"], result["rows"]) == ("updated", 10, 160)
    assert [r["outputsize"] for r in av.requests] == ["full", "compact"]
    np.testing.assert_allclose(ql.data.load("IBM", interval="5min").close[0],
                               frame["close"].round(4))


def test_rate_budget_is_shared_through_the_state_file(tmp_path: Path) -> None:
    clock = FakeClock("2024-01-01")
    state = tmp_path / "calls.json"
    first = RateLimiter([(2, 60.0)], clock=clock.time, sleep=clock.sleep, state_path=state)
    assert [first.acquire(), first.acquire()] == [0.0, 0.0]
    # a second process (here: a second limiter) sees the calls already spent
    second = RateLimiter([(2, 60.0)], clock=clock.time, sleep=clock.sleep, state_path=state)
    assert second.acquire() == 60.0
    # the file keeps only calls still inside a window: the two of t=0 have aged out
    assert json.loads(state.read_text())["calls"] == [clock.now]
    state.write_text("not json")  # a damaged file is not fatal: the budget starts afresh
    assert second.acquire() == 0.0


def test_fetches_in_separate_provider_objects_share_the_daily_budget(
        av: FakeAlphaVantage, clock: FakeClock) -> None:
    for i in range(3):
        av.data[f"S{i}"] = split_history(120)
    limited = options(av, clock, calls_per_minute=100, calls_per_day=2)
    ql.data.fetch(["S0", "S1"], **limited)
    assert clock.sleeps == []
    ql.data.fetch("S2", **limited)  # a new provider object: the day's two calls are spent
    assert clock.sleeps == [86_400.0]
