"""The look-ahead audit (quantlab.research.audit): strategies that peek in each of the four
usual ways are caught with the kind, the first bar and the line; clean ones and every built-in
pass; submit, %%backtest's path and the REST API refuse a peeking notebook strategy before
anything is queued, cache the verdict, and ``audit: false`` skips it and is recorded."""

from __future__ import annotations

import importlib
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.bars import as_bars
from quantlab.errors import ConfigError
from quantlab.registry import open_registry
from quantlab.render.format import AUDIT_SKIPPED, audit_badge, audit_skipped
from quantlab.research.audit import cut_points, edge_combinations, first_difference, perturb
from quantlab.strategies.builtin import BUILTINS
from quantlab.strategies.registry import get_strategy, list_strategies
from quantlab.strategies.usercode import SOURCE_MARKER
from tests.support import jobs as support
from tests.support.jobs import WAIT
from tests.support.procs import _gone, wait_for
from tests.test_server import API, Lab
from tests.test_server import lab as server_lab

# fixtures (pytest finds them in the module's namespace)
audit_mod = importlib.import_module("quantlab.research.audit")  # (ql.research.audit: the function)
home = support.home
no_worker = support.no_worker
lab = server_lab


def frame(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """A random walk of ``n`` business days with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, n)))
    open_ = close * (1 + rng.normal(0, 0.003, n))
    return pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * 1.005,
        "low": np.minimum(open_, close) * 0.995, "close": close, "volume": 1e6,
    }, index=pd.bdate_range("2018-01-01", periods=n))


DATA = frame()
INDEX = DATA.index


# -- strategies that peek (line numbers count from the def line, as the notebook shows) --------


def peek_shift(bars):
    close = pd.Series(bars.close[0])
    ahead = close.shift(-1)  # line 3: tomorrow's close
    return np.sign(ahead - close).fillna(0)


def peek_zscore(bars):
    close = pd.Series(bars.close[0])
    z = (close - close.mean()) / close.std()  # line 3: the whole sample's mean and std
    return np.sign(z).fillna(0)


def peek_centred(bars, n=10):
    close = pd.Series(bars.close[0])
    middle = close.rolling(n, center=True).mean()  # line 3: half the window is future
    return np.where(middle.isna(), 0, np.where(close > middle, 1, -1))


def peek_bfill(bars, n=10):
    close = pd.Series(bars.close[0])
    line = close.rolling(n).mean().bfill()  # line 3: the warm-up takes bar n-1's value
    return np.where(line.isna(), 0, np.where(close > line, 1, -1))


def peek_bfill_quietly(bars, n=10):
    close = pd.Series(bars.close[0])
    line = close.rolling(n).mean().bfill()  # line 3
    return np.where(close > line, 1, -1)  # no line yet: sell, as the back-filled one says


# -- clean ones ------------------------------------------------------------------------------------


def clean_rolling(bars, n=20):
    close = pd.Series(bars.close[0])
    z = (close - close.rolling(n).mean()) / close.rolling(n).std()
    return np.where(z > 1, 1, np.where(z < -1, -1, 0))


def clean_ewm(bars, span=15):
    close = pd.Series(bars.close[0])
    return np.where(close > close.ewm(span=span).mean(), 1, -1)


def clean_expanding(bars):
    close = pd.Series(bars.close[0])
    z = (close - close.expanding().mean()) / close.expanding().std()
    return np.where(z > 0.5, 1, np.where(z < -0.5, -1, 0))


@pytest.mark.parametrize(("func", "kind", "first", "line", "code"), [
    # cut after bar 0: no tomorrow (NaN: 0) where all the bars give bar 0 a sign
    (peek_shift, "truncation", 0, 3, "ahead = close.shift(-1)"),
    (peek_zscore, "truncation", 0, 3, "close.mean()"),
    # a centred window of 10 has its first value on bar 5, from bars 0..9
    (peek_centred, "truncation", 5, 3, "center=True"),
    # the back-filled warm-up (bars 0..8) holds bar 9's average; cut before it there is none
    (peek_bfill, "truncation", 0, 3, ".bfill()"),
])
def test_a_strategy_that_peeks_is_caught_with_its_kind_first_bar_and_line(
        func: Any, kind: str, first: int, line: int, code: str) -> None:
    verdict = ql.audit(func, DATA)
    assert not verdict.ok
    assert verdict.kind == kind
    assert verdict.first_bar == INDEX[first]
    assert verdict.line == line and code in (verdict.code or "")
    message = verdict.message
    assert message.startswith("look-ahead") and f"line {line}" in message
    assert INDEX[first].strftime("%Y-%m-%d") in message
    # the signal before and after, as the researcher reads them
    assert verdict.signal_full != verdict.signal_cut
    assert str(verdict) == message and "look-ahead found" in verdict._repr_html_()


def test_a_peek_the_truncated_histories_hide_is_found_by_perturbation() -> None:
    data = frame(400, seed=1)
    close = data["close"].to_numpy()
    # on this data bar 0's close is below bar 9's average: with the warm-up back-filled the
    # real run sells on bar 0, as a history cut before bar 9 (no average yet) does
    assert close[0] < close[:10].mean()
    verdict = ql.audit(peek_bfill_quietly, data)
    assert not verdict.ok and verdict.kind == "perturbation"
    assert verdict.first_bar == data.index[0] and verdict.line == 3
    assert (verdict.signal_full, verdict.signal_cut) == (-1, 1)
    assert "scrambled" in verdict.message


def test_the_first_bar_is_one_whose_signal_really_changes_with_later_bars_only() -> None:
    """Independent check of peek_centred's verdict: cut the data by hand after the reported
    bar's cut and compare."""
    verdict = ql.audit(peek_centred, DATA)
    i = INDEX.get_loc(verdict.first_bar)
    t = INDEX.get_loc(verdict.cut)
    assert i < t
    full = peek_centred(as_bars(DATA))
    cut = peek_centred(as_bars(DATA.iloc[:t]))
    assert full[i] == verdict.signal_full and cut[i] == verdict.signal_cut
    assert (full[:i] == cut[:i]).all()  # no earlier bar changed at that cut


@pytest.mark.parametrize("func", [clean_rolling, clean_ewm, clean_expanding])
def test_rolling_exponential_and_expanding_windows_pass(func: Any) -> None:
    verdict = ql.audit(func, DATA)
    assert verdict.ok, verdict.message
    assert verdict.first_bar is None and verdict.kind is None
    assert verdict.cuts == len(cut_points(len(DATA))) and verdict.skipped_cuts == 0
    assert "passed" in str(verdict) and "passed" in verdict._repr_html_()


# every built-in in the strategies registry (user strategies registered by tests left out)
BUILTIN_NAMES = [name for name in list_strategies() if get_strategy(name).builtin]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_strategy_passes_by_construction(name: str) -> None:
    # three symbols, one with a gap and a late start: the multi-symbol paths and NaN bars
    frames = {s: frame(300, seed) for s, seed in (("AAA", 1), ("BBB", 2), ("CCC", 4))}
    frames["BBB"] = frames["BBB"].drop(frames["BBB"].index[100:110])
    frames["CCC"] = frames["CCC"].iloc[40:]
    strat = get_strategy(name)
    sweep = {p: [v, v * 2] for p, v in strat.params.items()
             if isinstance(v, int) and not isinstance(v, bool) and p != "top_n"}
    verdict = ql.audit(name, frames, sweep or None)
    assert verdict.ok, verdict.message
    assert verdict.combinations == len(edge_combinations(strat, sweep or None))


def test_the_builtin_audit_covers_every_builtin() -> None:
    assert sorted(BUILTIN_NAMES) == sorted(s.name for s in BUILTINS)


def test_a_sweep_is_audited_at_the_edges_of_each_parameter() -> None:
    combos = edge_combinations(get_strategy("sma_crossover"),
                               {"fast": [5, 10, 20], "slow": [60, 40, 30]})
    # first values, then each parameter's smallest and largest with the others at their first
    assert combos == [{"fast": 5, "slow": 60}, {"fast": 20, "slow": 60},
                      {"fast": 5, "slow": 30}]
    # an edge the rule rejects (fast >= slow) is left out
    assert edge_combinations(get_strategy("sma_crossover"),
                             {"fast": [5, 40], "slow": 30}) == [{"fast": 5, "slow": 30}]


def test_a_peek_only_at_one_edge_of_a_sweep_is_found_there() -> None:
    def peeks_when_long(bars, n=5):
        close = pd.Series(bars.close[0])
        ahead = close.shift(-1) if n > 50 else close.shift(1)
        return np.where(ahead > close, 1, -1)

    verdict = ql.audit(peeks_when_long, DATA, {"n": [5, 10, 60]})
    assert not verdict.ok and verdict.params == {"n": 60}
    assert ql.audit(peeks_when_long, DATA, {"n": [5, 10, 40]}).ok


def test_perturbation_keeps_the_past_and_every_bar_consistent() -> None:
    bars = as_bars(DATA)
    t = 150
    changed = perturb(bars, t, np.random.default_rng(0))
    for name in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(changed, name)[:, :t], getattr(bars, name)[:, :t])
    assert not np.allclose(changed.close[:, t:], bars.close[:, t:])
    assert (changed.low <= np.minimum(changed.open, changed.close)).all()
    assert (changed.high >= np.maximum(changed.open, changed.close)).all()
    assert (changed.close > 0).all()


