"""Hooks by which a lower layer reaches a higher one without importing it.

``Result.confidence()`` (engine, layer 3) needs the research layer (5): the ``quantlab``
package fills :data:`RESEARCH` when imported. This module imports nothing, so that filling it
keeps ``import quantlab`` cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Research:
    """``confidence(result, metrics, method=, n=, level=, seed=)`` -> DataFrame, or None until
    the ``quantlab`` package plugs in :func:`quantlab.research.confidence.confidence`."""

    confidence: Callable[..., Any] | None = None


RESEARCH = Research()
