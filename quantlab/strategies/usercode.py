"""Notebook-defined strategies travelling to the workers.

A function decorated with ``@ql.strategy`` in a notebook lives in the kernel; a worker is another
process (maybe another machine). What travels is text: the strategy's source, preceded by what
it needs from the notebook (``import numpy as np``, a helper function, a constant), so that the
worker can ``exec`` it and get the same strategy. The text goes into the config
(``strategy_source``) and therefore into the config hash: editing the function, a helper it
calls or a constant it reads gives a new hash (no stale cache hit).

Anything the function reads from the notebook that cannot be written as source (a DataFrame, an
open connection) is refused in the kernel with a message saying what to do instead.

This module is imported by workers: it must stay free of ipywidgets and IPython. It sits with
the strategies, below the engine: the sweep check of a shipped strategy's params is the
submitter's (:func:`quantlab.jobs.orchestrator.submit`), which can call the engine.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import linecache
import textwrap
import types
from collections.abc import Mapping
from typing import Any

from quantlab.errors import ConfigError, StrategyError
from quantlab.strategies.base import Strategy
from quantlab.strategies.registry import get_strategy

# Separates what the kernel added (imports, helpers) from the strategy's own source: line
# numbers shown to the researcher count from the line after it.
SOURCE_MARKER = "# --- strategy source (line 1 below) ---"
_CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None))


def is_user_strategy(strategy: Any) -> bool:
    return not bool(getattr(strategy, "builtin", False))


def user_strategy(name: Any) -> Any | None:
    """The registered notebook strategy called ``name``, or None for a built-in/unknown one."""
    if not isinstance(name, str):
        return None
    try:
        found = get_strategy(name)
    except ConfigError:
        return None  # unknown: the config validation says so, with the nearest name
    return found if is_user_strategy(found) else None


def shippable_source(strategy: Any) -> str:
    """The strategy's source, preceded by the notebook names it uses, runnable on a worker."""
    func = strategy.func
    source = textwrap.dedent(strategy.source or "")
    if not source.strip():
        raise ConfigError(
            f"strategy '{strategy.name}' has no source text that could travel to the workers "
            f"(it was created with exec or in a console); define it in a notebook cell or a .py "
            f"file", field="strategy")
    prelude = _prelude(source, func.__globals__, strategy.name, seen={func.__name__})
    return "\n".join([*prelude, SOURCE_MARKER, source.rstrip(), ""])


def _free_names(source: str) -> list[str]:
    """Names read by the code (including its decorators) that it does not bind itself."""
    tree = ast.parse(source)
    loaded: dict[str, None] = {}
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.setdefault(node.id, None)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    # A top-level def's own name is bound by the def but a helper may still be read before:
    # only names never bound in this code need the notebook.
    return [name for name in loaded if name not in bound]


def _prelude(source: str, namespace: Mapping[str, Any], strategy_name: str,
             seen: set[str]) -> list[str]:
    lines: list[str] = []
    for name in _free_names(source):
        if name in seen:
            continue
        seen.add(name)
        if name not in namespace:
            if hasattr(builtins, name):
                continue
            continue  # an undefined name fails the same way on the worker as in the kernel
        lines.extend(_definition(name, namespace[name], strategy_name, seen))
    return lines


