"""Bad input: each message names the symbol, the row or column and the fix, and the store is
left byte-identical."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from tests.support.data import GOOD_CSV, bars_frame, store_bytes


@pytest.fixture
def stocked(ql_home: Path) -> dict[str, bytes]:
    """A store that already holds two symbols; returns its exact bytes."""
    ql.data.import_frame("OLD", bars_frame("2020-01-01", 30))
    path = ql_home / "good.csv"
    path.write_text(GOOD_CSV)
    ql.data.import_csv("GOOD", path)
    return store_bytes(ql_home)


def write_csv(home: Path, text: str, name: str = "bad.csv") -> Path:
    path = home / name
    path.write_text(text)
    return path


def replace_line(n: int, new: str) -> str:
    lines = GOOD_CSV.splitlines()
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


BAD_CSVS = [
    pytest.param(
        "Date,Opn,High,Low,Close\n2021-03-01,1,2,0.5,1.5\n",
        {},
        r"GOOD: missing column\(s\) open; columns found: \['Date', 'Opn', 'High', 'Low', "
        r"'Close'\]\. If they are there under other names, pass columns=\{'Opn': 'open'\} "
        r"\(CLI: --column Opn=open\)",
        id="misnamed-column",
    ),
    pytest.param(
        "Date,Open,High,Close\n2021-03-01,1,2,1.5\n",
        {},
        r"missing column\(s\) low;",
        id="missing-column",
    ),
    pytest.param(
        replace_line(3, "03/02/2021,10.5,11.5,10.0,11.0,1200"),
        {},
        r"GOOD: cannot read the date '03/02/2021' at row 1 \(line 3 of bad.csv\) of column "
        r"'Date'; pass date_format= to say how dates are written \(e\.g\. "
        r"date_format='%d/%m/%Y'; CLI --date-format\)",
        id="unparseable-date",
    ),
    pytest.param(
        GOOD_CSV, {"date_format": "%d/%m/%Y"},
        r"cannot read the date '2021-03-01' at row 0 \(line 2 of bad.csv\)",
        id="wrong-date-format",
    ),
    pytest.param(
        replace_line(4, "2021-03-02,11.0,11.2,10.1,10.2,900"),
        {},
        r"GOOD: duplicate timestamp 2021-03-02 00:00:00 at row 2 \(line 4 of bad.csv\); keep "
        r"one bar per timestamp",
        id="duplicate-timestamp",
    ),
    pytest.param(
        replace_line(4, "2021-02-26,11.0,11.2,10.1,10.2,900"),
        {},
        r"GOOD: timestamps are not in order: 2021-02-26 00:00:00 at row 2 \(line 4 of bad.csv\) "
        r"comes after 2021-03-02 00:00:00; pass sort=True \(CLI --sort\)",
        id="unsorted",
    ),
    pytest.param(
        replace_line(3, "2021-03-02,10.5,11.5,10.0,,1200"),
        {},
        r"GOOD: close is missing \(NaN\) at row 1 \(2021-03-02 00:00:00\); drop that bar or "
        r"fill it from the source \[row 1 \(line 3 of bad.csv\)\]",
        id="nan-price",
    ),
    pytest.param(
        replace_line(5, "2021-03-04,10.2,10.8,0,10.7,1100"),
        {},
        r"GOOD: low is 0 at row 3 \(2021-03-04 00:00:00\); prices must be positive "
        r"\[row 3 \(line 5 of bad.csv\)\]",
        id="zero-price",
    ),
    pytest.param(
        replace_line(2, "2021-03-01,-10.0,11.0,9.5,10.5,1000"),
        {},
        r"GOOD: open is -10 at row 0 .*prices must be positive",
        id="negative-price",
    ),
    pytest.param(
        replace_line(3, "2021-03-02,10.5,9.0,10.0,11.0,1200"),
        {},
        r"GOOD: high \(9\) is below low \(10\) at row 1 \(2021-03-02 00:00:00\); the columns may "
        r"be swapped",
        id="high-below-low",
    ),
    pytest.param(
        replace_line(3, "2021-03-02,10.5,11.5,10.0,eleven,1200"),
        {},
        r"GOOD: close value 'eleven' at row 1 \(line 3 of bad.csv\) is not a number; fix or "
        r"drop that row",
        id="text-price",
    ),
    pytest.param(
        replace_line(3, "2021-03-02,10.5,11.5,10.0,11.0,-5"),
        {},
        r"GOOD: volume is -5 at row 1 \(line 3 of bad.csv\); volume must not be negative",
        id="negative-volume",
    ),
    pytest.param(
        GOOD_CSV.replace("Date", "When"), {},
        r"GOOD: no date column \(none is named date, datetime, timestamp or time\); column "
        r"'When' holds dates: pass date_column='When' \(CLI --date-column 'When'\)",
        id="no-date-column-names-the-likely-one",
    ),
    pytest.param(
        "Open,High,Low,Close\n10,11,9,10.5\n", {},
        r"GOOD: no date column \(none is named date, datetime, timestamp or time\); name it "
        r"with date_column='\.\.\.' \(CLI --date-column\)",
        id="no-date-column",
    ),
    pytest.param(
        replace_line(3, "2021-03-02,10.5,11.5,10.0,inf,1200"),
        {},
        r"GOOD: close is infinite \(inf\) at row 1 \(2021-03-02 00:00:00\); drop that bar",
        id="infinite-price",
    ),
    pytest.param(
        replace_line(4, "2021-03-03,11.0,11.2,10.1,12.2,900"),
        {},
        r"GOOD: close \(12\.2\) is above its high \(11\.2\) at row 2 \(line 4 of bad.csv\) "
        r"\(2021-03-03 00:00:00\); a bar's close lies between its low and its high",
        id="close-above-high",
    ),
    pytest.param(
        replace_line(4, "2021-03-03,11.0,11.2,10.1,10.0,900"),
        {},
        r"GOOD: close \(10\) is below its low \(10\.1\) at row 2 \(line 4 of bad.csv\)",
        id="close-below-low",
    ),
    pytest.param(
        GOOD_CSV.replace(",", ";"), {"sep": ","},
        r"GOOD: bad.csv read as one column 'Date;Open;High;Low;Close;Volume' with sep=','; its "
        r"fields are separated by ';': pass sep=';' \(CLI --sep ';'\), or leave sep out",
        id="wrong-separator",
    ),
    pytest.param(
        GOOD_CSV, {"date_column": "Dat"},
        r"GOOD: date_column='Dat' is not a column of the data \(did you mean 'Date'\?\)",
        id="wrong-date-column",
    ),
    pytest.param(
        GOOD_CSV, {"columns": {"Shut": "close"}},
        r"GOOD: columns= maps 'Shut', which is not a column of the data",
        id="mapping-of-absent-column",
    ),
    pytest.param(
        GOOD_CSV, {"interval": "1min"},
        r"GOOD: interval='1min' but the bars are about 1d apart; pass interval='1d'",
        id="interval-contradicts-data",
    ),
    pytest.param("", {}, r"GOOD: bad.csv is empty; it needs a header row", id="empty-file"),
    pytest.param("Date,Open,High,Low,Close\n", {}, r"GOOD: the data has no rows", id="no-rows"),
]


@pytest.mark.parametrize(("text", "options", "message"), BAD_CSVS)
def test_bad_csv_is_refused_with_a_message_and_the_store_is_untouched(
        ql_home: Path, stocked: dict[str, bytes], text: str, options: dict[str, object],
        message: str) -> None:
    path = write_csv(ql_home, text)
    with pytest.raises(ql.DataError, match=message) as info:
        ql.data.import_csv("GOOD", path, **options)  # type: ignore[arg-type]
    assert info.value.symbol == "GOOD"
    assert store_bytes(ql_home) == stocked
    np.testing.assert_array_equal(ql.data.load("GOOD").close[0], [10.5, 11.0, 10.2, 10.7])


def test_the_suggested_fixes_work(ql_home: Path) -> None:
    dmy = write_csv(ql_home, "day;o;h;l;Adj Close\n"
                             "02/03/2021;1;2;0.5;1.5\n01/03/2021;1;2;0.5;1.4\n")
    summary = ql.data.import_csv(
        "fixed", dmy, sep=";", date_column="day", date_format="%d/%m/%Y", sort=True,
        columns={"o": "open", "h": "high", "l": "low", "Adj Close": "close"}, adjusted=True,
    )
    assert (summary.rows, summary.first, summary.source) == (
        2, pd.Timestamp("2021-03-01"), "csv:bad.csv")
    assert ql.data.load("FIXED").close[0].tolist() == [1.4, 1.5]
    assert ql.data.symbols().iloc[0]["adjusted"]


@pytest.mark.parametrize("order", [["Open", "High", "Low", "Adj Close", "Close"],
                                   ["Open", "High", "Low", "Close", "Adj Close"]],
                         ids=["adj-close-first", "adj-close-last"])
def test_an_explicit_column_mapping_wins_over_a_column_of_the_same_name(
        ql_home: Path, order: list[str]) -> None:
    raw = pd.DataFrame({"Open": [1.0] * 3, "High": [2.0] * 3, "Low": [0.5] * 3,
                        "Adj Close": [1.1, 1.2, 1.3], "Close": [1.5, 1.6, 1.7]},
                       index=pd.date_range("2020-01-01", periods=3))[order]
    ql.data.import_frame("ADJ", raw, columns={"Adj Close": "close"}, adjusted=True)
    assert ql.data.load("ADJ").close[0].tolist() == [1.1, 1.2, 1.3]


@pytest.mark.parametrize("header", ["", "Date", "date", "DATE", "Time", "TIMESTAMP",
                                    "DateTime", "datetime"])
def test_a_csv_written_by_to_csv_imports_with_no_options(ql_home: Path, header: str) -> None:
    frame = bars_frame("2020-01-01", 30)
    frame.index.name = header or None  # no name: the header's first field is empty
    path = ql_home / "frame.csv"
    frame.to_csv(path)
    assert path.read_text().startswith(f"{header},open,high")
    summary = ql.data.import_csv("FRAME", path)
    assert (summary.rows, summary.first) == (30, pd.Timestamp("2020-01-01"))
    np.testing.assert_allclose(ql.data.load("FRAME").close[0], frame["close"].to_numpy())


@pytest.mark.parametrize(("sep", "encoding"), [
    (";", "utf-8"), ("\t", "utf-8"), ("|", "utf-8"), (",", "utf-16"), (";", "utf-16"),
    (",", "utf-16-le"), (",", "utf-8-sig")])
def test_the_separator_and_a_marked_or_utf16_encoding_are_detected(
        ql_home: Path, sep: str, encoding: str) -> None:
    path = ql_home / "bars.csv"
    path.write_bytes(GOOD_CSV.replace(",", sep).encode(encoding))
    summary = ql.data.import_csv("SEP", path)
    assert summary.rows == 4
    np.testing.assert_array_equal(ql.data.load("SEP").close[0], [10.5, 11.0, 10.2, 10.7])


def test_a_latin1_file_is_refused_suggesting_the_encoding_which_then_works(
        ql_home: Path, stocked: dict[str, bytes]) -> None:
    path = ql_home / "latin.csv"
    path.write_bytes(GOOD_CSV.replace("Volume", "Volumen (€)").encode("cp1252"))
    with pytest.raises(ql.DataError) as info:
        ql.data.import_csv("GOOD", path)
    assert str(info.value) == (
        "GOOD: latin.csv is not utf-8 text (byte 0x80 on line 1); if it was saved as Latin-1 or "
        "Windows-1252, pass encoding='latin-1' (CLI --encoding latin-1), or save it as UTF-8")
    assert store_bytes(ql_home) == stocked
    path.write_bytes(GOOD_CSV.replace("Volume", "Volumé").encode("latin-1"))
    assert ql.data.import_csv("LATIN", path, encoding="latin-1").rows == 4


ERROR_CALLS: list[tuple[str, Callable[[], object], str]] = [
    ("unknown-symbol", lambda: ql.data.load("GOOF"),
     r"unknown symbol 'GOOF': it is not in the data store\. Did you mean 'GOOD'\? 1d symbols "
     r"stored: GOOD, OLD\. To add it, import it with ql\.data\.import_csv\('GOOF', 'file.csv'\) "
     r"\(or `quantlab data import GOOF file.csv`\), or download it with ql\.data\.fetch\('GOOF'\)"),
    ("other-interval", lambda: ql.data.load("GOOD", interval="5min"),
     r"GOOD has no 5min bars in the data store; it has 1d bars\. Load one of those intervals, "
     r"or import it with ql\.data\.import_csv\('GOOD', 'file.csv', interval='5min'\)"),
    ("empty-range", lambda: ql.data.load(["OLD", "GOOD"], start="2022-01-01", end="2022-02-01"),
     r"OLD has no 1d bars between 2022-01-01 and 2022-02-01; its bars run from 2020-01-01 to "
     r"2020-02-11\. Choose start/end inside that range"),
    ("check-unknown-symbol", lambda: ql.data.check(["OLD", "GOOF"]),
     r"unknown symbol 'GOOF': it is not in the data store\. Did you mean 'GOOD'\?"),
    ("check-empty-range", lambda: ql.data.check("OLD", start="2021-01-01"),
     r"OLD has no 1d bars between 2021-01-01 and its end; its bars run from 2020-01-01 to "
     r"2020-02-11\. Choose start/end inside that range"),
    ("start-after-end", lambda: ql.data.load("OLD", start="2020-02-01", end="2020-01-01"),
     r"start='2020-02-01' is not before end='2020-01-01'; pass a start date earlier"),
    ("bad-date", lambda: ql.data.load("OLD", start="last tuesday"),
     r"start='last tuesday' is not a date; write it as 'YYYY-MM-DD'"),
    ("far-future-end", lambda: ql.data.load("OLD", end="9999-12-31"),
     r"end='9999-12-31' is outside the dates bars can carry \(1678-01-01 to 2261-12-31\); "
     r"leave end out to use all the data"),
    ("bad-symbol", lambda: ql.data.load("A B"),
     r"invalid symbol 'A B': use letters, digits"),
    ("twice", lambda: ql.data.load(["OLD", "old"]),
     r"symbol 'OLD' is listed twice; list each symbol once"),
    ("long-symbol", lambda: ql.data.import_frame("S" * 300, bars_frame("2020-01-01", 3)),
     r"the symbol S{20}\.\.\. is 300 characters long; a symbol has at most 64"),
    ("look-alike-symbol", lambda: ql.data.import_frame("ſpy", bars_frame("2020-01-01", 3)),
     r"symbol 'ſpy' holds the non-ASCII character 'ſ' \(U\+017F LATIN SMALL LETTER LONG S\); "
     r"symbols are ASCII, and this name would read as 'SPY': write 'SPY'"),
    ("look-alike-load", lambda: ql.data.load("ﬁx"), r"would read as 'FIX'"),
    ("no-symbols", lambda: ql.data.load([]),
     r"no symbols given; pass a symbol such as 'AAA'"),
    ("bad-mode", lambda: ql.data.import_frame("OLD", bars_frame("2020-01-01", 3), mode="merge"),
     r"unknown mode 'merge'; use mode='replace' or mode='extend'"),
    ("no-file", lambda: ql.data.import_csv("OLD", "/nonexistent/x.csv"),
     r"OLD: no such file '/nonexistent/x.csv'; check the path"),
    ("bad-timezone", lambda: ql.data.import_frame("OLD", bars_frame("2020-01-01", 3),
                                                  timezone="Mars/Olympus"),
     r"OLD: cannot apply timezone='Mars/Olympus'.*use an IANA name such as 'America/New_York'"),
    ("extend-mixing-adjustment", lambda: ql.data.import_frame(
        "OLD", bars_frame("2020-03-02", 3), mode="extend", adjusted=True),
     r"OLD 1d holds unadjusted prices and the new bars are adjusted; mixing them would fake a "
     r"jump\. Use mode='replace', or import with adjusted=False"),
    ("extend-mixing-zones", lambda: ql.data.import_frame(
        "OLD", bars_frame("2020-03-02", 3), mode="extend", timezone="UTC"),
     r"OLD 1d is stored with time zone none \(naive\) and the new bars have UTC; drop the "
     r"time zone of the new bars \(df\.tz_localize\(None\)\), or use mode='replace'"),
    ("not-a-frame", lambda: ql.data.import_frame("OLD", [1, 2, 3]),  # type: ignore[arg-type]
     r"OLD: expected a pandas DataFrame, got list"),
]


@pytest.mark.parametrize(("name", "call", "message"), ERROR_CALLS,
                         ids=[c[0] for c in ERROR_CALLS])
def test_bad_calls_raise_clear_errors_and_change_nothing(
        ql_home: Path, stocked: dict[str, bytes], name: str, call: Callable[[], object],
        message: str) -> None:
    with pytest.raises(ql.ConfigError, match=message):
        call()
    assert store_bytes(ql_home) == stocked


def test_check_accepts_what_load_accepts(ql_home: Path, stocked: dict[str, bytes]) -> None:
    assert ql.data.check([" old", "good"], start="2020-02-11", end="2021-03-01") == ["OLD",
                                                                                     "GOOD"]
    assert len(ql.data.load("OLD", start="2020-02-11").index) == 1


def test_empty_store_error_points_to_the_sample(ql_home: Path) -> None:
    with pytest.raises(ql.DataError, match=r"unknown symbol 'AAPL': the data store is empty\. "
                       r"To add it, .*or run ql\.data\.sample\(\) \(`quantlab data sample`\)"):
        ql.data.load("AAPL")
    assert not (ql_home / "data").exists()  # a failed read creates nothing


def test_a_failed_first_import_creates_nothing(ql_home: Path) -> None:
    bad = bars_frame("2020-01-01", 5)
    bad.iloc[2, 1] = bad.iloc[2, 2] / 2  # high below low
    with pytest.raises(ql.DataError, match=r"NEW: high .* is below low .* at row 2"):
        ql.data.import_frame("NEW", bad)
    assert not (ql_home / "data").exists()
