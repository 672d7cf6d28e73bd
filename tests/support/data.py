"""Bars frames, store snapshots and a fake Alpha Vantage for the data tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from tests.support.procs import free_port

PREMIUM = ("Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to "
           "any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock "
           "all premium endpoints")


BAD_KEY = ("the parameter apikey is invalid or missing. Please claim your free API key on "
           "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds.")


BAD_CALL = ("Invalid API call. Please retry or visit the documentation "
            "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY_ADJUSTED.")


def daily_payload(frame: pd.DataFrame, *, adjusted: bool, compact: bool) -> dict[str, Any]:
    """``frame`` (open, high, low, close, volume, adj, div, split) in Alpha Vantage's format."""
    rows = frame.iloc[-100:] if compact else frame
    series = {}
    for day, bar in rows.iloc[::-1].iterrows():  # newest first, as the API answers
        item = {"1. open": f"{bar.open:.4f}", "2. high": f"{bar.high:.4f}",
                "3. low": f"{bar.low:.4f}", "4. close": f"{bar.close:.4f}"}
        if adjusted:
            item |= {"5. adjusted close": f"{bar['adj']:.4f}", "6. volume": str(int(bar.volume)),
                     "7. dividend amount": f"{bar['div']:.4f}",
                     "8. split coefficient": f"{bar['split']:.1f}"}
        else:
            item["5. volume"] = str(int(bar.volume))
        series[str(pd.Timestamp(day).date())] = item
    info = ("Daily Time Series with Splits and Dividend Events" if adjusted else
            "Daily Prices (open, high, low, close) and Volumes")
    return {"Meta Data": {"1. Information": info, "2. Symbol": "IBM",
                          "3. Last Refreshed": str(rows.index[-1].date()),
                          "4. Output Size": "Compact" if compact else "Full size",
                          "5. Time Zone": "US/Eastern"},
            "Time Series (Daily)": series}


def intraday_payload(frame: pd.DataFrame, interval: str) -> dict[str, Any]:
    series = {str(ts): {"1. open": f"{b.open:.4f}", "2. high": f"{b.high:.4f}",
                        "3. low": f"{b.low:.4f}", "4. close": f"{b.close:.4f}",
                        "5. volume": str(int(b.volume))}
              for ts, b in frame.iloc[::-1].iterrows()}
    return {"Meta Data": {"1. Information": f"Intraday ({interval}) open, high, low, close "
                          f"prices and volume", "2. Symbol": "IBM",
                          "3. Last Refreshed": str(frame.index[-1]), "4. Interval": interval,
                          "5. Output Size": "Compact", "6. Time Zone": "US/Eastern"},
            f"Time Series ({interval})": series}


def bars_frame(start: str, n: int, freq: str = "B", seed: int = 0, price: float = 100.0
               ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq=freq)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    return pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * 1.01,
        "low": np.minimum(open_, close) * 0.99, "close": close,
        "volume": rng.integers(1000, 5000, n).astype(float),
    }, index=index)


def store_bytes(home: Path) -> dict[str, bytes]:
    root = home / "data"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def split_history(n: int = 300, split_at: int = 150) -> pd.DataFrame:
    """Raw daily bars with a 2:1 split at ``split_at``, and their adjusted closes."""
    frame = bars_frame("2023-03-01", n, seed=11, price=200.0)
    frame.index = pd.bdate_range(end="2024-05-08", periods=n)
    raw = frame.copy()
    raw.iloc[:split_at, :4] *= 2.0  # before the split the shares cost twice as much
    raw["volume"] = np.where(np.arange(n) < split_at, frame["volume"] / 2, frame["volume"])
    raw["split"] = np.where(np.arange(n) == split_at, 2.0, 1.0)
    raw["div"] = 0.0
    raw["adj"] = frame["close"]  # adjusted close = the split-free series
    return raw


class FakeAlphaVantage:
    """Serves ``data[symbol]``; ``script`` (FIFO of (status, body)) overrides the next answers."""

    def __init__(self) -> None:
        self.data: dict[str, pd.DataFrame] = {}
        self.intraday: dict[str, pd.DataFrame] = {}
        self.script: list[tuple[int, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.premium_only = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                fake.requests.append(params)
                status, body = fake.answer(params)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/query"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, params: dict[str, str]) -> tuple[int, Any]:
        if self.script:
            return self.script.pop(0)
        if params.get("apikey") != "testkey":
            return 200, {"Error Message": BAD_KEY}
        symbol, function = params.get("symbol", ""), params.get("function")
        compact = params.get("outputsize", "compact") == "compact"
        if function == "TIME_SERIES_INTRADAY" and symbol in self.intraday:
            frame = self.intraday[symbol]
            return 200, intraday_payload(frame.iloc[-100:] if compact else frame,
                                         params["interval"])
        if symbol not in self.data:
            return 200, {"Error Message": BAD_CALL}
        if function == "TIME_SERIES_DAILY_ADJUSTED":
            if self.premium_only:
                return 200, {"Information": PREMIUM}
            return 200, daily_payload(self.data[symbol], adjusted=True, compact=compact)
        if function == "TIME_SERIES_DAILY":
            return 200, daily_payload(self.data[symbol], adjusted=False, compact=compact)
        return 200, {"Error Message": BAD_CALL}

    def functions(self) -> list[tuple[str | None, str | None]]:
        return [(r.get("function"), r.get("outputsize")) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


GOOD_CSV = """Date,Open,High,Low,Close,Volume
2021-03-01,10.0,11.0,9.5,10.5,1000
2021-03-02,10.5,11.5,10.0,11.0,1200
2021-03-03,11.0,11.2,10.1,10.2,900
2021-03-04,10.2,10.8,9.9,10.7,1100
"""
