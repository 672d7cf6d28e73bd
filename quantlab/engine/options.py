"""The engine's options, declared once: the keywords that tune a backtest (as opposed to its data,
strategy and params), each with its type, default, unit and meaning.

Everything else derives from :class:`EngineOptions`: ``Simulation`` checks its keywords with
:meth:`EngineOptions.checked`; ``ql.backtest`` takes the same keywords, typed for editors and
mypy by :class:`BacktestOptions`; ``BacktestConfig`` generates its option fields from the
dataclass (all but ``threads``, see :data:`CONFIG_OPTIONS`); the config's canonical form, and so
the cache key, fills in :func:`defaults`; docs/engine.md's option table is :func:`options_table`.
Tests keep the TypedDict, the config and the docs equal to the dataclass.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict, cast, get_type_hints

import numpy as np

from quantlab.engine import validate as V
from quantlab.errors import ConfigError, did_you_mean, nearest

Fill = Literal["next_open", "close"]
Units = Literal["whole", "fractional"]


@dataclass(frozen=True)
class OptionInfo:
    """What the docs and the config say about one option (a field's ``metadata["option"]``)."""

    doc: str
    unit: str = ""
    shown: str | None = None  # the default as the docs show it, when its value says too little
    in_config: bool = True  # False: a setting of the process that runs it, never of a run
    # True: a list (or a range) of values is a sweep dimension, as a param's list is
    sweepable: bool = False


def _about(doc: str, *, unit: str = "", shown: str | None = None,
           in_config: bool = True, sweepable: bool = False) -> dict[str, OptionInfo]:
    """A field's metadata: what the docs and the config say about the option."""
    return {"option": OptionInfo(doc, unit, shown, in_config, sweepable)}


@dataclass(frozen=True)
class EngineOptions:
    """The options of one backtest or sweep (``ql.backtest``, ``Simulation``, a config)."""

    cash: float = field(default=10_000.0, metadata=_about("initial cash (> 0)", unit="cash"))
    commission: float = field(default=0.0, metadata=_about(
        "charged on every fill, entry and exit (0.001 is 0.1%)",
        unit="fraction of traded value", sweepable=True))
    commission_fixed: float = field(default=0.0, metadata=_about(
        "fee charged per order (per fill), on top of `commission`", unit="cash per order",
        sweepable=True))
    slippage: float = field(default=0.0, metadata=_about(
        "moves each fill price against the trader (5 is 0.05%)", unit="basis points",
        sweepable=True))
    fill: Fill = field(default="next_open", metadata=_about(
        '`"next_open"`: a signal on bar t\'s close fills at bar t+1\'s open. '
        '`"close"`: at bar t\'s close (**optimistic**: the strategy trades at a price it used '
        'to decide)'))
    units: Units = field(default="whole", metadata=_about(
        '`"whole"`: the most whole units equity pays for after commission. '
        '`"fractional"`: all of it'))
    size: float = field(default=1.0, metadata=_about(
        "invested per entry, of the symbol's weight, in (0, 1]", unit="fraction of equity",
        sweepable=True))
    weights: Mapping[str, float] | None = field(default=None, metadata=_about(
        "dict `symbol -> fraction of equity` (sum <= 1); when not given each symbol gets "
        "`1 / n_symbols` (momentum: `1 / top_n`)", unit="fraction of equity", shown="equal"))
    allow_short: bool = field(default=False, metadata=_about(
        "False: long only. True: always in the market, reversing on each signal"))
    stop_loss: float | None = field(default=None, metadata=_about(
        "exit a position that moved this far against its entry price, checked against "
        "each bar's low/high; None: no stop", unit="fraction of entry price", sweepable=True))
    take_profit: float | None = field(default=None, metadata=_about(
        "exit a position that moved this far in its favour, checked against each bar's "
        "high/low; None: no target", unit="fraction of entry price", sweepable=True))
    close_at_end: bool = field(default=False, metadata=_about(
        "close open positions at the last bar's close"))
    select: str = field(default="sharpe", metadata=_about(
        "the metric that picks a sweep's best combination: "
        + ", ".join(f"`{name}`" for name in V.SELECTABLE), unit="metric"))
    threads: int | None = field(default=None, metadata=_about(
        "threads for a sweep (also `QUANTLAB_THREADS`); a worker's setting, not part of a "
        "config: results do not depend on it", shown="all cores", in_config=False))

    @classmethod
    def checked(cls, options: Mapping[str, Any], symbols: Sequence[str]) -> EngineOptions:
        """``options`` (the rest: defaults) checked by the engine's rules and normalised
        (numbers as floats); a :class:`ConfigError` names the first bad option and the fix, an
        unknown name gets the nearest known one. ``symbols``: the names ``weights`` may use."""
        reject_unknown(options)
        given = {**DEFAULTS, **options}
        # checked in this order, so that of several bad options the same one is named as before
        cash = V.check_cash(given["cash"])
        commission, commission_fixed = V.check_commission(given["commission"],
                                                          given["commission_fixed"])
        slippage = V.check_slippage(given["slippage"])
        fill = V.check_choice(given["fill"], "fill", V.FILLS)
        units = V.check_choice(given["units"], "units", V.UNITS)
        allow_short = V.check_bool(given["allow_short"], "allow_short")
        close_at_end = V.check_bool(given["close_at_end"], "close_at_end")
        size = V.check_size(given["size"])
        stop_loss = V.check_fraction(given["stop_loss"], "stop_loss")
        take_profit = V.check_fraction(given["take_profit"], "take_profit")
        select = V.check_choice(given["select"], "select", V.SELECTABLE)
        threads = V.check_threads(given["threads"])
        weights = V.check_weights(given["weights"], symbols)
        return cls(cash=cash, commission=commission, commission_fixed=commission_fixed,
                   slippage=slippage, fill=cast(Fill, fill), units=cast(Units, units), size=size,
                   weights=weights, allow_short=allow_short, stop_loss=stop_loss,
                   take_profit=take_profit, close_at_end=close_at_end, select=select,
                   threads=threads)


class BacktestOptions(TypedDict, total=False):
    """The keyword options of ``ql.backtest`` and ``Simulation`` for type checkers: the fields
    of :class:`EngineOptions` with the same types, a sweepable one also as a sequence of them
    (a type checker cannot derive a TypedDict from a dataclass; tests/test_engine_options.py
    keeps the two equal: ``option_types(sweeps=True)``)."""

    cash: float
    commission: float | Sequence[float]
    commission_fixed: float | Sequence[float]
    slippage: float | Sequence[float]
    fill: Fill
    units: Units
    size: float | Sequence[float]
    weights: Mapping[str, float] | None
    allow_short: bool
    stop_loss: float | Sequence[float | None] | None
    take_profit: float | Sequence[float | None] | None
    close_at_end: bool
    select: str
    threads: int | None


def info(name: str) -> OptionInfo:
    """The doc, unit and config membership of option ``name``."""
    return _INFO[name]


def option_types(sweeps: bool = False) -> dict[str, Any]:
    """Each option's type (resolved annotations of :class:`EngineOptions`), in field order;
    with ``sweeps``, a sweepable option's type also admits a sequence of its values."""
    hints = get_type_hints(EngineOptions)
    sequence: Any = Sequence  # subscripted with a type known only at run time
    return {name: hints[name] | sequence[hints[name]]
            if sweeps and name in _SWEEPABLE_SET else hints[name] for name in OPTION_NAMES}


def defaults(names: Sequence[str] | None = None) -> dict[str, Any]:
    """The defaults of ``names`` (all options when None), in field order."""
    chosen = OPTION_NAMES if names is None else names
    return {name: DEFAULTS[name] for name in chosen}


def reject_unknown(given: Iterable[str], valid: Collection[str] | None = None) -> None:
    """ConfigError for the first name of ``given`` (sorted) that is not in ``valid`` (default:
    the option names): ``unknown option 'comission' — did you mean 'commission'? (valid: ...)``.
    """
    known = _NAME_SET if valid is None else valid
    unknown = sorted(name for name in given if name not in known)  # usually empty: cheap
    if unknown:
        name, shown = unknown[0], sorted(known)
        raise ConfigError(f"unknown option '{name}'{did_you_mean(name, shown)} (valid: "
                          f"{', '.join(shown)})", field=name, suggestion=nearest(name, shown))


def options_table() -> str:
    """docs/engine.md's option table (Markdown), rendered from :class:`EngineOptions`."""
    rows = ["| option | default | unit | sweep | meaning |", "| --- | --- | --- | --- | --- |"]
    for spec in fields(EngineOptions):
        option = info(spec.name)
        shown = option.shown or _shown(spec.default)
        sweep = "list or range" if option.sweepable else "-"
        rows.append(f"| `{spec.name}` | {shown} | {option.unit or '-'} | {sweep} | "
                    f"{option.doc} |")
    return "\n".join(rows) + "\n"


def is_swept(value: Any) -> bool:
    """Whether an option's value is a sweep: a list, tuple, range or array of values."""
    return isinstance(value, list | tuple | range | np.ndarray)


def swept_options(options: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The options of ``options`` given as a sweep (a list, tuple, range or array), in field
    order, each value checked by the engine's rule for that option (and normalised: numbers
    as floats; ``None`` stays "no stop" for ``stop_loss``/``take_profit``).

    A :class:`ConfigError` names the option and the fix: an option that cannot be swept, an
    empty list, or a value the option refuses (``commission=[0.001, -0.01]``)."""
    out: dict[str, list[Any]] = {}
    for name in OPTION_NAMES:
        if name not in options or not is_swept(options[name]):
            continue
        given = list(options[name])
        if name not in _SWEEPABLE_SET:
            raise ConfigError(
                f"{name} cannot be swept (only {', '.join(SWEEPABLE)} can); give one value, "
                f"e.g. {name}={_example(name)}, and run one backtest per value", field=name)
        if not given:
            raise ConfigError(
                f"{name} sweeps over an empty list; give at least one value, e.g. "
                f"{name}=[{_example(name)}]", field=name)
        out[name] = [_checked_value(name, value, given) for value in given]
    return out


def _checked_value(name: str, value: Any, given: list[Any]) -> Any:
    """One value of a swept option through the engine's rule for the option, the message
    saying which value of the sweep it is."""
    try:
        checked = EngineOptions.checked({name: value}, ())
    except ConfigError as exc:
        shown = ", ".join(repr(v) for v in given[:6]) + (", ..." if len(given) > 6 else "")
        raise ConfigError(
            f"{name}=[{shown}] sweeps a value it cannot take: {exc.message}; remove or fix "
            f"that value", field=name, value=value) from None
    return getattr(checked, name)


def _example(name: str) -> str:
    return {"commission": "0.001", "commission_fixed": "1.0", "slippage": "5", "size": "0.5",
            "stop_loss": "0.05", "take_profit": "0.1", "cash": "10_000"}.get(name, "...")


def _shown(default: Any) -> str:
    if isinstance(default, str):
        return f'`"{default}"`'
    if isinstance(default, float):
        return f"{default:,g}"
    return str(default)


OPTION_NAMES: tuple[str, ...] = tuple(spec.name for spec in fields(EngineOptions))
_NAME_SET = frozenset(OPTION_NAMES)
#: The options a config holds (and its hash covers): all but the process's own settings.
CONFIG_OPTIONS: tuple[str, ...] = tuple(
    spec.name for spec in fields(EngineOptions) if spec.metadata["option"].in_config)
DEFAULTS: Mapping[str, Any] = {spec.name: spec.default for spec in fields(EngineOptions)}
_INFO: Mapping[str, OptionInfo] = {spec.name: spec.metadata["option"]
                                   for spec in fields(EngineOptions)}
#: The options a sweep may vary (a list or range of values each, as params): the grid is
#: params x these, in this order, the last fastest.
SWEEPABLE: tuple[str, ...] = tuple(name for name in OPTION_NAMES if _INFO[name].sweepable)
_SWEEPABLE_SET = frozenset(SWEEPABLE)
# the sweep checks of quantlab.engine.validate learn the sweepable options here
V.OPTION_SWEEPS.names = SWEEPABLE
V.OPTION_SWEEPS.swept = swept_options

__all__ = ["CONFIG_OPTIONS", "DEFAULTS", "OPTION_NAMES", "SWEEPABLE", "BacktestOptions",
           "EngineOptions", "OptionInfo", "defaults", "info", "is_swept", "option_types",
           "options_table", "reject_unknown", "swept_options"]
