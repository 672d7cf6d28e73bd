"""The synthetic sample universe: shape, realism, validity, determinism, idempotency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.data import samples
from tests.support.data import store_bytes


@pytest.fixture
def installed(ql_home: Path) -> pd.DataFrame:
    return ql.data.sample()


def test_sample_installs_ten_daily_symbols_and_one_minute_symbol(installed: pd.DataFrame) -> None:
    assert list(installed["status"]) == ["installed"] * 11
    table = ql.data.symbols()
    daily = table[table["interval"] == "1d"]
    assert list(daily["name"]) == list(samples.SYMBOLS)
    assert daily["synthetic"].all() and (daily["source"] == "quantlab.sample").all()
    assert (daily["first"] == pd.Timestamp("2015-01-02")).all()  # 1 January is a holiday
    assert (daily["last"] == pd.Timestamp("2024-12-31")).all()
    business_days = len(samples.calendar())
    missing = business_days - daily["rows"].to_numpy()
    assert ((missing >= 3) & (missing <= 6)).all()  # a few missing days per symbol
    minute = table[table["interval"] == "1min"].iloc[0]
    assert (minute["name"], minute["rows"], bool(minute["synthetic"])) == ("AAA", 21 * 390, True)


def test_sample_bars_are_valid_and_look_like_markets(installed: pd.DataFrame) -> None:
    bars = ql.data.load(list(samples.SYMBOLS))
    have = ~np.isnan(bars.close)
    o, h, lo, c = (getattr(bars, n)[have] for n in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    assert (bars.volume[have] > 0).all()
    returns = np.diff(np.log(bars.close), axis=1)
    vol = np.nanstd(returns, axis=1) * np.sqrt(252)
    assert ((vol > 0.12) & (vol < 0.6)).all(), vol  # equity-like annual volatility
    gaps = np.log(bars.open[:, 1:] / bars.close[:, :-1])
    assert np.nanmax(np.abs(gaps)) > 0.05  # overnight jumps exist
    rolling = pd.DataFrame(returns.T).rolling(63).std().to_numpy()
    ratio = np.nanmax(rolling, axis=0) / np.nanmin(rolling, axis=0)
    assert (ratio > 2).all()  # calm and turbulent regimes
    yearly = pd.Series(np.nanmean(bars.close, axis=0), index=bars.index).resample("YE").last()
    assert (yearly.pct_change().dropna() < 0).any()  # not a straight line up
    # the market factor correlates the symbols
    corr = pd.DataFrame(returns.T).corr().to_numpy()[np.triu_indices(10, 1)]
    assert 0.15 < np.nanmean(corr) < 0.9


def test_minute_bars_agree_with_the_daily_bars(installed: pd.DataFrame) -> None:
    minute = ql.data.load("AAA", interval="1min").frame("AAA")
    assert minute.index[0] == pd.Timestamp("2024-12-02 09:30")
    assert minute.index[-1] == pd.Timestamp("2024-12-31 15:59")
    assert pd.Timestamp("2024-12-25") not in minute.index.normalize()
    daily = ql.data.load("AAA", start="2024-12-02").frame("AAA")
    days = minute.groupby(minute.index.normalize())
    np.testing.assert_allclose(days["open"].first(), daily["open"], atol=0.011)
    np.testing.assert_allclose(days["close"].last(), daily["close"], atol=0.011)
    np.testing.assert_array_equal(days["high"].max(), daily["high"])
    np.testing.assert_array_equal(days["low"].min(), daily["low"])
    np.testing.assert_array_equal(days["volume"].sum(), daily["volume"])


def test_sample_is_idempotent(ql_home: Path, installed: pd.DataFrame) -> None:
    before = store_bytes(ql_home)
    again = ql.data.sample()
    assert list(again["status"]) == ["already installed"] * 11
    assert store_bytes(ql_home) == before


def test_sample_is_identical_in_another_process(ql_home: Path, installed: pd.DataFrame,
                                                tmp_path: Path) -> None:
    other = tmp_path / "other"
    code = ("import quantlab as ql; ql.data.sample(); "
            "print(ql.data.fingerprint(['AAA','BBB','JJJ'])); "
            "print(ql.data.fingerprint('AAA', interval='1min'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "QUANTLAB_HOME": str(other)})
    assert out.stdout.split() == [ql.data.fingerprint(["AAA", "BBB", "JJJ"]),
                                  ql.data.fingerprint("AAA", interval="1min")]


def test_sample_will_not_overwrite_real_data(ql_home: Path) -> None:
    from tests.support.data import bars_frame

    ql.data.import_frame("CCC", bars_frame("2020-01-01", 10))
    with pytest.raises(ql.DataError, match=r"CCC 1d already holds data from 'frame'; sample\(\) "
                       r"will not overwrite it\. Remove it first .* or call sample\(force=True\)"):
        ql.data.sample()
    assert ql.data.symbols()["rows"].tolist() == [10]
    ql.data.sample(["ccc"], force=True)
    assert ql.data.symbols()["synthetic"].tolist() == [True]


def test_sample_subset_and_unknown_name(ql_home: Path) -> None:
    out = ql.data.sample(["BBB"], minute=False)
    assert out["symbol"].tolist() == ["BBB"]
    with pytest.raises(ql.DataError, match=r"'ZZZ' is not a sample symbol; the sample has AAA, "
                       r"BBB"):
        ql.data.sample(["ZZZ"])
