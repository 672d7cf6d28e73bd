"""Self-contained SVG charts for the results view.

Why hand-made SVG rather than a plotting library: the output must render offline (no CDN) in
JupyterLab, Voila, nbclient-executed notebooks and static HTML exports, weigh a few kilobytes
instead of the megabytes of an inlined plotly.js, and need no extra dependency. Interactivity
comes from two places: every chart carries hover tooltips (SVG ``<title>`` elements, shown by
the browser), and the widgets around the charts (date-range slider, metric/parameter
dropdowns) redraw them.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Enough points for a crisp line at notebook width; more only inflates the output.
MAX_LINE_POINTS = 800
# Hover bands: one tooltip per band; more bands than this make the SVG heavy for no gain.
MAX_HOVER_BANDS = 160
# Above this many heatmap cells, the cells are drawn as one embedded PNG instead of rectangles.
MAX_VECTOR_CELLS = 2500


@dataclass(frozen=True)
class Frame:
    """The plotting area inside an SVG of ``width`` x ``height`` pixels."""

    width: int
    height: int
    left: int = 64
    right: int = 12
    top: int = 24
    bottom: int = 26

    @property
    def inner_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def inner_height(self) -> int:
        return self.height - self.top - self.bottom


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]`` (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _downsample(index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_LINE_POINTS`` points, keeping each bucket's min and max so that
    drawdown troughs and equity peaks survive the reduction."""
    if len(values) <= MAX_LINE_POINTS:
        return index, values
    positions = extreme_positions(values)
    return index[positions], values[positions]


def extreme_positions(values: np.ndarray) -> np.ndarray:
    """The positions :func:`_downsample` keeps: each bucket's min and max."""
    n = len(values)
    buckets = MAX_LINE_POINTS // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for start, stop in itertools.pairwise(edges):
        if stop <= start:
            continue
        chunk = values[start:stop]
        if np.all(np.isnan(chunk)):
            keep.append(int(start))
            continue
        lo = int(start + np.nanargmin(chunk))
        hi = int(start + np.nanargmax(chunk))
        keep.extend(sorted({lo, hi}))
    return np.asarray(keep, dtype=np.int64)


def _date_ticks(start: pd.Timestamp, end: pd.Timestamp, count: int = 6) -> list[pd.Timestamp]:
    span = end - start
    if span <= pd.Timedelta(0):
        return [start]
    if span > pd.Timedelta(days=3 * 365):
        freq = f"{max(1, round(span.days / 365 / count))}YS"
    elif span > pd.Timedelta(days=120):
        freq = f"{max(1, round(span.days / 30 / count))}MS"
    elif span > pd.Timedelta(days=3):
        freq = f"{max(1, round(span.days / count))}D"
    else:
        freq = f"{max(1, round(span.total_seconds() / 3600 / count))}h"
    ticks = pd.date_range(start, end, freq=freq)
    return list(ticks) if len(ticks) else [start]


def _date_label(ts: pd.Timestamp, span: pd.Timedelta) -> str:
    if span > pd.Timedelta(days=3 * 365):
        return ts.strftime("%Y")
    if span > pd.Timedelta(days=3):
        return ts.strftime("%Y-%m-%d")
    return ts.strftime("%m-%d %H:%M")