def _definition(name: str, value: Any, strategy_name: str, seen: set[str]) -> list[str]:
    """Source lines that bind ``name`` to ``value`` on a worker."""
    if isinstance(value, types.ModuleType):
        module = value.__name__
        if module == name:
            return [f"import {module}"]
        if "." in module and module.rsplit(".", 1)[1] == name:
            parent, child = module.rsplit(".", 1)
            return [f"from {parent} import {child}"]
        return [f"import {module} as {name}"]
    if isinstance(value, _CONSTANT_TYPES) or _is_constant_container(value):
        return [f"{name} = {value!r}"]
    importable = _import_line(name, value)
    if importable is not None:
        return [importable]
    inner = getattr(value, "func", None) if hasattr(value, "source_hash") else None
    target = inner if inner is not None else value
    if inspect.isfunction(target) or inspect.isclass(target):
        try:
            helper = textwrap.dedent(inspect.getsource(target))
        except (OSError, TypeError):
            helper = ""
        if helper:
            # a decorated helper (@ql.indicator) reads the names of the function it wraps
            globals_ = getattr(inspect.unwrap(target), "__globals__", None) or vars(
                importlib.import_module(target.__module__))
            return [*_prelude(helper, globals_, strategy_name, seen), helper.rstrip()]
    raise ConfigError(
        f"strategy '{strategy_name}' uses '{name}' ({type(value).__name__}) from the notebook, "
        f"which cannot travel to the workers: only imports, functions, classes and plain "
        f"constants can. Compute it inside the function, pass it as a param, or load it there "
        f"(e.g. from a file)", field="strategy", name=name)


def _is_constant_container(value: Any) -> bool:
    if isinstance(value, tuple | list | frozenset | set):
        return all(isinstance(v, _CONSTANT_TYPES) for v in value) and len(value) <= 1000
    if isinstance(value, dict):
        return len(value) <= 1000 and all(
            isinstance(k, _CONSTANT_TYPES) and isinstance(v, _CONSTANT_TYPES)
            for k, v in value.items())
    return False


def _import_line(name: str, value: Any) -> str | None:
    """``from module import attr as name`` when ``value`` is reachable that way (not __main__)."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname or "." in qualname:
        return None
    try:
        found = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        return None
    if found is not value:
        return None
    return f"from {module} import {qualname}" + (f" as {name}" if name != qualname else "")


def source_line_offset(source: str | None) -> int:
    """How many lines precede the strategy's own source in a shipped source."""
    if not source:
        return 0
    lines = source.splitlines()
    for index, line in enumerate(lines):
        if line == SOURCE_MARKER:
            return index + 1
    return 0


def attach_strategy_source(config: Any) -> Any:
    """If the config's strategy is a notebook strategy, put its shippable source in
    ``strategy_source`` (the config model skips the params check for shipped strategies because
    workers cannot see the kernel's registry: ``submit`` checks them in the kernel).

    ``config`` is a dict (a new dict is returned) or a ``BacktestConfig`` (a copy is returned);
    anything else (YAML text) is returned as it is.
    """
    if isinstance(config, Mapping):
        if config.get("strategy_source"):
            return config
        found = user_strategy(config.get("strategy"))
        if found is None:
            return config
        out = dict(config)
        out["strategy_source"] = shippable_source(found)
        return out
    if hasattr(config, "model_copy") and getattr(config, "strategy_source", "x") is None:
        found = user_strategy(config.strategy)
        if found is None:
            return config
        return config.model_copy(update={"strategy_source": shippable_source(found)})
    return config


def load_shipped_strategy(name: str, source: str) -> Any:
    """Worker side: run a shipped source and return the strategy called ``name``.

    The code is compiled under the file name ``<strategy NAME>``, so a traceback through it
    names the strategy and the line; the notebook's failure display maps the line back to
    the researcher's own numbering.
    """
    filename = f"<strategy {name}>"
    # Registered with linecache so that tracebacks (and inspect) show the lines of the source.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": f"quantlab_strategy_{name}"}
    try:
        code = compile(source, filename, "exec")
        exec(code, namespace)
    except Exception as exc:
        raise StrategyError(
            f"the source of strategy '{name}' failed to load on the worker: "
            f"{type(exc).__name__}: {exc}", strategy=name) from exc
    for value in namespace.values():
        if isinstance(value, Strategy) and value.name == name:
            return value
    raise StrategyError(
        f"the shipped source does not define strategy '{name}' (decorate it with "
        f"@ql.strategy(name={name!r}))", strategy=name)