def test_cut_points_are_dense_at_the_start_spaced_and_reproducible() -> None:
    cuts = cut_points(2500)
    assert cuts[:64] == list(range(1, 65))
    assert cuts == cut_points(2500) and max(cuts) <= 2499 and min(cuts) == 1
    assert max(np.diff(cuts)) <= 2500 // (audit_mod.SPACED_CUTS - 1) + 1  # no wide hole
    assert cut_points(5) == [1, 2, 3, 4]


def test_first_difference_counts_nan_as_equal() -> None:
    a = np.array([[1.0, np.nan, 0.0, 1.0]])
    assert first_difference(a, a.copy()) is None
    assert first_difference(a, np.array([[1.0, np.nan, 1.0, 0.0]])) == (0, 2)


def test_lines_are_found_for_each_construct() -> None:
    source = (
        "def f(bars):\n"
        "    c = bars.close[0]\n"
        "    r = c[::-1]\n"
        "    nxt = c[i + 1]\n"
        "    f2 = pd.Series(c).fillna(method='bfill')\n"
        "    s = pd.Series(c).rolling(5).mean()\n"
        "    top = max(a, b)\n"
        "    return np.roll(c, -1)\n")
    found = {line: why for line, _code, why in audit_mod.suspicious_lines(source)}
    assert set(found) == {3, 4, 5, 8}
    assert "reverses" in found[3] and "later position" in found[4]
    assert "back-filling" in found[5] and "np.roll" in found[8]