def line_chart(
    series: pd.Series,
    *,
    title: str,
    width: int = 760,
    height: int = 260,
    color: str = "#1f77b4",
    area: bool = False,
    value_format: str = "{:,.2f}",
    zero_line: bool = False,
) -> str:
    """An SVG line (or area, filled down to zero) chart of a time series, with hover tooltips."""
    frame = Frame(width, height)
    clean = series.dropna()
    header = _svg_open(frame, title)
    if clean.empty:
        return header + _text(frame.left, frame.top + 30, "no data to plot") + "</svg>"
    index = pd.DatetimeIndex(clean.index)
    xs_ns = index.asi8.astype(np.float64)
    ys = clean.to_numpy(dtype=np.float64)
    xs_ns, ys = _downsample(xs_ns, ys)
    y_low, y_high = float(np.min(ys)), float(np.max(ys))
    if area or zero_line:
        y_low, y_high = min(y_low, 0.0), max(y_high, 0.0)
    if y_high == y_low:
        pad = abs(y_high) * 0.01 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    x_low, x_high = xs_ns[0], xs_ns[-1] if xs_ns[-1] > xs_ns[0] else xs_ns[0] + 1

    def px(x: np.ndarray | float) -> np.ndarray | float:
        return frame.left + (np.asarray(x) - x_low) / (x_high - x_low) * frame.inner_width

    def py(y: np.ndarray | float) -> np.ndarray | float:
        return frame.top + (y_high - np.asarray(y)) / (y_high - y_low) * frame.inner_height

    parts = [header]
    parts.append(_y_axis(frame, y_low, y_high, py, value_format))
    start, end = index[0], index[-1]
    parts.append(_x_axis(frame, start, end, px))
    points_x = np.asarray(px(xs_ns))
    points_y = np.asarray(py(ys))
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(points_x, points_y))
    if area:
        base = float(py(0.0))
        polygon = f"{points_x[0]:.1f},{base:.1f} {coords} {points_x[-1]:.1f},{base:.1f}"
        parts.append(f'<polygon points="{polygon}" fill="{color}" fill-opacity="0.25" stroke="none"/>')
    if zero_line and y_low < 0 < y_high:
        zy = float(py(0.0))
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.left + frame.inner_width}" y1="{zy:.1f}" '
            f'y2="{zy:.1f}" stroke="#888" stroke-dasharray="3,3"/>'
        )
    parts.append(
        f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5" '
        f'stroke-linejoin="round"/>'
    )
    parts.append(_hover_bands(frame, clean, px, value_format))
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(frame: Frame, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width}" height="{frame.height}" '
        f'viewBox="0 0 {frame.width} {frame.height}" font-family="sans-serif" font-size="11" '
        f'role="img" aria-label="{html.escape(title)}">'
        f'<text x="{frame.left}" y="15" font-size="12" font-weight="bold">{html.escape(title)}</text>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{html.escape(text)}</text>'
    )


def _y_axis(frame: Frame, low: float, high: float, py: object, value_format: str) -> str:
    parts = []
    for tick in nice_ticks(low, high):
        y = float(py(tick))  # type: ignore[operator]
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.left + frame.inner_width}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        parts.append(_text(frame.left - 6, y + 4, value_format.format(tick), anchor="end",
                           extra='fill="#555"'))
    return "".join(parts)


def _x_axis(frame: Frame, start: pd.Timestamp, end: pd.Timestamp, px: object) -> str:
    baseline = frame.top + frame.inner_height
    parts = [
        f'<line x1="{frame.left}" x2="{frame.left + frame.inner_width}" y1="{baseline}" '
        f'y2="{baseline}" stroke="#999"/>'
    ]
    span = end - start
    for tick in _date_ticks(start, end):
        x = float(px(float(tick.value)))  # type: ignore[operator]
        if frame.left - 1 <= x <= frame.left + frame.inner_width + 1:
            parts.append(_text(x, baseline + 16, _date_label(tick, span), anchor="middle",
                               extra='fill="#555"'))
    return "".join(parts)


def _hover_bands(frame: Frame, series: pd.Series, px: object, value_format: str) -> str:
    """Transparent vertical bands, each with a tooltip giving the date and the value."""
    n = len(series)
    bands = min(n, MAX_HOVER_BANDS)
    edges = np.linspace(0, n, bands + 1).astype(np.int64)
    index = pd.DatetimeIndex(series.index)
    values = series.to_numpy(dtype=np.float64)
    x_positions = np.asarray(px(index.asi8.astype(np.float64)))  # type: ignore[operator]
    parts = ['<g fill="transparent">']
    for start, stop in itertools.pairwise(edges):
        if stop <= start:
            continue
        last = stop - 1
        x0 = float(x_positions[start])
        x1 = float(x_positions[last]) if stop == n else float(x_positions[stop])
        label = f"{index[last]:%Y-%m-%d %H:%M}".removesuffix(" 00:00")
        parts.append(
            f'<rect x="{x0:.1f}" y="{frame.top}" width="{max(x1 - x0, 1.0):.1f}" '
            f'height="{frame.inner_height}"><title>{label}: '
            f"{html.escape(value_format.format(values[last]))}</title></rect>"
        )
    parts.append("</g>")
    return "".join(parts)


