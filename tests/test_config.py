"""BacktestConfig: validation messages, canonical form and the config hash."""

from __future__ import annotations

from pathlib import Path

import pytest

import quantlab as ql
from quantlab.config import BacktestConfig
from quantlab.engine.options import EngineOptions
from quantlab.errors import ConfigError, DataError
from quantlab.jobs.fingerprint import config_hash
from tests.support import jobs as support

# fixtures (pytest finds them in the module's namespace)
home = support.home

BASE = {"strategy": "sma_crossover", "symbols": ["AAA", "BBB"], "start": "2020-01-01",
        "end": "2021-12-31"}


def error_of(config: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        BacktestConfig.from_any(config)
    return info.value


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"comission": 0.001}, "comission", "unknown key 'comission' — did you mean 'commission'?"),
    ({"sybmols": ["AAA"]}, "sybmols", "unknown key 'sybmols' — did you mean 'symbols'?"),
    ({"start": "2020-01-01", "end": "2019-01-01"}, "start",
     "start 2020-01-01 must be before end 2019-01-01"),
    ({"cash": "lots"}, "cash", "cash: expected a number, got 'lots'; write e.g. cash: 100_000"),
    ({"cash": -5}, "cash", "cash must be positive"),
    ({"commission": 0.7}, "commission", "it is a fraction, so write 0.002 for 0.2%"),
    ({"fill": "open"}, "fill", "fill: 'open' is not allowed; use one of 'next_open' or 'close'"),
    ({"allow_short": "maybe"}, "allow_short", "expected true or false, got 'maybe'"),
    ({"stop_loss": 5}, "stop_loss", "stop_loss must be a fraction of the entry price"),
    ({"start": "someday"}, "start", "'someday' is not a date; write it as YYYY-MM-DD"),
    ({"interval": "3x"}, "interval", "unknown interval '3x'"),
    ({"strategy": "sma_crosover"}, "strategy", "did you mean 'sma_crossover'?"),
    ({"params": {"fsat": 5}}, "params.fsat", "unknown parameter 'fsat'"),
    ({"params": {"fast": [50, 60], "slow": [10, 20]}}, "params",
     "the sweep has no valid combination"),
    ({"params": {"fast": []}}, "params.fast", "sweeps over an empty list"),
    ({"weights": {"ZZZ": 0.5}}, "weights", "weights names 'ZZZ', which is not among the symbols"),
    ({"symbols": []}, "symbols", "give at least one symbol"),
    ({"symbols": ["AAA", "aaa"]}, "symbols", "listed twice"),
    ({"tags": {"a": 1}}, "tags", "expected a list"),
    ({"select": "sharp"}, "select", "did you mean 'sharpe'?"),
    ({"end": "9999-12-31"}, "end", "end: 9999-12-31 is outside the dates bars can carry "
     "(1678-01-01 to 2261-12-31); leave the key out to use all the data"),
    ({"start": "1066-10-14"}, "start", "start: 1066-10-14 is outside the dates bars can carry"),
    ({"symbols": ["X" * 300]}, "symbols", "the symbol XXXXXXXXXXXXXXXXXXXX... is 300 characters "
     "long; a symbol has at most 64"),
    ({"params": {"fast": list(range(1, 30_001)), "slow": list(range(2, 30_002))}}, "params",
     "the sweep spans 900,000,000 combinations (30,000 fast x 30,000 slow), more than the "
     "1,000,000 one run may hold; use larger steps"),
])
def test_bad_configs_name_the_field_and_the_fix(home: Path, extra: dict[str, object],
                                                field: str, message: str) -> None:
    err = error_of({**BASE, **extra})
    assert err.field == field
    assert message in str(err)
    assert "pydantic" not in str(err) and "validation error" not in str(err)


def test_weights_name_symbols_as_loosely_as_symbols_do(home: Path) -> None:
    cfg = BacktestConfig.from_any({**BASE, "symbols": ["aaa", "bbb"],
                                   "weights": {"aaa": 0.6, " bbb ": 0.4}})
    assert cfg.symbols == ["AAA", "BBB"] and cfg.weights == {"AAA": 0.6, "BBB": 0.4}


def test_misspelt_key_message_is_exact_and_suggests(home: Path) -> None:
    err = error_of({**BASE, "comission": 0.001})
    assert str(err) == "unknown key 'comission' — did you mean 'commission'?"
    assert err.suggestion == "commission"


