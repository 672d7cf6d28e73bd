"""The notebook experience: ``%%backtest`` magics, the live run widget and the results view.

``%load_ext quantlab`` registers everything (see :mod:`quantlab.notebook.magics`). The modules
that need ipywidgets are imported only when something is displayed, and
:mod:`quantlab.strategies.usercode` (imported by workers) needs neither IPython nor ipywidgets.
"""

from __future__ import annotations

from typing import Any

__all__ = ["display_result", "display_run"]


def display_run(run: Any) -> Any:
    """Show ``run`` as the live widget; see :func:`quantlab.notebook.display.display_run`."""
    from quantlab.notebook.display import display_run as _display_run

    return _display_run(run)


def display_result(result: Any) -> Any:
    """Show ``result`` as the results view."""
    from quantlab.notebook.display import display_result as _display_result

    return _display_result(result)

