"""The package's import graph: no cycle, and the layers import one way.

Every import counts — module level, inside a function, under ``TYPE_CHECKING`` — read from the
source (nothing is imported), so a lazy import cannot hide a circle either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agentforge_dagster"
# The modules kept at their old paths for one release: they re-export from instance/.
OLD_PATHS = {
    "agentforge_dagster.persistence.dagster_storage",
    "agentforge_dagster.execution.launcher",
    "agentforge_dagster.execution.ecs_launcher",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


GRAPH = {
    name: {target for target in _imports(path) if target in MODULES and target != name}
    for name, path in MODULES.items()
}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def _area(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles() == []


def test_domain_imports_nothing_of_ours_but_domain() -> None:
    wrong = {
        (module, target)
        for module, targets in GRAPH.items()
        if _area(module) == "domain"
        for target in targets
        if _area(target) not in ("domain", "")
    }
    assert wrong == set()


def test_instance_is_imported_only_by_definitions_and_the_old_paths() -> None:
    wrong = {
        module
        for module, targets in GRAPH.items()
        if _area(module) != "instance"
        and any(_area(target) == "instance" for target in targets)
        and module not in OLD_PATHS | {"agentforge_dagster.definitions"}
    }
    assert wrong == set()


def test_nothing_below_the_cli_imports_it() -> None:
    wrong = {
        module
        for module, targets in GRAPH.items()
        if _area(module) != "cli" and any(_area(target) == "cli" for target in targets)
    }
    assert wrong == set()


def test_layers_below_orchestration_do_not_import_it() -> None:
    lower = ("domain", "persistence", "execution", "metrics")
    wrong = {
        (module, target)
        for module, targets in GRAPH.items()
        if _area(module) in lower
        for target in targets
        if _area(target) == "orchestration"
    }
    assert wrong == set()


def test_tracing_is_a_bottom_layer_beside_domain() -> None:
    """Every layer may trace; tracing itself knows only the domain (and OpenTelemetry)."""
    wrong = {
        (module, target)
        for module, targets in GRAPH.items()
        if _area(module) == "tracing"
        for target in targets
        if _area(target) not in ("tracing", "domain", "")
    }
    assert wrong == set()


def test_outside_persistence_the_business_database_is_read_through_the_store() -> None:
    """Its tables, its SQL helpers and its engine belong to persistence/: the other layers go
    through a concern of the store (``store.deliveries.ledger_entries(...)``)."""
    private = {"agentforge_dagster.persistence.schema", "agentforge_dagster.persistence.sql"}
    importers = {
        module
        for module, targets in GRAPH.items()
        if _area(module) != "persistence" and targets & private
    }
    engine_users = {
        module
        for module, path in MODULES.items()
        if _area(module) != "persistence"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "engine"
    }
    assert (importers, engine_users) == (set(), set())