def test_a_key_with_no_near_name_lists_the_valid_keys(home: Path) -> None:
    err = error_of({**BASE, "zzzzzz": 1})
    assert str(err).startswith("unknown key 'zzzzzz'; a config takes: name, strategy, params")


def test_missing_required_key_says_what_to_add(home: Path) -> None:
    err = error_of({"strategy": "sma_crossover"})
    assert err.field == "symbols"
    assert str(err) == "missing required key 'symbols'; add it, e.g. symbols: [AAA, BBB]"


def test_unknown_symbol_without_provider_key_says_how_to_import(home: Path) -> None:
    # the store is asked at submission, not by the config: ql.submit refuses before queuing
    config = {**BASE, "symbols": ["AAA", "ZZZ"]}
    assert BacktestConfig.from_any(config).symbols == ["AAA", "ZZZ"]
    for submit in (lambda: ql.submit(config), lambda: config_hash(config)):
        with pytest.raises(DataError) as info:
            submit()
        err = info.value
        assert err.field == "symbols" and err.symbol == "ZZZ"
        assert "unknown symbol 'ZZZ'" in str(err)
        assert "ql.data.import_csv('ZZZ'" in str(err) and "ql.data.fetch('ZZZ')" in str(err)
    assert not ql.runs()  # nothing was queued


def test_unknown_symbol_with_a_provider_key_is_left_for_the_worker_to_fetch(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.jobs.fingerprint import check_symbols

    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "demo")
    config = BacktestConfig.from_any({**BASE, "symbols": ["AAA", "ZZZ"]})
    assert check_symbols(config.symbols, config.interval) == ["ZZZ"]


def test_yaml_text_and_models_are_accepted(home: Path) -> None:
    text = """
    strategy: sma_crossover
    symbols: [aaa, BBB]
    start: 2020-01-01
    end: 2021-12-31
    params: {fast: [10, 20], slow: 100}
    cash: 100_000
    commission: 0.001
    """
    config = BacktestConfig.from_any(text.replace("\n    ", "\n"))
    assert config.symbols == ["AAA", "BBB"]
    assert config.cash == 100_000.0
    assert config.is_sweep and config.combinations() == 2
    again = BacktestConfig.from_any(config, name="copy")
    assert again.name == "copy" and again.canonical()["params"] == config.canonical()["params"]


@pytest.mark.parametrize(("written", "char", "means"), [
    ("ſpy", "'ſ' (U+017F LATIN SMALL LETTER LONG S)", "SPY"),
    ("ﬁx", "'ﬁ' (U+FB01 LATIN SMALL LIGATURE FI)", "FIX"),
    ("ıbm", "'ı' (U+0131 LATIN SMALL LETTER DOTLESS I)", "IBM"),
    ("ＡＡＡ", "'Ａ' (U+FF21 FULLWIDTH LATIN CAPITAL LETTER A)", "AAA"),
])
def test_a_symbol_that_unicode_would_turn_into_another_is_refused_naming_it(
        home: Path, written: str, char: str, means: str) -> None:
    err = error_of({**BASE, "symbols": ["AAA", written] if means != "AAA" else [written]})
    assert str(err) == (f"symbol {written!r} holds the non-ASCII character {char}; symbols are "
                        f"ASCII, and this name would read as {means!r}: write {means!r} if that "
                        f"is what you mean")
    assert err.field == "symbols" and err.fields["suggestion"] == means


def test_other_non_ascii_symbols_are_invalid(home: Path) -> None:
    err = error_of({**BASE, "symbols": ["café"]})
    assert str(err).startswith("invalid symbol 'café': it holds the non-ASCII character 'é' "
                               "(U+00E9 LATIN SMALL LETTER E WITH ACUTE); use ASCII letters")


def test_a_grid_too_large_is_refused_for_a_notebook_strategy_too(home: Path) -> None:
    config = {**BASE, "strategy": "mine", "strategy_source": "def mine(): ...",
              "params": {"a": list(range(2_000)), "b": list(range(2_000))}}
    err = error_of(config)
    assert err.field == "params" and err.fields["combinations"] == 4_000_000
    assert "the sweep spans 4,000,000 combinations (2,000 a x 2,000 b)" in str(err)


