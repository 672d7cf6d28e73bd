"""The notebook experience: ``%%backtest`` magics, the live run widget and the results view.

``%load_ext quantlab`` registers everything (see :mod:`quantlab.notebook.magics`). The modules
that need ipywidgets are imported only when something is displayed, and
:mod:`quantlab.strategies.usercode` (imported by workers) needs neither IPython nor ipywidgets.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["display_result", "display_run", "prestart_worker"]

log = logging.getLogger("quantlab.notebook")


def display_run(run: Any) -> Any:
    """Show ``run`` as the live widget; see :func:`quantlab.notebook.display.display_run`."""
    from quantlab.notebook.display import display_run as _display_run

    return _display_run(run)


def display_result(result: Any) -> Any:
    """Show ``result`` as the results view."""
    from quantlab.notebook.display import display_result as _display_result

    return _display_result(result)



def prestart_worker() -> threading.Thread | None:
    """Start the embedded worker in the background, at ``%load_ext quantlab``: it takes seconds
    to start (Python, NumPy, Numba), which the first ``%%backtest`` would otherwise wait for.

    Nothing when ``QUANTLAB_PRESTART_WORKER=0``, in team mode (``QUANTLAB_REDIS_URL``: workers
    are services there) or when a worker of this home is alive. The thread does what ``submit``
    does (:func:`quantlab.jobs.supervisor.ensure_worker`, under the same spawn lock, so the
    first submit waits for this start rather than making a second one); a failure is only
    logged here, and the next submit reports it with the worker's log.
    """
    from quantlab import settings as settings_mod

    if not settings_mod.env_flag("QUANTLAB_PRESTART_WORKER", True):
        return None
    settings = settings_mod.current()
    if settings.redis_url:
        return None

    def start() -> None:
        from quantlab.jobs.supervisor import ensure_worker

        try:
            ensure_worker(settings)
        except Exception as exc:  # the first submit says it again, with the worker's log
            log.warning("QuantLab could not start its worker in advance: %s", exc)

    thread = threading.Thread(target=start, name="quantlab-prestart-worker", daemon=True)
    thread.start()
    return thread
