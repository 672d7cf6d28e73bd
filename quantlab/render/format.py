"""Number, metric and duration formats and small HTML tables, shared by the widget, the results
view, the line magics, the reports, the dashboards and the server. Everything returned as HTML
has user-provided text escaped.

Metric labels, units and directions are not declared here: they come from
:data:`quantlab.metrics.METRIC_INFO`."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from quantlab.metrics import BARS, CASH, COUNT, PERCENT, metric_info, metric_label

__all__ = ["CELL_STYLE", "HEADLINE_METRICS", "HEAD_STYLE", "METRIC_GROUPS", "TABLE_CSS",
           "TABLE_STYLE", "format_cell", "format_count", "format_metric",
           "frame_html", "headline", "html_table", "is_number", "metric_label",
           "metrics_table_html", "status_badge", "status_color"]

# Groups in the order a researcher reads a tear sheet; metrics not listed go under "Other".
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "Returns": ("total_return_pct", "cagr_pct", "buy_hold_return_pct", "equity_final"),
    "Risk": ("sharpe", "sharpe_se", "psr", "sortino", "calmar", "max_drawdown_pct",
             "max_drawdown_duration", "volatility_ann_pct"),
    "Trades": ("n_trades", "win_rate_pct", "profit_factor", "expectancy_pct", "best_trade_pct",
               "worst_trade_pct", "avg_trade_pct", "exposure_pct", "open_trades", "commissions",
               "rejected_orders"),
}

HEADLINE_METRICS = ("total_return_pct", "sharpe", "max_drawdown_pct", "n_trades",
                    "win_rate_pct")

# Inline styles for tables built by hand elsewhere (reports, dashboards), matching html_table's.
TABLE_STYLE = "border-collapse:collapse;font-size:12px;font-family:sans-serif;"
CELL_STYLE = "padding:2px 8px;border-bottom:1px solid #eee;text-align:right;"
HEAD_STYLE = "padding:2px 8px;border-bottom:1px solid #999;text-align:right;font-weight:bold;"

# One small style sheet per table, scoped by the ``ql-t`` class, instead of a style attribute on
# every cell: a 200-row trades table stays a few tens of kilobytes in the saved widget state.
TABLE_CSS = (
    "<style>.ql-t{border-collapse:collapse;font-size:12px;font-family:sans-serif}"
    ".ql-t td,.ql-t th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}"
    ".ql-t th{border-bottom:1px solid #999;font-weight:bold}.ql-t .l{text-align:left}</style>"
)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def format_number(value: Any, digits: int = 3) -> str:
    """A statistic with ``digits`` decimals (a PBO, a Sharpe ratio), ``—`` when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def format_metric(name: str, value: Any) -> str:
    """A metric as a researcher reads it: ``12.34 %``, ``1.52``, ``153``, ``—`` when undefined."""
    if value is None:
        return "—"
    if not is_number(value):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "—"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    unit = metric_info(name).unit
    if unit == PERCENT:
        return f"{number:,.2f} %"
    if unit in (COUNT, BARS) or isinstance(value, int | np.integer):
        return f"{int(number):,}"
    if unit == CASH:
        return f"{number:,.2f}"
    return f"{number:,.3f}"