def test_yaml_text_with_a_key_given_twice_is_refused(home: Path) -> None:
    err = error_of("strategy: sma_crossover\nsymbols: [AAA]\nparams:\n  fast: 5\n  fast: 8\n")
    assert err.field == "params.fast"
    assert "gives the key 'params.fast' twice (lines 4 and 5); give each key once" in str(err)


def test_invalid_yaml_says_where(home: Path) -> None:
    err = error_of("strategy: [sma\nsymbols: AAA\n")
    assert "not valid YAML at line" in str(err)


def test_canonical_fills_defaults_and_expands_ranges(home: Path) -> None:
    a = BacktestConfig.from_any({**BASE, "params": {"fast": range(10, 30, 10)}})
    b = BacktestConfig.from_any({**BASE, "params": {"fast": [10, 20], "slow": 20},
                                 "cash": 10_000, "fill": "next_open", "interval": "1D"})
    assert a.canonical() == b.canonical()
    canonical = a.canonical()
    assert canonical["params"] == {"fast": [10, 20], "slow": 20}
    assert list(canonical) == sorted(canonical)
    assert canonical["cash"] == 10_000.0 and canonical["start"] == "2020-01-01"


def test_hash_ignores_labels_and_follows_what_changes_the_result(home: Path) -> None:
    base = BacktestConfig.from_any(BASE)
    labelled = BacktestConfig.from_any({**BASE, "name": "x", "tags": ["t"]})
    assert config_hash(base) == config_hash(labelled)
    assert config_hash(base) != config_hash({**BASE, "commission": 0.001})
    assert config_hash(base) != config_hash({**BASE, "end": "2021-06-30"})
    assert config_hash(base) != config_hash(base, fingerprint="other data")


def test_hash_changes_when_a_bar_of_the_data_changes(home: Path) -> None:
    before = config_hash(BASE)
    frame = ql.data.load("AAA", "2020-06-01", "2020-06-30").frame("AAA")
    frame.iloc[3, [frame.columns.get_loc(c) for c in ("open", "high", "low", "close")]] *= 1.01
    ql.data.import_frame("AAA", frame, interval="1d", mode="extend", adjusted=True)
    assert config_hash(BASE) != before
    # ...but not when a bar outside the config's range changes
    outside = config_hash(BASE)
    frame = ql.data.load("AAA", "2023-06-01", "2023-06-30").frame("AAA")
    frame.iloc[3, [frame.columns.get_loc(c) for c in ("open", "high", "low", "close")]] *= 1.01
    ql.data.import_frame("AAA", frame, interval="1d", mode="extend", adjusted=True)
    assert config_hash(BASE) == outside


def test_hash_changes_with_the_strategy_source(home: Path) -> None:
    notebook = {**BASE, "strategy_source": "def f(bars):\n    return 1\n"}
    changed = {**BASE, "strategy_source": "def f(bars):\n    return -1\n"}
    assert config_hash(notebook) != config_hash(changed)
    assert config_hash(notebook) != config_hash(BASE)


def test_engine_kwargs_pass_only_what_was_set(home: Path) -> None:
    config = BacktestConfig.from_any({**BASE, "commission": 0.001, "allow_short": True})
    assert config.engine_kwargs() == {"strategy": "sma_crossover", "params": {},
                                      "commission": 0.001, "allow_short": True}


def test_yaml_round_trip_keeps_the_meaning(home: Path) -> None:
    config = BacktestConfig.from_any({**BASE, "params": {"fast": [5, 10]}, "commission": 0.001,
                                      "tags": ["a"], "name": "n"})
    again = BacktestConfig.from_any(config.to_yaml())
    assert again.canonical() == config.canonical()


def test_a_range_without_bars_is_an_error_on_start(home: Path) -> None:
    from quantlab.jobs.fingerprint import data_fingerprint

    config = BacktestConfig.from_any({**BASE, "start": "2030-01-01", "end": "2031-01-01"})
    with pytest.raises(DataError) as info:
        data_fingerprint(config)
    assert info.value.field == "start" and info.value.symbol == "AAA"
    assert "Choose start/end inside that range" in str(info.value)


