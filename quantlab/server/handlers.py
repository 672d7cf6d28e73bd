"""REST handlers of the Backtests panel, under ``/quantlab/api/``.

Thin: each handler authenticates (Jupyter's login, token or cookie + XSRF), authorizes against the
``quantlab`` resource, runs one function of :mod:`quantlab.server.service` in a thread pool and
writes its JSON. QuantLab errors become JSON errors whose ``message`` is the same sentence the
notebook shows (it names the problem and the fix), with the status a client can branch on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html as htmllib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.client import responses
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from quantlab import telemetry
from quantlab.errors import (
    ConfigError,
    DiskFull,
    MissingDependency,
    NotOwner,
    QuantlabError,
    QueueFull,
    RunNotFound,
    StoreUnavailable,
    StrategyError,
)
from quantlab.server import service
from quantlab.server.events import EventsSocket
from quantlab.settings import current_user as os_user

log = logging.getLogger("quantlab.server")

AUTH_RESOURCE = "quantlab"
JUPYTER_QUERY_PARAMETERS = frozenset({"token", "_xsrf"})
# Blocking registry/queue calls run here, off the IOLoop. A few threads are plenty: each call
# is short, and a report (papermill) must not take every thread.
_executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="quantlab-api")


def status_for(exc: BaseException) -> int:
    """The HTTP status of a QuantLab error."""
    if isinstance(exc, RunNotFound | service.NotFound):
        return 404
    if isinstance(exc, NotOwner):
        return 403
    if isinstance(exc, ConfigError | StrategyError):
        return 400
    if isinstance(exc, QueueFull):
        return 429
    if isinstance(exc, DiskFull):
        return 507  # Insufficient Storage
    if isinstance(exc, MissingDependency | StoreUnavailable):
        return 503  # a store (home, Redis) is away: try again once it is back
    return 409  # RunError and the rest: the request is fine but the run's state refuses it


def error_body(exc: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = {"message": str(exc), "type": type(exc).__name__}
    fields = getattr(exc, "fields", None) or {}
    body.update({k: service.json_safe(v) for k, v in fields.items() if v is not None})
    return body


def jupyter_username(user: Any) -> str:
    """The name a run submitted through the server is recorded under: the Jupyter identity.

    A server protected only by its shared token identifies nobody: jupyter_server then makes up
    an "Anonymous <moon>" user with a random id per browser. Such runs are recorded under the
    account the server runs as (``QUANTLAB_USER`` or the OS user), the same one its kernels use,
    so the panel's runs and notifications match the notebook's. Under JupyterHub, or any
    identity provider that names users, the login name is used.
    """
    username = str(getattr(user, "username", "") or "")
    name = str(getattr(user, "name", "") or "")
    anonymous = name.startswith("Anonymous ") and len(username) == 32 and all(
        c in "0123456789abcdef" for c in username)
    return os_user() if anonymous or not username else username


def auth_message(reason: str | None, status_code: int, logged_in: bool) -> str:
    """What a refused request should do, for the two ways Jupyter refuses one."""
    token_hint = "open the server's URL with its token, or send 'Authorization: token <token>'"
    if reason and "xsrf" in reason.lower():
        if not logged_in:  # Jupyter checks XSRF before it looks for a login
            return f"not logged in to Jupyter ({reason}): {token_hint}"
        return (f"{reason}: a POST authenticated by the login cookie must send the X-XSRFToken "
                f"header with the value of the _xsrf cookie (Jupyter's XSRF rule), or "
                f"authenticate with 'Authorization: token <token>' instead")
    return (f"{reason or responses.get(status_code, 'Forbidden')}: not logged in to Jupyter; "
            f"{token_hint}")


class QuantlabHandler(APIHandler):
    """Base: JSON errors with QuantLab's messages; blocking calls in the thread pool."""

    auth_resource = AUTH_RESOURCE

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking service function off the IOLoop; its errors become JSON errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_executor, partial(fn, *args))
        except QuantlabError as exc:
            raise ApiError(status_for(exc), error_body(exc)) from exc
        except Exception as exc:
            log.exception("quantlab API %s %s failed", self.request.method, self.request.path)
            raise ApiError(500, {
                "message": f"the server failed to answer {self.request.method} "
                           f"{self.request.path}: {type(exc).__name__}: {exc}; the Jupyter "
                           f"server's log has the traceback",
                "type": type(exc).__name__,
            }) from exc

    def query(self) -> dict[str, list[str]]:
        """The request's own parameters; Jupyter's authentication ones (``?token=``, as a
        browser link carries it, and ``_xsrf``) are the server's business, not a filter."""
        return {name: [v.decode("utf-8", "replace") for v in values]
                for name, values in self.request.query_arguments.items()
                if name not in JUPYTER_QUERY_PARAMETERS}

    def json_body(self) -> Any:
        raw = self.request.body or b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, {"message": f"the request body is not valid JSON ({exc}); send "
                                            f"e.g. {service.SUBMIT_EXAMPLE}",
                                 "type": "ConfigError"}) from exc

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, allow_nan=False))

    @property
    def run_user(self) -> str:
        return jupyter_username(self.current_user)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(exc.body))
            return
        if isinstance(exc, web.HTTPError) and status_code in (401, 403):
            self.set_header("Content-Type", "application/json")
            logged_in = getattr(self, "_jupyter_current_user", None) is not None
            self.finish(json.dumps({
                "message": auth_message(exc.log_message, status_code, logged_in),
                "type": "AuthError"}))
            return
        super().write_error(status_code, **kwargs)


