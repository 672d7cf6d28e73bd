"""Telling when Numba compiles the engine, as it happens.

A run of a kind this process has not compiled yet (a worker's first multi-symbol sweep, the
first with stops, a cold cache) spends its first engine call compiling: seconds to tens of
seconds during which no bar is simulated. :func:`watching` reports it through a plain callable
(the engine imports no jobs or events): Numba's own ``numba:compile`` event fires when a
function really compiles (not when its machine code is loaded from Numba's disk cache, which
takes well under a second), so nothing is announced that does not happen.

Progress counts QuantLab's functions: ``done`` is how many distinct ones finished compiling,
``total`` how many the outermost one being compiled reaches (itself and the jitted functions
its code calls, through the module globals, transitively): an upper bound, since a callee
compiled earlier for the same types is not compiled again. Numba's own helpers (``np.zeros``'s
implementation and the like) are not counted.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from numba.core import event

# the report: (functions compiled so far, functions the compilation may compile in all)
CompileReport = Callable[[int, int], None]


def _is_ours(dispatcher: Any) -> bool:
    return str(getattr(getattr(dispatcher, "py_func", None), "__module__", "")).startswith(
        "quantlab")


def _names(code: types.CodeType) -> set[str]:
    """Every global or attribute name a function's code (nested code included) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def reachable(dispatcher: Any) -> set[Any]:
    """The jitted QuantLab functions ``dispatcher`` may compile: itself and those its code
    calls (``name(...)`` or ``module.name(...)``), transitively; inlined ones (``inline=
    "always"``) are compiled into their callers and not counted."""
    seen: set[Any] = set()
    todo = [dispatcher]
    while todo:
        current = todo.pop()
        if current in seen or not _is_ours(current):
            continue
        seen.add(current)
        func = current.py_func
        names = _names(func.__code__)
        space = func.__globals__
        modules = [value for value in space.values() if isinstance(value, types.ModuleType)]
        for name in names:
            candidates = [space.get(name)] + [getattr(m, name, None) for m in modules]
            todo.extend(c for c in candidates
                        if c is not None and hasattr(c, "py_func") and hasattr(c, "targetoptions"))
    return {d for d in seen if d.targetoptions.get("inline") != "always"}


class _Listener(event.Listener):
    """Counts the compilations of QuantLab functions made by one thread (a worker may run
    several runs in threads; Numba compiles one function at a time, under a global lock)."""

    def __init__(self, report: CompileReport) -> None:
        self.report = report
        self.thread = threading.get_ident()
        self.depth = 0
        self.done: set[Any] = set()
        self.total: set[Any] = set()

    def _mine(self, ev: event.Event) -> Any:
        if threading.get_ident() != self.thread:
            return None
        dispatcher = (ev.data or {}).get("dispatcher")
        return dispatcher if _is_ours(dispatcher) else None

    def on_start(self, ev: event.Event) -> None:
        dispatcher = self._mine(ev)
        if dispatcher is None:
            return
        if self.depth == 0:
            self.total |= reachable(dispatcher)
        self.depth += 1
        self.report(len(self.done), max(len(self.total), len(self.done) + 1))

    def on_end(self, ev: event.Event) -> None:
        dispatcher = self._mine(ev)
        if dispatcher is None:
            return
        self.depth -= 1
        self.done.add(dispatcher)
        if self.depth == 0:
            # the outermost compilation is over: whatever the estimate, it is complete
            self.total = set(self.done) | self.total
            self.report(len(self.total), len(self.total))
        else:
            self.report(len(self.done), max(len(self.total), len(self.done) + 1))


@contextlib.contextmanager
def watching(report: CompileReport | None) -> Iterator[None]:
    """Within the block, call ``report(done, total)`` when this thread starts compiling one of
    QuantLab's jitted functions, after each one it compiled, and with ``done == total`` when
    the outermost compilation ends. ``report=None``: a block that watches nothing."""
    if report is None:
        yield
        return
    with event.install_listener("numba:compile", _Listener(report)):
        yield


__all__ = ["CompileReport", "reachable", "watching"]
