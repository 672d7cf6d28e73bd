"""Hooks by which a lower layer reaches a higher one without importing it.

``Result.confidence()`` and ``Result.overfitting()`` (engine, layer 3) need the research layer
(5): the ``quantlab`` package fills :data:`RESEARCH` when imported (``confidence``) and with
``ql.backtest`` (``overfitting``, by :mod:`quantlab.render.overfitting`). This module imports nothing, so that filling it
keeps ``import quantlab`` cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Research:
    """``confidence(result, metrics, method=, n=, level=, seed=)`` -> DataFrame, or None until
    the ``quantlab`` package plugs in :func:`quantlab.research.confidence.confidence`;
    ``overfitting(result, blocks=, trials=)`` -> ``quantlab.research.Overfitting``, or None until
    :mod:`quantlab.render.overfitting` plugs in :func:`quantlab.research.result_overfitting`."""

    confidence: Callable[..., Any] | None = None
    overfitting: Callable[..., Any] | None = None


RESEARCH = Research()
