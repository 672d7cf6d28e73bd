"""``BacktestConfig``: the one description of a backtest that crosses the queue.

A config is validated in the caller (the kernel), before anything is queued: structure and types
by pydantic, then the rules that need more than a type (the engine's rules for each option, the
names of symbols and intervals, the notify block, does the strategy exist, do its params, is the
sweep empty). Every problem is a :class:`~quantlab.errors.ConfigError` whose ``field`` names the
key and whose message says how to fix it; pydantic's own error dump never reaches the user.

The engine options (``cash`` ... ``select``) are not written out here: their fields are generated
from :class:`quantlab.engine.options.EngineOptions`, the one declaration of their names, types
and defaults.

This module is a leaf: it opens no data store, queue or notifier. Whether the symbols are in the
store, and the config hash (``canonical()`` plus the data, the strategy's code and the engine
version), are the submission's: :mod:`quantlab.jobs.fingerprint`.

``canonical()`` is the config as JSON with defaults filled and ranges expanded, so that two
configs that mean the same backtest are equal.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from quantlab.bars import (
    FIRST_DATE,
    LAST_DATE,
    canonical_interval,
    canonical_symbol,
    date_in_range,
    symbol_list,
)
from quantlab.configtext import DuplicateKeyError, load_yaml, parse_range
from quantlab.engine import validate
from quantlab.engine.options import (
    CONFIG_OPTIONS,
    SWEEPABLE,
    EngineOptions,
    defaults,
    info,
    is_swept,
    option_types,
    swept_options,
)
from quantlab.errors import ConfigError, QuantlabError
from quantlab.notifyspec import validate_notify_config
from quantlab.strategies import get_strategy

# Keys that label a run without changing its result: they stay out of the cache hash.
# (``audit: false`` skips the look-ahead audit of a notebook strategy: it changes no result.)
LABEL_KEYS = frozenset({"name", "tags", "notify", "audit"})
# Keys of the config that are passed to the engine's Simulation as they are: the engine options
# a config holds (all of EngineOptions but the worker's own ``threads``).
ENGINE_KEYS = CONFIG_OPTIONS


class _RunSubject(BaseModel):
    """A config's first keys, in the order users see them: its name, what runs (``strategy``,
    ``params``) and on which data (``symbols``, ``start``, ``end``, ``interval``). The engine
    options follow (generated), then the labels (:class:`BacktestConfig`)."""

    model_config = ConfigDict(extra="forbid", validate_default=False)

    name: str | None = None
    strategy: str
    params: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict)
    symbols: list[str]
    start: datetime | None = None
    end: datetime | None = None
    interval: str = "1d"


def _option_fields() -> dict[str, Any]:
    """Each engine option a config holds as a pydantic field: the option's type from
    ``EngineOptions`` (a sweepable one: or a list of such values, a sweep dimension), or None
    for "not given" (the engine's default; ``canonical()`` fills it)."""
    types = option_types()
    listed: Any = list  # subscripted with a type known only at run time
    return {name: (((types[name] | listed[types[name]]) if name in SWEEPABLE else types[name])
                   | None, Field(default=None, description=info(name).doc))
            for name in CONFIG_OPTIONS}


class WalkForwardSpec(BaseModel):
    """The ``walk_forward`` key of a config: ``ql.walk_forward``'s fold sizes (bars, or
    durations such as ``2y``, ``6M``: checked against the data when it runs). The selection
    metric is the config's ``select``."""

    model_config = ConfigDict(extra="forbid")

    train: int | str = 504
    test: int | str = 126
    step: int | str | None = None
    anchored: bool = False


class CrossValidateSpec(BaseModel):
    """The ``cross_validate`` key of a config: ``ql.cross_validate``'s split (``groups`` N
    contiguous groups of bars, ``test_groups`` k of them tested per split) and the bars kept out
    of training around each test group (``purge`` before, default: the largest whole-number
    param plus the longest trade; ``embargo`` after). The choice in sample is by Sharpe ratio."""

    model_config = ConfigDict(extra="forbid")

    groups: int = 10
    test_groups: int = 2
    purge: int | None = None
    embargo: int = 0

    @field_validator("groups", "test_groups", "purge", "embargo", mode="before")
    @classmethod
    def _whole_number(cls, value: Any, info: Any) -> Any:
        # pydantic would take 2.0 or "2" for an int; a split is counted in whole bars/groups
        if value is None and info.field_name == "purge":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise _cv_error(info.field_name, value)
        return value

    @model_validator(mode="after")
    def _sizes_fit(self) -> CrossValidateSpec:
        if self.groups < 2:
            raise _cv_error("groups", self.groups)
        if not 1 <= self.test_groups < self.groups:
            raise _cv_error("test_groups", self.test_groups, self.groups)
        for name in ("purge", "embargo"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise _cv_error(name, value)
        return self


_CV_RULES = {
    "groups": "a whole number of at least 2 (10 is usual)",
    "purge": "a whole number of bars >= 0 (or left out: the largest whole-number param plus "
             "the longest trade)",
    "embargo": "a whole number of bars >= 0",
}


def _cv_error(name: str | None, value: Any, groups: int | None = None) -> ConfigError:
    """``cross_validate.<name>``'s problem and its fix (the words of ``ql.cross_validate``)."""
    if name == "test_groups":
        upto = f"groups - 1 = {groups - 1}" if groups is not None else "groups - 1"
        rule = f"a whole number from 1 to {upto} (2 is usual)"
    else:
        rule = _CV_RULES[str(name)]
    return ConfigError(f"cross_validate: {name}={value!r} must be {rule}",
                       field="cross_validate")


if TYPE_CHECKING:  # a type checker cannot see generated fields; the options are read by name
    _WithEngineOptions = _RunSubject
else:
    _WithEngineOptions = create_model("_WithEngineOptions", __base__=_RunSubject,
                                      __module__=__name__, **_option_fields())


class BacktestConfig(_WithEngineOptions):
    """A backtest (or a parameter sweep) as data: the ``ql.backtest`` keys plus where the data
    comes from (``symbols``, ``start``, ``end``, ``interval``) and labels (``name``, ``tags``).

    The engine options (``cash`` ... ``select``: :data:`ENGINE_KEYS`) are fields generated from
    :class:`~quantlab.engine.options.EngineOptions`; left at ``None`` they take the engine's
    defaults (``canonical()`` shows them).
    """

    tags: list[str] = Field(default_factory=list)
    notify: dict[str, Any] | None = None
    strategy_source: str | None = None
    # false: submit a notebook strategy without the look-ahead audit (quantlab.research.audit);
    # kept in the stored config only when false, so that the run says it was skipped
    audit: bool = True
    # walk-forward analysis, or combinatorial purged cross-validation, instead of one backtest
    # (quantlab.research.walkforward, .crossval): queued like any run, fold by fold on a worker
    # (quantlab.jobs.validation)
    walk_forward: WalkForwardSpec | None = None
    cross_validate: CrossValidateSpec | None = None

    _combinations: int | None = PrivateAttr(default=None)

    # -- structural validators (types are pydantic's; these add meaning) ---------------------

    @field_validator("symbols", mode="before")
    @classmethod
    def _one_symbol_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s for s in value.split(",")]
        if isinstance(value, tuple):
            return list(value)
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols_non_empty_unique(cls, value: list[str]) -> list[str]:
        # the data store's canonical names; a non-ASCII name is left as written, for
        # check_values (bars.canonical_symbol) to refuse naming the symbol it resembles
        cleaned = [s.strip().upper() if s.isascii() else s.strip() for s in value]
        if not cleaned or any(not s for s in cleaned):
            raise PydanticCustomError(
                "ql_symbols", "give at least one symbol, e.g. symbols: [AAA, BBB]"
            )
        dupes = sorted({s for s in cleaned if cleaned.count(s) > 1})
        if dupes:
            raise PydanticCustomError(
                "ql_symbols", "symbol {dupes} is listed twice; list each symbol once",
                {"dupes": ", ".join(dupes)},
            )
        return cleaned

    @field_validator("tags", mode="before")
    @classmethod
    def _one_tag_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, tuple):
            return list(value)
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, date | str | pd.Timestamp):
            try:
                stamp = pd.Timestamp(value)
            except (ValueError, TypeError):
                raise PydanticCustomError(
                    "ql_date", "{value} is not a date; write it as YYYY-MM-DD (e.g. 2020-01-31)",
                    {"value": repr(value)},
                ) from None
            if stamp is pd.NaT:
                return None
            value = stamp.to_pydatetime()
        if isinstance(value, datetime) and not date_in_range(value.year):
            raise PydanticCustomError(
                "ql_date", "{value} is outside the dates bars can carry ({first} to {last}); "
                "leave the key out to use all the data",
                {"value": iso(value), "first": FIRST_DATE, "last": LAST_DATE})
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _expand_params(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(k): _plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [
                {str(k): _plain(v) for k, v in combo.items()} if isinstance(combo, Mapping)
                else combo
                for combo in value
            ]
        return value

    @field_validator(*SWEEPABLE, mode="before")
    @classmethod
    def _expand_option_ranges(cls, value: Any, info: Any) -> Any:
        """A swept option in the params' range syntax (``"0.01..0.05:0.01"``, ``{start, stop,
        step}``) as its list of values; a tuple, range or array as a list."""
        values = parse_range(value, field=info.field_name)
        if values is not None:
            return values
        if is_swept(value):
            return _plain(value)
        return value

    @model_validator(mode="after")
    def _one_validation(self) -> BacktestConfig:
        if self.walk_forward is not None and self.cross_validate is not None:
            raise ConfigError("walk_forward and cross_validate are two analyses of the "
                              "sweep: give one of them per run (submit the other as a second "
                              "run)", field="cross_validate")
        return self

    @model_validator(mode="after")
    def _start_before_end(self) -> BacktestConfig:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise PydanticCustomError(
                "ql_range", "start {start} must be before end {end}",
                {"start": iso(self.start), "end": iso(self.end)},
            )
        return self

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_any(cls, value: Any, *, check: bool = True, **overrides: Any) -> BacktestConfig:
        """A config from a dict, a ``BacktestConfig`` or YAML text; ``overrides`` win.

        With ``check=True`` (the default) the strategy, its params and the sweep are also
        checked against the strategy registry. Whether the symbols are in the data store is
        checked at submission (:func:`quantlab.jobs.fingerprint.check_symbols`), not here.
        """
        if isinstance(value, BacktestConfig):
            data: dict[str, Any] = value.model_dump(exclude_unset=True)
        elif isinstance(value, str):
            data = _parse_yaml(value)
        elif isinstance(value, Mapping):
            data = dict(value)
        else:
            raise ConfigError(
                f"a config must be a dict, a ql.BacktestConfig or YAML text, got "
                f"{type(value).__name__}"
            )
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc) from None
        config.check_values()
        if check:
            config.check()
        return config

    # -- semantic checks (the engine's rules and the strategy registry) ------------------------

    def check_values(self) -> None:
        """The rules that need more than a type: symbol and interval names (``quantlab.bars``;
        normalised here), the engine's rules for the options given (``EngineOptions.checked``:
        the same words as ``ql.backtest``) and the notify block (``quantlab.notifyspec``)."""
        self.interval = canonical_interval(self.interval)
        self.symbols = symbol_list(self.symbols)
        options = self.options_given()
        if options.get("weights"):
            # weights name symbols: the same canonical form (' aapl ' is 'AAPL')
            options["weights"] = {canonical_symbol(k): v for k, v in options["weights"].items()}
            self.weights = options["weights"]
        # a swept option's values each by the option's rule; the others as one run's
        swept = swept_options(options)
        EngineOptions.checked({k: v for k, v in options.items() if k not in swept},
                              self.symbols)
        if self.notify is not None:
            self.notify = validate_notify_config(self.notify)

    def check(self) -> None:
        """Check the strategy, its params and the sweep against the strategy registry.

        The symbols are the submission's check (:func:`quantlab.jobs.fingerprint.check_symbols`
        asks the data store): a config only validates.
        """
        self._check_strategy()

    def _check_strategy(self) -> None:
        if self.strategy_source is not None:
            # notebook-defined strategy: registered and checked by its defining kernel; the
            # grid's size is counted here all the same (a grid too large is refused)
            self._combinations = _grid_size(self.params, self.options_given())
            return
        if self.is_sweep:
            # the lazy grid: counting needs no dict per combination
            combos, _skipped = _call_engine(validate.sweep_grid, self.strategy, self.params,
                                            True, self.options_given())
            self._combinations = len(combos)
        else:
            _call_engine(validate.check_params, self.strategy, self.params)
            self._combinations = 1

    # -- views -----------------------------------------------------------------------------------

    @property
    def is_sweep(self) -> bool:
        """A sweep: a param or an engine option given as a list (or range)."""
        return bool(validate.is_sweep(self.params)) or any(
            is_swept(getattr(self, name)) for name in SWEEPABLE)

    def combinations(self) -> int:
        """How many combinations (params x swept options) the config runs (1 for a single
        backtest)."""
        if self._combinations is None:
            if self.strategy_source is not None:  # no registry here: count the grid
                self._combinations = _grid_size(self.params, self.options_given())
            else:
                self._check_strategy()
        return self._combinations or 1

    def data_window(self) -> tuple[str | None, str | None]:
        """``start`` and ``end`` as the data store takes them (ISO dates, a time only when it
        has one), None where the config leaves the window open."""
        return (iso(self.start) if self.start else None, iso(self.end) if self.end else None)

    def options_given(self) -> dict[str, Any]:
        """The engine options this config sets (the others take the engine's defaults)."""
        given = {name: getattr(self, name) for name in ENGINE_KEYS}
        return {name: value for name, value in given.items() if value is not None}

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``engine.Simulation`` this config sets (others: defaults)."""
        return {"strategy": self.strategy, "params": self.params, **self.options_given()}

    def canonical(self) -> dict[str, Any]:
        """JSON-able, key-sorted, with engine and strategy defaults filled and ranges expanded."""
        out = self.model_dump(mode="json")
        out["start"] = iso(self.start) if self.start else None
        out["end"] = iso(self.end) if self.end else None
        for key, default in engine_defaults().items():
            if out.get(key) is None:
                out[key] = _plain(default)
        out["params"] = _params_with_defaults(self.strategy, self.params, self.strategy_source)
        out["tags"] = sorted(set(self.tags))
        if self.audit:
            del out["audit"]  # the default: configs from before the audit keep their form
        if self.walk_forward is None:
            del out["walk_forward"]  # likewise: a plain backtest's hash is as before
        if self.cross_validate is None:
            del out["cross_validate"]
        return _sorted(out)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["strategy"], data["symbols"] = self.strategy, list(self.symbols)
        return yaml.safe_dump(data, sort_keys=False)


# -- pydantic errors -> ConfigError -------------------------------------------------------------

_FIELDS = tuple(BacktestConfig.model_fields)
_NUMBER_EXAMPLES = {
    "cash": "100_000", "commission": "0.001", "commission_fixed": "1.0", "slippage": "5",
    "size": "0.5", "stop_loss": "0.05", "take_profit": "0.1", "weights": "0.5",
}
_EXAMPLES = {
    "strategy": "strategy: sma_crossover",
    "symbols": "symbols: [AAA, BBB]",
}


def config_error(exc: ValidationError) -> ConfigError:
    """The first problem of a pydantic ``ValidationError`` as a sentence with its fix."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc else None
    where = ".".join(loc) if loc else "config"
    kind = err.get("type", "")
    value = err.get("input")
    raised = err.get("ctx", {}).get("error")
    if kind == "value_error" and isinstance(raised, ConfigError):
        return raised  # a validator's own message (e.g. an empty range of a swept option)
    if kind == "extra_forbidden" and field == "walk_forward" and len(loc) > 1:
        inner = unknown_key_error(loc[1], tuple(WalkForwardSpec.model_fields))
        return ConfigError(f"walk_forward: {inner}", field="walk_forward",
                           suggestion=inner.fields.get("suggestion"))
    if kind == "extra_forbidden" and field == "cross_validate" and len(loc) > 1:
        inner = unknown_key_error(loc[1], tuple(CrossValidateSpec.model_fields))
        return ConfigError(f"cross_validate: {inner}", field="cross_validate",
                           suggestion=inner.fields.get("suggestion"))
    if kind == "extra_forbidden" and field is not None:
        return unknown_key_error(field)
    if kind == "missing":
        example = _EXAMPLES.get(where, f"{where}: ...")
        return ConfigError(f"missing required key '{where}'; add it, e.g. {example}", field=field)
    if kind.startswith("ql_"):
        message = err["msg"]
        if kind == "ql_range":
            return ConfigError(f"{message}; swap them or fix one", field="start")
        return ConfigError(f"{where}: {message}", field=field)
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return ConfigError(f"{where}: {value!r} is not allowed; use one of {expected}", field=field)
    if field in SWEEPABLE and len(loc) > 1 and not loc[1].isdigit():
        # a member of the option's union (a number, or a list of numbers)
        example = _NUMBER_EXAMPLES.get(str(field), "1.0")
        return ConfigError(
            f"{field}: expected a number, or a list or range of numbers to sweep, got "
            f"{value!r}; write e.g. {field}: {example}, {field}: [{example}, ...] or a range "
            f"such as {field}: 0.01..0.05:0.01", field=field)
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "finite_number"):
        example = _NUMBER_EXAMPLES.get(str(field), "1.0")
        return ConfigError(
            f"{where}: expected a number, got {value!r}; write e.g. {where}: {example}",
            field=field,
        )
    if kind in ("bool_parsing", "bool_type"):
        return ConfigError(f"{where}: expected true or false, got {value!r}", field=field)
    if kind in ("list_type", "tuple_type"):
        return ConfigError(
            f"{where}: expected a list, got {value!r}; write e.g. {where}: [a, b]", field=field
        )
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return ConfigError(
            f"{where}: expected a mapping of name: value, got {value!r}", field=field
        )
    if kind in ("string_type", "string_parsing"):
        return ConfigError(f"{where}: expected text, got {value!r}", field=field)
    if kind.startswith("datetime"):
        return ConfigError(
            f"{where}: {value!r} is not a date; write it as YYYY-MM-DD (e.g. 2020-01-31)",
            field=field,
        )
    return ConfigError(f"{where}: {err.get('msg', 'invalid value')} (got {value!r})", field=field)


