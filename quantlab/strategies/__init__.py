"""Built-in strategies and the registry for user strategies (``@ql.strategy``)."""

from quantlab.strategies.base import (
    Indicators,
    Strategy,
    check_signals,
    get_strategy,
    list_strategies,
    strategy,
)

__all__ = ["Indicators", "Strategy", "check_signals", "get_strategy", "list_strategies",
           "strategy"]
