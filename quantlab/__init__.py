"""QuantLab: a Jupyter-native backtesting research environment.

The public API is what this module exports; everything else is internal. Names are loaded on
first use so that ``import quantlab`` stays cheap (Numba, pandas and Huey load only when needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from quantlab.errors import (
    ConfigError,
    DataError,
    DiskFull,
    EventsUnavailable,
    HomeNotWritable,
    MissingDependency,
    NotOwner,
    ProviderError,
    QuantlabError,
    QueueFull,
    RunError,
    RunNotFound,
    SchemaError,
    ServerUnreachable,
    StoreUnavailable,
    StrategyError,
)
from quantlab.hooks import RESEARCH as _RESEARCH
from quantlab.jobs.display import RENDERERS as _RENDERERS
from quantlab.settings import configure_numba_cache

configure_numba_cache()


def _run_report(run_id: str, output: str | None, html: bool) -> Any:
    # imported when a report runs: papermill and nbconvert take seconds to load
    from quantlab.reports.runner import run_report

    return run_report(run_id, output, html)


def _live_view(run: Any) -> Any:
    # imported when a run is shown in a kernel: the widget needs ipywidgets
    from quantlab.notebook.display import display_run

    return display_run(run)


def _confidence(result: Any, metrics: Any, **kwargs: Any) -> Any:
    # imported when asked: arch and scipy load only for a confidence interval
    from quantlab.research.confidence import confidence

    return confidence(result, metrics, **kwargs)


_RESEARCH.confidence = _confidence

# The top layer plugs the notebook's live widget and the reports into the jobs' runs.
_RENDERERS.live_view = _live_view
_RENDERERS.report = _run_report

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "backtest": "quantlab.engine.api",
    "Result": "quantlab.engine.api",
    "ENGINE_VERSION": "quantlab.engine.version",
    "strategy": "quantlab.strategies",
    "list_strategies": "quantlab.strategies",
    "BacktestConfig": "quantlab.config",
    "submit": "quantlab.jobs.api",
    "get_run": "quantlab.jobs.api",
    "runs": "quantlab.jobs.api",
    "Run": "quantlab.jobs.api",
    "RunList": "quantlab.jobs.api",
    "compare": "quantlab.analytics",
    "stats": "quantlab.analytics",
    "Comparison": "quantlab.analytics",
    "Stats": "quantlab.analytics",
    "indicator": "quantlab.indicators",
    "ind": "quantlab.indicators",
    "audit": "quantlab.research",
    "Audit": "quantlab.research",
    "walk_forward": "quantlab.research",
    "cross_validate": "quantlab.research",
    "CrossValidation": "quantlab.research",
    "WalkForward": "quantlab.research",
    "diff": "quantlab.jobs.rundiff",
}
_SUBMODULES = {"data", "metrics", "notifications"}
# Modules loaded along with a public name: analytics objects get their HTML views from render
# (analytics, a lower layer, does not import its views; see quantlab.analytics.views).
# Results get their figures, data and reruns the same way (quantlab.render.resultviews), and
# their overfitting statistics and report (quantlab.render.overfitting, which plugs in research).
_VIEWS: dict[str, tuple[str, ...]] = {
    "quantlab.analytics": ("quantlab.render.html",),
    "quantlab.engine.api": ("quantlab.render.resultviews", "quantlab.render.overfitting"),
    "quantlab.jobs.api": ("quantlab.render.resultviews", "quantlab.render.overfitting",
                          "quantlab.render.validation"),
    "quantlab.research": ("quantlab.render.validation",),
}

# Spelled out (not built from _LAZY) so that linters and type checkers see the public names.
__all__ = [
    "ENGINE_VERSION",
    "Audit",
    "BacktestConfig",
    "Comparison",
    "ConfigError",
    "CrossValidation",
    "DataError",
    "DiskFull",
    "EventsUnavailable",
    "HomeNotWritable",
    "MissingDependency",
    "NotOwner",
    "ProviderError",
    "QuantlabError",
    "QueueFull",
    "Result",
    "Run",
    "RunError",
    "RunList",
    "RunNotFound",
    "SchemaError",
    "ServerUnreachable",
    "Stats",
    "StoreUnavailable",
    "StrategyError",
    "WalkForward",
    "__version__",
    "audit",
    "backtest",
    "compare",
    "cross_validate",
    "data",
    "diff",
    "get_run",
    "ind",
    "indicator",
    "list_strategies",
    "metrics",
    "notifications",
    "runs",
    "stats",
    "strategy",
    "submit",
    "walk_forward",
]

if TYPE_CHECKING:
    from quantlab import data, metrics, notifications
    from quantlab.analytics import Comparison, Stats, compare, stats
    from quantlab.config import BacktestConfig
    from quantlab.engine.api import Result, backtest
    from quantlab.engine.version import ENGINE_VERSION
    from quantlab.indicators import ind, indicator
    from quantlab.jobs.api import Run, RunList, get_run, runs, submit
    from quantlab.jobs.rundiff import diff
    from quantlab.research.audit import Audit, audit
    from quantlab.research.crossval import CrossValidation, cross_validate
    from quantlab.research.walkforward import WalkForward, walk_forward
    from quantlab.strategies import list_strategies, strategy


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = _LAZY[name]
        value = getattr(importlib.import_module(module), name)
        for view in _VIEWS.get(module, ()):
            importlib.import_module(view)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"quantlab.{name}")
    else:
        raise AttributeError(f"module 'quantlab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext quantlab``: register the ``%%backtest`` family of magics."""
    # IPython is needed only here: ``import quantlab`` stays cheap in workers and scripts
    from quantlab.notebook import prestart_worker
    from quantlab.notebook.magics import register

    register(ipython)
    prestart_worker()  # in the background: the first %%backtest need not wait for it


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter Server loads the REST/WebSocket handlers of the Backtests panel from here."""
    return [{"module": "quantlab.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives inside the package."""
    return [{"src": "labextension", "dest": "quantlab"}]
