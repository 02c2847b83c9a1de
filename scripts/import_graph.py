#!/usr/bin/env python3
"""The folder-level import graph of pytest_vexfs: prints who imports whom, and fails (exit 1) on a
cycle between folders or on an arrow from a lower layer to a higher one.

Every import counts, also one inside a function or under TYPE_CHECKING: a lazy import is still an arrow.
A node is a subpackage (`guest`, `faults`, ...) or a module at the package's top (`settings`, `errors`).
The layers, lowest first, are LAYERS below (README's Layout section shows the same order; a test checks
it). A node may import from its own layer or below, never from above.

    python scripts/import_graph.py            # the graph, then the problems found
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "pytest_vexfs"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: lowest first; a node imports only from its own layer or a lower one, and no two nodes form a cycle
LAYERS: tuple[tuple[str, ...], ...] = (
    # plain types and helpers that import nothing of the package (or only errors)
    ("errors", "typed", "polling", "privacy", "diskspace", "domains", "severity", "kernels", "command",
     "processes", "gitinfo"),
    ("settings",),                  # the settings table, the environment file, the backends' options
    ("coverage",),                  # gcov counters, error paths, the gcovr report
    ("faults",),                    # the fault engine: kernel-log parser, kinds, verdicts, injection
    ("images", "backends"),         # what a guest boots (image, debug kernel); machines behind one interface
    ("guest",),                     # running guests
    ("module",),                    # the module under test in a guest
    ("harness",),                   # per-worker slots and per-test sessions over running guests
    ("model", "disk_images", "compat"),
    ("reporting",),
    ("plugin", "cli"),              # the pytest wiring and the vexfs-vm command
)


def node_of(module: str) -> str | None:
    """The graph node of a dotted module name inside the package (None outside it)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Dotted names of the modules an AST imports (relative imports resolved against `module`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            # `from pytest_vexfs import settings` imports the module pytest_vexfs.settings
            yield from (f"{source}.{alias.name}" for alias in node.names)


def edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """(importer node, imported node) -> the files that make the arrow (a node's imports of itself left out)."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        source = node_of(module)
        if source is None:  # the package's own __init__
            continue
        for name in _imported(ast.parse(path.read_text(), str(path)), module, is_package):
            target = node_of(name)
            where = str(path.relative_to(root.parent))
            if target is not None and target != source and where not in found[(source, target)]:
                found[(source, target)].append(where)
    return dict(found)


def layer_of(node: str) -> int | None:
    """Index of the node's layer in LAYERS (None: the node is in no layer)."""
    return next((i for i, layer in enumerate(LAYERS) if node in layer), None)


def cycles(graph: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in graph:
        succ[a].append(b)
    nodes = sorted({n for edge in graph for n in edge})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def problems(graph: dict[tuple[str, str], list[str]], root: Path = ROOT) -> list[str]:
    """Every rule broken: nodes in no layer, cycles, arrows from a lower layer to a higher one."""
    found = []
    present = {p.stem if p.is_file() else p.name for p in root.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    for node in sorted(present):
        if layer_of(node) is None:
            found.append(f"{node}: in no layer (add it to LAYERS in scripts/import_graph.py)")
    for component in cycles(graph):
        found.append("cycle between " + ", ".join(component) + ": "
                     + "; ".join(f"{a} -> {b} ({', '.join(graph[(a, b)])})"
                                 for a in component for b in component if (a, b) in graph))
    for (a, b), files in sorted(graph.items()):
        la, lb = layer_of(a), layer_of(b)
        if la is not None and lb is not None and lb > la:
            found.append(f"arrow up: {a} (layer {la}) -> {b} (layer {lb}) in {', '.join(files)}")
    return found


def render(graph: dict[tuple[str, str], list[str]]) -> str:
    """The layers, then each node's arrows, one line per node, highest layer first."""
    lines = ["layers, lowest first: " + " < ".join(", ".join(layer) for layer in LAYERS)]
    for layer in reversed(LAYERS):
        for node in layer:
            targets = sorted(b for a, b in graph if a == node)
            if targets:
                lines.append(f"{node} -> {', '.join(targets)}")
    return "\n".join(lines)


def main() -> int:
    graph = edges()
    print(render(graph))
    found = problems(graph)
    for problem in found:
        print("FAIL " + problem)
    print(f"{len(found)} problem(s)" if found else "no cycles, no arrows up")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
