"""The registry and event stream the jobs code talks to, for given (or current) settings.

Both factories already keep one handle per store and process (a forked Huey worker opens its
own), so these helpers only pick the settings; they exist so that the jobs code has one place
to change if that ever stops being true.
"""

from __future__ import annotations

from typing import Any

from quantlab import settings as settings_mod
from quantlab.settings import Settings


def registry(settings: Settings | None = None) -> Any:
    """The ``Registry`` for ``settings`` (default: the current ones)."""
    from quantlab.registry import open_registry

    return open_registry(settings or settings_mod.current())


def events(settings: Settings | None = None) -> Any:
    """The ``EventStream`` for ``settings`` (default: the current ones)."""
    from quantlab.events import open_events

    return open_events(settings or settings_mod.current())