def format_cell(value: Any) -> str:
    """A table cell: numbers compact, timestamps without a zero time, NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M").removesuffix(" 00:00")
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "—"
        magnitude = abs(float(value))
        if magnitude and (magnitude >= 1e6 or magnitude < 1e-3):
            return f"{float(value):.4g}"
        return f"{float(value):,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _fixed(value: Any, decimals: int) -> Any:
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return f"{float(value):,.{decimals}f}"
    return value


def html_table(
    header: Sequence[str] | list[str],
    rows: Iterable[Sequence[Any]],
    *,
    highlight: Mapping[tuple[int, int], str] | None = None,
    left_columns: int = 1,
    css_class: str = "ql-table",
    html_columns: Collection[int] = (),
) -> str:
    """A compact HTML table; cells are escaped; ``highlight`` maps (row, col) to a CSS style.
    ``html_columns``: columns whose cells are already HTML (e.g. status badges), put in as is
    so that they land in their own cell, never in another cell with the same text."""
    highlight = highlight or {}
    left = ' class="l"'
    head = "".join(
        f"<th{left if i < left_columns else ''}>{html.escape(str(h))}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            text = value if isinstance(value, str) else format_cell(value)
            klass = left if c < left_columns else ""
            style = f' style="{highlight[(r, c)]}"' if (r, c) in highlight else ""
            shown = text if c in html_columns else html.escape(text)
            cells.append(f"<td{klass}{style}>{shown}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'{TABLE_CSS}<table class="ql-t {css_class}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def metrics_table_html(metrics: Mapping[str, Any]) -> str:
    """The key metrics, grouped side by side (Returns | Risk | Trades | Other)."""
    seen: set[str] = set()
    columns: list[tuple[str, list[str]]] = []
    for group, names in METRIC_GROUPS.items():
        present = [n for n in names if n in metrics]
        seen.update(present)
        if present:
            columns.append((group, present))
    others = sorted(n for n in metrics if n not in seen and is_number(metrics[n]))
    if others:
        columns.append(("Other", others))
    blocks = []
    for group, shown in columns:
        rows = [(metric_label(n), format_metric(n, metrics[n])) for n in shown]
        table = html_table([group, ""], rows, css_class="ql-metrics")
        blocks.append(f'<div style="margin-right:24px">{table}</div>')
    return ('<div class="ql-metrics-block" style="display:flex;flex-wrap:wrap;'
            'align-items:flex-start">' + "".join(blocks) + "</div>")


def frame_html(frame: pd.DataFrame, *, max_rows: int = 200, index: bool = False,
               left_columns: int = 1, decimals: int | None = None) -> str:
    """A DataFrame as a compact table, truncated to ``max_rows`` with a note saying so;
    ``decimals`` fixes the decimals of float cells (prices, P&L), else they are compact."""
    shown = frame.head(max_rows)
    header = [str(shown.index.name or "")] if index else []
    header += [str(c) for c in shown.columns]
    rows = []
    for idx, row in zip(shown.index, shown.itertuples(index=False)):
        values = [_fixed(v, decimals) for v in row] if decimals is not None else list(row)
        rows.append(([idx] if index else []) + values)
    note = ""
    if len(frame) > max_rows:
        note = (f'<div style="font-size:11px;color:#666">showing {max_rows} of {len(frame):,} '
                "rows; the full table is on the result object</div>")
    return html_table(header, rows, left_columns=left_columns) + note


def status_color(status: str) -> str:
    return {
        "queued": "#6c757d",
        "running": "#1f77b4",
        "completed": "#2ca02c",
        "failed": "#d62728",
        "cancelled": "#ff7f0e",
    }.get(status, "#6c757d")


def status_badge(status: str, extra: str = "") -> str:
    label = html.escape(status + (f" {extra}" if extra else ""))
    return (f'<span class="ql-status ql-status-{html.escape(status)}" style="background:'
            f'{status_color(status)};color:white;border-radius:3px;padding:1px 6px;'
            f'font-size:11px">{label}</span>')


def format_count(value: int | None) -> str:
    """``950``, ``12.3 k``, ``1.2 M``."""
    if value is None:
        return "—"
    if value >= 1_000_000:
        return f"{value / 1e6:.1f} M"
    if value >= 10_000:
        return f"{value / 1e3:.1f} k"
    return f"{value:,}"


def headline(metrics: Mapping[str, Any], names: Sequence[str] = HEADLINE_METRICS) -> str:
    """``Total return 12.3 % · Sharpe 1.21 · ...`` for one-line summaries."""
    return " · ".join(f"{metric_label(n)} {format_metric(n, metrics[n])}"
                      for n in names if n in metrics and is_number(metrics[n]))


# The warning shown wherever a run is shown (widget, results, report, Lab panel) when it was
# submitted with ``audit: false``; the panel (extension/src/format.ts) spells the same words.
AUDIT_SKIPPED = "look-ahead audit skipped"


def audit_skipped(config: Any) -> bool:
    """Whether a run's stored config skipped the look-ahead audit (``audit: false``)."""
    return isinstance(config, Mapping) and config.get("audit") is False


def audit_badge(config: Any) -> str:
    """A warning badge for a run submitted without the look-ahead audit; '' otherwise."""
    if not audit_skipped(config):
        return ""
    return (' <span class="ql-audit-skipped" title="submitted with audit: false: its strategy '
            'was not checked for look-ahead" style="background:#ff7f0e;color:white;'
            f'border-radius:3px;padding:1px 6px;font-size:11px">&#9888; {AUDIT_SKIPPED}</span>')
