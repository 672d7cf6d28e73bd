"""Static SVG charts shared by comparisons, run reports and the Voila dashboards.

Single-series charts and heatmaps come from :mod:`quantlab.render.svg` (the results view's
look); this module adds what comparing and summarising runs needs: several curves on one axis
with a legend, and a bar chart (histograms, monthly counts). Hand-made SVG for the same reasons
as there: it renders offline in Voila, static HTML and executed notebooks, weighs kilobytes,
and needs no plotting dependency.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

from quantlab.render.svg import (
    MAX_LINE_POINTS,
    Frame,
    _svg_open,
    _text,
    _x_axis,
    _y_axis,
    extreme_positions,
    nice_ticks,
)

# Colour-blind-safe palette (Okabe-Ito); a comparison has at most five runs.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows holding each line's bucket minima and maxima (as the results view reduces a
    single curve), so that troughs and peaks survive; the first and last rows are kept so
    that curves span the data."""
    if len(frame) <= MAX_LINE_POINTS:
        return frame
    values = frame.to_numpy()
    keep = {0, len(frame) - 1}
    for column in values.T:
        keep.update(extreme_positions(column).tolist())
    return frame.iloc[sorted(keep)]


def multi_line_chart(
    frame: pd.DataFrame,
    *,
    title: str,
    labels: Sequence[str] | None = None,
    width: int = 760,
    height: int = 280,
    value_format: str = "{:,.1f}",
    baseline: float | None = None,
) -> str:
    """One line per column of ``frame`` (DatetimeIndex), a legend naming them, and a dashed
    ``baseline`` (e.g. 100 for rebased curves, 0 for drawdowns)."""
    names = [str(c) for c in frame.columns] if labels is None else [str(x) for x in labels]
    box = Frame(width, height, top=24 + 16 * ((len(names) + 2) // 3))
    parts = [_svg_open(box, title)]
    data = _thin(frame.astype(np.float64))
    values = data.to_numpy()
    finite = values[np.isfinite(values)]
    if data.empty or finite.size == 0:
        return parts[0] + _text(box.left, box.top + 30, "no data to plot") + "</svg>"
    y_low, y_high = float(finite.min()), float(finite.max())
    if baseline is not None:
        y_low, y_high = min(y_low, baseline), max(y_high, baseline)
    if y_high == y_low:
        pad = abs(y_high) * 0.01 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    index = pd.DatetimeIndex(data.index)
    xs = index.asi8.astype(np.float64)
    x_low, x_high = xs[0], max(xs[-1], xs[0] + 1)

    def px(x: np.ndarray | float) -> np.ndarray:
        return box.left + (np.asarray(x) - x_low) / (x_high - x_low) * box.inner_width

    def py(y: np.ndarray | float) -> np.ndarray:
        return box.top + (y_high - np.asarray(y)) / (y_high - y_low) * box.inner_height

    parts.append(_y_axis(box, y_low, y_high, py, value_format))
    parts.append(_x_axis(box, index[0], index[-1], px))
    if baseline is not None and y_low < baseline < y_high:
        by = float(py(baseline))
        parts.append(f'<line x1="{box.left}" x2="{box.left + box.inner_width}" y1="{by:.1f}" '
                     f'y2="{by:.1f}" stroke="#888" stroke-dasharray="3,3"/>')
    x_pixels = px(xs)
    for i, name in enumerate(names):
        column = values[:, i]
        ok = np.isfinite(column)
        if not ok.any():
            continue
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(x_pixels[ok], py(column[ok])))
        last = column[ok][-1]
        parts.append(
            f'<polyline class="ql-line" points="{coords}" fill="none" stroke="{color(i)}" '
            f'stroke-width="1.5" stroke-linejoin="round"><title>{html.escape(name)}: last '
            f"{html.escape(value_format.format(last))}</title></polyline>"
        )
    parts.append(_legend(names, box))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str], box: Frame) -> str:
    parts = []
    column_width = box.inner_width / 3
    for i, name in enumerate(names):
        x = box.left + (i % 3) * column_width
        y = 20 + 16 * (i // 3) + 12
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="12" height="4" fill="{color(i)}"/>')
        parts.append(_text(x + 16, y - 3, name[:48], extra='fill="#333"'))
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    width: int = 760,
    height: int = 240,
    value_format: str = "{:,.0f}",
    colors: Sequence[str] | None = None,
) -> str:
    """Vertical bars, one per label, each with its value as a tooltip and, when there is room,
    printed above it. Negative values hang below a zero line."""
    box = Frame(width, height, top=36, bottom=40)
    parts = [_svg_open(box, title)]
    numbers = np.asarray(values, dtype=np.float64)
    if numbers.size == 0:
        return parts[0] + _text(box.left, box.top + 30, "no data to plot") + "</svg>"
    finite = numbers[np.isfinite(numbers)]
    y_low = min(0.0, float(finite.min()) if finite.size else 0.0)
    y_high = max(0.0, float(finite.max()) if finite.size else 0.0)
    if y_high == y_low:
        y_high = y_low + 1.0

    def py(y: float) -> float:
        return box.top + (y_high - y) / (y_high - y_low) * box.inner_height

    ticks = nice_ticks(y_low, y_high)
    if finite.size and np.all(finite == np.round(finite)):  # counts: whole-number ticks only
        ticks = [t for t in ticks if float(t).is_integer()]
    for tick in ticks:
        y = py(tick)
        parts.append(f'<line x1="{box.left}" x2="{box.left + box.inner_width}" y1="{y:.1f}" '
                     f'y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(box.left - 6, y + 4, value_format.format(tick), anchor="end",
                           extra='fill="#555"'))
    slot = box.inner_width / len(numbers)
    zero = py(0.0)
    label_every = max(1, int(np.ceil(40 / slot)))
    for i, (label, value) in enumerate(zip(labels, numbers)):
        x = box.left + i * slot + slot * 0.1
        shown = value if np.isfinite(value) else 0.0
        top, bottom = sorted((py(shown), zero))
        fill = colors[i] if colors is not None else color(0)
        tip = f"{label}: {value_format.format(value) if np.isfinite(value) else 'n/a'}"
        parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{max(bottom - top, 0.5):.1f}" fill="{fill}"><title>{html.escape(tip)}'
            f"</title></rect>"
        )
        if slot >= 28 and np.isfinite(value):
            parts.append(_text(x + slot * 0.4, top - 3, value_format.format(value),
                               anchor="middle", extra='font-size="10" fill="#333"'))
        if i % label_every == 0:
            parts.append(_text(x + slot * 0.4, box.top + box.inner_height + 16, str(label),
                               anchor="middle", extra='fill="#555"'))
    parts.append(f'<line x1="{box.left}" x2="{box.left + box.inner_width}" y1="{zero:.1f}" '
                 f'y2="{zero:.1f}" stroke="#999"/>')
    parts.append("</svg>")
    return "".join(parts)
