"""The import graph of quantumtrade: no cycles, every module imports, packages keep to LAYERS.

The graph is read from the source with ``ast``, and every import of a quantumtrade module counts
wherever it stands: at module level, inside a function, under ``if TYPE_CHECKING:``, relative,
or ``from package import submodule``. A cycle behind a lazy or type-only import is still two
modules that cannot be read or changed apart, and the edit that hoists the import breaks start-up.
``LAYERS`` is the table that docs/architecture.md ("Packages and what they may import") draws.
"""

from __future__ import annotations

import ast
import importlib
from collections import deque
from collections.abc import Collection, Mapping
from functools import cache
from itertools import pairwise
from pathlib import Path

import quantumtrade

Graph = Mapping[str, Mapping[str, int]]
"""importer -> {imported module: line of its first import}."""

PACKAGE_ROOT = Path(quantumtrade.__file__).parent

# Importing ``python -m quantumtrade``'s module runs the command line.
NOT_IMPORTED = {"quantumtrade.__main__"}

# What each part of quantumtrade may import besides itself, taken from the code. A key is a
# top-level module or package, or a dotted module set apart from its package: the wiring
# modules, which read the whole AppConfig to build their package's components, sit above
# `config` while the rest of their package sits below it (config composes every package's
# config struct). A top-level module missing from the table is taken for a leaf: it may import
# only leaves. The rows form layers (the table has no cycle); keep the docs' table in step.
# fmt: off
LAYERS: dict[str, set[str]] = {
    # leaves
    "quantumtrade": set(),  # the root __init__: numba's threading layer
    "events": set(),
    "clock": set(),
    "errors": set(),
    "redaction": set(),
    "logs": set(),
    "systemd": set(),  # sd_notify: READY, STATUS, STOPPING, the watchdog
    # plumbing
    "credentials": {"redaction"},
    "bus": {"clock", "errors", "events"},
    "outbox": {"bus", "events"},
    "breaker": {"clock", "events"},
    "metrics": {"events"},
    "cache": {"breaker", "clock", "events"},
    "store": {"clock", "errors", "events", "redaction"},
    # the trading domain, in the order of the event flow
    "data": {"breaker", "bus", "cache", "clock", "credentials", "errors", "events", "scoring"},
    "regime": {"bus", "clock", "data", "events", "scoring"},
    "scoring": {"bus", "clock", "events"},
    "anomaly": {"bus", "clock", "events", "scoring"},
    "allocation": {"scoring"},
    "strategy": {
        "allocation", "bus", "clock", "data", "errors", "events", "portfolio", "regime", "risk",
        "scoring",
    },
    "risk": {"bus", "clock", "events", "portfolio"},
    "execution": {"breaker", "bus", "cache", "clock", "credentials", "data", "errors", "events"},
    "portfolio": {"bus", "clock", "events"},
    # configuration, and the wiring modules that build their package's parts from it
    "config": {
        "allocation", "anomaly", "breaker", "bus", "credentials", "data", "errors", "execution",
        "redaction", "regime", "risk", "scoring", "strategy",
    },
    "data.factory": {"clock", "config", "credentials", "data", "errors"},
    "store.factory": {"config", "errors", "redaction", "store"},
    "store.session": {"config", "errors", "events", "execution", "redaction", "store"},
    # the trading core, what the daemon adds around it, the three drivers and the command line
    "core": {
        "allocation", "anomaly", "bus", "clock", "config", "data", "events", "execution",
        "portfolio", "regime", "risk", "scoring", "strategy",
    },
    "restore": {
        "config", "errors", "events", "execution", "portfolio", "risk", "store", "store.session",
    },
    "admin": {
        "admin.openapi", "anomaly", "data", "events", "execution", "metrics", "portfolio",
        "regime", "risk",
    },
    # the API's description: a document, readable without the server or its components
    "admin.openapi": {"events"},
    "app": {
        "admin", "bus", "clock", "config", "core", "credentials", "data", "data.factory",
        "events", "execution", "metrics", "outbox", "restore", "store", "store.factory",
        "strategy",
    },
    "replay": {"bus", "clock", "config", "core", "data", "events", "store", "store.session"},
    "backtest": {
        "bus", "clock", "config", "core", "data", "errors", "events", "execution", "logs",
        "regime", "strategy",
    },
    "cli": {
        "app", "backtest", "clock", "config", "errors", "logs", "regime", "replay", "store",
        "store.factory", "systemd",
    },
    "__main__": {"cli"},
}
# fmt: on