def unknown_key_error(key: str, valid: tuple[str, ...] = _FIELDS) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return ConfigError(
            f"unknown key '{key}' — did you mean '{close[0]}'?", field=key, suggestion=close[0]
        )
    return ConfigError(
        f"unknown key '{key}'; a config takes: {', '.join(valid)}", field=key, suggestion=None
    )


# -- helpers ------------------------------------------------------------------------------------


def _call_engine(func: Any, *args: Any) -> Any:
    """Call an engine/strategy validator: its ConfigError passes through, others are wrapped."""
    try:
        return func(*args)
    except QuantlabError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"params: {exc}", field="params") from exc


def _grid_size(params: Any, options: Mapping[str, Any] | None = None) -> int:
    """Combinations of a grid or list of params crossed with the swept options, before any
    validity rule skips some."""
    swept = {name: len(value) for name, value in (options or {}).items()
             if name in SWEEPABLE and isinstance(value, list)}
    if isinstance(params, list):
        return validate.check_grid_size({"combinations": len(params), **swept})
    return validate.check_grid_size({**{name: len(value)
                                        for name, value in dict(params or {}).items()
                                        if isinstance(value, list)}, **swept})


def engine_defaults() -> dict[str, Any]:
    """The engine's defaults of the options a config holds (declared by ``EngineOptions``)."""
    return defaults(ENGINE_KEYS)


def _params_with_defaults(strategy: str, params: Any, source: str | None) -> Any:
    if source is not None or isinstance(params, list):
        return params if isinstance(params, dict) else [_sorted(c) for c in params]
    try:
        defaults = dict(get_strategy(strategy).params)
    except QuantlabError:
        defaults = {}
    merged = {**{k: _plain(v) for k, v in defaults.items()}, **params}
    return _sorted(merged)


def _plain(value: Any) -> Any:
    """Ranges, tuples and numpy values as plain JSON-able Python."""
    if isinstance(value, range | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def iso(stamp: datetime) -> str:
    if stamp.hour == stamp.minute == stamp.second == stamp.microsecond == 0:
        return stamp.date().isoformat()
    return stamp.isoformat()


def _parse_yaml(text: str) -> dict[str, Any]:
    try:
        data = load_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"the config gives the key '{exc.path}' twice (lines {exc.first_line} and "
            f"{exc.problem_mark.line + 1 if exc.problem_mark else '?'}); give each key once",
            field=exc.path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"the config is not valid YAML{where}: {getattr(exc, 'problem', exc)}; write one "
            f"'key: value' per line"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the config must be a mapping of key: value lines, got {type(data).__name__}"
        )
    return {str(k): v for k, v in data.items()}
