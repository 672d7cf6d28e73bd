"""The results views of a walk-forward analysis and of a combinatorial purged cross-validation
(``ql.walk_forward``, ``ql.cross_validate``, and a queued run with ``walk_forward:`` or
``cross_validate:``; docs/research.md).

Walk-forward: the folds table, the stitched out-of-sample equity with the folds' boundaries,
the params chosen per fold and in- vs out-of-sample ``select`` per fold. Cross-validation: the
paths' out-of-sample Sharpe ratios as a histogram and a summary table, then the splits.

Importing this module fills :data:`quantlab.research.walkforward.VIEW` (the research layer's
hook: it cannot import render), so that ``WalkForward._repr_html_`` / ``.figure()`` and
``CrossValidation``'s are these views; the notebook's run widget shows the same HTML when a
queued run of either kind ends.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from quantlab.render.figures import color, figure_html, time_breaks
from quantlab.render.format import format_number, frame_html, html_table, metrics_table_html
from quantlab.research.crossval import CrossValidation
from quantlab.research.walkforward import VIEW, WalkForward

EQUITY_TRACE = "out-of-sample equity"
HISTOGRAM_TRACE = "path Sharpe"


# ------------------------------------------------------------------------------ walk-forward


def walk_forward_figure(wf: WalkForward) -> go.Figure:
    """Rows: the stitched out-of-sample equity (a dotted line at each fold's test start), one
    step line per param (the value chosen for each test window) and the in- and out-of-sample
    ``select`` of each fold side by side."""
    names = list(wf.param_names)
    rows = 2 + len(names)
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.06,
                        row_heights=[3] + [1] * len(names) + [1.5],
                        subplot_titles=["out-of-sample equity (folds chained)",
                                        *[f"chosen {n}" for n in names],
                                        f"{wf.select} per fold: in vs out of sample"])
    folds = wf.folds
    fig.add_trace(go.Scatter(x=wf.equity.index, y=wf.equity.to_numpy(), name=EQUITY_TRACE,
                             mode="lines", line={"width": 1.5, "color": color(0)}),
                  row=1, col=1)
    for start in folds["test_start"].iloc[1:]:
        fig.add_vline(x=start, line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=1)
    for k, name in enumerate(names, start=2):
        # a param holds from its fold's test start to the next: a step line
        x = [*folds["test_start"], folds["test_end"].iloc[-1]]
        y = [*folds[name], folds[name].iloc[-1]]
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers",
                                 line={"shape": "hv", "color": color(k - 1)}), row=k, col=1)
    labels = [f"fold {int(f)}" for f in folds["fold"]]
    for i, side in enumerate(("is", "oos")):
        label = "in-sample" if side == "is" else "out-of-sample"
        fig.add_trace(go.Bar(x=labels, y=folds[f"{side}_{wf.select}"].to_numpy(),
                             name=f"{label} {wf.select}", marker={"color": color(i + 1)}),
                      row=rows, col=1)
    fig.update_layout(height=340 + 110 * len(names) + 160, template="plotly_white",
                      barmode="group", showlegend=False,
                      margin={"l": 60, "r": 20, "t": 50, "b": 30},
                      title={"text": _wf_title(wf), "x": 0.01})
    for row in range(1, rows):  # the time rows share the test windows' dates
        fig.update_xaxes(matches="x", row=row, col=1,
                         rangebreaks=time_breaks(pd.DatetimeIndex(wf.equity.index)))
    return fig


def _wf_title(wf: WalkForward) -> str:
    done = (f"{len(wf.folds)} of {wf.n_folds} folds (stopped: partial)" if wf.partial
            else f"{len(wf.folds)} folds")
    return f"Walk-forward: {done}, chosen by {wf.select}"


def walk_forward_parts(wf: WalkForward) -> tuple[str, go.Figure, str]:
    """The view's parts: the headline with the out-of-sample metrics, the figure, the folds
    table (the run widget shows the figure as plotly's own output)."""
    head = (f"<p><b>Walk-forward</b>: {html.escape(_wf_title(wf).split(': ', 1)[1])}; "
            f"out-of-sample Sharpe {format_number(wf.metrics.get('sharpe'))}, total return "
            f"{format_number(wf.metrics.get('total_return_pct'), 2)}%, efficiency "
            f"{format_number(wf.efficiency)}</p>{metrics_table_html(wf.metrics)}")
    return head, walk_forward_figure(wf), frame_html(wf.folds)


def walk_forward_html(wf: WalkForward) -> str:
    """The notebook view: a headline, the out-of-sample metrics, the figure, the folds."""
    head, fig, table = walk_forward_parts(wf)
    return (f'<div class="ql-walkforward">{head}{figure_html(fig, include_plotlyjs=True)}'
            f"{table}</div>")


# ------------------------------------------------------------------------------ cross-validation


def cross_validation_figure(cv: CrossValidation) -> go.Figure:
    """The paths' out-of-sample Sharpe ratios as a histogram, the median marked."""
    fig = go.Figure(go.Histogram(x=cv.sharpe, name=HISTOGRAM_TRACE,
                                 marker={"color": color(0)}))
    if len(cv.sharpe):
        fig.add_vline(x=float(np.median(cv.sharpe)), line={"color": color(1), "dash": "dash"},
                      annotation_text="median")
    fig.update_layout(template="plotly_white", height=320, showlegend=False,
                      title={"text": "Combinatorial purged CV: out-of-sample Sharpe per path",
                             "x": 0.01},
                      xaxis_title="annualised Sharpe ratio", yaxis_title="paths",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def cross_validation_summary(cv: CrossValidation) -> pd.DataFrame:
    """The summary table: the paths' Sharpe ratios (count, mean, std, min, median, max, share
    negative) and the split's settings."""
    found = cv.summary()
    rows = [("paths", found["paths"]), ("mean Sharpe", found["mean"]),
            ("std of Sharpe", found["std"]), ("min Sharpe", found["min"]),
            ("median Sharpe", found["median"]), ("max Sharpe", found["max"]),
            ("share of paths with Sharpe < 0", found["p_negative"]),
            ("groups (N)", cv.n_groups), ("test groups (k)", cv.test_groups),
            ("splits", f"{len(cv.splits)} of {cv.n_splits}"), ("purge (bars)", cv.purge),
            ("embargo (bars)", cv.embargo)]
    return pd.DataFrame(rows, columns=["statistic", "value"])


def cross_validation_parts(cv: CrossValidation) -> tuple[str, go.Figure, str]:
    """The view's parts: the headline with the summary table, the histogram, the splits."""
    stopped = (f" · <b>partial</b>: {len(cv.splits)} of {cv.n_splits} splits finished"
               if cv.partial else "")
    head = (f"<p><b>Combinatorial purged cross-validation</b>: N = {cv.n_groups} groups, "
            f"k = {cv.test_groups} test groups, purge {cv.purge} bars, embargo {cv.embargo} "
            f"bars{stopped}</p>")
    summary = cross_validation_summary(cv)
    table = html_table(["statistic", "value"], summary.itertuples(index=False, name=None))
    splits = cv.splits.copy()
    if "test_groups" in splits:
        splits["test_groups"] = [", ".join(map(str, t)) for t in splits["test_groups"]]
    return head + table, cross_validation_figure(cv), frame_html(splits)


def cross_validation_html(cv: CrossValidation) -> str:
    """The notebook view: a headline, the summary table, the histogram, the splits."""
    head, fig, splits = cross_validation_parts(cv)
    return (f'<div class="ql-crossval">{head}{figure_html(fig, include_plotlyjs=True)}'
            f"{splits}</div>")


# ------------------------------------------------------------------------------ dispatch


def validation_figure(found: Any) -> go.Figure:
    if isinstance(found, CrossValidation):
        return cross_validation_figure(found)
    return walk_forward_figure(found)


def validation_parts(found: Any) -> tuple[str, go.Figure, str]:
    if isinstance(found, CrossValidation):
        return cross_validation_parts(found)
    return walk_forward_parts(found)


def validation_html(found: Any) -> str:
    if isinstance(found, CrossValidation):
        return cross_validation_html(found)
    return walk_forward_html(found)


# the research layer's objects get their views from here
VIEW.html = validation_html
VIEW.figure = validation_figure

__all__ = ["cross_validation_figure", "cross_validation_html", "cross_validation_parts",
           "cross_validation_summary", "validation_figure", "validation_html",
           "validation_parts", "walk_forward_figure", "walk_forward_html", "walk_forward_parts"]
