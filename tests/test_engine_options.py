"""The engine options are declared once (quantlab/engine/options.py): the TypedDict, the engine's
keywords and the docs' table follow the dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab.engine import Simulation
from quantlab.engine.options import (
    OPTION_NAMES,
    BacktestOptions,
    EngineOptions,
    info,
    option_types,
    options_table,
)
from quantlab.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "engine.md"


def random_walk(n_bars: int, seed: int) -> pd.DataFrame:
    close = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.02, n_bars)))
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close}, index=pd.date_range("2020-01-01", periods=n_bars))


def test_the_typed_dict_has_the_dataclass_fields_and_types() -> None:
    assert tuple(BacktestOptions.__annotations__) == OPTION_NAMES
    # a sweepable option also takes a sequence of its values (a sweep dimension)
    assert get_type_hints(BacktestOptions) == option_types(sweeps=True)
    assert not BacktestOptions.__required_keys__  # every option may be left out


def test_every_option_says_what_it_means() -> None:
    for spec in dataclasses.fields(EngineOptions):
        assert info(spec.name).doc, spec.name
    assert dataclasses.is_dataclass(EngineOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        EngineOptions().cash = 1.0  # type: ignore[misc]


def test_the_docs_table_is_the_generated_one() -> None:
    text = DOCS.read_text()
    marker = text.index("<!-- generated from quantlab/engine/options.py by options_table()")
    table = text[text.index("\n", marker) + 1:]
    table = table[:table.index("\n\n") + 1]
    assert table == options_table(), (
        "docs/engine.md's option table differs from quantlab.engine.options.options_table(); "
        "paste the function's output under the marker")


def test_the_engine_takes_the_declared_defaults() -> None:
    sim = Simulation(random_walk(60, seed=3), "sma_crossover", {"fast": 3, "slow": 9})
    defaults = EngineOptions()
    assert sim.options == defaults
    shown = {k: v for k, v in sim.config.items() if k in OPTION_NAMES}
    assert shown == {name: getattr(defaults, name) for name in OPTION_NAMES
                     if name != "threads"}


def test_simulation_names_an_unknown_option_with_the_nearest_one() -> None:
    with pytest.raises(ConfigError, match="unknown option 'slipage' — did you mean 'slippage'") \
            as info_:
        Simulation(random_walk(60, seed=3), "sma_crossover", slipage=5)  # type: ignore[call-arg]
    assert info_.value.field == "slipage" and info_.value.suggestion == "slippage"


def test_checked_options_are_normalised_and_keep_the_engine_messages() -> None:
    opts = EngineOptions.checked({"cash": 5_000, "weights": {"AAA": 1}}, ["AAA"])
    assert opts.cash == 5_000.0 and type(opts.cash) is float and opts.weights == {"AAA": 1.0}
    with pytest.raises(ConfigError, match="cash must be positive") as bad:
        EngineOptions.checked({"cash": -1}, ["AAA"])
    assert bad.value.field == "cash"


def test_backtest_option_typing_reaches_the_engine() -> None:
    options: BacktestOptions = {"commission": 0.001, "fill": "close"}
    res = ql.backtest(random_walk(80, seed=4), "sma_crossover", {"fast": 3, "slow": 9}, **options)
    assert res.config["commission"] == 0.001 and res.config["fill"] == "close"
