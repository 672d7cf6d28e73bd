"""What ``%backtest_report`` shows: where the run's report went, as links the notebook can open.

A link in a cell output is resolved by Jupyter against the notebook's own folder, which is the
kernel's working directory. So a file is linked by its path relative to that folder when the
notebook server can serve it: it lies under the root of a running server that holds the notebook
(or under the notebook's folder itself), and no folder on the way is hidden, since Jupyter does
not serve those by default (the default ``~/.quantlab`` is one). Otherwise the absolute path is
shown as text, to open or copy by hand.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from quantlab.reports.runner import ReportFiles

NOTE = "font-size:12px;color:#555;font-family:sans-serif;margin:2px 0"


def served_roots() -> list[Path]:
    """Root folders of the Jupyter servers running on this machine (empty when none is found,
    e.g. in a console or a headless execution)."""
    roots: list[Path] = []
    with contextlib.suppress(Exception):  # no server, an unreadable runtime dir: no roots
        # the server app loads tornado and half of Jupyter: only a report link needs it
        from jupyter_server.serverapp import list_running_servers

        for server in list_running_servers():
            root = server.get("root_dir") or server.get("notebook_dir")
            if root:
                roots.append(Path(root).expanduser().resolve())
    return roots


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def link_href(path: Path, cwd: Path, roots: Iterable[Path]) -> str | None:
    """``path`` as a link relative to ``cwd`` (the notebook's folder), or None when no server
    root that holds the notebook also holds ``path`` without a hidden folder in between."""
    target, here = path.resolve(), cwd.resolve()
    candidates = [root.resolve() for root in roots if _inside(here, root.resolve())]
    for root in [*candidates, here]:
        if not _inside(target, root):
            continue
        if any(part.startswith(".") for part in target.relative_to(root).parts):
            continue  # Jupyter refuses hidden files unless the server allows them
        relative = os.path.relpath(target, here)
        return quote(Path(relative).as_posix())
    return None


@dataclass(frozen=True)
class ReportView:
    """The files of a run report and, for each, a link the notebook can open (or None)."""

    files: ReportFiles
    notebook_href: str | None
    html_href: str | None

    @classmethod
    def of(cls, files: ReportFiles, cwd: Path | None = None,
           roots: Sequence[Path] | None = None) -> ReportView:
        here = Path.cwd() if cwd is None else cwd
        served = served_roots() if roots is None else list(roots)
        return cls(
            files,
            link_href(files.notebook, here, served),
            None if files.html is None else link_href(files.html, here, served),
        )

    def _entries(self) -> list[tuple[str, Path, str | None]]:
        entries: list[tuple[str, Path, str | None]] = []
        if self.files.html is not None:
            entries.append(("HTML report", self.files.html, self.html_href))
        entries.append(("executed notebook", self.files.notebook, self.notebook_href))
        return entries

    def _repr_html_(self) -> str:
        lines = []
        for label, path, href in self._entries():
            absolute = html.escape(str(path.resolve()))
            if href is not None:
                shown = (f'<a href="{html.escape(href)}" title="{absolute}">'
                         f"{html.escape(unquote(href))}</a>")
            else:
                shown = f"<code>{absolute}</code>"
            lines.append(f'<p class="ql-report-file" style="{NOTE}">{html.escape(label)}: '
                         f"{shown}</p>")
        return (f'<div class="ql-report"><p style="{NOTE}">report of run '
                f"<code>{html.escape(self.files.run_id)}</code>, kept as its "
                f"<code>report_ref</code> {html.escape(self.files.report_ref)}</p>"
                f"{''.join(lines)}</div>")

    def __repr__(self) -> str:
        lines = [f"report of run {self.files.run_id}"]
        lines += [f"  {label}: {path.resolve()}" for label, path, _ in self._entries()]
        return "\n".join(lines)