def test_a_strategy_that_cannot_run_on_a_short_history_is_not_blamed() -> None:
    def needs_30_bars(bars):
        if bars.n_bars < 30:
            raise ValueError("need 30 bars")
        return np.zeros(bars.n_bars, np.int8)

    verdict = ql.audit(needs_30_bars, DATA)
    assert verdict.ok and verdict.skipped_cuts == 29  # cuts 1..29, truncation only


# -- before queueing ---------------------------------------------------------------------------


@ql.strategy(name="audit_peeker")
def audit_peeker(bars, n=10):
    close = pd.Series(bars.close[0])
    ahead = close.shift(-1)
    return np.sign(ahead - close).fillna(0)


@ql.strategy(name="audit_clean")
def audit_clean(bars, n=10):
    close = pd.Series(bars.close[0])
    return np.where(close > close.rolling(n).mean(), 1, -1)


ONE_YEAR = {"symbols": ["AAA"], "start": "2020-01-01", "end": "2020-12-31"}


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = audit_mod.audit_combinations

    def counted(strat: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(strat.name)
        return real(strat, *args, **kwargs)

    monkeypatch.setattr(audit_mod, "audit_combinations", counted)
    return calls


def test_submit_refuses_a_peeking_notebook_strategy_and_queues_nothing(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    for _ in range(2):  # the second answer comes from the verdict cache
        with pytest.raises(ConfigError) as refused:
            ql.submit({**ONE_YEAR, "strategy": "audit_peeker"})
        message = str(refused.value)
        assert "look-ahead" in message and "2020-01-02" in message  # the first bar
        assert "line 4: `ahead = close.shift(-1)`" in message  # the decorator is line 1 and "audit: false" in message
        assert refused.value.field == "strategy" and refused.value.first_bar == "2020-01-02"
    assert calls == ["audit_peeker"]
    assert open_registry().count_runs() == 0


def test_a_clean_strategy_is_queued_and_audited_once_per_code_and_data(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    first = ql.submit({**ONE_YEAR, "strategy": "audit_clean"})
    second = ql.submit({**ONE_YEAR, "strategy": "audit_clean", "name": "again"})
    assert first.status == second.status == "queued"
    assert calls == ["audit_clean"]  # the second submit hit the verdict cache
    assert (home / audit_mod.CACHE_FILE).exists()
    # other data (a longer range) or other params' edges: audited again
    ql.submit({**ONE_YEAR, "start": "2019-01-01", "strategy": "audit_clean"})
    ql.submit({**ONE_YEAR, "strategy": "audit_clean", "params": {"n": [5, 20]}})
    assert calls == ["audit_clean"] * 3
    assert "audit" not in first.record["config"]  # the default leaves stored configs as they were


def test_audit_false_skips_the_audit_and_is_recorded_on_the_run(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    run = ql.submit({**ONE_YEAR, "strategy": "audit_peeker", "audit": False})
    assert run.status == "queued" and calls == []
    assert run.record["config"]["audit"] is False
    assert audit_skipped(run.record["config"])
    assert AUDIT_SKIPPED in audit_badge(run.record["config"]) and audit_badge({}) == ""
    yaml_text = ql.BacktestConfig.from_any({**ONE_YEAR, "strategy": "sma_crossover",
                                            "audit": False}).to_yaml()
    assert "audit: false" in yaml_text


def test_a_skipped_audit_is_a_badge_in_the_widget_the_snapshot_and_the_report(
        home: Path, no_worker: None) -> None:
    from quantlab.notebook.display import run_snapshot_html
    from quantlab.notebook.widget import RunWidget
    from quantlab.reports.sections import header_html

    skipped = ql.submit({**ONE_YEAR, "strategy": "audit_clean", "audit": False})
    audited = ql.submit({**ONE_YEAR, "strategy": "audit_clean"})
    for run, shown in ((skipped, True), (audited, False)):
        widget = RunWidget(run, follow=False)
        views = (widget.header.value, run_snapshot_html(run.record, widget.state),
                 header_html(run.record))
        assert all((AUDIT_SKIPPED in view) is shown for view in views), views


def test_a_bad_audit_value_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as bad:
        ql.BacktestConfig.from_any({**ONE_YEAR, "strategy": "sma_crossover", "audit": "maybe"})
    assert bad.value.field == "audit"


def test_the_config_hash_ignores_audit(home: Path) -> None:
    from quantlab.jobs.fingerprint import config_hash

    config = {**ONE_YEAR, "strategy": "sma_crossover"}
    assert config_hash(config) == config_hash({**config, "audit": False})


# -- shipped sources: audited in a sandbox, never in the submitting process -------------------

# Where the shipped strategies below leave what the tests look at (a constant in their source).
MARKERS = tempfile.mkdtemp(prefix="quantlab-audit-test-")


def shipped(name: str, body: str) -> str:
    """A shipped source (as a REST client or another kernel sends it) of strategy ``name``, which
    this process never defines: loading or running it marks the ``quantlab`` module it runs
    with (``quantlab.touched_by_<name>``)."""
    return (f"import os\nimport numpy as np\nimport pandas as pd\nimport quantlab as ql\n"
            f"ql.touched_by_{name} = 'loaded'\n"
            f"{SOURCE_MARKER}\n"
            f"@ql.strategy(name={name!r})\n"
            f"def {name}(bars, n=10):\n"
            f"    ql.touched_by_{name} = 'run'\n"
            f"    close = pd.Series(bars.close[0])\n"
            + textwrap.indent(textwrap.dedent(body), "    "))


SHIPPED_PEEKER = shipped("shipped_peeker", """\
    ahead = close.shift(-1)
    return np.sign(ahead - close).fillna(0)
""")
SHIPPED_CLEAN = shipped("shipped_clean", """\
    return np.where(close > close.rolling(n).mean(), 1, -1)
""")
SHIPPED_SPINNER = shipped("shipped_spinner", f"""\
    with open(os.path.join({MARKERS!r}, "spinner.pid"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass
""")


def shipped_config(name: str, source: str) -> dict[str, Any]:
    return {**ONE_YEAR, "strategy": name, "strategy_source": source}


def untouched(name: str) -> bool:
    """Nothing of strategy ``name``'s source ran in this process (module attribute, registry)."""
    return (not hasattr(ql, f"touched_by_{name}")
            and not hasattr(importlib.import_module("quantlab"), f"touched_by_{name}")
            and name not in list_strategies())


def sandbox_audits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The strategies the orchestrator sent to a sandbox audit (the real one runs)."""
    from quantlab.jobs import isolation, orchestrator

    calls: list[str] = []

    def counted(cfg: Any, bars: Any) -> Any:
        calls.append(cfg.strategy)
        return isolation.audit_in_sandbox(cfg, bars)

    monkeypatch.setattr(orchestrator, "audit_in_sandbox", counted)
    return calls


def test_a_shipped_peeking_strategy_is_refused_and_never_runs_in_the_submitting_process(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = sandbox_audits(monkeypatch)
    for _ in range(2):  # the second answer comes from the verdict cache
        with pytest.raises(ConfigError) as refused:
            ql.submit(shipped_config("shipped_peeker", SHIPPED_PEEKER))
        message = str(refused.value)
        assert "look-ahead" in message and "2020-01-02" in message  # the first bar
        # counted from the decorator, as the notebook that wrote it shows it
        assert "line 5: `ahead = close.shift(-1)`" in message
        assert refused.value.field == "strategy" and refused.value.first_bar == "2020-01-02"
    assert calls == ["shipped_peeker"]
    assert open_registry().count_runs() == 0
    # the source was loaded and run in the sandbox only: not here
    assert untouched("shipped_peeker")


def test_a_shipped_clean_strategy_passes_its_sandboxed_audit_and_is_queued(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = sandbox_audits(monkeypatch)
    first = ql.submit(shipped_config("shipped_clean", SHIPPED_CLEAN))
    again = ql.submit({**shipped_config("shipped_clean", SHIPPED_CLEAN), "name": "again"})
    assert first.status == again.status == "queued"
    assert calls == ["shipped_clean"]  # cached by source, data and params
    assert untouched("shipped_clean")


def test_a_shipped_strategy_that_never_returns_is_stopped_after_the_audit_timeout(
        home: Path, no_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    from quantlab.jobs.isolation import AUDIT_HANDLER
    from quantlab.strategies import sandbox

    monkeypatch.setenv("QUANTLAB_AUDIT_TIMEOUT", "2")
    pid_file = Path(MARKERS) / "spinner.pid"
    pid_file.unlink(missing_ok=True)
    with pytest.raises(ConfigError) as refused:
        ql.submit(shipped_config("shipped_spinner", SHIPPED_SPINNER))
    message = str(refused.value)
    assert "look-ahead audit of strategy 'shipped_spinner' did not finish in 2 s" in message
    assert "may never return" in message and "audit: false" in message
    assert refused.value.field == "strategy"
    assert open_registry().count_runs() == 0
    assert untouched("shipped_spinner")
    # the strategy really spun, in a sandbox, which is gone; the server keeps only the one
    # sandbox it forks ahead for the next request
    spinner = int(pid_file.read_text())
    assert spinner != os.getpid()
    wait_for(lambda: _gone(spinner), WAIT, "the spinning sandbox to be gone")
    assert spinner not in {p.pid for p in psutil.Process().children(recursive=True)}
    server = sandbox.server(AUDIT_HANDLER).proc
    assert server is not None
    wait_for(lambda: len(psutil.Process(server.pid).children()) <= 1, WAIT,
             "only the sandbox forked ahead to be left")
    # not cached: with audit: false it is queued (the worker's sandbox and time limit take over)
    run = ql.submit({**shipped_config("shipped_spinner", SHIPPED_SPINNER), "audit": False})
    assert run.status == "queued"


def test_the_audit_timeout_setting_defaults_to_30_s_and_a_bad_value_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.jobs.isolation import audit_timeout

    monkeypatch.delenv("QUANTLAB_AUDIT_TIMEOUT", raising=False)
    assert audit_timeout() == 30.0
    monkeypatch.setenv("QUANTLAB_AUDIT_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="QUANTLAB_AUDIT_TIMEOUT='soon' is not a number"):
        audit_timeout()
    monkeypatch.setenv("QUANTLAB_AUDIT_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="must be positive"):
        audit_timeout()


def test_without_a_sandbox_runner_a_shipped_source_is_not_run_here(home: Path) -> None:
    from quantlab.config import BacktestConfig
    from quantlab.errors import RunError
    from quantlab.jobs.fingerprint import data_fingerprint

    cfg = BacktestConfig.from_any(shipped_config("shipped_peeker", SHIPPED_PEEKER), check=False)
    with pytest.raises(RunError, match="only shipped source: its look-ahead audit must run "
                                       "apart"):
        audit_mod.audit_before_queue(cfg, data_fingerprint(cfg))
    assert untouched("shipped_peeker")


# -- REST ------------------------------------------------------------------------------------------

REST_SOURCE = """import numpy as np
import pandas as pd
import quantlab as ql
# --- strategy source (line 1 below) ---
@ql.strategy(name="rest_peeker")
def rest_peeker(bars):
    close = pd.Series(bars.close[0])
    z = (close - close.mean()) / close.std()
    return np.where(z > 0, 1, -1)
"""


def test_the_rest_api_refuses_a_peeking_strategy_with_a_400(lab: Lab) -> None:
    before = lab.registry().count_runs()
    body = {"config": {**ONE_YEAR, "strategy": "rest_peeker", "strategy_source": REST_SOURCE}}
    status, reply = lab.server.request("POST", f"{API}/runs", body)
    assert status == 400, reply
    assert reply["type"] == "ConfigError" and reply["field"] == "strategy"
    assert "look-ahead" in reply["message"] and "line 4: `z = (close" in reply["message"]
    assert lab.registry().count_runs() == before


def test_the_rest_api_audits_a_shipped_strategy_outside_the_jupyter_server(lab: Lab) -> None:
    import psutil

    marker = Path(MARKERS) / "rest_loaded.pid"
    marker.unlink(missing_ok=True)
    source = REST_SOURCE.replace(
        "# --- strategy source", f"import os\nopen({str(marker)!r}, 'w').write(str(os.getpid()))"
                                 f"\n# --- strategy source")
    body = {"config": {**ONE_YEAR, "strategy": "rest_peeker", "strategy_source": source}}
    status, reply = lab.server.request("POST", f"{API}/runs", body)
    assert status == 400 and "look-ahead" in reply["message"], reply
    loaded_in = int(marker.read_text())
    # loaded in a sandbox forked from the server's sandbox server, never in the server itself
    assert loaded_in != lab.server.proc.pid
    assert loaded_in not in {lab.server.proc.pid, *(
        p.pid for p in psutil.Process(lab.server.proc.pid).children())}
    wait_for(lambda: _gone(loaded_in), WAIT, "the audit's sandbox to be gone")


def test_the_run_list_payload_says_which_runs_skipped_the_audit(lab: Lab) -> None:
    from tests.test_server import CONFIG, insert_run

    skipped = insert_run(lab, config={**CONFIG, "audit": False})
    audited = insert_run(lab)
    status, page = lab.server.request("GET", f"{API}/runs?limit=50")
    assert status == 200
    flags = {run["id"]: run["audit_skipped"] for run in page["runs"]}
    assert flags[skipped] is True and flags[audited] is False


# -- %%backtest ------------------------------------------------------------------------------------


def test_backtest_magic_refuses_a_strategy_defined_in_a_cell_in_one_line(
        home: Path, no_worker: None) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "quantlab")
    defined = ip.run_cell(
        "import numpy as np\n"
        "import pandas as pd\n"
        "import quantlab as ql\n"
        "\n"
        "@ql.strategy\n"
        "def cell_centred(bars, n=10):\n"
        "    close = pd.Series(bars.close[0])\n"
        "    mid = close.rolling(n, center=True).mean()\n"
        "    return np.where(mid.isna(), 0, np.where(close > mid, 1, -1))\n",
        store_history=False)
    assert defined.error_in_exec is None
    result = ip.run_cell("%%backtest --out never\nstrategy: cell_centred\nsymbols: [AAA]\n"
                         "start: 2020-01-01\nend: 2020-12-31\n", store_history=False)
    err = result.error_in_exec
    assert isinstance(err, ConfigError)
    rendered = err._render_traceback_()
    assert len(rendered) == 1 and "Traceback" not in rendered[0]
    # the window of 10 first has a value on the 6th bar of 2020 (2020-01-09), from bars 1..10
    assert "look-ahead" in str(err) and "2020-01-09" in str(err)
    assert "line 4: `mid = close.rolling(n, center=True).mean()`" in str(err)
    assert open_registry().count_runs() == 0 and "never" not in ip.user_ns
    # audit: false queues it
    ip.run_cell("%%backtest --out queued\nstrategy: cell_centred\nsymbols: [AAA]\n"
                "start: 2020-01-01\nend: 2020-12-31\naudit: false\n", store_history=False)
    assert ip.user_ns["queued"].record["config"]["audit"] is False
