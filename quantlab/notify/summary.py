"""What a notification says about a run: one summary shared by webhooks, email and in-app."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quantlab.metrics import PERCENT, metric_info, metric_label

#: The metrics a notification shows, in this order (all of them are in the webhook payload).
KEY_METRICS: tuple[str, ...] = (
    "total_return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "max_drawdown_pct",
    "win_rate_pct",
    "n_trades",
    "profit_factor",
    "exposure_pct",
    "equity_final",
)
_EVENT_WORDS = {"completed": "completed", "failed": "failed", "cancelled": "was cancelled"}


def is_sweep(run: Mapping[str, Any]) -> bool:
    """A run over more than one parameter set (lists or ranges in ``config.params``)."""
    for key in ("n_combinations", "combinations"):  # a count, or the list of parameter sets
        count = run.get(key)
        if isinstance(count, list | tuple):
            return len(count) > 1
        if isinstance(count, int) and not isinstance(count, bool):
            return count > 1
    if run.get("sweep") is not None:
        return bool(run.get("sweep"))
    config = run.get("config") or {}
    params = config.get("params") if isinstance(config, Mapping) else None
    if not isinstance(params, Mapping):
        return False
    return any(isinstance(value, list | tuple | Mapping) and len(value) > 1
               for value in params.values())


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def format_metric(name: str, value: Any) -> str:
    """A metric as a notification's one-liner shows it: ``23.46%``, ``1.73``, ``25``, two
    decimals (the label, unit and whole-number-ness come from :mod:`quantlab.metrics`)."""
    number = _number(value)
    if number is None:
        return "—"
    info = metric_info(name)
    if info.whole:
        return f"{number:,.0f}"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    return f"{number:,.2f}{'%' if info.unit == PERCENT else ''}"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    user: str | None
    event: str  # completed | failed | cancelled | test
    status: str
    strategy: str | None
    symbols: list[str]
    tags: list[str]
    sweep: bool
    partial: bool
    error: str | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    best_params: dict[str, Any] | None = None  # a sweep's best parameter set

    @property
    def duration(self) -> float | None:
        """Seconds the run took: from start (or queueing, if it never started) to its end."""
        begin = self.started_at if self.started_at is not None else self.queued_at
        if begin is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - begin)

    @property
    def title(self) -> str:
        if self.event == "test":
            return "QuantLab test notification"
        word = _EVENT_WORDS.get(self.event, self.event)
        kind = "Sweep" if self.sweep else "Run"
        return f"{kind} '{self.name}' {word}"

    def headline(self) -> str:
        """One line: the title and the metrics people look at first (or the error)."""
        if self.event == "failed":
            return f"{self.title}: {self.error or 'no error message'}"
        shown = [f"{metric_label(n)} {format_metric(n, self.metrics.get(n))}"
                 for n in ("total_return_pct", "sharpe", "max_drawdown_pct")
                 if self.metrics.get(n) is not None]
        extra = " (partial results)" if self.partial else ""
        return self.title + extra + (": " + ", ".join(shown) if shown else "")

    def to_payload(self) -> dict[str, Any]:
        """The JSON document a webhook receives (without the delivery fields)."""
        return {
            "type": f"run.{self.event}",
            "event": self.event,
            "run": {
                "id": self.run_id,
                "name": self.name,
                "user": self.user,
                "status": self.status,
                "strategy": self.strategy,
                "symbols": self.symbols,
                "tags": self.tags,
                "sweep": self.sweep,
                "partial": self.partial,
                "error": self.error,
                "queued_at": self.queued_at,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "duration_s": self.duration,
                "best_params": self.best_params,
            },
            # JSON has no infinity (a profit factor without losing trades): send null.
            "metrics": {name: value if value is None or math.isfinite(value) else None
                        for name, value in self.metrics.items()},
            "links": self.links,
        }


def run_links(run_id: str, public_url: str | None) -> dict[str, str]:
    """Links to the run in the QuantLab server (``QUANTLAB_PUBLIC_URL``), when one is set."""
    if not public_url:
        return {}
    base = public_url.rstrip("/")
    return {
        "run": f"{base}/quantlab/runs/{run_id}",
        "api": f"{base}/quantlab/api/runs/{run_id}",
    }


def summarize(run: Mapping[str, Any], event: str, *, public_url: str | None = None) -> RunSummary:
    """Summarise a registry run document for a notification about ``event``."""
    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    assert isinstance(config, Mapping)
    metrics = run.get("metrics") if isinstance(run.get("metrics"), Mapping) else {}
    assert isinstance(metrics, Mapping)
    run_id = str(run.get("id") or run.get("_id") or "")
    symbols = config.get("symbols") or run.get("symbols") or []
    if isinstance(symbols, str):
        symbols = [symbols]
    return RunSummary(
        run_id=run_id,
        name=str(run.get("name") or config.get("name") or run_id),
        user=run.get("user"),
        event=event,
        status=str(run.get("status") or event),
        strategy=config.get("strategy") or run.get("strategy"),
        symbols=[str(s) for s in symbols],
        tags=[str(t) for t in (run.get("tags") or config.get("tags") or [])],
        sweep=is_sweep(run),
        partial=bool(run.get("partial")),
        error=_error_text(run.get("error")),
        queued_at=_number(run.get("queued_at")),
        started_at=_number(run.get("started_at")),
        finished_at=_number(run.get("finished_at")),
        metrics={name: _number(metrics.get(name)) for name in KEY_METRICS if name in metrics},
        links=run_links(run_id, public_url),
        best_params=dict(best) if isinstance(best := run.get("best_params"), Mapping) else None,
    )


def _error_text(error: Any) -> str | None:
    if error is None or error == "":
        return None
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("error")
        kind = error.get("type")
        if message:
            return f"{kind}: {message}" if kind else str(message)
    return str(error)
