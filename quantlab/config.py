"""``BacktestConfig``: the one description of a backtest that crosses the queue.

A config is validated in the caller (the kernel), before anything is queued: structure and types
by pydantic, then the parts that need the rest of QuantLab (does the strategy exist, do its
params, is the sweep empty, are the symbols in the store). Every problem is a
:class:`~quantlab.errors.ConfigError` whose ``field`` names the key and whose message says how to
fix it; pydantic's own error dump never reaches the user.

``canonical()`` is the config as JSON with defaults filled and ranges expanded, so that two
configs that mean the same backtest are equal; :func:`config_hash` adds what else decides the
result (the data, the strategy's code, the engine version) and is the key of the result cache.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from quantlab.errors import ConfigError, QuantlabError

# Keys that label a run without changing its result: they stay out of the cache hash.
LABEL_KEYS = frozenset({"name", "tags", "notify"})
# Keys of the config that are passed to the engine's Simulation as they are.
ENGINE_KEYS = (
    "cash", "commission", "commission_fixed", "slippage", "fill", "units", "size", "weights",
    "allow_short", "stop_loss", "take_profit", "close_at_end", "select",
)


class BacktestConfig(BaseModel):
    """A backtest (or a parameter sweep) as data: the ``ql.backtest`` keys plus where the data
    comes from (``symbols``, ``start``, ``end``, ``interval``) and labels (``name``, ``tags``).

    Engine keys left at ``None`` take the engine's defaults (``canonical()`` shows them).
    """

    model_config = ConfigDict(extra="forbid", validate_default=False)

    name: str | None = None
    strategy: str
    params: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict)
    symbols: list[str]
    start: datetime | None = None
    end: datetime | None = None
    interval: str = "1d"
    cash: float | None = None
    commission: float | None = None
    commission_fixed: float | None = None
    slippage: float | None = None
    fill: Literal["next_open", "close"] | None = None
    units: Literal["whole", "fractional"] | None = None
    size: float | None = None
    weights: dict[str, float] | None = None
    allow_short: bool | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    close_at_end: bool | None = None
    select: str | None = None
    tags: list[str] = Field(default_factory=list)
    notify: dict[str, Any] | None = None
    strategy_source: str | None = None

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
        cleaned = [s.strip().upper() for s in value]  # the data store's canonical names
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
            return stamp.to_pydatetime()
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

        With ``check=True`` (the default) the strategy, its params and the symbols are also
        checked against the strategy registry and the data store.
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

    # -- semantic checks against the strategy registry and the data store ---------------------

    def check_values(self) -> None:
        """The engine's own rules for the cost, size and risk keys (``engine.validate``), and the
        data store's rules for symbol and interval names; normalises the interval label."""
        from quantlab.data.store import canonical_interval, canonical_symbol, symbol_list
        from quantlab.engine import validate

        self.interval = canonical_interval(self.interval)
        self.symbols = symbol_list(self.symbols)
        if self.cash is not None:
            validate.check_cash(self.cash)
        if self.commission is not None or self.commission_fixed is not None:
            validate.check_commission(self.commission or 0.0, self.commission_fixed or 0.0)
        if self.slippage is not None:
            validate.check_slippage(self.slippage)
        if self.size is not None:
            validate.check_size(self.size)
        for key in ("stop_loss", "take_profit"):
            validate.check_fraction(getattr(self, key), key)
        if self.weights:
            # weights name symbols: the same canonical form (' aapl ' is 'AAPL')
            self.weights = {canonical_symbol(k): v for k, v in self.weights.items()}
        validate.check_weights(self.weights, self.symbols)
        if self.select is not None:
            validate.check_choice(self.select, "select", validate.SELECTABLE)
        if self.notify is not None:
            from quantlab.notify import validate_notify_config

            self.notify = validate_notify_config(self.notify)

    def check(self, *, symbols: bool = True) -> None:
        """Check the strategy, its params, the sweep and (optionally) the symbols."""
        self._check_strategy()
        if symbols:
            check_symbols(self.symbols, self.interval)

    def _check_strategy(self) -> None:
        if self.strategy_source is not None:
            return  # notebook-defined strategy: registered and checked by its defining kernel
        from quantlab.engine import validate

        if validate.is_sweep(self.params):
            # the lazy grid: counting needs no dict per combination
            combos, _skipped = _call_engine(validate.sweep_grid, self.strategy, self.params)
            self._combinations = len(combos)
        else:
            _call_engine(validate.check_params, self.strategy, self.params)
            self._combinations = 1

    # -- views -----------------------------------------------------------------------------------

    @property
    def is_sweep(self) -> bool:
        from quantlab.engine.validate import is_sweep

        return bool(is_sweep(self.params))

    def combinations(self) -> int:
        """How many parameter combinations the config runs (1 for a single backtest)."""
        if self._combinations is None:
            if self.strategy_source is not None:  # no registry here: count the grid
                self._combinations = _grid_size(self.params)
            else:
                self._check_strategy()
        return self._combinations or 1

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``engine.Simulation`` this config sets (others: defaults)."""
        kwargs: dict[str, Any] = {"strategy": self.strategy, "params": self.params}
        for key in ENGINE_KEYS:
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = value
        return kwargs

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
        return _sorted(out)

    def to_yaml(self) -> str:
        import yaml

        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["strategy"], data["symbols"] = self.strategy, list(self.symbols)
        return yaml.safe_dump(data, sort_keys=False)


# -- symbols ------------------------------------------------------------------------------------


def missing_symbols(symbols: list[str], interval: str = "1d") -> list[str]:
    """The symbols that the data store holds no bars of at ``interval``."""
    from quantlab.data import current_store

    store = current_store()
    return [s for s in symbols if store.entry(s, interval) is None]


def check_symbols(symbols: list[str], interval: str = "1d") -> list[str]:
    """Raise for a symbol missing from the store unless a provider can fetch it.

    Returns the missing symbols that the worker will fetch first (with ALPHAVANTAGE_API_KEY set).
    """
    from quantlab import settings
    from quantlab.data import current_store
    from quantlab.errors import DataError

    missing = missing_symbols(symbols, interval)
    if not missing or settings.current().alphavantage_api_key:
        return missing
    found = current_store().unknown_symbol(missing[0], interval)
    others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
    raise DataError(
        f"{found.message}{others}", symbol=missing[0], field="symbols",
        suggestion=getattr(found, "suggestion", None),
    )


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


def _grid_size(params: Any) -> int:
    """Combinations of a grid or list of params, before any validity rule skips some."""
    if isinstance(params, list):
        return len(params)
    size = 1
    for value in dict(params or {}).values():
        if isinstance(value, list):
            size *= len(value)
    return size


def engine_defaults() -> dict[str, Any]:
    """Defaults of ``engine.Simulation``'s keyword arguments for the config's engine keys."""
    from quantlab.engine import Simulation

    signature = inspect.signature(Simulation)
    return {
        key: p.default for key, p in signature.parameters.items()
        if key in ENGINE_KEYS and p.default is not inspect.Parameter.empty
    }


def _params_with_defaults(strategy: str, params: Any, source: str | None) -> Any:
    if source is not None or isinstance(params, list):
        return params if isinstance(params, dict) else [_sorted(c) for c in params]
    from quantlab.strategies import get_strategy

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
    import yaml

    try:
        data = yaml.safe_load(text)
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