# The hashes of existing configs over a fixed data fingerprint, computed with main's code at
# b0d4970 (before the engine options were declared in quantlab/engine/options.py), then again
# when ENGINE_VERSION went to 1.1.0 (psr and sharpe_se added to every run's metrics): every
# result cached since must still be found. They change only with the strategy's code or
# ENGINE_VERSION.
PINNED_HASHES = {
    "base": (BASE, "31cdc72223e32b75900b16341db7c274b0f77508dc363e779d4708be457f91b2"),
    "defaults_spelt_out": (
        {**BASE, "cash": 10_000, "commission": 0.0, "commission_fixed": 0.0, "slippage": 0.0,
         "fill": "next_open", "units": "whole", "size": 1.0, "allow_short": False,
         "close_at_end": False, "select": "sharpe"},
        "31cdc72223e32b75900b16341db7c274b0f77508dc363e779d4708be457f91b2"),
    "every_option": (
        {**BASE, "cash": 50_000, "commission": 0.001, "commission_fixed": 1.0, "slippage": 5,
         "fill": "close", "units": "fractional", "size": 0.5, "weights": {"AAA": 0.6, "BBB": 0.4},
         "allow_short": True, "stop_loss": 0.05, "take_profit": 0.1, "close_at_end": True,
         "select": "sortino"},
        "55eef3051af7f6c75947ad7eb43aee140958e104e7ceaa35a0b824e36e223673"),
    "sweep_intraday": (
        {"strategy": "rsi_reversion", "symbols": "aaa", "interval": "60min",
         "params": {"period": range(10, 30, 10), "lower": [20.0, 30.0]}, "name": "labelled",
         "tags": ["x"]},
        "2760115eb5e8a396203cef372228a71cd8c118fa87158014fc04706a6e4ca6cb"),
    "notebook_strategy": (
        {"strategy": "mine", "symbols": ["AAA"], "params": {"k": [1, 2]},
         "strategy_source": "def mine(bars, k=1):\n    return k\n"},
        "1f650f2ffde8e09d8867677a71a16389822f0116a75b9ef0aedf7ddc56ce7c1d"),
}


@pytest.mark.parametrize("case", sorted(PINNED_HASHES))
def test_the_hash_of_an_existing_config_does_not_change(case: str) -> None:
    raw, pinned = PINNED_HASHES[case]
    config = BacktestConfig.from_any(raw, check=False)
    assert config_hash(config, fingerprint="pinned-data") == pinned


def test_the_option_fields_are_generated_from_the_engine_options() -> None:
    from typing import get_args

    from quantlab.config import ENGINE_KEYS, engine_defaults
    from quantlab.engine.options import CONFIG_OPTIONS, OPTION_NAMES, option_types

    fields = BacktestConfig.model_fields
    options = [name for name in fields if name in OPTION_NAMES]
    assert tuple(options) == CONFIG_OPTIONS == ENGINE_KEYS
    assert set(OPTION_NAMES) - set(options) == {"threads"}  # the worker's setting, not a run's
    from quantlab.engine.options import SWEEPABLE

    types = option_types()
    for name in options:
        assert fields[name].default is None  # not given: the engine's default
        # a sweepable option also takes a list of its values (a sweep dimension)
        declared = types[name] | list[types[name]] if name in SWEEPABLE else types[name]
        assert set(get_args(fields[name].annotation)) == {*get_args(declared | None)}
    assert engine_defaults() == {name: getattr(EngineOptions(), name) for name in CONFIG_OPTIONS}


def test_config_is_a_leaf_that_loads_no_data_jobs_or_notify_code() -> None:
    import subprocess
    import sys

    # a fresh interpreter (this one has loaded everything already) that imports the config and
    # validates one with every kind of rule: names, options, a notify block, a sweep
    code = """if True:
        import sys
        import quantlab  # what the package's own start loads is not the config's doing
        before = set(sys.modules)
        from quantlab.config import BacktestConfig
        BacktestConfig.from_any({"strategy": "sma_crossover", "symbols": ["aaa", "bbb"],
                                 "interval": "60min", "weights": {"aaa": 0.5}, "cash": 5_000,
                                 "params": {"fast": [5, 10]},
                                 "notify": {"email": "a@example.com", "when": "sharpe > 1"}})
        print(" ".join(sorted(m for m in set(sys.modules) - before if m.split(".")[:2] in (
            ["quantlab", "data"], ["quantlab", "jobs"], ["quantlab", "notify"],
            ["quantlab", "notifications"]))))
    """
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []
