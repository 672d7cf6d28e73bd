"""The market-data store: import, load and alignment, fingerprint, listing, removal, SQL,
concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.data.store import canonical_interval, current_store
from tests.support.data import bars_frame


def test_import_frame_then_load_round_trips_values(ql_home: Path) -> None:
    df = bars_frame("2020-01-01", 50)
    summary = ql.data.import_frame("acme", df, source="unit test", adjusted=True)
    assert (summary.symbol, summary.interval, summary.rows_written, summary.rows) == (
        "ACME", "1d", 50, 50)
    assert summary.first == df.index[0] and summary.last == df.index[-1]
    bars = ql.data.load("ACME")
    assert bars.symbols == ("ACME",) and bars.interval == "1d"
    assert bars.close.shape == (1, 50)
    np.testing.assert_array_equal(bars.close[0], df["close"].to_numpy())
    np.testing.assert_array_equal(bars.volume[0], df["volume"].to_numpy())
    assert list(bars.index) == list(df.index)
    assert bars.meta["source"] == {"ACME": "unit test"}
    assert bars.meta["adjusted"] == {"ACME": True}
    assert bars.meta["synthetic"] == {"ACME": False}
    assert ql.data.load(" acme", interval=None).n_bars == 50  # None means daily


def test_load_range_is_inclusive_and_date_only_end_covers_the_whole_day(ql_home: Path) -> None:
    ql.data.import_frame("MIN", bars_frame("2024-03-04 09:30", 390 * 3, freq="min"),
                         interval="1min")
    bars = ql.data.load("MIN", start="2024-03-04 10:00", end="2024-03-04", interval="1min")
    assert bars.index[0] == pd.Timestamp("2024-03-04 10:00")
    assert bars.index[-1] == pd.Timestamp("2024-03-04 23:59")  # whole day of 2024-03-04
    exact = ql.data.load("MIN", start="2024-03-04 10:00", end="2024-03-04 10:05",
                         interval="1min")
    assert len(exact.index) == 6  # both ends included


def test_union_calendar_leaves_nan_where_a_symbol_has_no_bar(ql_home: Path) -> None:
    a = bars_frame("2021-01-04", 10, seed=1)
    b = bars_frame("2021-01-04", 10, seed=2).drop(pd.Timestamp("2021-01-06"))
    c = bars_frame("2021-01-11", 10, seed=3)  # starts a week later
    for name, df in (("A", a), ("B", b), ("C", c)):
        ql.data.import_frame(name, df)
    bars = ql.data.load(["A", "B", "C"])
    assert bars.symbols == ("A", "B", "C")
    assert list(bars.index) == list(a.index.union(c.index))
    day = bars.index.get_loc(pd.Timestamp("2021-01-06"))
    assert np.isnan(bars.close[1, day]) and np.isnan(bars.open[1, day])
    assert not np.isnan(bars.close[0, day])
    assert np.isnan(bars.close[2, :5]).all()  # C not tradable before its first bar
    # values land on their own timestamps, nothing forward-filled
    np.testing.assert_array_equal(bars.frame("B")["close"].to_numpy(), b["close"].to_numpy())
    np.testing.assert_array_equal(bars.frame("C")["close"].to_numpy(), c["close"].to_numpy())


def test_extend_merges_and_the_new_bar_wins_on_overlap(ql_home: Path) -> None:
    first = bars_frame("2022-01-03", 10, seed=1)
    ql.data.import_frame("X", first)
    second = bars_frame(str(first.index[7].date()), 6, seed=2)  # overlaps 3 bars
    summary = ql.data.import_frame("X", second, mode="extend")
    assert (summary.rows_written, summary.new_rows, summary.updated_rows, summary.rows) == (
        6, 3, 3, 13)
    frame = ql.data.load("X").frame("X")
    np.testing.assert_array_equal(frame["close"].iloc[:7], first["close"].iloc[:7])
    np.testing.assert_array_equal(frame["close"].iloc[7:], second["close"])
    # replace drops what was there
    ql.data.import_frame("X", second)
    assert len(ql.data.load("X").index) == 6


def test_symbols_lists_every_series_with_its_metadata(ql_home: Path) -> None:
    assert list(ql.data.symbols().columns[:8]) == [
        "name", "interval", "first", "last", "rows", "source", "adjusted", "synthetic"]
    assert ql.data.symbols().empty
    ql.data.import_frame("D", bars_frame("2020-01-01", 20), source="vendor", adjusted=True)
    ql.data.import_frame("D", bars_frame("2020-01-01 09:30", 30, freq="5min"))
    table = ql.data.symbols()
    assert list(zip(table["name"], table["interval"], table["rows"])) == [
        ("D", "1d", 20), ("D", "5min", 30)]
    daily = table.iloc[0]
    assert daily["source"] == "vendor" and bool(daily["adjusted"]) and not daily["synthetic"]
    assert daily["first"] == pd.Timestamp("2020-01-01")


def test_remove_one_interval_or_all(ql_home: Path) -> None:
    ql.data.import_frame("R", bars_frame("2020-01-01", 20))
    ql.data.import_frame("R", bars_frame("2020-01-01 09:30", 30, freq="min"))
    assert ql.data.remove("r", "1min") == ["1min"]
    assert list(ql.data.symbols()["interval"]) == ["1d"]
    assert ql.data.remove("R") == ["1d"]
    assert ql.data.symbols().empty
    assert not any((ql_home / "data" / "bars").rglob("*.parquet"))
    with pytest.raises(ql.DataError, match=r"cannot remove 'R': it is not in the data store"):
        ql.data.remove("R")


def test_fingerprint_changes_only_with_the_bars_in_range(ql_home: Path) -> None:
    df = bars_frame("2020-01-01", 300)
    ql.data.import_frame("F", df)
    ql.data.import_frame("G", bars_frame("2020-01-01", 300, seed=5))
    window = {"start": "2020-03-01", "end": "2020-06-30"}
    base = ql.data.fingerprint(["F", "G"], **window)
    assert base == ql.data.fingerprint(["F", "G"], **window)  # deterministic

    outside = df.copy()
    outside.iloc[0, outside.columns.get_loc("close")] *= 1.01  # a bar before the window
    ql.data.import_frame("F", outside)
    assert ql.data.fingerprint(["F", "G"], **window) == base
    assert ql.data.fingerprint(["F", "G"]) != ql.data.fingerprint(["F", "G"], **window)

    inside = outside.copy()
    day = inside.index.get_loc(pd.Timestamp("2020-04-01"))
    inside.iloc[day, inside.columns.get_loc("volume")] += 1  # one bar inside the window
    ql.data.import_frame("F", inside)
    changed = ql.data.fingerprint(["F", "G"], **window)
    assert changed != base

    removed = inside.drop(pd.Timestamp("2020-04-01"))  # a bar disappears
    ql.data.import_frame("F", removed)
    assert ql.data.fingerprint(["F", "G"], **window) not in (base, changed)
    # order of symbols and the interval are part of what a run uses
    assert ql.data.fingerprint(["G", "F"], **window) != ql.data.fingerprint(["F", "G"], **window)


def test_fingerprint_of_bars_matches_fingerprint_of_store(ql_home: Path) -> None:
    ql.data.import_frame("H", bars_frame("2020-01-01", 30))
    bars = ql.data.load("H", start="2020-01-10")
    assert ql.data.fingerprint_bars(bars) == ql.data.fingerprint("H", start="2020-01-10")


def test_query_runs_duckdb_sql_over_the_store(ql_home: Path) -> None:
    ql.data.import_frame("Q1", bars_frame("2020-01-01", 10))
    ql.data.import_frame("Q2", bars_frame("2020-01-01", 7))
    out = ql.data.query("select symbol, count(*) as n, max(high) as hi from bars "
                        "group by symbol order by symbol")
    assert list(out["symbol"]) == ["Q1", "Q2"] and list(out["n"]) == [10, 7]
    with pytest.raises(ql.ConfigError, match="the SQL query failed"):
        ql.data.query("select nope from bars")


def test_time_zones_are_kept_and_aligned(ql_home: Path) -> None:
    ny = bars_frame("2024-01-02 09:30", 10, freq="min").tz_localize("America/New_York")
    ql.data.import_frame("NY", ny)
    bars = ql.data.load("NY", interval="1min", start="2024-01-02 09:33")
    assert str(bars.index.tz) == "America/New_York"
    assert bars.index[0] == pd.Timestamp("2024-01-02 09:33", tz="America/New_York")
    # a naive file stated to be in London time aligns on instants with the New York one
    ldn = bars_frame("2024-01-02 14:30", 10, freq="min", seed=3)
    ql.data.import_frame("LDN", ldn, timezone="Europe/London")
    both = ql.data.load(["NY", "LDN"], interval="1min")
    assert str(both.index.tz) == "UTC" and len(both.index) == 10  # same instants
    assert not np.isnan(both.close).any()


def test_naive_and_zoned_symbols_cannot_be_mixed(ql_home: Path) -> None:
    ql.data.import_frame("NAIVE", bars_frame("2024-01-02 09:30", 5, freq="min"))
    ql.data.import_frame("ZONED", bars_frame("2024-01-02 09:30", 5, freq="min"),
                         timezone="America/New_York")
    with pytest.raises(ql.DataError, match=r"cannot align symbols without a time zone \(NAIVE\) "
                       r"with symbols that have one \(ZONED \(America/New_York\)\); re-import"):
        ql.data.load(["NAIVE", "ZONED"], interval="1min")


def test_writes_are_atomic_files_and_leave_no_temporaries(ql_home: Path) -> None:
    ql.data.import_frame("T", bars_frame("2020-01-01", 10))
    ql.data.import_frame("T", bars_frame("2020-02-03", 10), mode="extend")
    names = sorted(p.name for p in (ql_home / "data").rglob("*") if p.is_file())
    assert names == [".write.lock", "T.parquet", "manifest.json"]
    manifest = json.loads((ql_home / "data" / "manifest.json").read_text())
    assert manifest["entries"]["1d/T"]["rows"] == 20


def test_manifest_is_rebuilt_from_the_parquet_files(ql_home: Path) -> None:
    ql.data.import_frame("M", bars_frame("2020-01-01", 12), source="vendor", adjusted=True)
    (ql_home / "data" / "manifest.json").write_text("{ broken")
    current_store()._manifest_cache = None
    row = ql.data.symbols().iloc[0]
    assert (row["name"], row["rows"], row["source"], bool(row["adjusted"])) == (
        "M", 12, "vendor", True)
    assert len(ql.data.load("M").index) == 12


def test_a_reader_sees_a_rewrite_made_by_another_process(ql_home: Path) -> None:
    ql.data.import_frame("P", bars_frame("2020-01-01", 10, seed=1))
    before = ql.data.load("P").close.copy()  # now cached in this process
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_rewrite, args=(str(ql_home),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    after = ql.data.load("P")
    assert after.close.shape == (1, 10) and not np.array_equal(after.close, before)
    np.testing.assert_array_equal(after.close[0],
                                  bars_frame("2020-01-01", 10, seed=9)["close"].to_numpy())


def _rewrite(home: str) -> None:
    os.environ["QUANTLAB_HOME"] = home
    ql.data.import_frame("P", bars_frame("2020-01-01", 10, seed=9))


def _extend_many(home: str, offset: int, count: int) -> None:
    os.environ["QUANTLAB_HOME"] = home
    days = pd.bdate_range("2000-01-03", periods=400)
    for i in range(count):
        day = days[offset + 2 * i]  # the two writers take alternate days
        df = bars_frame(str(day.date()), 1, seed=offset + i)
        ql.data.import_frame("RACE", df, mode="extend")


def test_concurrent_writers_of_one_symbol_lose_nothing(ql_home: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_extend_many, args=(str(ql_home), offset, 15))
             for offset in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    bars = ql.data.load("RACE")
    assert len(bars.index) == 30
    assert list(bars.index) == list(pd.bdate_range("2000-01-03", periods=30))
    assert ql.data.symbols().iloc[0]["rows"] == 30


def test_intervals_have_one_canonical_label() -> None:
    assert [canonical_interval(x) for x in ("1d", "daily", "60min", "1H", "5min", "1mo")] == [
        "1d", "1d", "1h", "1h", "5min", "1mo"]
    with pytest.raises(ql.ConfigError, match=r"unknown interval '1x'; use a number and a unit"):
        canonical_interval("1x")


def test_csv_with_daylight_saving_offsets_keeps_exact_instants(ql_home: Path) -> None:
    path = ql_home / "dst.csv"
    path.write_text("time,open,high,low,close\n"
                    "2024-03-08 15:59:00-05:00,1,2,0.5,1.5\n"
                    "2024-03-11 09:30:00-04:00,1,2,0.5,1.6\n")
    ql.data.import_csv("DST", path, timezone="America/New_York", interval="1min")
    bars = ql.data.load("DST", interval="1min")
    assert list(bars.index) == [pd.Timestamp("2024-03-08 15:59", tz="America/New_York"),
                                pd.Timestamp("2024-03-11 09:30", tz="America/New_York")]


@pytest.mark.parametrize("start", ["2024-03-07 09:30", "2024-01-02 09:30"],
                         ids=["across-dst", "winter-only"])
def test_a_zoned_date_column_keeps_its_zone_like_a_zoned_index(ql_home: Path,
                                                               start: str) -> None:
    # a datetime64 column is used as it is, not printed and re-parsed into fixed offsets/UTC
    zoned = bars_frame(start, 6, freq="D").tz_localize("America/New_York")
    ql.data.import_frame("IDX", zoned, interval="1d")
    ql.data.import_frame("COL", zoned.reset_index(names="date"), interval="1d")
    tz = ql.data.symbols().set_index("name")["tz"]
    assert tz["COL"] == tz["IDX"] == "America/New_York"
    by_index, by_column = ql.data.load("IDX"), ql.data.load("COL")
    assert str(by_column.index.tz) == "America/New_York"
    assert list(by_column.index) == list(by_index.index) == list(zoned.index)
    np.testing.assert_array_equal(by_column.close, by_index.close)


def _flip_flop(home: str, rounds: int) -> None:
    os.environ["QUANTLAB_HOME"] = home
    for i in range(rounds):
        ql.data.import_frame("FLIP", bars_frame("2020-01-01", 200 if i % 2 else 300, seed=i % 2))


def test_readers_never_see_a_half_written_file(ql_home: Path) -> None:
    versions = {n: bars_frame("2020-01-01", n, seed=seed)["close"].to_numpy()
                for n, seed in ((300, 0), (200, 1))}
    ql.data.import_frame("FLIP", bars_frame("2020-01-01", 300, seed=0))
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_flip_flop, args=(str(ql_home), 30))
    writer.start()
    seen = set()
    while writer.is_alive() or not seen:
        close = ql.data.load("FLIP").close[0]
        np.testing.assert_array_equal(close, versions[len(close)])  # whole, never torn
        seen.add(len(close))
    writer.join(60)
    assert writer.exitcode == 0
    assert len(ql.data.load("FLIP").close[0]) == 200  # the last version (round 29)