# Recent runs consulted for the values a filter could have meant (an empty search only).
EXPLAIN_SCAN = 2000


def list_runs_explained(params: dict[str, list[str]]) -> dict[str, Any]:
    """GET /runs, except that a search that found nothing because of a misspelt filter says
    so (400, with the closest known value) instead of an empty list: ``strategy:sma_crosover``,
    ``sharpee>1``. The extra lookups happen only when nothing matched."""
    page = service.list_runs(params)
    if page["total"] == 0:
        explain_empty_search(service.run_query(params))
    return page


def explain_empty_search(query: dict[str, Any]) -> None:
    from quantlab.registry import open_registry
    from quantlab.registry.query import check_known_values, check_threshold_metrics, parse_where
    from quantlab.strategies import list_strategies

    registry = open_registry()
    if query.get("where"):
        check_threshold_metrics(parse_where(query["where"]), registry.metric_names())
    asked = {key: query[key] for key in ("strategy", "symbol", "tag") if query.get(key)}
    if not asked:
        return
    recent = registry.find_runs(limit=EXPLAIN_SCAN)
    seen: dict[str, set[str]] = {"strategy": set(list_strategies()), "symbol": set(),
                                 "tag": set()}
    for run in recent:
        seen["strategy"].add(str(run.get("strategy") or ""))
        seen["symbol"].update(str(s) for s in run.get("symbols") or ())
        seen["tag"].update(str(t) for t in run.get("tags") or ())
    for key, values in asked.items():
        # the scan sees recent runs only: a value it missed is looked up before it is refused
        unseen = [v for v in values if v not in seen[key] and not _any_run_has(registry, key, v)]
        check_known_values(key, unseen, seen[key],
                           f"filter by one of the {key}s runs have, or clear the filter")


def _any_run_has(registry: Any, key: str, value: str) -> bool:
    """Whether some run has ``value`` as its strategy, a symbol or a tag (an indexed count)."""
    only: dict[str, Any] = {key: [value]}
    return bool(registry.count_runs(**only))