LEAVES = {unit for unit, allowed in LAYERS.items() if not allowed}
DOMAIN = {
    *("data", "regime", "scoring", "anomaly", "allocation", "strategy", "risk", "execution"),
    *("portfolio", "store"),
}
ABOVE_DOMAIN = {
    *("config", "data.factory", "store.factory", "store.session"),
    *("core", "restore", "admin", "admin.openapi", "app", "replay", "backtest", "cli"),
    "__main__",
}


# --- reading the graph ----------------------------------------------------------------------


def find_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: Collection[str]) -> dict[str, int]:
    """The modules among ``modules`` that module ``name`` imports, anywhere in its source."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(module: str, line: int, attribute: str = "") -> None:
        # `from a.b import c` imports submodule a.b.c if there is one, else a name from a.b.
        # A module that is not ours (or is missing: test_every_module_imports says so) is no edge.
        target = f"{module}.{attribute}" if f"{module}.{attribute}" in modules else module
        if target in modules and target != name:
            found[target] = min(found.get(target, line), line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = here.split(".")
                module = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [module])])
            for alias in node.names:
                add(module, node.lineno, alias.name)
    return found


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    modules = find_modules(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


@cache
def quantumtrade_modules() -> dict[str, Path]:
    return find_modules(PACKAGE_ROOT, "quantumtrade")


@cache
def quantumtrade_graph() -> Graph:
    return import_graph(PACKAGE_ROOT, "quantumtrade")


def shortest_cycle(graph: Mapping[str, Collection[str]], start: str) -> list[str] | None:
    """The shortest import chain from ``start`` back to itself (breadth first), or None."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                back = [node]
                while back[-1] != start:
                    back.append(parent[back[-1]])
                return back[::-1]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


