"""How long something took or will take, spelled one way everywhere: the widget, ``%backtests``,
a run's text summary, reports, notifications. A leaf (standard library only), so that every layer
can use it."""

from __future__ import annotations

import math


def format_duration(seconds: float | None) -> str:
    """``0:03``, ``1:02:03`` (h:mm:ss, as a clock reads), under a second ``0:00.4`` (the same
    clock with tenths: a quick backtest must not read ``0:00``, and a column of durations must
    not mix ``0:01`` with ``0.4 s``); an em dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 1:
        return f"0:0{min(max(seconds, 0.0), 0.9):.1f}"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
