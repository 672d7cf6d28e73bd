"""Argument checks shared by ``ql.backtest``, ``Simulation`` and the pydantic ``BacktestConfig``.

Each check raises :class:`~quantlab.errors.ConfigError` with ``field`` set and a message that
names the problem and the fix. They are plain functions over plain values so the config model
can call exactly the same rules.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numba import njit

from quantlab.bars import Bars
from quantlab.errors import ConfigError, did_you_mean, nearest
from quantlab.strategies import Strategy, get_strategy
from quantlab.strategies.base import check_signals

FILLS = ("next_open", "close")
UNITS = ("whole", "fractional")
SELECTABLE = ("sharpe", "sortino", "calmar", "total_return_pct", "cagr_pct", "equity_final",
              "max_drawdown_pct", "win_rate_pct", "profit_factor", "expectancy_pct")

_SWEEP_TYPES = (list, tuple, range, np.ndarray)
# The most combinations one sweep may span. The grid is held as columns (a few numbers per
# combination) and each combination keeps its metrics, so a grid of two 30,000-value ranges
# (900 million) would exhaust memory long before it ran: it is refused while it is still a count.
MAX_COMBINATIONS = 1_000_000


def _real(value: Any, field: str, example: str) -> float:
    if (type(value) is float or type(value) is int) and math.isfinite(value):
        return float(value)  # the common case, checked cheaply
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{field} must be a number, got {value!r}; e.g. {field}={example}",
                          field=field)
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{field} must be a finite number, got {value!r}", field=field)
    return number


def check_cash(cash: Any) -> float:
    value = _real(cash, "cash", "10_000")
    if value <= 0:
        raise ConfigError(f"cash must be positive, got {cash!r}; e.g. cash=10_000", field="cash")
    return value


def check_commission(commission: Any, fixed: Any = 0.0) -> tuple[float, float]:
    value = _real(commission, "commission", "0.001")
    if value < 0:
        raise ConfigError(
            f"commission must not be negative, got {commission!r}; it is a fraction of the "
            f"traded value, e.g. commission=0.001 for 0.1%", field="commission")
    if value >= 0.5:
        raise ConfigError(
            f"commission={commission!r} is {value:.0%} of every trade; it is a fraction, so "
            f"write 0.002 for 0.2%", field="commission")
    fee = _real(fixed, "commission_fixed", "1.0")
    if fee < 0:
        raise ConfigError(
            f"commission_fixed must not be negative, got {fixed!r}; it is a fee in cash per "
            f"order, e.g. commission_fixed=1.0", field="commission_fixed")
    return value, fee


def check_slippage(slippage: Any) -> float:
    value = _real(slippage, "slippage", "5 (basis points)")
    if value < 0:
        raise ConfigError(
            f"slippage must not be negative, got {slippage!r}; it is in basis points moving "
            f"each fill against you, e.g. slippage=5 for 0.05%", field="slippage")
    if value >= 10_000:
        raise ConfigError(
            f"slippage={slippage!r} basis points is 100% or more of the price; use e.g. "
            f"slippage=5 for 0.05%", field="slippage")
    return value


def check_choice(value: Any, field: str, choices: Sequence[str]) -> str:
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ConfigError(
            f"{field}={value!r} is not valid{hint}; choose one of "
            f"{', '.join(repr(c) for c in choices)}", field=field)
    return str(value)


def check_size(size: Any) -> float:
    value = _real(size, "size", "1.0")
    if not 0 < value <= 1:
        raise ConfigError(
            f"size must be a fraction of equity in (0, 1], got {size!r}; e.g. size=0.5 invests "
            f"half of equity per entry", field="size")
    return value


def check_fraction(value: Any, field: str) -> float | None:
    if value is None:
        return None
    number = _real(value, field, "0.05")
    if not 0 < number < 1:
        raise ConfigError(
            f"{field} must be a fraction of the entry price between 0 and 1, got {value!r}; "
            f"e.g. {field}=0.05 for 5%", field=field)
    return number


def check_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{field} must be True or False, got {value!r}", field=field)
    return bool(value)


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive whole number, got {threads!r}",
                          field="threads")
    return threads


def check_weights(weights: Any, symbols: Sequence[str]) -> dict[str, float] | None:
    """Target weights per symbol (fractions of equity; each in (0, 1], summing to <= 1)."""
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ConfigError(
            f"weights must be a dict of symbol -> fraction of equity, got "
            f"{type(weights).__name__}; e.g. weights={{'AAA': 0.6, 'BBB': 0.4}}", field="weights")
    out: dict[str, float] = {}
    for sym, w in weights.items():
        if sym not in symbols:
            hint = did_you_mean(str(sym), symbols)
            raise ConfigError(
                f"weights names '{sym}', which is not among the symbols "
                f"({', '.join(symbols)}){hint}", field="weights")
        value = _real(w, f"weights[{sym!r}]", "0.5")
        if not 0 <= value <= 1:
            raise ConfigError(f"weights[{sym!r}] must be between 0 and 1, got {w!r}",
                              field="weights")
        out[str(sym)] = value
    total = sum(out.values())
    if total > 1 + 1e-9:
        raise ConfigError(
            f"weights add up to {total:g}, more than all of equity; make them sum to at most 1",
            field="weights")
    return out


def _is_sweep_value(value: Any) -> bool:
    return isinstance(value, _SWEEP_TYPES)


def _scalar(value: Any) -> Any:
    # numpy scalars become Python scalars so params hash and serialise the same everywhere
    if isinstance(value, np.generic):
        return value.item()
    return value


# The parameters of the built-in strategies that are windows of bars: a signal needs more bars
# than the window (a crossover of SMA(slow) needs slow bars for its first value, one more to
# cross), so a window as long as the data makes a run that can never trade.
WINDOW_PARAMS: dict[str, tuple[str, ...]] = {
    "sma_crossover": ("fast", "slow"), "ema_crossover": ("fast", "slow"),
    "rsi_reversion": ("period",), "bollinger_breakout": ("period",), "momentum": ("lookback",),
}


def check_windows(strategy: str | Strategy, params: Any, bars: Mapping[str, int],
                  which: str = "bars") -> None:
    """:class:`ConfigError` when a window parameter of a built-in strategy (its largest value,
    in a sweep) is not shorter than the data: ``bars`` is each symbol's number of bars, and
    ``which`` says which bars (e.g. ``"1d bars from 2020-01-01"``). Such a run could form no
    signal and would end with zero trades, looking like a strategy that never fires."""
    strat = get_strategy(strategy)
    names = WINDOW_PARAMS.get(strat.name, ()) if strat.builtin else ()
    if not names or not bars:
        return
    symbol = max(bars, key=lambda s: bars[s])
    n = bars[symbol]
    if n <= 0:
        return  # a range without bars: the data's own check says so
    for name in names:
        values = _values_of(params, name, strat.params.get(name))
        whole = [int(v) for v in values if isinstance(v, int | np.integer)
                 and not isinstance(v, bool)]
        longest = max(whole, default=None)
        if longest is None or longest < n:
            continue
        held = f"{symbol} has {n:,} {which}" if len(bars) == 1 else (
            f"the longest series, {symbol}, has {n:,} {which}")
        fix = (f"keep {name} below {n:,} in the sweep" if len(set(whole)) > 1 else
               f"use {name} < {n:,}")
        raise ConfigError(
            f"no signal can form: {name}={longest:,} {'>' if longest > n else '='} {n:,} bars "
            f"({held}); a window must be shorter than the data: {fix}, or give more data (an "
            f"earlier start)", field=f"params.{name}", bars=n, window=longest)


def _values_of(params: Any, name: str, default: Any) -> list[Any]:
    """Every value ``params`` gives parameter ``name`` (its default when it gives none)."""
    if isinstance(params, list | tuple):
        return [combo.get(name, default) for combo in params if isinstance(combo, Mapping)]
    if isinstance(params, Mapping):
        value = params.get(name, default)
        return list(value) if _is_sweep_value(value) else [value]
    return [default]


def check_grid_size(sizes: Mapping[str, int]) -> int:
    """The number of combinations of a grid whose parameters sweep ``sizes`` values each;
    :class:`ConfigError` naming the count and :data:`MAX_COMBINATIONS` when it is larger."""
    total = math.prod(sizes.values())
    if total > MAX_COMBINATIONS:
        axes = " x ".join(f"{n:,} {name}" for name, n in sizes.items() if n > 1)
        raise ConfigError(
            f"the sweep spans {total:,} combinations ({axes}), more than the {MAX_COMBINATIONS:,} "
            f"one run may hold; use larger steps (e.g. '5..50:5') or split it into several runs",
            field="params", combinations=total, limit=MAX_COMBINATIONS)
    return total


def _check_names(strat: Strategy, names: Sequence[str]) -> None:
    for key in names:
        if key not in strat.params and not _carried_option(strat, key):
            close = nearest(str(key), strat.params)
            known = ", ".join(strat.params) or "none"
            raise ConfigError(
                f"unknown parameter '{key}' for strategy '{strat.name}'"
                f"{did_you_mean(str(key), strat.params)} (its parameters: {known})",
                field=f"params.{key}", suggestion=close)


def _full(strat: Strategy, given: Mapping[str, Any]) -> dict[str, Any]:
    combo = {**strat.params, **{k: _scalar(v) for k, v in given.items()}}
    missing = [k for k in strat.required if given.get(k) is None]
    if missing:
        raise ConfigError(
            f"strategy '{strat.name}' needs parameter(s) {', '.join(missing)}; pass them in "
            f"params={{...}}", field=f"params.{missing[0]}")
    return combo


class OptionSweeps:
    """What these checks need of the engine options: the names a sweep may vary and the check
    of their swept values. :mod:`quantlab.engine.options` fills :data:`OPTION_SWEEPS` when it
    is imported (it imports this module, so this one cannot import it; importing the engine
    package imports both)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.swept: Callable[[Mapping[str, Any]], dict[str, list[Any]]] = lambda options: {}


