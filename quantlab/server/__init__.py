"""Jupyter Server extension of QuantLab: the REST + WebSocket API of the Backtests panel.

Enabled by ``jupyter-config/server-config/quantlab.json`` (installed with the package), so
``jupyter lab`` serves, under ``<base_url>quantlab/api/``:

- ``GET runs`` (search: status, strategy, symbol, tag, user, since, until, text, where, sort,
  limit, offset), ``POST runs`` (submit a config), ``GET runs/{id}``,
  ``POST runs/{id}/cancel``, ``POST runs/{id}/rerun``, ``POST runs/{id}/report`` (and ``GET`` it
  as a page), ``GET compare?ids=a,b``, ``GET notifications``, ``POST notifications/{id}/read``;
- the WebSocket ``events?after=<seq>&run_id=<id>``;

the Voila dashboards at ``<base_url>quantlab/dashboards/compare|analytics?<query>``
(:mod:`quantlab.server.dashboards`), and Prometheus metrics at ``<base_url>quantlab/metrics``
(docs/operations.md).

The handlers call the same Python API a notebook does; docs/lab.md describes every endpoint.
"""

from __future__ import annotations

from typing import Any

API_PATH = "quantlab/api"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "quantlab.server"}]


def setup_handlers(web_app: Any) -> None:
    """Add QuantLab's handlers to a Jupyter Server's Tornado application."""
    # Imported here, not at the top: Jupyter imports this package just to find the extension
    # point, and the handlers load QuantLab's whole run API (jobs, registry, analytics, reports).
    from jupyter_server.utils import url_path_join

    from quantlab.server.handlers import MetricsHandler, routes

    base_url = web_app.settings.get("base_url", "/")
    prefix = url_path_join(base_url, API_PATH)
    web_app.add_handlers(".*$", [
        (url_path_join(base_url, "quantlab", "metrics"), MetricsHandler),
        *((url_path_join(prefix, pattern), handler) for pattern, handler in routes()),
    ])


def setup_dashboards(serverapp: Any) -> None:
    """Serve the Voila dashboards from this server (the panel's "Compare selected" opens one)."""
    from quantlab.server.dashboards import handlers

    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(serverapp, web_app.settings.get("base_url", "/")))


def _load_jupyter_server_extension(serverapp: Any) -> None:
    setup_handlers(serverapp.web_app)
    setup_dashboards(serverapp)
    serverapp.log.info("QuantLab API enabled at %s%s/", serverapp.base_url, API_PATH)
