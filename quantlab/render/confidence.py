"""The confidence table of a result (``Result.confidence``): shown under the metrics in the
notebook's results view and in the run report."""

from __future__ import annotations

import html
from typing import Any

from quantlab.errors import QuantlabError
from quantlab.metrics import metric_label
from quantlab.render.format import format_metric, html_table

# resamples for a view: the interval's ends move by well under their width from 500 to 1000
VIEW_RESAMPLES = 500


def confidence_html(result: Any, n: int = VIEW_RESAMPLES, level: float = 0.95) -> str:
    """A small table (metric, estimate, lower, upper) of the stationary bootstrap intervals of
    Sharpe, CAGR and max drawdown; '' for a result without an equity curve to resample, and a
    one-line note when the run is too short."""
    find = getattr(result, "confidence", None)
    equity = getattr(result, "equity", None)
    if find is None or equity is None or not len(equity):
        return ""
    try:
        table = find(n=n, level=level, seed=0)
    except QuantlabError as exc:
        return f'<div class="ql-confidence">Confidence: not available ({html.escape(exc.message)})</div>'
    except Exception as exc:  # one part of the view must not break the view
        return (f'<div class="ql-confidence">Confidence: not available '
                f"({html.escape(type(exc).__name__)}: {html.escape(str(exc))})</div>")
    rows = [[metric_label(r.metric), format_metric(r.metric, r.estimate),
             format_metric(r.metric, r.lower), format_metric(r.metric, r.upper)]
            for r in table.itertuples()]
    block = table.attrs.get("block_length")
    note = (f"{level:.0%} intervals, stationary block bootstrap of bar returns ({n} resamples"
            + (f", mean block {block:.1f} bars" if block else "") + "; see docs/research.md)")
    return ('<div class="ql-confidence">'
            + html_table(["metric", "estimate", "lower", "upper"], rows,
                         css_class="ql-confidence-table")
            + f'<div style="font-size:11px;color:#666">{html.escape(note)}</div></div>')
