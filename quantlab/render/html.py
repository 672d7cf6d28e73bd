"""HTML views of comparisons and statistics, shared by the notebook (``_repr_html_``), the run
reports and the Voila dashboards, so that all three show the same numbers the same way.

Importing this module registers :func:`comparison_html` and :func:`stats_html` as the notebook
views of :class:`~quantlab.analytics.Comparison` and :class:`~quantlab.analytics.Stats` (see
:mod:`quantlab.analytics.views`: analytics does not import its views).

Every function returns an HTML string with user-provided text escaped; each section is its own
function so that a dashboard can redraw one part when a selection changes.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from quantlab.analytics import Comparison, Stats
from quantlab.analytics.comparison import RUN_COLUMNS
from quantlab.analytics.views import register_html_view
from quantlab.metrics import LOWER_IS_BETTER
from quantlab.render.figures import (
    bar_figure,
    color,
    figure_html,
    heat_color,
    lines_figure,
    plotly_js_html,
)
from quantlab.render.format import (
    CELL_STYLE,
    HEAD_STYLE,
    TABLE_STYLE,
    format_metric,
    html_table,
    is_number,
    metric_label,
)

SECTION = 'style="margin:14px 0 4px 0;font-family:sans-serif;font-size:14px"'
NOTE = 'style="font-size:12px;color:#555;font-family:sans-serif;margin:4px 0"'
BEST_STYLE = "font-weight:bold;background:#e8f5e9;"


def h(text: Any) -> str:
    return html.escape(str(text))


def section(title: str, body: str, css_class: str) -> str:
    return f'<div class="{css_class}"><h4 {SECTION}>{h(title)}</h4>{body}</div>'


# --------------------------------------------------------------------------- comparison


# Metrics that describe a run rather than rank it: no "best" value is highlighted.
NEUTRAL_METRICS = frozenset({"n_trades", "open_trades", "exposure_pct", "buy_hold_return_pct"})


def _best_positions(values: list[Any], metric: str) -> set[int]:
    if metric in NEUTRAL_METRICS:
        return set()
    # is_number, not int | float: counts read back from a frame are numpy integers
    numbers = [(i, float(v)) for i, v in enumerate(values) if is_number(v) and math.isfinite(v)]
    if len(numbers) < 2:
        return set()
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(v for _, v in numbers)
    return {i for i, v in numbers if v == best}


def comparison_metrics_html(cmp: Comparison) -> str:
    """Metrics as rows and runs as columns, the best value of each metric highlighted."""
    runs = cmp.run_ids
    header = ["metric", *[cmp.labels[r] for r in runs]]
    rows = []
    highlight: dict[tuple[int, int], str] = {}
    metric_names = [c for c in cmp.metrics.columns if c not in RUN_COLUMNS]
    strategies = [cmp.metrics.loc[r, "strategy"] for r in runs]
    rows.append(["strategy", *[str(s) if s is not None else "—" for s in strategies]])
    combinations = [str(cmp.metrics.loc[r, "combination"] or "") for r in runs]
    if any(combinations):  # a sweep's chosen combination: what it brings to the comparison
        rows.append(["combination", *[c or "—" for c in combinations]])
    for name in metric_names:
        values = [cmp.metrics.loc[r, name] for r in runs]
        r = len(rows)
        for c in _best_positions(values, name):
            highlight[(r, c + 1)] = BEST_STYLE
        rows.append([metric_label(name), *[format_metric(name, v) for v in values]])
    table = html_table(header, rows, highlight=highlight, css_class="ql-compare-metrics")
    return table


def comparison_equity_html(cmp: Comparison) -> str:
    labels = [cmp.labels[r] for r in cmp.equity.columns]
    title = "Equity, rebased to 100"
    if cmp.common_period is not None:
        title += f" on {cmp.common_period[0]:%Y-%m-%d}"
    return figure_html(lines_figure(cmp.equity, title=title, labels=labels, baseline=100.0))


def comparison_underwater_html(cmp: Comparison) -> str:
    under = cmp.drawdowns.underwater
    labels = [cmp.labels[r] for r in under.columns]
    return figure_html(lines_figure(under, title="Drawdown (%)", labels=labels, baseline=0.0,
                                    value_format=",.1f"))


def comparison_drawdowns_html(cmp: Comparison, per_run: int = 3) -> str:
    largest = cmp.drawdowns.largest
    rows = []
    for _, row in largest[largest["rank"] <= per_run].iterrows():
        rows.append([
            cmp.labels[row["run"]], int(row["rank"]), row["start"], row["trough"],
            row["recovery"] if not pd.isna(row["recovery"]) else "not recovered",
            format_metric("depth_pct", row["depth_pct"]), f"{int(row['days']):,}",
        ])
    table = html_table(["run", "#", "peak", "trough", "recovery", "depth", "days"], rows,
                       css_class="ql-compare-drawdowns")
    dd = cmp.drawdowns
    n_days = len(dd.underwater)
    together = dd.together.sort_values("days", ascending=False).head(5)
    if n_days == 0:
        note = "no common dates to compare drawdowns on"
    else:
        note = (f"all runs were in drawdown together on {len(dd.dates):,} of {n_days:,} days "
                f"({dd.together_pct:.1f} %)")
    joint_rows = []
    for _, row in together.iterrows():
        worst = [format_metric("x_pct", row[f"{r}_worst_pct"]) for r in cmp.run_ids]
        joint_rows.append([row["start"], row["end"], f"{int(row['days']):,}", *worst])
    joint = ""
    if joint_rows:
        joint = html_table(["from", "to", "days", *[f"worst: {cmp.labels[r]}"
                                                    for r in cmp.run_ids]],
                           joint_rows, css_class="ql-compare-together")
    return table + f'<p class="ql-together-note" {NOTE}>{h(note)}</p>' + joint


def correlation_html(cmp: Comparison) -> str:
    """The correlation matrix as a table, cells coloured from -1 (red) to +1 (green)."""
    runs = cmp.run_ids
    head = "".join(f'<th style="{HEAD_STYLE}">{h(cmp.labels[r])}</th>' for r in runs)
    body = []
    for a in runs:
        cells = [f'<th style="{HEAD_STYLE}text-align:left">{h(cmp.labels[a])}</th>']
        for b in runs:
            value = float(cmp.correlation.to_numpy()[runs.index(a), runs.index(b)])
            text = "—" if math.isnan(value) else f"{value:.2f}"
            cells.append(f'<td style="{CELL_STYLE}background:{heat_color(value, -1.0, 1.0)}">'
                         f"{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="ql-compare-correlation" style="{TABLE_STYLE}"><thead><tr><th></th>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f'<p {NOTE}>Pearson correlation of daily returns over common dates.</p>')


def config_diff_html(cmp: Comparison) -> str:
    diff = cmp.config_diff
    if diff.empty:
        return f'<p class="ql-compare-config" {NOTE}>The configs are the same.</p>'
    rows = [[key, row["category"], *[row[r] for r in cmp.run_ids]] for key, row in diff.iterrows()]
    return html_table(["setting", "kind", *[cmp.labels[r] for r in cmp.run_ids]], rows,
                      left_columns=2 + len(cmp.run_ids), css_class="ql-compare-config")


def sharpe_tests_html(cmp: Comparison) -> str:
    """Ledoit-Wolf tests of equal Sharpe ratios (Holm-adjusted), and what differs between the
    runs (the run diff of each run against the first)."""
    tests = getattr(cmp, "sharpe_tests", None)
    rows = [[cmp.labels.get(r.a, r.a), cmp.labels.get(r.b, r.b), f"{r.difference:+.2f}",
             f"{r.se:.2f}", f"{r.p_value:.3f}", f"{r.p_holm:.3f}"]
            for r in (tests.itertuples() if tests is not None else [])]
    table = html_table(["run a", "run b", "Sharpe a − b", "s.e.", "p", "p (Holm)"], rows,
                       left_columns=2, css_class="ql-compare-sharpe-tests")
    differs = "".join(
        f"<li>{h(cmp.labels[run_id])}: {h('; '.join(causes) or 'same inputs')}</li>"
        for run_id, causes in cmp.differences().items())
    return (table + f'<p {NOTE}>Ledoit &amp; Wolf (2008) HAC test of equal Sharpe ratios on '
            f"common daily returns; p-values Holm-adjusted over all pairs.</p>"
            f'<ul class="ql-compare-differs" {NOTE}>{differs}</ul>')


def comparison_header_html(cmp: Comparison) -> str:
    legend = " ".join(
        f'<span style="color:{color(i)};font-weight:bold">■</span> {h(cmp.labels[r])} '
        f'<code style="font-size:11px;color:#777">{h(r)}</code>'
        for i, r in enumerate(cmp.run_ids)
    )
    saved = ""
    if cmp.id is not None and cmp.url is not None:
        saved = (f'<p {NOTE}>saved as <code>{h(cmp.id)}</code> · '
                 f'<a href="{h(cmp.url)}" target="_blank">open in the dashboard</a></p>')
    period = ""
    if cmp.common_period is not None:
        period = f"common period {cmp.common_period[0]:%Y-%m-%d} to {cmp.common_period[1]:%Y-%m-%d}"
    else:
        period = "the runs share no dates: curves are rebased on their own first day"
    title = cmp.title or f"Comparison of {len(cmp.run_ids)} runs"
    return (f'<h3 style="font-family:sans-serif;margin:4px 0">{h(title)}</h3>'
            f'<p {NOTE}>{legend}</p><p {NOTE}>{h(period)}</p>{saved}')


def comparison_html(cmp: Comparison, *, plotly_js: bool = True) -> str:
    """The whole comparison; ``plotly_js``: put plotly.js inline first (False where the page
    already has it, as the dashboards do)."""
    return (
        '<div class="ql-comparison">'
        + (plotly_js_html() if plotly_js else "")
        + comparison_header_html(cmp)
        + section("Metrics", comparison_metrics_html(cmp), "ql-section-metrics")
        + section("Equity", comparison_equity_html(cmp), "ql-section-equity")
        + section("Drawdowns", comparison_underwater_html(cmp) + comparison_drawdowns_html(cmp),
                  "ql-section-drawdowns")
        + section("Correlation", correlation_html(cmp), "ql-section-correlation")
        + section("Config differences", config_diff_html(cmp), "ql-section-config")
        + section("Sharpe differences", sharpe_tests_html(cmp), "ql-section-sharpe-tests")
        + "</div>"
    )


# --------------------------------------------------------------------------- statistics


def stats_summary_html(st: Stats) -> str:
    numbers = st.as_dict()
    cells = [
        ("runs", f"{numbers['n_runs']:,}"),
        ("completed", f"{numbers['completed']:,}"),
        ("failed", f"{numbers['failed']:,}"),
        ("cancelled", f"{numbers['cancelled']:,}"),
        ("success rate", format_metric("success_rate_pct", numbers["success_rate_pct"])),
        ("mean return", format_metric("mean_return_pct", numbers["mean_return_pct"])),
        ("median return", format_metric("median_return_pct", numbers["median_return_pct"])),
    ]
    boxes = "".join(
        f'<div class="ql-stat" data-stat="{h(label)}" style="margin:0 18px 6px 0">'
        f'<div style="font-size:11px;color:#666">{h(label)}</div>'
        f'<div class="ql-stat-value" style="font-size:18px;font-weight:bold">{h(value)}</div></div>'
        for label, value in cells
    )
    filters = ", ".join(f"{k}={v}" for k, v in st.filters.items()) or "all runs"
    since = ("all time" if st.since is None
             else f"since {pd.Timestamp(st.since, unit='s', tz='UTC'):%Y-%m-%d}")
    return (f'<p {NOTE}>period {h(st.period)} ({h(since)}), {h(filters)}</p>'
            f'<div class="ql-stats-summary" style="display:flex;flex-wrap:wrap;'
            f'font-family:sans-serif">{boxes}</div>')


def runs_table_html(table: pd.DataFrame, css_class: str) -> str:
    rows = [[row["name"] or row["id"], row["id"], row["strategy"], row["user"],
             format_metric("total_return_pct", row["total_return_pct"]),
             format_metric("sharpe", row["sharpe"]),
             format_metric("max_drawdown_pct", row["max_drawdown_pct"])]
            for _, row in table.iterrows()]
    return html_table(["run", "id", "strategy", "user", "return", "sharpe", "max drawdown"],
                      rows, left_columns=4, css_class=css_class)


def histogram_html(st: Stats) -> str:
    hist = st.histogram()
    labels = [f"{left:.0f}…{right:.0f}" for left, right in zip(hist["left"], hist["right"])]
    colors = ["#d62728" if right <= 0 else "#2ca02c" if left >= 0 else "#999999"
              for left, right in zip(hist["left"], hist["right"])]
    return figure_html(bar_figure(labels, list(hist["count"]),
                                  title="Total return of completed runs (%)", colors=colors))


def monthly_html(st: Stats) -> str:
    monthly = st.monthly()
    if monthly.empty:
        return f'<p {NOTE}>no runs in this period</p>'
    chart = figure_html(bar_figure(list(monthly["month"]), list(monthly["runs"]),
                                   title="Runs per month"))
    rows = [[row["month"], int(row["runs"]), int(row["completed"]), int(row["failed"]),
             format_metric("success_rate_pct", row["success_rate_pct"]),
             format_metric("mean_return_pct", row["mean_return_pct"]),
             format_metric("median_return_pct", row["median_return_pct"]),
             format_metric("sharpe", row["mean_sharpe"])]
            for _, row in monthly.iterrows()]
    table = html_table(["month", "runs", "completed", "failed", "success rate", "mean return",
                        "median return", "mean sharpe"], rows, css_class="ql-stats-monthly")
    return chart + table


def stats_html(st: Stats, *, plotly_js: bool = True) -> str:
    """All the statistics; ``plotly_js`` as for :func:`comparison_html`."""
    return (
        '<div class="ql-stats">'
        + (plotly_js_html() if plotly_js else "")
        + section("Runs", stats_summary_html(st), "ql-section-summary")
        + section("Best runs", runs_table_html(st.best(), "ql-stats-best"), "ql-section-best")
        + section("Worst runs", runs_table_html(st.worst(), "ql-stats-worst"), "ql-section-worst")
        + section("Distribution of returns", histogram_html(st), "ql-section-histogram")
        + section("Monthly trends", monthly_html(st), "ql-section-monthly")
        + "</div>"
    )


register_html_view(Comparison, comparison_html)
register_html_view(Stats, stats_html)