def _label(value_format: str, value: float) -> str:
    """``value`` formatted, without the sign of a value that rounds to zero (``-0.00``)."""
    text = value_format.format(value)
    if text.startswith("-") and not any(ch in "123456789" for ch in text):
        return text[1:]
    return text


def _lerp_color(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b))
    return f"#{r:02x}{g:02x}{bl:02x}"


_RED = (214, 39, 40)
_WHITE = (247, 247, 247)
_GREEN = (44, 160, 44)
_LIGHT = (222, 235, 247)
_BLUE = (8, 81, 156)


def heat_color(value: float, low: float, high: float) -> str:
    """Diverging red-white-green around zero when the values straddle it, else light-to-blue."""
    if not math.isfinite(value):
        return "#cccccc"
    if low < 0 < high:
        if value < 0:
            return _lerp_color(_WHITE, _RED, min(value / low, 1.0))
        return _lerp_color(_WHITE, _GREEN, min(value / high, 1.0))
    if high == low:
        return _lerp_color(_LIGHT, _BLUE, 0.5)
    return _lerp_color(_LIGHT, _BLUE, (value - low) / (high - low))


def heatmap(
    matrix: pd.DataFrame,
    *,
    title: str,
    x_name: str,
    y_name: str,
    metric: str,
    width: int = 760,
    max_height: int = 520,
    value_format: str = "{:.2f}",
    best: str = "max",
) -> str:
    """An SVG heatmap: rows of ``matrix`` are y values, columns x values, cells the metric.

    Cells carry tooltips (``x=.., y=.. -> metric``); values are printed in cells large enough
    to hold them. NaN cells (invalid combinations) are grey. A grid of more than
    ``MAX_VECTOR_CELLS`` cells is one embedded PNG with a tooltip per row naming its ``best``
    (``"max"`` or ``"min"``) cell.
    """
    n_rows, n_cols = matrix.shape
    frame = Frame(width, 0, left=70, right=90, top=28, bottom=40)
    cell_w = frame.inner_width / max(n_cols, 1)
    cell_h = min(28.0, max(4.0, (max_height - frame.top - frame.bottom) / max(n_rows, 1)))
    height = int(frame.top + frame.bottom + cell_h * n_rows)
    frame = Frame(width, height, left=70, right=90, top=28, bottom=40)
    values = matrix.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    parts = [_svg_open(frame, title)]
    if n_rows * n_cols > MAX_VECTOR_CELLS:
        parts.append(_raster_cells(frame, matrix, values, low, high, cell_w, cell_h,
                                   x_name, y_name, metric, value_format, best))
    else:
        parts.append(_vector_cells(frame, matrix, values, low, high, cell_w, cell_h,
                                   x_name, y_name, metric, value_format))
    parts.append(_axis_labels(frame, list(matrix.columns), list(reversed(list(matrix.index))),
                              cell_w, cell_h))
    parts.append(_text(frame.left + frame.inner_width / 2, height - 4, x_name, anchor="middle",
                       extra='font-weight="bold"'))
    parts.append(_text(12, frame.top + (height - frame.top - frame.bottom) / 2, y_name,
                       anchor="middle",
                       extra=f'font-weight="bold" transform="rotate(-90 12 '
                             f'{frame.top + (height - frame.top - frame.bottom) / 2:.1f})"'))
    parts.append(_legend(frame, low, high, metric, value_format))
    parts.append("</svg>")
    return "".join(parts)


