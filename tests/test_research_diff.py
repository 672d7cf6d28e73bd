"""Run diff: real runs through a worker that differ in params, data, code and engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import quantlab as ql
from quantlab.cli import cli
from quantlab.research.diff import code_diff, config_changes, diff_runs, summarise
from tests.support.analytics import populated_home

pytestmark = pytest.mark.slow

BASE = {"strategy": "sma_crossover", "symbols": ["DDD", "EEE"], "start": "2020-01-01",
        "params": {"fast": 10, "slow": 40}}
SPECS = [
    {**BASE, "name": "base"},
    {**BASE, "name": "faster", "params": {"fast": 12, "slow": 40}, "commission": 0.002},
]
CHANGED_FROM = pd.Timestamp("2022-06-01")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    with populated_home(tmp_path_factory.mktemp("diff"), SPECS) as found:
        yield found


def test_summarise_sweeps_as_ranges() -> None:
    assert summarise(list(range(10, 201, 10))) == "10..200 step 10 (20 values)"
    assert summarise([0.01, 0.02, 0.03, 0.04]) == "0.01..0.04 step 0.01 (4 values)"
    assert summarise([1, 2, 5, 9, 20]) == "1..20 (5 values)"
    assert summarise([1, 2]) == "[1, 2]"
    assert summarise(None) == "—"
    table = config_changes({"params": {"fast": list(range(5, 201, 5)), "slow": 50}},
                           {"params": {"fast": 10, "slow": 50}, "commission": 0.001})
    assert table.to_dict("records") == [
        {"setting": "commission", "a": "—", "b": "0.001"},
        {"setting": "params.fast", "a": "5..200 step 5 (40 values)", "b": "10"},
    ]


def _record(run_id: str, symbols: dict[str, pd.DataFrame], **extra: object) -> dict[str, object]:
    from quantlab.data.chunks import symbol_chunks

    chunks = {name: symbol_chunks(frame.index.as_unit("ns").asi8,
                                  frame[["open", "high", "low", "close", "volume"]].to_numpy())
              for name, frame in symbols.items()}
    return {"id": run_id, "symbols": list(symbols), "interval": "1d", "config": {},
            "data_chunks": {"v": 1, "interval": "1d", "symbols": chunks}, **extra}


def _frame(n: int = 1000) -> pd.DataFrame:
    index = pd.bdate_range("2019-01-01", periods=n)
    values = 100 + pd.Series(range(n), dtype="float64").to_numpy() / 10
    return pd.DataFrame({c: values for c in ("open", "high", "low", "close")} | {"volume": 1.0},
                        index=index)


def test_data_changes_from_chunks_alone() -> None:
    """Without the store: the change is located to its row, dated by its chunk's first bar;
    with the store holding one side's bars, dated exactly."""
    from quantlab.bars import Bars
    from quantlab.data.chunks import symbol_rows
    from quantlab.research.diff import data_changes

    before = _frame()
    after = before.copy()
    changed_at = before.index[600]  # inside the third chunk of 256 rows (512..767)
    after.loc[after.index >= changed_at, "close"] += 1.0
    a = _record("a", {"AAA": before, "BBB": before})
    b = _record("b", {"AAA": after, "CCC": before})
    table = data_changes(a, b)
    assert list(table.columns) == ["symbol", "interval", "change", "first_changed",
                                   "rows_changed"]
    assert table[["symbol", "change"]].values.tolist() == [
        ["AAA", "changed"], ["BBB", "removed"], ["CCC", "added"]]
    assert table["first_changed"].iloc[0] == before.index[512]
    assert table["rows_changed"].iloc[0] == 400
    assert table["first_changed"].iloc[1:].isna().all()

    def store_rows(symbol: str, record: object) -> object:
        frame = after if symbol == "AAA" else before
        bars = Bars(frame.index, (symbol,), **{
            c: frame[c].to_numpy()[None, :] for c in ("open", "high", "low", "close", "volume")})
        return symbol_rows(bars, symbol)

    exact = data_changes(a, b, store_rows)  # type: ignore[arg-type]
    assert exact["first_changed"].iloc[0] == changed_at
    # runs recorded before chunk fingerprints: only that the data differ
    old = data_changes({"id": "x", "symbols": ["AAA"], "data_fingerprint": "1"},
                       {"id": "y", "symbols": ["AAA"], "data_fingerprint": "2"})
    assert old["change"].tolist() == ["unknown"]


