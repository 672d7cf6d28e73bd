"""What the REST handlers do, as plain blocking functions over QuantLab's public Python API.

The handlers run these in a thread pool (never on the IOLoop) and turn their exceptions into
JSON errors. Keeping them free of Tornado makes each one the same call a notebook would make:
``ql.submit``, ``ql.get_run``, ``ql.runs``, ``ql.compare``, the registry's notifications.
Query strings arrive as ``{name: [values]}`` (Tornado's ``request.arguments``, decoded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantlab import analytics, notifications
from quantlab.configtext import expand_param_ranges, parse_body
from quantlab.errors import ConfigError, RunError, did_you_mean
from quantlab.events import open_events
from quantlab.jobs import api as jobs
from quantlab.jobs import orchestrator
from quantlab.registry import open_registry
from quantlab.render.format import audit_skipped
from quantlab.reports.rerun import submit_again
from quantlab.reports.runner import run_report

# Filters of GET /runs; each takes several values, repeated (?status=a&status=b) or a,b.
MULTI_FILTERS = ("status", "strategy", "symbol", "tag", "user")
SINGLE_FILTERS = ("since", "until", "text", "where", "sort")
RUN_QUERY_PARAMS = (*MULTI_FILTERS, *SINGLE_FILTERS, "limit", "offset")
DEFAULT_LIMIT = 50
# A page larger than this would make one request hold the registry (and the browser) too long.
MAX_LIMIT = 500
# Fields a listing leaves out: they are large and only the run's own page needs them.
LIST_OMITS = ("config", "traceback")

SUBMIT_KEYS = ("config", "cache", "priority", "name", "tags")
SUBMIT_EXAMPLE = '{"config": {"strategy": "sma_crossover", "symbols": ["AAA"]}}'
MAX_COMPARE = 5


# -- JSON --------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and numpy/pandas scalars as Python ones (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    isoformat = getattr(value, "isoformat", None)  # datetime, pandas Timestamp
    if callable(isoformat):
        return str(isoformat())
    return str(value)


# -- query strings -------------------------------------------------------------------------------


def _check_known(params: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    for name in params:
        # JupyterLab's ServerConnection appends the time (?1795701252031) to every GET so that
        # no cache answers it: a parameter name of digits alone is that cache-buster.
        if name not in known and not name.isdigit():
            raise ConfigError(
                f"unknown query parameter {name!r} for {what}{did_you_mean(name, known)}; valid "
                f"parameters: {', '.join(known)}", field=name
            )


def _whole_number(params: Mapping[str, list[str]], name: str, default: int, low: int,
                  high: int | None) -> int:
    values = params.get(name)
    if not values:
        return default
    raw = values[-1].strip()
    digits = raw[1:] if raw.startswith("-") else raw
    number = int(raw) if digits.isdigit() else None
    if number is None or number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"'{name}' must be a whole number {bound}, got {raw!r}", field=name)
    return number


def _since_until(raw: str) -> str | float:
    """Epoch seconds stay numbers; anything else (ISO dates) is for the registry to parse."""
    try:
        return float(raw)
    except ValueError:
        return raw


def run_query(params: Mapping[str, list[str]]) -> dict[str, Any]:
    """The keyword arguments of ``ql.runs`` for a GET /runs query string."""
    _check_known(params, RUN_QUERY_PARAMS, "GET /quantlab/api/runs")
    query: dict[str, Any] = {}
    for name in MULTI_FILTERS:
        values = [v.strip() for raw in params.get(name, []) for v in raw.split(",") if v.strip()]
        if values:
            query[name] = values
    for name in SINGLE_FILTERS:
        values = [v for v in params.get(name, []) if v.strip()]
        if values:
            query[name] = values[-1].strip()
    for name in ("since", "until"):
        if name in query:
            query[name] = _since_until(query[name])
    query["limit"] = _whole_number(params, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    query["offset"] = _whole_number(params, "offset", 0, 0, None)
    return query


def flag(params: Mapping[str, list[str]], name: str, default: bool = False) -> bool:
    values = params.get(name)
    if not values:
        return default
    raw = values[-1].strip().lower()
    if raw in ("1", "true", "yes", "on", ""):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"'{name}' must be true or false, got {values[-1]!r}", field=name)


# -- runs --------------------------------------------------------------------------------------


def latest_seq() -> int:
    """The newest event's seq: a client that loaded a snapshot follows the stream from here."""
    return int(open_events().last_seq())