OPTION_SWEEPS = OptionSweeps()


def _sweepable() -> tuple[str, ...]:
    return OPTION_SWEEPS.names


def _carried_option(strat: Strategy, name: str) -> bool:
    """Whether ``name`` in a strategy's params is a sweepable engine option that a combination
    carries (a strategy's own parameter of that name stays the strategy's)."""
    return name in _sweepable() and name not in strat.params


def carried_options(strategy: str | Strategy, params: Mapping[str, Any] | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` split into the strategy's parameters and the sweepable engine options it
    carries (a sweep's combination does, e.g. ``{"fast": 10, "slow": 50, "stop_loss": 0.02}``:
    such a value takes precedence over the option's keyword)."""
    strat = get_strategy(strategy)
    own: dict[str, Any] = {}
    carried: dict[str, Any] = {}
    for name, value in (params or {}).items():
        (carried if _carried_option(strat, name) else own)[name] = value
    return own, carried


def _option_checker() -> Any:
    """A memoised check of one swept option value (the engine's rule for the option)."""
    swept_options = OPTION_SWEEPS.swept
    seen: dict[tuple[str, Any], Any] = {}

    def check(name: str, value: Any) -> Any:
        key = (name, value)
        if key not in seen:
            seen[key] = swept_options({name: [value]})[name][0]
        return seen[key]

    return check


def is_sweep(params: Any) -> bool:
    """A sweep: a list of dicts, or any parameter given as a list/tuple/range/array."""
    if isinstance(params, list | tuple):
        return True
    return isinstance(params, Mapping) and any(_is_sweep_value(v) for v in params.values())


def check_params(strategy: str | Strategy, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A single run's full parameter set (defaults filled in), checked: unknown names (nearest
    suggested), missing ones, nonsense values, and the strategy's validity rule."""
    strat = get_strategy(strategy)
    given = dict(params or {})
    _check_names(strat, list(given))
    combo = _full(strat, given)
    strat.check(combo)
    if not strat.is_valid(combo):
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "the defaults"
        rule = f" requires {strat.rule}" if strat.rule else " rejects this combination"
        raise ConfigError(
            f"strategy '{strat.name}'{rule}, got {shown}; change the parameters so that "
            f"{strat.rule or 'the rule holds'}", field="params")
    return combo


def sweep_combinations(strategy: str | Strategy, params: Any,
                       options: Mapping[str, Any] | None = None
                       ) -> tuple[list[dict[str, Any]], int]:
    """The valid combinations of a sweep, in the engine's order, and how many were skipped.

    ``options``: the engine options (keywords of ``ql.backtest``); those given as a list or
    range are sweep dimensions after the params (the grid is params x options, the last
    fastest), and each combination carries its values (``{"fast": 5, ..., "stop_loss": 0.02}``).

    ``params`` is a dict whose list/range values span a grid (product in the strategy's
    parameter order, last parameter fastest), or a list of dicts (exactly those combinations,
    in that order). Invalid combinations (the strategy's rule, e.g. fast < slow) are skipped
    and counted; a value that makes no sense alone raises. No valid combination: ConfigError.
    """
    combos, skipped = sweep_grid(strategy, params, lazy=False, options=options)
    return list(combos), skipped


class Combinations(Sequence[dict[str, Any]]):
    """A sweep's valid combinations held as one column of values per parameter; a
    combination's dict is built only when asked for (``combos[i]``), so a grid of thousands
    of combinations costs a few arrays, not thousands of dicts."""

    def __init__(self, names: list[str], columns: dict[str, list[Any]]) -> None:
        self.names = names
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[self.names[0]]) if self.names else 0

    def column(self, name: str) -> list[Any]:
        """Every combination's value of parameter ``name``, in order."""
        return self.columns[name]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return Combinations(self.names, {k: v[index] for k, v in self.columns.items()})
        return {name: self.columns[name][index] for name in self.names}


def column(combos: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """Parameter ``name`` of every combination (without building dicts when they are
    :class:`Combinations`)."""
    if isinstance(combos, Combinations):
        return combos.column(name)
    return [c[name] for c in combos]


def _valid_columns(strat: Strategy, keys: list[str], grid: list[list[Any]]
                   ) -> dict[str, list[Any]] | None:
    """The grid's valid combinations as columns, the built-in rule evaluated on whole arrays
    at once (``fast < slow`` works elementwise); None when the values are not plain numbers."""
    if not grid:
        return None
    for values in grid:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
    # the grid's indices in product order (last parameter fastest)
    index = np.indices([len(values) for values in grid]).reshape(len(grid), -1)
    rule = strat.valid_rule
    if rule is not None:
        arrays = {k: np.asarray(values)[index[a]] for a, (k, values) in enumerate(zip(keys, grid))}
        mask = np.asarray(rule(arrays))
        if mask.dtype != np.bool_ or mask.shape != index.shape[1:]:
            return None
        index = index[:, mask]
    return {k: np.asarray(values, dtype=object)[index[a]].tolist()
            for a, (k, values) in enumerate(zip(keys, grid))}


def sweep_grid(strategy: str | Strategy, params: Any, lazy: bool = True,
               options: Mapping[str, Any] | None = None
               ) -> tuple[Sequence[dict[str, Any]], int]:
    """:func:`sweep_combinations` for the engine: with ``lazy``, a built-in strategy's grid
    comes back as :class:`Combinations` (columns, dicts built on demand) - the same
    combinations in the same order.

    ``options``: the engine options; the swept ones (lists, ranges) are axes after the params.
    A value a combination carries (params given as a list of dicts naming ``stop_loss``...)
    is its own and is not crossed with the option's keyword.

    ``params`` is a dict whose list/range values span a grid (product in the strategy's
    parameter order, last parameter fastest), or a list of dicts (exactly those combinations,
    in that order). Invalid combinations (the strategy's rule, e.g. fast < slow) are skipped
    and counted; a value that makes no sense alone raises. No valid combination: ConfigError.
    """
    strat = get_strategy(strategy)
    keyword_axes = OPTION_SWEEPS.swept(options or {})  # checked, in the options' order
    check_option = _option_checker()
    if isinstance(params, list | tuple):
        if not params:
            raise ConfigError("params is an empty list of combinations; give at least one dict",
                              field="params")
        raw = []
        for item in params:
            if not isinstance(item, Mapping):
                raise ConfigError(
                    f"a list of params must hold dicts of scalars, got {type(item).__name__}",
                    field="params")
            if any(_is_sweep_value(v) for v in item.values()):
                raise ConfigError(
                    "in a list of combinations each dict holds single values, not lists",
                    field="params")
            _check_names(strat, list(item))
            raw.append(dict(item))
        # the keyword axes a combination does not carry cross it; the size is checked first
        check_grid_size({"combinations": len(raw),
                         **{name: len(values) for name, values in keyword_axes.items()}})
        valid: list[dict[str, Any]] = []
        skipped = 0
        for given in raw:
            own, carried = carried_options(strat, given)
            combo = _full(strat, own)
            strat.check(combo)
            crossing = {name: values for name, values in keyword_axes.items()
                        if name not in carried}
            if not strat.is_valid(combo):
                skipped += math.prod(len(values) for values in crossing.values())
                continue
            carried = {name: check_option(name, _scalar(value))
                       for name, value in carried.items()}
            for values_ in itertools.product(*crossing.values()):
                valid.append(_ordered({**combo, **carried, **dict(zip(crossing, values_))}))
        if not valid:
            raise _no_valid(strat, skipped)
        return valid, skipped
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"params must be a dict (or a list of dicts), got {type(params).__name__}",
            field="params")
    _check_names(strat, list(params))
    own, carried = carried_options(strat, params)
    axes: list[tuple[str, list[Any]]] = []
    for name in strat.params:
        if name not in own:
            continue
        value = own[name]
        values = list(value) if _is_sweep_value(value) else [value]
        if not values:
            raise ConfigError(
                f"parameter '{name}' sweeps over an empty list/range; give at least one "
                f"value", field=f"params.{name}")
        axes.append((name, values))
    option_axes = _option_axes(carried, keyword_axes, check_option)
    # before any allocation: params x options
    check_grid_size({**{name: len(values) for name, values in axes},
                     **{name: len(values) for name, values in option_axes.items()}})
    # a value that makes no sense alone (fast=0) is checked once per value, not per combo
    first = {name: values[0] for name, values in axes}
    for name, values in axes:
        for value in values:
            strat.check(_full(strat, {**first, name: value}))
    # every parameter of the strategy as an axis (a default is an axis of one value), so
    # each combination is one dict(zip(...)) in the strategy's parameter order
    swept = {name: [_scalar(v) for v in values] for name, values in axes}
    keys = list(strat.params)
    grid = [swept.get(name, [default]) for name, default in strat.params.items()]
    n_option_combos = math.prod(len(values) for values in option_axes.values())
    if lazy and strat.builtin:
        columns = _valid_columns(strat, keys, grid)
        if columns is not None:
            n_valid = len(columns[keys[0]]) if keys else 0
            skipped = (math.prod(len(values) for values in grid) - n_valid) * n_option_combos
            if not n_valid:
                raise _no_valid(strat, skipped)
            if option_axes:
                return _crossed_columns(keys, columns, n_valid, option_axes), skipped
            return Combinations(keys, columns), skipped
    valid_grid: list[dict[str, Any]] = []
    rule = strat.valid_rule
    with _no_gc():  # thousands of small dicts: the cyclic GC would rescan them repeatedly
        for values_ in itertools.product(*grid):
            full = dict(zip(keys, values_))
            if rule is None or rule(full):
                valid_grid.append(full)
        skipped = (math.prod(len(values) for values in grid) - len(valid_grid)) * n_option_combos
        if not valid_grid:
            raise _no_valid(strat, skipped)
        if option_axes:
            option_combos = [dict(zip(option_axes, values_))
                             for values_ in itertools.product(*option_axes.values())]
            valid_grid = [{**combo, **chosen} for combo in valid_grid for chosen in option_combos]
    return valid_grid, skipped


def _option_axes(carried: Mapping[str, Any], keyword_axes: Mapping[str, list[Any]],
                 check_option: Any) -> dict[str, list[Any]]:
    """The option axes of a grid, in the options' order: a value (or list) the params carry,
    else the keyword's list; each value checked by the option's rule."""
    axes: dict[str, list[Any]] = {}
    for name in _sweepable():
        if name in carried:
            value = carried[name]
            values = list(value) if _is_sweep_value(value) else [value]
            if not values:
                raise ConfigError(
                    f"{name} sweeps over an empty list; give at least one value",
                    field=f"params.{name}")
            axes[name] = [check_option(name, _scalar(v)) for v in values]
        elif name in keyword_axes:
            axes[name] = keyword_axes[name]
    return axes


def _crossed_columns(keys: list[str], columns: dict[str, list[Any]], n_valid: int,
                     option_axes: Mapping[str, list[Any]]) -> Combinations:
    """The valid param columns crossed with the option axes (params x options, the last
    fastest): each param value repeated once per option combination, the option values tiled
    once per param combination."""
    option_combos = list(itertools.product(*option_axes.values()))
    per = len(option_combos)
    crossed: dict[str, list[Any]] = {
        name: np.repeat(np.asarray(values, dtype=object), per).tolist()
        for name, values in columns.items()}
    for a, name in enumerate(option_axes):
        crossed[name] = [combo[a] for combo in option_combos] * n_valid
    return Combinations([*keys, *option_axes], crossed)


def _ordered(combo: dict[str, Any]) -> dict[str, Any]:
    """A combination's options after its params, in the options' order (as a grid's are)."""
    options = [name for name in _sweepable() if name in combo]
    if not options:
        return combo
    own = {k: v for k, v in combo.items() if k not in options}
    return {**own, **{name: combo[name] for name in options}}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (dicts of numbers hold no cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _no_valid(strat: Strategy, skipped: int) -> ConfigError:
    rule = f" ({strat.rule})" if strat.rule else ""
    return ConfigError(
        f"the sweep has no valid combination: all {skipped} violate strategy "
        f"'{strat.name}''s rule{rule}; widen the ranges", field="params")


# -- a sweep's signals, checked as they are stored ----------------------------------------------

# dtypes of signals the one-pass check reads (bool, integers, float32/64): others, and
# anything not an array, take ``check_signals``
_SIGNAL_CHARS = frozenset("?bBhHiIlLqQfd")


@njit(cache=True, nogil=True)
def _copy_signals(raw: np.ndarray, out: np.ndarray) -> bool:
    """``raw`` (n_symbols, n_bars) written into ``out`` (int8, same shape); whether every value
    was exactly -1, 0 or +1 (a NaN, 1.5 or 2 is not: written as 0). No early exit and no
    branch, so that the loop vectorises (a wrong answer is rare, and costs this one pass)."""
    bad = False
    for r in range(raw.shape[0]):
        for i in range(raw.shape[1]):
            v = raw[r, i]
            ok = (v == 0) | (v == 1) | (v == -1)
            bad |= not ok
            out[r, i] = v if ok else 0
    return not bad


def store_signals(raw: Any, bars: Bars, strategy: str, out: np.ndarray) -> None:
    """A strategy's answer checked as ``check_signals`` does, written into ``out`` (int8
    ``(n_symbols, n_bars)``, a sweep's row of signals). A sweep checks every combination's
    signals: one Numba pass that checks and copies costs ~0.3 us for 2,000 bars, where the
    reductions of ``check_signals`` cost ~3 us; any answer it cannot take, or a wrong one,
    goes through ``check_signals`` (the same rule, and its message)."""
    if type(raw) is np.ndarray and raw.dtype.char in _SIGNAL_CHARS:
        rows = raw if raw.ndim == 2 else raw[None, :] if raw.ndim == 1 else None
        if rows is not None and rows.shape == out.shape and _copy_signals(rows, out):
            return
    out[...] = check_signals(raw, bars, strategy)