def test_code_diff_is_unified_and_empty_when_equal() -> None:
    assert code_diff("x = 1\n", "x = 1\n") == ""
    text = code_diff("def f():\n    return 1\n", "def f():\n    return 2\n", "a/1", "b/2")
    assert text.startswith("--- a/1\n+++ b/2\n")
    assert "-    return 1\n+    return 2\n" in text


def test_diff_of_params_metrics_divergence_trades_and_text(
        home: tuple[Path, list[str]]) -> None:
    _, (a, b) = home
    found = ql.diff(a, b)
    default = summarise(ql.get_run(a).record["config"]["commission"])
    assert found.config.to_dict("records") == [
        {"setting": "commission", "a": default, "b": "0.002"},
        {"setting": "params.fast", "a": "10", "b": "12"},
    ]
    assert found.code == "" and found.engine is None and found.data.empty
    run_a, run_b = ql.get_run(a).result(), ql.get_run(b).result()
    # metrics: labels from METRIC_INFO, delta = b - a
    sharpe = found.metrics.loc["sharpe"]
    assert sharpe["metric"] == "Sharpe"
    assert sharpe["delta"] == pytest.approx(run_b.metrics["sharpe"] - run_a.metrics["sharpe"])
    # divergence: the first bar where the equity curves differ, found here by hand
    joined = pd.concat([run_a.equity, run_b.equity], axis=1)
    differs = (joined.iloc[:, 0] - joined.iloc[:, 1]).abs() > 1e-9 * joined.iloc[:, 0].abs()
    assert found.divergence == joined.index[differs.to_numpy().argmax()]
    # trades only in one of them, matched by hand on entry/exit times and symbol
    def keys(trades: pd.DataFrame) -> set[tuple[str, pd.Timestamp, pd.Timestamp]]:
        return set(zip(trades["symbol"], trades["entry_time"], trades["exit_time"]))
    assert keys(found.trades.only_a) <= keys(run_a.trades)
    assert keys(found.trades.only_b) <= keys(run_b.trades)
    assert len(found.trades) > 0
    text = str(found)
    assert text.startswith(f"diff {a} -> {b}\ndiffers in: config")
    assert "params.fast: 10 -> 12" in text and f"equity curves diverge at {found.divergence}" in text
    assert "<h5>Config</h5>" in found._repr_html_()


def test_diff_of_the_same_run_is_empty(home: tuple[Path, list[str]]) -> None:
    _, (a, _) = home
    found = ql.diff(a, ql.get_run(a))
    assert found.causes() == [] and found.divergence is None and len(found.trades) == 0
    assert "differs in: nothing" in str(found)


def test_code_and_engine_from_records(home: tuple[Path, list[str]]) -> None:
    _, (a, _) = home
    record = ql.get_run(a).record
    other = {**record, "id": "other", "engine_version": "0.9.0",
             "config": {**record["config"], "strategy_source": "def signal(b):\n    return 2\n"}}
    mine = {**record, "config": {**record["config"],
                                 "strategy_source": "def signal(b):\n    return 1\n"}}
    found = diff_runs(mine, other)
    assert found.engine == (str(ql.ENGINE_VERSION), "0.9.0")
    assert "-    return 1\n+    return 2\n" in found.code
    assert found.causes() == ["code", f"engine {ql.ENGINE_VERSION} -> 0.9.0"]


