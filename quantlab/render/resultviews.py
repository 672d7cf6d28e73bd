"""Fills :data:`quantlab.engine.result.VIEWS`: what ``Result.plot()``, ``Result.to_html()``,
``Result.combination()`` and ``Result.bars`` need from above the engine (figures, the data
store, a fresh backtest). The ``quantlab`` package imports this module along with
``ql.backtest`` and ``ql.get_run`` (the engine, a lower layer, does not import it).

Light to import: plotly loads with the first figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantlab.engine.result import VIEWS, Result
from quantlab.errors import ConfigError, QuantlabError

# config keys that are engine options of a single run (select and threads only steer sweeps)
_RUN_OPTIONS = ("cash", "commission", "commission_fixed", "slippage", "fill", "units", "size",
                "weights", "allow_short", "stop_loss", "take_profit", "close_at_end")


def strategy_of(config: Mapping[str, Any]) -> Any:
    """The run's strategy object when it can be had (registered here, or shipped with the
    run), else its name."""
    from quantlab.strategies import get_strategy
    from quantlab.strategies.usercode import load_shipped_strategy

    name = str(config.get("strategy") or "")
    try:
        return get_strategy(name)
    except ConfigError:
        source = config.get("strategy_source")
        if source:
            return load_shipped_strategy(name, str(source))
        raise


def plot(result: Result, *, kind: str | None = None, metric: str | None = None,
         x: str | None = None, y: str | None = None, symbol: str | None = None,
         indicators: Mapping[str, Any] | None = None, title: str | None = None) -> Any:
    """``Result.plot``: the sweep's heatmap (a sweep, unless ``kind="result"``), else the
    result's figure."""
    from quantlab.render import figures
    from quantlab.render.results import default_axes

    table = result.table
    if kind not in (None, "result", "heatmap", "parallel", "stability"):
        raise ConfigError(f"kind={kind!r} is not a figure; use 'result', 'heatmap', "
                          "'parallel' or 'stability'", field="kind")
    if table is not None and kind != "result":
        if len(table) == 0:
            raise ConfigError("this sweep finished no combination: nothing to plot",
                              field="kind")
        params, metrics = figures.sweep_columns(result)
        metric, x_axis, y_axis = default_axes(result, metric, x, y)
        if kind == "parallel":
            return figures.parallel_figure(table, params, metric)
        if kind == "stability":
            return figures.stability_figure(table, params, metric)
        return figures.heatmap_figure(table, params, metrics, metric=metric, x=x_axis, y=y_axis)
    if kind in ("heatmap", "parallel", "stability"):
        raise ConfigError(f"kind={kind!r} draws a sweep; this result is a single run",
                          field="kind")
    try:
        strategy = strategy_of(result.config)
    except QuantlabError:
        strategy = result.config.get("strategy")
    return figures.result_figure(result, bars=result.bars, symbol=symbol, indicators=indicators,
                                 strategy=strategy, title=title)


def page(result: Result) -> str:
    from quantlab.render.results import result_page_html

    return result_page_html(result, plot(result, kind="result"))


def load_bars(config: Mapping[str, Any]) -> Any:
    """The run's bars from the data store, if it still holds them unchanged (same number of
    bars between the same first and last); None otherwise."""
    symbols = config.get("symbols")
    if not symbols:
        return None
    try:
        from quantlab.data import load

        bars = load(list(symbols), start=config.get("start"), end=config.get("end"),
                    interval=config.get("interval"))
    except (QuantlabError, OSError, ValueError):
        return None
    if config.get("n_bars") is not None and bars.n_bars != int(config["n_bars"]):
        return None
    return bars


def rerun(result: Result, params: dict[str, Any]) -> Result:
    """One combination of a sweep as a single run on the sweep's data and options."""
    from quantlab.engine.api import backtest

    bars = result.bars
    if bars is None:
        raise ConfigError(
            "combination() recomputes on the sweep's data, which is neither kept with this "
            f"result nor in the data store as it was (symbols {result.config.get('symbols')}, "
            f"{result.config.get('start')} to {result.config.get('end')}); run "
            "ql.backtest(data, params=...) on the data instead", field="params")
    options = {k: result.config[k] for k in _RUN_OPTIONS if k in result.config}
    return backtest(bars, strategy=strategy_of(result.config), params=params, **options)


VIEWS.plot = plot
VIEWS.page = page
VIEWS.rerun = rerun
VIEWS.load_bars = load_bars
