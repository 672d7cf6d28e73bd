"""Showing why a run failed, in the researcher's own terms.

A run's traceback was produced on a worker, where QuantLab's and NumPy's frames dominate. When a
notebook-defined strategy raised, what the researcher needs is the line of *their* function: the
frames that point into the strategy's source (shipped with the config) are picked out and shown
with the source lines around them, numbered from the first line of the strategy's source.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantlab.strategies.usercode import source_line_offset

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+?)\s*$')
# Files that are never the researcher's code.
_LIBRARY_MARKERS = ("site-packages", "dist-packages", "/lib/python3", "<frozen ",
                    "/quantlab/", "\\quantlab\\")
CONTEXT_LINES = 2


@dataclass(frozen=True)
class UserFrame:
    file: str
    line: int
    function: str
    excerpt: tuple[tuple[int, str], ...]  # (line number, text) around ``line``


def parse_frames(traceback_text: str) -> list[tuple[str, int, str]]:
    """(file, line, function) of every frame in a formatted traceback, outermost first."""
    frames = []
    for text_line in traceback_text.splitlines():
        match = _FRAME.match(text_line)
        if match:
            frames.append((match["file"], int(match["line"]), match["func"]))
    return frames


def is_library_file(path: str) -> bool:
    return any(marker in path for marker in _LIBRARY_MARKERS)


def user_frames(traceback_text: str, source: str | None) -> list[UserFrame]:
    """The frames in the researcher's code, each with an excerpt of the strategy's source when
    the frame points into it (the pseudo-file ``<strategy name>`` a worker runs it under).

    Line numbers count from the first line of the strategy's own source: the imports and helpers
    the kernel shipped ahead of it (see :mod:`quantlab.strategies.usercode`) are not counted.
    """
    all_lines = source.splitlines() if source else []
    offset = source_line_offset(source)
    found = []
    for file, line, function in parse_frames(traceback_text):
        if is_library_file(file):
            continue
        excerpt: tuple[tuple[int, str], ...] = ()
        shown_line = line
        if file.startswith("<strategy") and 1 <= line <= len(all_lines):
            # Helpers shipped ahead of the strategy keep the shipped numbering (line > 0 there).
            base = offset if line > offset else 0
            shown_line = line - base
            first = max(base + 1, line - CONTEXT_LINES)
            last = min(len(all_lines), line + CONTEXT_LINES)
            if base == 0 and offset:
                last = min(last, offset - 1)
            excerpt = tuple((n - base, all_lines[n - 1]) for n in range(first, last + 1))
        found.append(UserFrame(file, shown_line, function, excerpt))
    return found


def root_exception_line(traceback_text: str) -> str | None:
    """The ``Type: message`` line of the first exception of a (chained) traceback: the cause
    that the later exceptions wrap."""
    for line in traceback_text.splitlines():
        if (line and not line[0].isspace() and ":" in line
                and not line.startswith(("Traceback (", "The above exception",
                                         "During handling"))):
            return line.strip()
    return None


# Runs recorded before the wording changed say "above": in these views the traceback is below.
_LEGACY_WHERE = "see the traceback above for where"


def error_line(error: str | None, has_traceback: bool) -> str:
    """The run's error, saying where its traceback is in this view (folded, below)."""
    text = (error or "unknown error").replace(_LEGACY_WHERE, "its traceback shows where")
    return f"{text} (full traceback below)" if has_traceback else text


def failure_text(error: str | None, traceback_text: str | None,
                 config: Mapping[str, Any] | None) -> str:
    """Plain-text version of :func:`failure_html` (for logs, ``%backtest_status``, tests)."""
    lines = [f"run failed: {error_line(error, has_traceback=False)}"]
    source = (config or {}).get("strategy_source")
    strategy = (config or {}).get("strategy")
    for frame in user_frames(traceback_text or "", source):
        lines.append(f"  in {frame.function}, line {frame.line} of strategy {strategy!r}:")
        for number, text in frame.excerpt:
            marker = "->" if number == frame.line else "  "
            lines.append(f"  {marker} {number:4d} | {text}")
    return "\n".join(lines)


def failure_html(error: str | None, traceback_text: str | None,
                 config: Mapping[str, Any] | None) -> str:
    """The error, the researcher's frames with their source lines, and the full traceback
    folded away (it is the worker's, mostly library frames)."""
    config = config or {}
    source = config.get("strategy_source")
    strategy = config.get("strategy")
    parts = [
        '<div class="ql-error" style="border-left:4px solid #d62728;padding:4px 10px;'
        'background:#fff5f5;font-family:sans-serif;font-size:13px">',
        f"<div><b>Run failed:</b> {html.escape(error_line(error, bool(traceback_text)))}</div>",
    ]
    root = root_exception_line(traceback_text or "")
    root_type = root.split(":", 1)[0].rsplit(".", 1)[-1] if root else ""
    if root and root_type not in (error or ""):
        parts.append(f"<div>caused by: <code>{html.escape(root)}</code></div>")
    for frame in user_frames(traceback_text or "", source):
        where = (f"line {frame.line} of strategy {strategy!r}" if frame.excerpt
                 else f"{frame.file}, line {frame.line}")
        parts.append(f'<div style="margin-top:6px">in <code>{html.escape(frame.function)}</code>,'
                     f" {html.escape(where)}:</div>")
        if frame.excerpt:
            code = []
            for number, text in frame.excerpt:
                style = "background:#ffd6d6;font-weight:bold" if number == frame.line else ""
                code.append(f'<span style="{style}">{number:4d} | {html.escape(text)}</span>')
            parts.append('<pre class="ql-user-code" style="margin:2px 0;padding:4px;'
                         'background:#fafafa">' + "\n".join(code) + "</pre>")
    if traceback_text:
        parts.append("<details><summary>full traceback (worker): click to unfold</summary>"
                     "<pre style="
                     f'"font-size:11px">{html.escape(traceback_text)}</pre></details>')
    parts.append("</div>")
    return "".join(parts)
