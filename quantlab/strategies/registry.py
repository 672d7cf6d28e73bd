"""Strategies by name: the built-ins, and the user's own registered with ``@ql.strategy``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from quantlab.errors import ConfigError, did_you_mean, nearest
from quantlab.strategies.base import Strategy
from quantlab.strategies.builtin import BUILTINS

_REGISTRY: dict[str, Strategy] = {strat.name: strat for strat in BUILTINS}


def register(strat: Strategy) -> Strategy:
    existing = _REGISTRY.get(strat.name)
    if existing is not None and existing.builtin and not strat.builtin:
        raise ConfigError(
            f"'{strat.name}' is a built-in strategy; give yours another name with "
            f"@ql.strategy(name='my_{strat.name}')", field="strategy")
    _REGISTRY[strat.name] = strat
    return strat


def strategy(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    valid: Callable[[Mapping[str, Any]], bool] | None = None,
    rule: str = "",
) -> Any:
    """Register a user strategy: ``@ql.strategy`` or ``@ql.strategy(name=..., valid=...)``.

    ``valid(params) -> bool`` says which parameter combinations make sense (a sweep skips and
    counts the others); ``rule`` describes it in words for error messages. Re-running the cell
    that defines it replaces the previous version.
    """
    def wrap(f: Callable[..., Any]) -> Strategy:
        if not callable(f):
            raise ConfigError("@ql.strategy decorates a function def f(bars, **params)",
                              field="strategy")
        return register(Strategy(f, name=name, valid=valid, rule=rule))

    if func is not None:
        return wrap(func)
    return wrap


def get_strategy(name: str | Strategy) -> Strategy:
    """The registered strategy called ``name`` (ConfigError suggesting the nearest name)."""
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str):
        raise ConfigError(
            f"strategy must be a strategy name (str), got {type(name).__name__}; see "
            f"ql.list_strategies()", field="strategy")
    found = _REGISTRY.get(name)
    if found is None:
        raise ConfigError(
            f"unknown strategy '{name}'{did_you_mean(name, _REGISTRY)} (known: "
            f"{', '.join(sorted(_REGISTRY))}); register your own with @ql.strategy",
            field="strategy", suggestion=nearest(name, _REGISTRY))
    return found


def list_strategies() -> list[str]:
    """Names of every strategy available (built-in and registered), sorted."""
    return sorted(_REGISTRY)
