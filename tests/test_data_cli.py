"""``quantlab data``: import, list, fetch, remove, sample; clear errors with a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import quantlab as ql
from quantlab.data.cli import data
from tests.support.data import GOOD_CSV, FakeAlphaVantage, split_history


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(data, list(args))
    return result.exit_code, result.output


def test_import_list_remove(ql_home: Path) -> None:
    path = ql_home / "acme.csv"
    path.write_text(GOOD_CSV.replace("Close", "Last"))
    code, out = run("import", "acme", str(path), "--column", "Last=close", "--adjusted")
    assert code == 0, out
    assert "ACME 1d: wrote 4 bars (4 new, 0 replaced); stored 4 bars from 2021-03-01" in out
    assert ql.data.load("ACME").close[0].tolist() == [10.5, 11.0, 10.2, 10.7]
    code, out = run("list")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split() == ["name", "interval", "first", "last", "rows", "source",
                              "adjusted", "synthetic"]
    assert row.split()[:2] == ["ACME", "1d"] and "csv:acme.csv" in row and "True" in row
    code, out = run("remove", "acme")
    assert (code, out.strip()) == (0, "removed ACME (1d)")
    assert run("list")[1].strip() == "(nothing)"


def test_import_extend_with_date_format_and_sort(ql_home: Path) -> None:
    first = ql_home / "a.csv"
    first.write_text("when,open,high,low,close\n02/01/2020,1,2,0.5,1.5\n")
    later = ql_home / "b.csv"
    later.write_text("when,open,high,low,close\n06/01/2020,1,2,0.5,1.7\n03/01/2020,1,2,0.5,1.6\n")
    fmt = ["--date-column", "when", "--date-format", "%d/%m/%Y"]
    assert run("import", "X", str(first), *fmt)[0] == 0
    code, out = run("import", "X", str(later), *fmt, "--sort", "--mode", "extend")
    assert code == 0, out
    assert ql.data.load("X").close[0].tolist() == [1.5, 1.6, 1.7]


def test_errors_are_one_clear_line_and_exit_non_zero(ql_home: Path) -> None:
    path = ql_home / "bad.csv"
    path.write_text("Date,Opn,High,Low,Close\n2021-03-01,1,2,0.5,1.5\n")
    code, out = run("import", "BAD", str(path))
    assert code == 1
    assert out.startswith("Error: BAD: missing column(s) open;")
    assert "--column Opn=open" in out and "Traceback" not in out
    code, out = run("remove", "NOPE")
    assert code == 1 and "cannot remove 'NOPE': it is not in the data store" in out
    code, out = run("import", "BAD", str(path), "--column", "Opn")
    assert code == 2 and "write SOURCE=TARGET" in out
    code, out = run("fetch", "IBM")
    assert code == 1 and "the API key is invalid or missing: set ALPHAVANTAGE_API_KEY" in out
    code, out = run("fetch", "IBM", "--provider", "nope")
    assert code == 1 and "unknown data provider 'nope'; registered providers: alphavantage" in out


def test_sample_command_is_idempotent(ql_home: Path) -> None:
    code, out = run("sample", "--no-minute")
    assert code == 0 and out.count("installed") == 10
    code, out = run("sample", "--no-minute")
    assert code == 0 and out.count("already installed") == 10
    code, out = run("list", "--interval", "daily")
    assert len(out.strip().splitlines()) == 11 and "True" in out
    assert not np.isnan(ql.data.load(["AAA", "JJJ"], start="2024-01-01").close[:, -1]).any()


def test_fetch_command_uses_the_configured_url_and_key(
        ql_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeAlphaVantage()
    try:
        server.data["IBM"] = split_history(120)
        monkeypatch.setenv("QUANTLAB_ALPHAVANTAGE_URL", server.url)
        monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "testkey")
        code, out = run("fetch", "ibm")
        assert code == 0, out
        assert "IBM" in out and "downloaded" in out and "120" in out
        assert server.requests[0]["function"] == "TIME_SERIES_DAILY_ADJUSTED"
        assert len(ql.data.load("IBM").index) == 120
    finally:
        server.close()
