"""The overfitting report of a sweep: a few numbers, the histogram of the CSCV logits and the
in- vs out-of-sample Sharpe ratios of each split's selected combination (plotly, self-contained:
plotly.js is inlined once per report, no CDN), and the sweep-view badge.

Importing this module plugs the research layer into ``Result.overfitting`` and the HTML view of
``Overfitting`` (the engine and research cannot import render); the ``quantlab`` package
imports it with ``ql.backtest``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from quantlab.errors import ConfigError
from quantlab.hooks import RESEARCH
from quantlab.render.format import format_number
from quantlab.research import VIEW, Overfitting, result_overfitting
from quantlab.research.overfitting import table_dsr

_CSS = ("font-family:sans-serif;font-size:12px;border-collapse:collapse;margin:4px 0")


def trials_text(n_sweep: int, n_trials: int) -> str:
    """``N = 7,925 this sweep / 12,000 all trials so far``."""
    return f"N = {n_sweep:,} this sweep / {n_trials:,} all trials so far"


def badge_html(summary: Mapping[str, Any] | None) -> str:
    """The small block shown beside a sweep's heatmap: PBO, DSR of the best, N."""
    if not summary:
        return ""
    pbo = summary.get("pbo")
    color = "#2e7d32" if pbo is not None and pbo < 0.2 else (
        "#c62828" if pbo is not None and pbo >= 0.5 else "#ef6c00")
    n = trials_text(int(summary.get("n_sweep") or 0), int(summary.get("n_trials") or 0))
    return (f"<div class='ql-overfit' style='{_CSS};border:1px solid #ddd;padding:4px 8px'>"
            f"<b style='color:{color}'>PBO {format_number(pbo)}</b> · DSR of best "
            f"{format_number(summary.get('dsr_best'))} · degradation {format_number(summary.get('degradation'))}"
            f" · P(OOS loss) {format_number(summary.get('p_loss'))}<br><small>{html.escape(n)} · "
            f"CSCV over {summary.get('blocks')} blocks</small></div>")


def sweep_view(result: Any) -> tuple[pd.DataFrame, str]:
    """A sweep's table with a ``dsr`` column (its rows ranked by it in the results view) and
    the PBO badge shown beside its heatmap. A queued sweep brings its stored summary; a sweep
    run in this process computes it once (``result.overfitting()``) and keeps it."""
    table = result.table
    summary = getattr(result, "overfitting_summary", None)
    if summary is None and getattr(result, "_source", None) is not None:
        try:
            summary = result.overfitting().summary()
            result.overfitting_summary = summary
        except ConfigError:  # too few bars for the blocks: no PBO, DSR still shown
            summary = None
    needed = {"sharpe", "sharpe_se"}
    if table is None or not needed <= set(table.columns):
        return table, badge_html(summary)
    ppy = float((getattr(result, "config", None) or {}).get("periods_per_year") or 1.0)
    summary = summary or {}
    dsr = table_dsr(table, ppy, summary.get("n_trials"), summary.get("sr_variance"))
    return table.assign(dsr=dsr), badge_html(summary)


def figures(ov: Overfitting) -> tuple[Any, Any]:
    """(histogram of the logits, scatter of in- vs out-of-sample per-bar SR)."""
    import plotly.graph_objects as go  # plotly loads only when a report is drawn

    hist = go.Figure(go.Histogram(x=ov.logits, nbinsx=40, marker_color="#5c6bc0"))
    hist.add_vline(x=0.0, line_dash="dash", line_color="#c62828")
    hist.update_layout(title=f"Logits λ of {len(ov.logits):,} splits (PBO = share ≤ 0)",
                       xaxis_title="λ = ln(ω / (1 − ω))", yaxis_title="splits",
                       width=460, height=320, margin=dict(l=50, r=10, t=40, b=40))
    scatter = go.Figure(go.Scattergl(x=ov.is_sr, y=ov.oos_sr, mode="markers",
                                     marker=dict(size=4, opacity=0.5, color="#26a69a")))
    scatter.update_layout(
        title=f"Selected combination: in vs out of sample (slope {format_number(ov.degradation)})",
        xaxis_title="in-sample SR (per bar)", yaxis_title="out-of-sample SR (per bar)",
        width=460, height=320, margin=dict(l=50, r=10, t=40, b=40))
    return hist, scatter


def overfitting_html(ov: Overfitting) -> str:
    """The notebook view of an :class:`Overfitting`."""
    import plotly.io as pio

    hist, scatter = figures(ov)
    top = ov.table.sort_values("dsr", ascending=False, kind="stable").head(5)
    rows = "".join(
        "<tr>" + "".join(f"<td style='padding:1px 6px'>{html.escape(_cell(v))}</td>"
                         for v in row) + "</tr>"
        for row in top.itertuples(index=False, name=None))
    head = "".join(f"<th style='padding:1px 6px'>{html.escape(str(c))}</th>" for c in top.columns)
    summary = {**ov.summary()}
    return (
        "<div class='ql-overfitting'>"
        f"{badge_html(summary)}"
        f"<div style='display:flex;flex-wrap:wrap;gap:8px'>"
        f"{pio.to_html(hist, include_plotlyjs=True, full_html=False)}"
        f"{pio.to_html(scatter, include_plotlyjs=False, full_html=False)}</div>"
        f"<table style='{_CSS}'><caption style='text-align:left'>Best by deflated Sharpe "
        f"(SR0 = {format_number(ov.sr0, 4)} per bar)</caption><tr>{head}</tr>{rows}</table></div>")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value, 4)
    return str(value)


# the research layer plugged into the engine's Result and its own view
RESEARCH.overfitting = result_overfitting
VIEW.html = overfitting_html

__all__ = ["badge_html", "figures", "overfitting_html", "sweep_view", "trials_text"]
