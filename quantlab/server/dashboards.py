"""The Voila dashboards, served by the Jupyter server that runs the Lab.

``<base_url>quantlab/dashboards/compare?comparison=<id>`` (and ``.../analytics?period=6M``) renders
the same notebooks as ``quantlab dashboard compare|analytics``, so the panel's "Compare selected"
works with nothing else to start. Voila does the work: it is a Jupyter server extension of this
install (``voila.server_extension``), which serves the page's assets under ``<base_url>voila/``.
QuantLab adds only this route, because Voila's own ``voila/render/<path>`` renders notebooks of
the server's root directory, and the dashboards live in the quantlab package.

What differs from Voila's defaults, and why:

- the page template is QuantLab's (``dashboards/share``: no CDN stylesheets), whatever the
  server's ``VoilaConfiguration.template`` says and whatever ``?template=`` asks, so a dashboard
  opened from the Lab works offline exactly as a standalone one;
- the page is the Lab's, under the Lab's login: no login is a 403 (never a redirect to a login
  form that a new tab opened by the panel could not use, never a 500), and the ``quantlab``
  resource must be authorized;
- the JupyterLab side panel (this package's labextension) is not loaded into a dashboard.
"""

from __future__ import annotations

import html as htmllib
from functools import cache
from http.client import responses
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from quantlab.dashboards.serve import (
    DASHBOARDS,
    EXTENSION_DENYLIST,
    LAB_ROUTE,
    TEMPLATE,
    TEMPLATE_ROOT,
)
from quantlab.errors import did_you_mean

AUTH_RESOURCE = "quantlab"
VOILA_EXTENSION = "voila.server_extension"


def dashboard_path(name: str) -> str:
    """The dashboard's page, relative to the server's base URL: ``quantlab/dashboards/<name>``."""
    return f"{LAB_ROUTE}/{name}"


@cache
def _notebooks() -> Any:
    """The dashboards' folder as Jupyter contents: Voila reads a notebook through a contents
    manager, and the server's own one only sees the server's root directory."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    folders = {path.parent for path in DASHBOARDS.values()}
    assert len(folders) == 1, "the dashboards' notebooks live in one folder"
    return FileContentsManager(root_dir=str(folders.pop()))


def template_paths() -> list[str]:
    """Where Voila finds QuantLab's template and the ones it extends (lab, base)."""
    from voila.paths import _default_root_dirs, collect_template_paths

    roots = [str(TEMPLATE_ROOT), *_default_root_dirs()]
    return list(collect_template_paths(["voila", "nbconvert"], TEMPLATE, root_dirs=roots))


def voila_configuration(serverapp: Any) -> Any:
    """Voila's settings for the dashboards: the server's ``VoilaConfiguration`` (theme, timeouts
    a deployment set), with what the offline guarantee and a stakeholder's view depend on
    fixed as ``quantlab dashboard`` fixes them (:func:`quantlab.dashboards.serve.voila_argv`)."""
    from voila.configuration import VoilaConfiguration

    config = VoilaConfiguration(parent=serverapp)
    config.template = TEMPLATE
    config.allow_template_override = "NO"  # ?template=lab would bring the CDN back
    config.theme = "light"
    config.strip_sources = True
    config.show_tracebacks = False
    config.extension_denylist = list(EXTENSION_DENYLIST)
    config.page_config_hook = without_mathjax(config.page_config_hook)
    return config


def without_mathjax(hook: Any = None) -> Any:
    """A page-config hook (after ``hook``, a deployment's own) that gives the page no MathJax
    URL. Inside another Jupyter server Voila falls back to MathJax on cdnjs, which the compare
    page fetched (seen in the browser test); ``quantlab dashboard`` leaves the URL unset, so a
    dashboard has no MathJax in either mode (it shows numbers, not formulas)."""

    def page_config(page_config: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if hook is not None:
            page_config = hook(page_config, **kwargs)
        # both unset, as in standalone mode: either one set makes the page fall back to cdnjs
        page_config["fullMathjaxUrl"] = page_config["mathjaxConfig"] = None
        return page_config

    return page_config


def voila_enabled(serverapp: Any) -> bool:
    """Whether this server loaded Voila's extension (it serves the dashboards' page assets)."""
    manager = getattr(serverapp, "extension_manager", None)
    extension = getattr(manager, "extensions", {}).get(VOILA_EXTENSION)
    return bool(extension is not None and extension.enabled)


def handlers(serverapp: Any, base_url: str) -> list[tuple[str, type, dict[str, Any]]]:
    from jupyter_server.utils import url_path_join

    options = {"config": serverapp.config, "template_paths": template_paths(),
               "voila_configuration": voila_configuration(serverapp),
               "voila_enabled": lambda: voila_enabled(serverapp)}
    return [(url_path_join(base_url, LAB_ROUTE, r"(?P<name>[^/]*)/?"), DashboardHandler, options)]


def _voila_handler() -> type:
    from voila.handler import VoilaHandler

    return VoilaHandler


class DashboardHandler(_voila_handler()):  # type: ignore[misc]
    """``GET <base_url>quantlab/dashboards/<name>?<query>``: the dashboard page, rendered by
    Voila in a kernel of this server; the query string reaches the notebook as in standalone
    mode (``?comparison=<id>``)."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, **kwargs: Any) -> None:
        self._voila_enabled = kwargs.pop("voila_enabled")
        super().initialize(**kwargs)

    @property
    def contents_manager(self) -> Any:
        return _notebooks()

    def get_login_url(self) -> str:
        # @web.authenticated would redirect a browser to the login form; a dashboard tab says
        # instead what is missing (403), as the API does.
        if not self.current_user:
            raise web.HTTPError(403, "not logged in to Jupyter: open the Lab (with its token) "
                                     "first, or add ?token=<token> to the dashboard's URL")
        return str(super().get_login_url())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A plain page that says what is wrong: Jupyter's error page would need Voila's
        # templates, which are missing when its extension is off (a 500 in place of the 503).
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(exc, "log_message", None) or responses.get(status_code, "error")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!DOCTYPE html><html><head><title>{status_code}</title></head><body>"
                    f'<p class="ql-dashboard-error">{status_code}: {htmllib.escape(reason)}</p>'
                    f"</body></html>")

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        if name not in DASHBOARDS:
            raise web.HTTPError(404, f"no dashboard {name!r}{did_you_mean(name, DASHBOARDS)}; "
                                     f"the dashboards are {', '.join(DASHBOARDS)}")
        if not self._voila_enabled():
            raise web.HTTPError(503, f"Voila's server extension is not enabled on this server; "
                                     f"run: jupyter server extension enable {VOILA_EXTENSION} "
                                     f"and restart it")
        async for html in self.get_generator(path=Path(DASHBOARDS[name]).name):
            self.write(html)
            self.flush()