def find_cycles(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """One shortest cycle through every node that is on one, each once (from its least node)."""
    cycles: set[tuple[str, ...]] = set()
    for start in graph:
        ring = shortest_cycle(graph, start)
        if ring:
            i = ring.index(min(ring))
            cycles.add(tuple(ring[i:] + ring[:i]))
    return [list(ring) for ring in sorted(cycles)]


def short(module: str) -> str:
    """``quantumtrade.store.spool`` as ``store.spool``."""
    return module.removeprefix("quantumtrade.")


def where(importer: str, imported: str, graph: Graph) -> str:
    path = quantumtrade_modules()[importer].relative_to(PACKAGE_ROOT.parent)
    return f"{path}:{graph[importer][imported]} imports {short(imported)}"


def describe_cycles(cycles: list[list[str]], graph: Graph | None = None) -> str:
    """Each cycle as a chain of modules, then (given the graph) the import lines that make it."""
    lines = []
    for ring in cycles:
        chain = [*ring, ring[0]]
        lines.append("  " + " -> ".join(map(short, chain)))
        if graph is not None:
            lines.extend(f"      {where(a, b, graph)}" for a, b in pairwise(chain))
    return "\n".join(lines)


def unit(module: str, layers: Collection[str]) -> str:
    """The row of ``layers`` a module falls under: its own dotted name if listed, else its top."""
    name = short(module)
    return name if name in layers else name.split(".")[0]


def layer_violations(graph: Graph, layers: Mapping[str, Collection[str]]) -> list[str]:
    """Each import from one row of ``layers`` to another that the importer's row does not list."""
    leaves = {u for u, allowed in layers.items() if not allowed}
    found = []
    for importer, imported in graph.items():
        for target in imported:
            a, b = unit(importer, layers), unit(target, layers)
            if a == b or b not in layers:  # a new top-level module is held to the leaf rule
                continue
            if b not in layers.get(a, leaves):
                found.append(f"  {a} -> {b}: {where(importer, target, graph)}")
    return sorted(found)


# --- the tests ------------------------------------------------------------------------------


def test_the_import_graph_has_no_cycle() -> None:
    graph = quantumtrade_graph()
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n{describe_cycles(cycles, graph)}"


def test_every_module_imports() -> None:
    failures = []
    for name in sorted(quantumtrade_graph()):
        if name in NOT_IMPORTED:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            failures.append(f"  {name}: {type(exc).__name__}: {exc}")
    assert not failures, "modules that fail to import:\n" + "\n".join(failures)


def test_packages_import_only_what_layers_allows() -> None:
    violations = layer_violations(quantumtrade_graph(), LAYERS)
    assert not violations, (
        "imports outside LAYERS (if the dependency is meant, add it to the importer's row and "
        "to docs/architecture.md):\n" + "\n".join(violations)
    )


def test_layers_table_keeps_the_design_rules() -> None:
    assert {"events", "clock", "errors"} <= LEAVES
    assert not find_cycles(LAYERS), describe_cycles(find_cycles(LAYERS))
    for name, allowed in LAYERS.items():
        # config composes the domain's config structs; the wiring modules read it, not them.
        # (So strategy, say, can never reach for app or admin.)
        if name in DOMAIN:
            assert not allowed & ABOVE_DOMAIN, f"{name} may not import {allowed & ABOVE_DOMAIN}"
        if "app" in allowed:
            assert name == "cli", f"{name} may not import app"
        if "cli" in allowed:
            assert name == "__main__", f"{name} may not import cli"
        if "backtest" in allowed:
            assert name == "cli", "nothing in the daemon imports backtest"
    assert set().union(*LAYERS.values()) <= LAYERS.keys()


# --- negative controls: the reader sees every kind of import, the checks can fail -------------

TOY_PACKAGE = {
    "__init__.py": "",
    "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
    "b.py": "import os\n\ndef f():\n    from . import a\n",
    "c.py": "import numpy\nimport pkg.sub.d\n",
    "sub/__init__.py": "from .d import X\n",
    "sub/d.py": "from .. import c\nX = 1\n",
    "e.py": "from pkg.sub import X\nfrom pkg import *\n",
}


def test_the_reader_counts_every_kind_of_import(tmp_path: Path) -> None:
    for rel, source in TOY_PACKAGE.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(source)
    graph = import_graph(tmp_path / "pkg", "pkg")
    assert graph == {
        "pkg": {},
        "pkg.a": {"pkg.b": 3},  # under TYPE_CHECKING
        "pkg.b": {"pkg.a": 4},  # relative, in a function, a submodule named by `from . import`
        "pkg.c": {"pkg.sub.d": 2},  # dotted `import`; numpy is not ours
        "pkg.sub": {"pkg.sub.d": 1},
        "pkg.sub.d": {"pkg.c": 1},  # two levels up
        "pkg.e": {"pkg.sub": 1, "pkg": 2},  # a name from a package is its __init__
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.sub.d"]]
    assert find_cycles({"x": {"x"}, "y": {"z"}, "z": set()}) == [["x"]]


def test_an_import_missing_from_its_row_is_reported() -> None:
    graph = quantumtrade_graph()
    narrower = {**LAYERS, "strategy": LAYERS["strategy"] - {"risk"}}
    new = set(layer_violations(graph, narrower)) - set(layer_violations(graph, LAYERS))
    assert new
    assert all(v.startswith("  strategy -> risk: quantumtrade/strategy/") for v in new)