def _vector_cells(frame: Frame, matrix: pd.DataFrame, values: np.ndarray, low: float,
                  high: float, cell_w: float, cell_h: float, x_name: str, y_name: str,
                  metric: str, value_format: str) -> str:
    """One rectangle per cell, each with its tooltip (and its value when there is room)."""
    n_rows = len(matrix.index)
    show_values = cell_w >= 34 and cell_h >= 14
    parts = []
    # Rows are drawn top to bottom in descending y, so larger values sit higher, as on an axis.
    for row_pos, row_label in enumerate(reversed(list(matrix.index))):
        r = n_rows - 1 - row_pos
        y = frame.top + row_pos * cell_h
        for c, col_label in enumerate(matrix.columns):
            value = values[r, c]
            x = frame.left + c * cell_w
            tooltip = (f"{x_name}={col_label}, {y_name}={row_label}: {metric} = "
                       f"{value_format.format(value) if math.isfinite(value) else 'n/a'}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w + 0.3:.1f}" height="{cell_h + 0.3:.1f}" '
                f'fill="{heat_color(value, low, high)}"><title>{html.escape(tooltip)}</title></rect>'
            )
            if show_values and math.isfinite(value):
                parts.append(_text(x + cell_w / 2, y + cell_h / 2 + 4,
                                   _label(value_format, value),
                                   anchor="middle", extra='font-size="10" pointer-events="none"'))
    return "".join(parts)


def _raster_cells(frame: Frame, matrix: pd.DataFrame, values: np.ndarray, low: float,
                  high: float, cell_w: float, cell_h: float, x_name: str, y_name: str,
                  metric: str, value_format: str, best: str) -> str:
    """A large grid as one embedded PNG (a rectangle per cell would weigh megabytes), with one
    tooltip per row giving that row's best cell."""
    n_rows, n_cols = values.shape
    rgb = np.empty((n_rows, n_cols, 3), dtype=np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            color = heat_color(float(values[r, c]), low, high)
            rgb[n_rows - 1 - r, c] = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    parts = [
        f'<image x="{frame.left}" y="{frame.top}" width="{cell_w * n_cols:.1f}" '
        f'height="{cell_h * n_rows:.1f}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>',
        '<g fill="transparent">',
    ]
    for row_pos, row_label in enumerate(reversed(list(matrix.index))):
        row = values[n_rows - 1 - row_pos]
        if not np.isfinite(row).any():
            continue
        pick = int(np.nanargmin(row) if best == "min" else np.nanargmax(row))
        tooltip = (f"{y_name}={row_label}: best {metric} = {value_format.format(row[pick])} at "
                   f"{x_name}={matrix.columns[pick]}")
        parts.append(
            f'<rect x="{frame.left}" y="{frame.top + row_pos * cell_h:.1f}" '
            f'width="{cell_w * n_cols:.1f}" height="{cell_h:.1f}">'
            f"<title>{html.escape(tooltip)}</title></rect>")
    parts.append("</g>")
    return "".join(parts)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal PNG (8-bit RGB, no filter) of an ``(height, width, 3)`` uint8 array."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _axis_labels(frame: Frame, xs: Sequence[object], ys: Sequence[object], cell_w: float,
                 cell_h: float) -> str:
    parts = []
    x_every = max(1, math.ceil(30 / cell_w))
    for c, label in enumerate(xs):
        if c % x_every == 0:
            parts.append(_text(frame.left + (c + 0.5) * cell_w, frame.top + len(ys) * cell_h + 14,
                               str(label), anchor="middle", extra='fill="#555"'))
    y_every = max(1, math.ceil(12 / cell_h))
    for r, label in enumerate(ys):
        if (len(ys) - 1 - r) % y_every == 0:
            parts.append(_text(frame.left - 6, frame.top + (r + 0.5) * cell_h + 4, str(label),
                               anchor="end", extra='fill="#555"'))
    return "".join(parts)


def _legend(frame: Frame, low: float, high: float, metric: str, value_format: str) -> str:
    x = frame.left + frame.inner_width + 16
    steps = 20
    bar_h = max(frame.inner_height, 60)
    parts = []
    for i in range(steps):
        value = high - (high - low) * i / (steps - 1)
        parts.append(
            f'<rect x="{x}" y="{frame.top + i * bar_h / steps:.1f}" width="14" '
            f'height="{bar_h / steps + 0.5:.1f}" fill="{heat_color(value, low, high)}"/>'
        )
    parts.append(_text(x + 18, frame.top + 8, _label(value_format, high), extra='fill="#555"'))
    parts.append(_text(x + 18, frame.top + bar_h, _label(value_format, low),
                       extra='fill="#555"'))
    parts.append(_text(x, frame.top - 6, metric, extra='fill="#555"'))
    return "".join(parts)