class ApiError(web.HTTPError):
    """An HTTP error whose JSON body is ready (``message`` always set)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, str(body.get("message", "")).replace("%", "%%"))
        self.body = body


class RunsHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(list_runs_explained, self.query()))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.call(service.submit_run, body, self.run_user), status=201)


class RunHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        self.reply(await self.call(service.get_run, run_id))


class CancelHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(await self.call(service.cancel_run, run_id, self.run_user))


class RerunHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(await self.call(service.rerun, run_id, self.run_user), status=201)


class ReportHandler(QuantlabHandler):
    """POST executes the run's report; GET shows the last one as a web page."""

    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        root = self.settings.get("server_root_dir") or getattr(self.serverapp, "root_dir", None)
        self.reply(await self.call(service.make_report, run_id, root), status=201)

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        html = await self.call(service.report_page, run_id)
        # APIHandler's policy (default-src 'none') would block the report's own CSS and
        # scripts: this page gets a policy of its own, with a nonce fresh for every response.
        page, policy = report_policy(html, super(APIHandler, self).content_security_policy)
        self.set_header("Content-Security-Policy", policy)
        self.finish(page, set_content_type="text/html; charset=utf-8")


_INLINE_OPEN_TAG = re.compile(r"<(?P<tag>script|style)\b(?P<attrs>[^>]*)>", re.IGNORECASE)
_STYLE_ATTRIBUTE = re.compile(r"\sstyle\s*=\s*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)')",
                              re.IGNORECASE)
# The page's own (nonce-approved) scripts create <style>/<script> elements too: plotly.js adds
# its modebar CSS that way. Those get the nonce as they are created, so the page works whole
# while anything injected from outside its scripts still has none.
_NONCE_SHIM = (
    '<script nonce="{nonce}">(function (n) {{ var make = document.createElement.bind(document);'
    " document.createElement = function (tag, options) {{ var el = make(tag, options);"
    " if (/^(style|script)$/i.test(String(tag))) {{ el.setAttribute('nonce', n); }}"
    ' return el; }}; }})("{nonce}");</script>'
)
_HEAD_OPEN = re.compile(r"<head\b[^>]*>", re.IGNORECASE)


def _with_nonce_shim(page: str, nonce: str) -> str:
    shim = _NONCE_SHIM.format(nonce=nonce)
    head = _HEAD_OPEN.search(page)
    if head is None:
        return shim + page
    return page[:head.end()] + shim + page[head.end():]


# Past this many distinct style="" attributes the header would grow past what proxies accept;
# the attributes are then allowed as a class (they cannot run code), the rest stays exact.
MAX_STYLE_ATTRIBUTE_HASHES = 200


def report_policy(html: str, base_policy: str) -> tuple[str, str]:
    """A report page with a fresh nonce on each of its inline ``<script>``/``<style>`` elements,
    and the Content-Security-Policy that allows exactly those, the hashes of its ``style=``
    attributes and ``data:``/``blob:`` images and fonts (embedded PNGs, plotly's exports), and
    nothing from any other origin (a ``<script src=https://...>`` gets no nonce: still blocked).
    ``sandbox`` confines the report's scripts to an opaque origin, away from the server's
    cookies."""
    nonce = secrets.token_urlsafe(18)

    def with_nonce(match: re.Match[str]) -> str:
        attrs = match["attrs"]
        if re.search(r"\bsrc\s*=", attrs, re.IGNORECASE) or "nonce=" in attrs.lower():
            return match[0]
        return f'<{match["tag"]} nonce="{nonce}"{attrs}>'

    page = _with_nonce_shim(_INLINE_OPEN_TAG.sub(with_nonce, html), nonce)
    styles = {htmllib.unescape(m["dq"] if m["dq"] is not None else m["sq"])
              for m in _STYLE_ATTRIBUTE.finditer(html)}
    if not styles:
        style_attr = "'none'"
    elif len(styles) > MAX_STYLE_ATTRIBUTE_HASHES:
        style_attr = "'unsafe-inline'"
    else:
        style_attr = " ".join(["'unsafe-hashes'", *sorted(
            f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
            for s in styles)])
    policy = "; ".join([
        base_policy,
        "default-src 'none'",
        f"script-src 'nonce-{nonce}'",
        f"style-src 'nonce-{nonce}'",
        f"style-src-elem 'nonce-{nonce}'",
        f"style-src-attr {style_attr}",
        "img-src data: blob:",
        "font-src data:",
        "sandbox allow-scripts allow-downloads allow-popups",
    ])
    return page, policy


class CompareHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from jupyter_server.utils import url_path_join

        from quantlab.server.dashboards import dashboard_path

        # the dashboard this server serves: the panel's link works with nothing else running
        dashboard = url_path_join(self.base_url, dashboard_path("compare"))
        self.reply(await self.call(service.compare, self.query(), dashboard))


def run_diff(params: dict[str, list[str]]) -> dict[str, Any]:
    """GET /diff?a=&b=: the run diff of two runs as JSON (``RunDiff.as_dict``)."""
    from quantlab.errors import ConfigError
    from quantlab.jobs.rundiff import diff

    service._check_known(params, ("a", "b"), "GET /quantlab/api/diff")
    ids = {side: (params.get(side) or [""])[0].strip() for side in ("a", "b")}
    missing = [side for side, value in ids.items() if not value]
    if missing:
        raise ConfigError(f"diff needs two run ids, missing {' and '.join(missing)}; call "
                          f"GET /quantlab/api/diff?a=<id>&b=<id>", field=missing[0])
    return dict(service.json_safe(diff(ids["a"], ids["b"]).as_dict()))


class DiffHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(run_diff, self.query()))


class NotificationsHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(service.list_notifications, self.run_user, self.query()))


class NotificationReadHandler(QuantlabHandler):
    @web.authenticated
    @authorized
    async def post(self, notification_id: str) -> None:
        self.reply(await self.call(service.mark_notification_read, notification_id,
                                   self.run_user))


class MetricsHandler(APIHandler):
    """``GET /quantlab/metrics``: Prometheus metrics of this server process (event delivery to
    the Lab panel, runs submitted here, cache hits) and the registry's gauges. Needs Jupyter's
    authentication (a scraper sends ``Authorization: token ...``) unless
    ``QUANTLAB_METRICS_PUBLIC=1``."""

    _track_activity = False  # a scraper must not keep an idle server alive

    @allow_unauthenticated
    async def get(self) -> None:
        if not metrics_public():
            if not self.current_user:
                raise web.HTTPError(403, "the metrics need Jupyter's token (Authorization: "
                                         "token ...) or QUANTLAB_METRICS_PUBLIC=1 on the server")
            if not self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE):
                raise web.HTTPError(403)
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(
            _executor, lambda: generate_latest(telemetry.exposition_registry()))
        self.finish(body, set_content_type=CONTENT_TYPE_LATEST)


def metrics_public() -> bool:
    return os.environ.get("QUANTLAB_METRICS_PUBLIC", "").strip().lower() in ("1", "true", "yes")


class NotFoundHandler(QuantlabHandler):
    """Anything else under /quantlab/api/: a JSON 404 that lists the endpoints."""

    @web.authenticated
    async def get(self, path: str) -> None:
        raise ApiError(404, {"message": f"no QuantLab endpoint '/quantlab/api/{path}'; the API "
                                        f"has: {', '.join(ENDPOINTS)}", "type": "NotFound"})

    post = get


ID = r"(?P<{}>[A-Za-z0-9_.:-]+)"
ENDPOINTS = ("GET runs", "POST runs", "GET runs/{id}", "POST runs/{id}/cancel",
             "POST runs/{id}/rerun", "POST runs/{id}/report", "GET runs/{id}/report",
             "GET compare?ids=", "GET diff?a=&b=", "GET notifications", "POST notifications/{id}/read",
             "WebSocket events")


def routes() -> list[tuple[str, type[web.RequestHandler]]]:
    """URL patterns relative to ``/quantlab/api/``."""
    run = ID.format("run_id")
    return [
        (r"runs/?", RunsHandler),
        (rf"runs/{run}/?", RunHandler),
        (rf"runs/{run}/cancel/?", CancelHandler),
        (rf"runs/{run}/rerun/?", RerunHandler),
        (rf"runs/{run}/report/?", ReportHandler),
        (r"compare/?", CompareHandler),
        (r"diff/?", DiffHandler),
        (r"notifications/?", NotificationsHandler),
        (rf"notifications/{ID.format('notification_id')}/read/?", NotificationReadHandler),
        (r"events/?", EventsSocket),
        (r"(?P<path>.*)", NotFoundHandler),
    ]
