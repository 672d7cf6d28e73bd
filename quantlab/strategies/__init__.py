"""Built-in strategies and the registry for user strategies (``@ql.strategy``)."""

from quantlab.strategies.base import Indicators, Strategy, check_signals
from quantlab.strategies.registry import get_strategy, list_strategies, register, strategy

__all__ = ["Indicators", "Strategy", "check_signals", "get_strategy", "list_strategies",
           "register", "strategy"]
