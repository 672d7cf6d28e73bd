"""Where the HTML views of analytics objects plug in.

Analytics (layer 5) computes; render (layer 7) draws. So that ``Comparison`` and ``Stats`` still
show as HTML in a notebook without analytics importing its views, :mod:`quantlab.render.html`
registers a view for each type here when it is imported (``quantlab`` imports it with
``ql.compare``/``ql.stats``). Until a view is registered, ``_repr_html_`` answers None and
IPython falls back to the text repr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VIEWS: dict[type, Callable[[Any], str]] = {}


def register_html_view(kind: type, view: Callable[[Any], str]) -> None:
    """Show objects of ``kind`` (and its subclasses) as ``view(obj)`` in notebooks."""
    _VIEWS[kind] = view


def html_view(obj: Any) -> str | None:
    """The registered view of ``obj`` as HTML, or None when none is registered."""
    for kind in type(obj).__mro__:
        view = _VIEWS.get(kind)
        if view is not None:
            return view(obj)
    return None
