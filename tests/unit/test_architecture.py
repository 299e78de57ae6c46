"""The layout's promises, read from the code: which package may import which, and no import
cycle anywhere, counting the imports inside functions (which hide cycles from Python itself)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bulksms"

# What each subpackage may import from bulksms besides itself and the shared top-level modules.
ALLOWED = {
    "store": set(),
    "api": {"store"},
    "worker": {"store"},
    "devstack": {"store", "api", "worker"},  # `bulksms up` runs everything
    "cli": {"devstack"},
}
SHARED_MAY_IMPORT = {"store"}  # e.g. documents.py renders a store.Job
# Single modules a subpackage may import from one it may not: the CLI builds its requests from the
# API's request schemas, which import nothing else of bulksms (no Flask, no Redis).
MODULES_ALLOWED = {"cli": {"bulksms.api.schemas"}}
ROOT_MAY_IMPORT = {"api"}  # `from bulksms import create_app`: the web app's factory


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> Iterator[str]:
    """Every bulksms module this file imports, wherever the import statement stands."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from bulksms.store import jobs` imports a module; `... import Job` a name
                # from the package's own module.
                module = f"{node.module}.{alias.name}"
                yield module if module in MODULES else node.module


@functools.cache
def graph() -> dict[str, set[str]]:
    return {
        name: {found for found in imports(path) if found.startswith("bulksms")} - {name}
        for name, path in MODULES.items()
    }


def part(module: str) -> str | None:
    """The subpackage a module lives in, or None for a shared top-level module."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 2 or (len(pieces) == 2 and pieces[1] in ALLOWED) else None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_what_its_process_may(module: str) -> None:
    home = part(module)
    allowed = SHARED_MAY_IMPORT if home is None else ALLOWED[home]
    if module == "bulksms":
        allowed = allowed | ROOT_MAY_IMPORT
    for target in graph()[module]:
        there = part(target)
        if target == "bulksms" or there is None or there == home:
            continue
        if target in MODULES_ALLOWED.get(home or "", set()):
            assert not graph()[target], f"{target} must stand alone: {module} imports it"
            continue
        assert there in allowed, f"{module} imports {target}"


def test_no_import_cycle() -> None:
    edges = graph()
    done: set[str] = set()
    trail: list[str] = []

    def visit(node: str) -> None:
        if node in trail:
            cycle = trail[trail.index(node) :] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        trail.append(node)
        for target in sorted(edges.get(node, ())):
            if target in MODULES:
                visit(target)
        trail.pop()
        done.add(node)

    for module in sorted(edges):
        visit(module)