def list_runs(params: Mapping[str, list[str]]) -> dict[str, Any]:
    """GET /runs: one page of the registry search, the total count, and the event seq the page
    is at least as new as (subscribe to the stream with ``after=seq`` to keep it live)."""
    query = run_query(params)
    seq = latest_seq()  # before reading: an event racing the read is replayed, never lost
    found = jobs.runs(**query)
    filters = {k: v for k, v in query.items() if k not in ("sort", "limit", "offset")}
    total = open_registry().count_runs(**filters)
    docs = [{**{k: v for k, v in doc.items() if k not in LIST_OMITS},
             "audit_skipped": audit_skipped(doc.get("config"))} for doc in _docs(found)]
    return json_safe({"runs": docs, "total": total, "limit": query["limit"],
                      "offset": query["offset"], "seq": seq})


def _docs(found: Any) -> list[dict[str, Any]]:
    """The registry documents of a ``ql.runs`` answer (its ``docs``, else each run's record)."""
    docs = getattr(found, "docs", None)
    if docs is not None:
        return [dict(d) for d in docs]
    return [dict(run.record) for run in found]


def get_run(run_id: str) -> dict[str, Any]:
    return json_safe(jobs.get_run(run_id).record)


def _submit_args(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise ConfigError(f"the request body must be a JSON object such as {SUBMIT_EXAMPLE}, "
                          f"got {type(body).__name__}")
    if "user" in body:
        raise ConfigError("'user' cannot be set: a run submitted here is recorded under your "
                          "Jupyter login; remove the 'user' key", field="user")
    _check_known(body, SUBMIT_KEYS, "POST /quantlab/api/runs")
    if "config" not in body or body["config"] in (None, "", {}):
        raise ConfigError(f"the request has no config: send the backtest config (an object, or "
                          f"the YAML text of a %%backtest cell) as 'config', e.g. "
                          f"{SUBMIT_EXAMPLE}", field="config")
    config = body["config"]
    if isinstance(config, str):
        # The text of a %%backtest cell: parsed exactly as the magic parses it.
        config = parse_body(config)
        if "params" in config:
            config["params"] = expand_param_ranges(config["params"])
    elif not isinstance(config, Mapping):
        raise ConfigError(f"'config' must be an object or YAML text, got "
                          f"{type(config).__name__}; e.g. {SUBMIT_EXAMPLE}", field="config")
    args: dict[str, Any] = {"config": dict(config), "cache": body.get("cache", True),
                            "priority": body.get("priority", 0)}
    if body.get("name") is not None:
        args["name"] = body["name"]
    if body.get("tags") is not None:
        args["tags"] = body["tags"]
    return args


def submit_run(body: Any, user: str) -> dict[str, Any]:
    """POST /runs: validate and queue a config, recorded under ``user``."""
    args = _submit_args(body)
    config = args.pop("config")
    return json_safe(jobs.submit(config, user=user, **args).record)


def cancel_run(run_id: str, user: str) -> dict[str, Any]:
    """POST /runs/{id}/cancel by ``user``: only the run's owner or an admin may (NotOwner, 403)."""
    return json_safe(orchestrator.cancel(run_id, user=user))


def rerun(run_id: str, user: str) -> dict[str, Any]:
    """Submit a run's stored config again, bypassing the result cache (a reproducibility
    check), as `quantlab rerun` does."""
    record = jobs.get_run(run_id).record
    if not record.get("config"):
        raise RunError(f"run {run_id} has no stored config, so it cannot be rerun; submit its "
                       f"config again with ql.submit", run_id=run_id)
    return json_safe(jobs.get_run(submit_again(record, user=user).id).record)


# -- reports -------------------------------------------------------------------------------------


def make_report(run_id: str, root_dir: str | None) -> dict[str, Any]:
    """POST /runs/{id}/report: execute the run's report notebook (papermill) and keep it.

    Answers where it is: ``url`` shows its HTML (from the registry, so it outlives this server),
    ``lab_path`` is the executed notebook relative to the server's root when Lab can open it.
    """
    jobs.get_run(run_id)  # RunNotFound (404) before any notebook is started
    files = run_report(run_id)
    notebook = Path(files.notebook).resolve()
    return {"run_id": run_id, "notebook": str(notebook),
            "html": None if files.html is None else str(files.html),
            "report_ref": files.report_ref, "lab_path": lab_path(notebook, root_dir),
            "url": f"quantlab/api/runs/{run_id}/report"}


def lab_path(path: Path, root_dir: str | None) -> str | None:
    """``path`` relative to the server's root (what Lab's file browser opens), or None."""
    if not root_dir:
        return None
    try:
        return path.resolve().relative_to(Path(root_dir).resolve()).as_posix()
    except ValueError:
        return None


def report_page(run_id: str) -> str:
    """GET /runs/{id}/report: the run's last report as a web page, read from the registry."""
    ref = jobs.get_run(run_id).record.get("report_ref")
    if not ref:
        raise NotFound(f"run {run_id} has no report yet; make one with the panel's Report "
                       f"button, POST /quantlab/api/runs/{run_id}/report or `quantlab report "
                       f"{run_id}`", run_id=run_id)
    data = open_registry().get_blob(str(ref))
    if str(ref).endswith((".html", ".htm")):
        return data.decode("utf-8")
    # nbconvert is slow to import, and only a report kept as a notebook (not HTML) needs it
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    return str(body)


# -- comparisons -------------------------------------------------------------------------------


def compare_ids(params: Mapping[str, list[str]]) -> list[str]:
    _check_known(params, ("ids",), "GET /quantlab/api/compare")
    ids = [v.strip() for raw in params.get("ids", []) for v in raw.split(",") if v.strip()]
    if len(ids) < 2:
        raise ConfigError(f"compare needs 2 to {MAX_COMPARE} run ids, got {len(ids)}; call "
                          f"GET /quantlab/api/compare?ids=<id>,<id>", field="ids")
    return ids


def compare(params: Mapping[str, list[str]], dashboard: str | None = None) -> dict[str, Any]:
    """GET /compare?ids=a,b: the comparison's metrics, saved so the dashboard can open it.
    Comparing the same runs again reuses their saved comparison (a panel click must not add a
    document each time). ``dashboard_url`` opens it on ``dashboard`` (the compare dashboard
    this server serves, when given); ``standalone_url`` on ``quantlab dashboard compare``'s
    address (``$QUANTLAB_DASHBOARD_URL``), the link for people without the Lab."""
    ids = compare_ids(params)
    comparison = analytics.compare(ids)
    comparison.id = next((doc["id"] for doc in analytics.saved_comparisons(limit=1000)
                          if doc.get("run_ids") == list(comparison.run_ids)), None)
    comparison_id = comparison.save()
    metrics = comparison.metrics
    rows = {str(index): dict(row) for index, row in metrics.iterrows()}
    return json_safe({"id": comparison_id, "run_ids": list(comparison.run_ids),
                      "labels": dict(comparison.labels), "metrics": rows,
                      "dashboard_url": analytics.dashboard_url(comparison_id, dashboard),
                      "standalone_url": comparison.url})


# -- notifications -------------------------------------------------------------------------------


def list_notifications(user: str, params: Mapping[str, list[str]]) -> dict[str, Any]:
    _check_known(params, ("unread_only", "limit"), "GET /quantlab/api/notifications")
    unread_only = flag(params, "unread_only")
    limit = _whole_number(params, "limit", 50, 1, MAX_LIMIT)
    items = notifications.list(user, unread_only=unread_only, limit=limit)
    return json_safe({"notifications": items, "user": user})


def mark_notification_read(notification_id: str, user: str) -> dict[str, Any]:
    """POST /notifications/{id}/read by ``user``: only the user it is for, or an admin."""
    if not notifications.mark_read(notification_id, user=user):
        raise NotFound(
            f"there is no notification {notification_id!r}; list them with GET "
            f"/quantlab/api/notifications", notification_id=notification_id)
    return {"id": notification_id, "read": True}


class NotFound(RunError):
    """What was asked for does not exist (a notification, a run's report): answered as 404."""
