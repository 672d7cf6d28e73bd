"""The comparison chart's point reduction keeps what a reader must see."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from quantlab.render.charts import multi_line_chart
from quantlab.render.svg import MAX_LINE_POINTS


def _ys(svg: str) -> list[np.ndarray]:
    lines = re.findall(r'<polyline class="ql-line" points="([^"]+)"', svg)
    return [np.array([float(p.split(",")[1]) for p in line.split()]) for line in lines]


def test_a_one_bar_trough_survives_the_reduction_of_a_long_curve() -> None:
    n = 5_000
    index = pd.date_range("2010-01-01", periods=n, freq="D")
    flat = np.full(n, 100.0)
    dipped = flat.copy()
    dipped[2_346] = 50.0  # one day at -50%, between every-k-th samples
    svg = multi_line_chart(pd.DataFrame({"a": flat, "b": dipped}, index=index), title="t",
                           baseline=100.0)
    a, b = _ys(svg)
    assert len(b) <= 2 * MAX_LINE_POINTS + 2  # reduced
    # the dip is drawn: line b reaches far below line a (larger y is lower on the page)
    assert b.max() - a.max() > 50
