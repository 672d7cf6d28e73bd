"""Alpha Vantage (https://www.alphavantage.co/documentation/) as a market-data provider.

Daily bars come from ``TIME_SERIES_DAILY_ADJUSTED`` (split- and dividend-adjusted: open, high
and low are scaled by the ratio ``adjusted close / close`` of their day, volume by the later
split coefficients) or, with ``adjusted=False`` or when the key may not use that endpoint,
``TIME_SERIES_DAILY`` (as traded). Intraday bars (1min, 5min, 15min, 30min, 60min) come from
``TIME_SERIES_INTRADAY``, which adjusts them itself (``adjusted=true``, its default), in the
exchange's time zone (US/Eastern), extended hours included unless ``extended_hours=False``.

Requests go through a client-side rate limiter (default 5 a minute and 25 a day, the free
tier's limits; it waits rather than fails), transient failures (connection errors, HTTP 5xx
and 429) are retried with exponential backoff, and the API's error answers become
:class:`ProviderError`\\ s that say what to do.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import requests

from quantlab import settings
from quantlab.data.providers import History, Known, Provider, register_provider
from quantlab.data.ratelimit import Clock, RateLimiter, Sleep, backoff_delays
from quantlab.errors import ConfigError, ProviderError

DEFAULT_URL = "https://www.alphavantage.co/query"
INTRADAY = {"1min": "1min", "5min": "5min", "15min": "15min", "30min": "30min", "1h": "60min"}
MINUTES = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "1h": 60}
COMPACT_POINTS = 100  # what outputsize=compact returns
TIME_ZONES = {"US/Eastern": "America/New_York"}
KEY_HELP = ("the API key is invalid or missing: set ALPHAVANTAGE_API_KEY=... (get a free key at "
            "alphavantage.co/support/#api-key), or pass api_key=...")

_LIMITERS: dict[tuple[Any, ...], RateLimiter] = {}


class AlphaVantage(Provider):
    """``fetch(..., provider="alphavantage")``. All arguments are optional keywords."""

    name = "alphavantage"
    intervals = ("1min", "5min", "15min", "30min", "1h", "1d")

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        adjusted: bool | None = None,
        extended_hours: bool = True,
        calls_per_minute: int | None = None,
        calls_per_day: int | None = None,
        max_retries: int = 4,
        backoff: float = 2.0,
        rate_limit_retries: int = 3,
        rate_limit_wait: float = 60.0,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        limiter: RateLimiter | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        key = api_key or settings.current().alphavantage_api_key
        if not key:
            raise ProviderError(KEY_HELP, field="api_key")
        self.api_key = key
        self.base_url = base_url or os.environ.get("QUANTLAB_ALPHAVANTAGE_URL") or DEFAULT_URL
        self.adjusted = adjusted
        self.extended_hours = extended_hours
        self.max_retries = max_retries
        self.backoff = backoff
        self.rate_limit_retries = rate_limit_retries
        self.rate_limit_wait = rate_limit_wait
        self.timeout = timeout
        self.session = session or requests.Session()
        per_minute = calls_per_minute if calls_per_minute is not None else int(
            settings.env_number("QUANTLAB_ALPHAVANTAGE_PER_MINUTE", 5, integer=True, minimum=1))
        per_day = calls_per_day if calls_per_day is not None else int(
            settings.env_number("QUANTLAB_ALPHAVANTAGE_PER_DAY", 25, integer=True, minimum=1))
        if limiter is None:
            # One budget per key, shared by every process through a file in the data folder.
            digest = hashlib.sha256(f"{self.base_url} {key}".encode()).hexdigest()[:16]
            state = settings.current().data_dir / "providers" / f"alphavantage-{digest}.json"
            slot = (state, per_minute, per_day, clock, sleep)
            limiter = _LIMITERS.get(slot)
            if limiter is None:
                limiter = _LIMITERS[slot] = RateLimiter(
                    [(per_minute, 60.0), (per_day, 86_400.0)], clock=clock, sleep=sleep,
                    state_path=state)
        self.limiter = limiter
        self.requests_made = 0
        self._daily_adjusted_refused = False

    # ------------------------------------------------------------------ HTTP

    def request(self, **params: str) -> dict[str, Any]:
        """One API call, rate-limited and retried; the decoded JSON or a ProviderError."""
        query = {**params, "datatype": "json", "apikey": self.api_key}
        what = f"{params.get('function')} {params.get('symbol', '')}".strip()
        delays = backoff_delays(self.max_retries, self.backoff)
        failures = rate_answers = 0
        while True:
            self.limiter.acquire()
            self.requests_made += 1
            problem = self._attempt(query, what)
            if isinstance(problem, dict):
                kind, text = _classify(problem)
                if kind is None:
                    return problem
                if kind != "rate":
                    raise self._error(kind, text, params)
                if rate_answers >= self.rate_limit_retries:
                    raise ProviderError(
                        f"Alpha Vantage kept answering with its rate limit for {what} after "
                        f"{rate_answers} waits: {text!r}. The free tier allows 5 requests a "
                        f"minute and 25 a day; fetch again later (what is stored is kept)",
                        symbol=params.get("symbol"),
                    )
                self.sleep(self.rate_limit_wait * 2**rate_answers)
                rate_answers += 1
                continue
            if failures >= self.max_retries:
                raise ProviderError(
                    f"{problem} for {what}; gave up after {failures + 1} attempts. Check the "
                    f"network and {self.base_url}, then fetch again",
                    symbol=params.get("symbol"),
                )
            self.sleep(delays[failures])
            failures += 1

    def _attempt(self, query: dict[str, str], what: str) -> dict[str, Any] | str:
        """The JSON answer, or a sentence saying why this attempt should be retried."""
        try:
            resp = self.session.get(self.base_url, params=query, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return f"cannot reach Alpha Vantage ({type(exc).__name__})"
        if resp.status_code == 429 or resp.status_code >= 500:
            return f"Alpha Vantage answered HTTP {resp.status_code}"
        if resp.status_code >= 400:
            raise ProviderError(
                f"Alpha Vantage answered HTTP {resp.status_code} for {what}: "
                f"{resp.text[:200]!r}; check the base URL {self.base_url}",
                symbol=query.get("symbol"),
            )
        try:
            payload = resp.json()
        except ValueError:
            raise ProviderError(
                f"Alpha Vantage's answer for {what} is not JSON: {resp.text[:200]!r}; check the "
                f"base URL {self.base_url}", symbol=query.get("symbol"),
            ) from None
        if not isinstance(payload, dict):
            raise ProviderError(f"Alpha Vantage's answer for {what} is not a JSON object",
                                symbol=query.get("symbol"))
        return payload

    def _error(self, kind: str, text: str, params: dict[str, str]) -> ProviderError:
        symbol = params.get("symbol")
        if kind == "key":
            return ProviderError(f"{KEY_HELP}. Alpha Vantage answered: {text!r}", field="api_key")
        if kind == "premium":
            return ProviderError(
                f"{params.get('function')} is a premium Alpha Vantage endpoint for this key; "
                f"pass adjusted=False to download as-traded prices with TIME_SERIES_DAILY, or "
                f"use a premium key. Alpha Vantage answered: {text!r}", symbol=symbol,
                kind="premium",
            )
        return ProviderError(
            f"Alpha Vantage does not know symbol {symbol!r} — check the ticker (e.g. 'IBM'). "
            f"It answered: {text!r}", symbol=symbol,
        )

    # ------------------------------------------------------------------ history

    def history(self, symbol: str, interval: str, known: Known | None) -> History:
        if interval == "1d":
            return self._daily(symbol, known)
        if interval in INTRADAY:
            return self._intraday(symbol, interval, known)
        raise ConfigError(f"alphavantage does not serve interval {interval!r}; use one of "
                          f"{', '.join(self.intervals)}", field="interval")

    def _daily(self, symbol: str, known: Known | None) -> History:
        today = self.now().tz_convert("America/New_York").tz_localize(None).normalize()
        compact = known is not None and np.busday_count(
            known.last.date(), today.date()) < COMPACT_POINTS - 10
        frame, adjusted = self._daily_frame(symbol, "compact" if compact else "full")
        if known is None or not compact:
            return History(frame, adjusted, complete=True)
        reason = _needs_full(frame, known, adjusted)
        if reason:
            frame, adjusted = self._daily_frame(symbol, "full")
            return History(frame, adjusted, complete=True, note=reason)
        return History(frame[frame.index >= known.last], adjusted, complete=False)

    def _daily_frame(self, symbol: str, outputsize: str) -> tuple[pd.DataFrame, bool]:
        if self.adjusted is not False and not self._daily_adjusted_refused:
            try:
                payload = self.request(function="TIME_SERIES_DAILY_ADJUSTED", symbol=symbol,
                                       outputsize=outputsize)
                return parse_series(payload, symbol, adjust=True), True
            except ProviderError as exc:
                if self.adjusted is True or exc.fields.get("kind") != "premium":
                    raise
                warnings.warn(
                    "this Alpha Vantage key may not use TIME_SERIES_DAILY_ADJUSTED (premium); "
                    "storing as-traded daily prices from TIME_SERIES_DAILY (adjusted=False). "
                    "Splits and dividends show as jumps.", UserWarning, stacklevel=4,
                )
                self._daily_adjusted_refused = True
        payload = self.request(function="TIME_SERIES_DAILY", symbol=symbol,
                               outputsize=outputsize)
        return parse_series(payload, symbol, adjust=False), False

    def _intraday(self, symbol: str, interval: str, known: Known | None) -> History:
        adjusted = self.adjusted is not False
        compact = False
        if known is not None:
            bars = _intraday_bars_between(known.last, self.now(), MINUTES[interval])
            compact = bars < COMPACT_POINTS - 10
        payload = self.request(
            function="TIME_SERIES_INTRADAY", symbol=symbol, interval=INTRADAY[interval],
            outputsize="compact" if compact else "full", adjusted=str(adjusted).lower(),
            extended_hours=str(self.extended_hours).lower(),
        )
        frame = parse_series(payload, symbol, adjust=False)
        if known is None or not compact:
            return History(frame, adjusted, complete=known is None, note="")
        reason = _needs_full(frame, known, adjusted)
        if reason:
            payload = self.request(
                function="TIME_SERIES_INTRADAY", symbol=symbol, interval=INTRADAY[interval],
                outputsize="full", adjusted=str(adjusted).lower(),
                extended_hours=str(self.extended_hours).lower(),
            )
            return History(parse_series(payload, symbol, adjust=False), adjusted,
                           complete=False, note=reason)
        return History(frame[frame.index >= known.last], adjusted, complete=False)


def _intraday_bars_between(last: pd.Timestamp, now: pd.Timestamp, minutes: int) -> float:
    """How many bars can have appeared after ``last``: sessions run 04:00-20:00 New York time
    (extended hours) on weekdays."""
    tz = "America/New_York"
    last = last.tz_convert(tz) if last.tz is not None else last.tz_localize(tz)
    now = now.tz_convert(tz)
    step = pd.Timedelta(minutes=minutes)
    if last.date() == now.date():
        return max(0.0, (now - last) / step)
    session_start, session_end = pd.Timedelta(hours=4), pd.Timedelta(hours=20)
    rest_of_last = max(pd.Timedelta(0), last.normalize() + session_end - last)
    so_far_today = min(max(pd.Timedelta(0), now - now.normalize() - session_start),
                       session_end - session_start)
    days_between = int(np.busday_count(last.date() + pd.Timedelta(days=1), now.date()))
    return (rest_of_last + so_far_today + days_between * (session_end - session_start)) / step


def _needs_full(frame: pd.DataFrame, known: Known, adjusted: bool) -> str:
    """Why recent bars cannot simply extend the stored ones ('' when they can)."""
    if adjusted != known.adjusted:
        return "the stored bars differ in adjustment; downloaded the full history"
    if len(frame) == 0 or frame.index[0] > known.last:
        return "the recent bars do not reach the stored ones; downloaded the full history"
    if known.last in frame.index:
        close = float(frame["close"].to_numpy()[frame.index.get_loc(known.last)])
        if abs(close - known.last_close) > 1e-6 * max(abs(known.last_close), 1.0):
            return ("the provider re-adjusted past prices (a split or dividend); downloaded the "
                    "full history")
    return ""


def _classify(payload: dict[str, Any]) -> tuple[str | None, str]:
    """(kind, text) of an error answer: 'key', 'symbol', 'premium', 'rate'; (None, '') if ok."""
    for field in ("Error Message", "Note", "Information"):
        if field not in payload:
            continue
        text = str(payload[field])
        low = text.lower()
        if "apikey" in low or ("api key" in low and ("invalid" in low or "demo" in low)):
            return "key", text
        if field == "Error Message":
            return "symbol", text
        if any(s in low for s in ("rate limit", "call frequency", "requests per", "calls per",
                                  "spreading out")):
            return "rate", text
        if "premium" in low:
            return "premium", text
        if not any(k.startswith("Time Series") for k in payload):
            return "rate", text  # an unknown notice instead of data: treat as a busy answer
    return None, ""


def parse_series(payload: dict[str, Any], symbol: str, *, adjust: bool) -> pd.DataFrame:
    """An Alpha Vantage "Time Series (...)" answer as an ascending OHLCV frame."""
    key = next((k for k in payload if k.startswith("Time Series")), None)
    if key is None or not isinstance(payload[key], dict):
        raise ProviderError(
            f"Alpha Vantage's answer for {symbol} has no time series (keys: "
            f"{', '.join(map(str, payload)) or 'none'}); try again later", symbol=symbol,
        )
    series: dict[str, dict[str, str]] = payload[key]
    if not series:
        raise ProviderError(f"Alpha Vantage returned no bars for {symbol}", symbol=symbol)
    meta = payload.get("Meta Data", {})
    tz_name = next((v for k, v in meta.items() if k.endswith("Time Zone")), None)
    stamps = list(series)
    first = series[stamps[0]]
    names = {k.split(". ", 1)[-1].strip().lower(): k for k in first}
    try:
        cols = {name: np.array([float(bar[names[name]]) for bar in series.values()])
                for name in names}
        index = pd.DatetimeIndex(pd.to_datetime(stamps, format="ISO8601"))
    except (KeyError, ValueError, TypeError) as exc:
        raise ProviderError(f"Alpha Vantage's bars for {symbol} are malformed ({exc!r})",
                            symbol=symbol) from None
    order = np.argsort(index.asi8, kind="stable")
    index = index[order]
    cols = {name: values[order] for name, values in cols.items()}
    out = {name: cols[name] for name in ("open", "high", "low", "close")}
    out["volume"] = cols.get("volume", np.zeros(len(index)))
    if adjust and "adjusted close" in cols:
        ratio = cols["adjusted close"] / cols["close"]
        for name in ("open", "high", "low"):
            out[name] = cols[name] * ratio
        out["close"] = cols["adjusted close"]
        splits = cols.get("split coefficient", np.ones(len(index)))
        splits = np.where(splits > 0, splits, 1.0)
        # volume before a split counted old shares: scale by the splits that came after it
        later = np.concatenate([np.cumprod(splits[::-1])[::-1][1:], [1.0]])
        out["volume"] = out["volume"] * later
    frame = pd.DataFrame(out, index=index)
    if key != "Time Series (Daily)" and tz_name:
        frame.index = index.tz_localize(TIME_ZONES.get(tz_name, tz_name),
                                        ambiguous="NaT", nonexistent="NaT")
        frame = frame[frame.index.notna()]
    return frame


register_provider("alphavantage", AlphaVantage)