def test_cli_and_rest_diff(home: tuple[Path, list[str]]) -> None:
    from quantlab.server.handlers import run_diff

    _, (a, b) = home
    result = CliRunner().invoke(cli, ["diff", a, b])
    assert result.exit_code == 0, result.output
    assert "params.fast: 10 -> 12" in result.output
    as_json = json.loads(CliRunner().invoke(cli, ["diff", a, b, "--json"]).output)
    assert as_json["a"] == a and as_json["config"][-1]["setting"] == "params.fast"
    body = run_diff({"a": [a], "b": [b]})
    assert body["divergence"] == as_json["divergence"]
    with pytest.raises(ql.ConfigError, match="diff needs two run ids, missing b; call GET "
                                             "/quantlab/api/diff\\?a=<id>&b=<id>"):
        run_diff({"a": [a]})
    missing = CliRunner().invoke(cli, ["diff", a, "nope"])
    assert missing.exit_code == 1 and "nope" in missing.output


def test_compare_has_sharpe_tests_and_differences(home: tuple[Path, list[str]]) -> None:
    from quantlab.render.html import comparison_html

    _, (a, b) = home
    cmp = ql.compare([a, b])
    assert list(cmp.sharpe_tests.columns) == ["a", "b", "sharpe_a", "sharpe_b", "difference",
                                              "se", "z", "p_value", "p_holm"]
    assert 0 <= cmp.sharpe_tests["p_holm"].iloc[0] <= 1
    assert cmp.differences()[b][-1] == "config: commission, params.fast"
    page = comparison_html(cmp)
    assert "Sharpe differences" in page and "config: commission, params.fast" in page


def test_changed_bars_are_found_from_their_first_date(home: tuple[Path, list[str]]) -> None:
    """DDD's bars are revised from 2022-06-01 on: the diff of the run before and a run after
    names DDD, that date and the rows changed; the rerun's drift says the same."""
    from quantlab.reports.rerun import rerun

    _, (a, _) = home
    bars = ql.data.load(["DDD"])
    frame = bars.frame("DDD")
    later = frame.index >= CHANGED_FROM
    for column in ("open", "high", "low", "close"):
        frame.loc[later, column] *= 0.97
    ql.data.import_frame("DDD", frame)
    after = ql.submit(dict(BASE, name="after"), cache=False).wait(timeout=240)
    found = ql.diff(a, after)
    assert found.data.to_dict("records") == [{
        "symbol": "DDD", "interval": "1d", "change": "changed", "first_changed": CHANGED_FROM,
        "rows_changed": int((ql.data.load(["DDD"], start="2020-01-01").index >= CHANGED_FROM)
                            .sum())}]
    assert found.causes()[0].startswith("data: DDD from 2022-06-01 on (")
    assert found.divergence is not None and found.divergence >= CHANGED_FROM
    [outcome] = rerun([a])
    assert outcome.status == "drifted"
    assert outcome.causes[0].startswith("data changed: DDD from 2022-06-01 on (")


def test_backtest_diff_magic(home: tuple[Path, list[str]]) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from quantlab.notebook.magics import BacktestMagics

    _, (a, b) = home
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.register_magics(BacktestMagics)
    found = shell.run_line_magic("backtest_diff", f"{a} {b}")
    assert found.config["setting"].tolist() == ["commission", "params.fast"]
    with pytest.raises(UsageError, match="%backtest_diff takes two run ids, got 1"):
        shell.run_line_magic("backtest_diff", a)


def test_the_run_report_shows_the_confidence_table(home: tuple[Path, list[str]],
                                                   tmp_path: Path) -> None:
    from quantlab.reports.runner import run_report

    _, (a, _) = home
    files = run_report(a, str(tmp_path / "report.ipynb"), True)
    page = Path(str(files.html)).read_text()
    assert "ql-confidence-table" in page and "stationary block bootstrap" in page


def test_bars_added_at_the_end_are_a_change_from_the_first_new_bar() -> None:
    from quantlab.research.diff import data_changes

    longer = _frame(700)
    table = data_changes(_record("a", {"AAA": longer.iloc[:600]}), _record("b", {"AAA": longer}))
    assert table[["change", "rows_changed"]].values.tolist() == [["changed", 100]]
    # the store is not consulted: the change is dated by the first bar of its chunk
    assert table["first_changed"].iloc[0] == longer.index[512]
