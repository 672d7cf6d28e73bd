"""The package's shape: layers import downwards only, and no module imports itself round a cycle.

The layer list is DESIGN.md's "Layout" (lowest first); docs/architecture.md draws it. Every import
counts, those inside functions and under ``TYPE_CHECKING`` included: a lazy import still ties two
modules together, and hiding a cycle inside a function only moves the failure to run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "quantlab"

# Top-level parts of the package, lowest layer first. A part may import its own layer or below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "settings", "fileio", "durations", "hooks"),
    ("bars", "indicators", "metrics", "notifyspec", "symbols", "sharpe_stats"),
    ("data", "registry", "events", "strategies"),
    ("engine",),
    ("config", "configtext"),
    ("research", "analytics"),
    ("jobs",),
    ("render",),
    ("notebook", "reports", "dashboards", "server", "notify", "notifications", "telemetry", "cli"),
    # the top: the root package gathers the public API, and the demo is written against it
    ("__init__", "__main__", "demo"),
)
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}

# config.py validates and nothing more: it is a leaf above the engine (DESIGN.md, "Layout").
CONFIG_MAY_NOT_IMPORT = ("data", "jobs", "notify", "registry", "events")
# Parts of one layer that stay apart: the notebook package is the kernel's (magics, widgets);
# reports, dashboards and the server share what they draw through render/, not through it.
APART = {"reports": ("notebook",), "dashboards": ("notebook",), "server": ("notebook",)}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (a package's __init__ is the package's name)
    line: int
    inside_function: bool

    def where(self) -> str:
        kind = " (inside a function)" if self.inside_function else ""
        return f"{self.source}:{self.line} imports {self.target}{kind}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to ('quantlab' itself is __init__)."""
    pieces = module.split(".")
    if len(pieces) == 1:
        return "__init__"
    return pieces[1]


def _resolve(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join([*base, *([node.module] if node.module else [])])
    else:
        stem = node.module or ""
    # `from quantlab.jobs import lifecycle` imports the module quantlab.jobs.lifecycle;
    # `from quantlab.jobs import submit` imports the package quantlab.jobs.
    return [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]


def _function_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    return inside


def imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = _function_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _resolve(module, node, path.name == "__init__.py"):
                if target == "quantlab" or target.startswith("quantlab."):
                    yield Import(module, target, node.lineno, id(node) in in_function)


IMPORTS = list(imports())


def test_every_part_of_the_package_has_a_layer() -> None:
    unplaced = sorted({part_of(m) for m in MODULES} - set(LAYER_OF))
    assert not unplaced, (
        f"no layer for {unplaced}: add each to LAYERS in tests/test_layers.py and to the layer "
        f"list of docs/architecture.md"
    )


def test_layers_import_downwards_only() -> None:
    upward = sorted({i.where() for i in IMPORTS
                     if LAYER_OF.get(part_of(i.target), -1) > LAYER_OF.get(part_of(i.source), -1)})
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_config_is_a_leaf() -> None:
    reaching = sorted({i.where() for i in IMPORTS
                       if i.source == "quantlab.config" and part_of(i.target) in CONFIG_MAY_NOT_IMPORT})
    assert not reaching, "config.py must only validate:\n" + "\n".join(reaching)


def test_reports_dashboards_and_the_server_do_not_import_the_notebook_package() -> None:
    reaching = sorted({i.where() for i in IMPORTS
                       if part_of(i.target) in APART.get(part_of(i.source), ())})
    assert not reaching, "imports across parts kept apart:\n" + "\n".join(reaching)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.target != i.source and i.target in MODULES:
            graph[i.source].add(i.target)
    return graph


def test_no_import_cycles() -> None:
    cycles = strongly_connected(import_graph())
    lines = []
    for component in cycles:
        members = set(component)
        edges = sorted({i.where() for i in IMPORTS if i.source in members and i.target in members})
        lines.append(" <-> ".join(component) + "\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert strongly_connected(graph) == expected


def test_the_checks_see_imports_inside_functions() -> None:
    """The resolver counts lazy imports and relative ones (else the checks above could pass
    by looking away)."""
    tree = ast.parse("def f():\n    from quantlab.jobs import lifecycle\nfrom . import x\n")
    inside = _function_nodes(tree)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)),
                   key=lambda n: n.lineno)
    assert [id(n) in inside for n in nodes] == [True, False]
    assert _resolve("quantlab.registry.base", nodes[1], False) == ["quantlab.registry"]
