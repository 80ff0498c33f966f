"""The layout's import rules (docs/architecture.md): a core without Dagster, one composition
root, one-way package dependencies, no private names borrowed across modules, no import cycles.

Read from the source with `ast` (every import, function-level ones included), so a rule broken
anywhere fails here with the module and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("housekeeping", "analytics")
# The code location's root and the `hk` root: the only modules that compose both packages.
ROOT_FILES = {"housekeeping.definitions", "housekeeping.cli"}
# Click shells over a package's core; they may talk to Dagster (hk demo runs jobs in process).
CLI_MODULES = {"housekeeping.cli", "analytics.cli", "analytics.alerts.cli"}
# The module whose very job is Dagster's own storage (purging its run history). Every other core
# module is plain Python; the instance check reads dagster.yaml without importing Dagster.
DAGSTER_BY_NATURE = {"housekeeping.dagster_runs"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (resolved: relative imports, submodules named in `from`)
    names: tuple[str, ...]  # names taken with `from target import ...`
    line: int


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> Iterator[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{target}.{item}" for item in names if f"{target}.{item}" in MODULES]
            yield Import(name, target, names, node.lineno)
            for submodule in submodules:
                yield Import(name, submodule, (), node.lineno)


IMPORTS = [item for name, path in MODULES.items() for item in imports_of(name, path)]


def top(module: str) -> str:
    return module.split(".")[0]


def in_defs_folder(module: str) -> bool:
    return ".defs." in f"{module}." and not module.endswith(".defs")


def where(item: Import) -> str:
    return f"{MODULES[item.module].relative_to(ROOT)}:{item.line}"


def test_only_the_dagster_shell_imports_dagster():
    allowed = ROOT_FILES | CLI_MODULES | DAGSTER_BY_NATURE
    offenders = [
        f"{where(item)} imports {item.target}"
        for item in IMPORTS
        if top(item.target) in {"dagster", "dagster_graphql", "dagster_postgres"}
        and not in_defs_folder(item.module)
        and item.module not in allowed
    ]
    assert offenders == [], "core modules must stay plain Python (move this into a defs/ folder)"


def test_the_named_exceptions_really_need_dagster():
    users = {item.module for item in IMPORTS if top(item.target) == "dagster"}
    assert users >= DAGSTER_BY_NATURE, "an exception that no longer imports dagster: drop it"


def test_no_private_dagster_api():
    offenders = [
        f"{where(item)} imports {item.target}"
        for item in IMPORTS
        if item.target.startswith("dagster._")
        or (item.target == "dagster" and any(name.startswith("_") for name in item.names))
    ]
    assert offenders == []


def test_housekeeping_never_imports_analytics_except_the_roots():
    """analytics builds on housekeeping's core (config, errors, database, history); the other
    way round only the code location's root and the `hk` root compose the two."""
    offenders = [
        f"{where(item)} imports {item.target}"
        for item in IMPORTS
        if top(item.module) == "housekeeping"
        and top(item.target) == "analytics"
        and item.module not in ROOT_FILES
    ]
    assert offenders == []


def test_nothing_imports_the_roots_or_another_domains_dagster_shell():
    offenders = [
        f"{where(item)} imports {item.target}"
        for item in IMPORTS
        if item.target in MODULES
        and item.module not in ROOT_FILES
        and (
            item.target in ROOT_FILES
            or (in_defs_folder(item.target) and not _same_domain_shell(item.module, item.target))
        )
    ]
    assert offenders == []


def _same_domain_shell(module: str, target: str) -> bool:
    # analytics.defs.* may not use analytics.alerts.defs.*, and the other way round.
    return target.rpartition(".defs.")[0] == module.rpartition(".defs.")[0]


def test_no_module_imports_a_private_name_of_another():
    offenders = [
        f"{where(item)} imports {name} from {item.target}"
        for item in IMPORTS
        if item.target in MODULES and item.target != item.module
        for name in item.names
        if name.startswith("_") and f"{item.target}.{name}" not in MODULES
    ]
    assert offenders == [], "make the name public (with a docstring) or move the code"


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for item in IMPORTS:
        if item.target in MODULES and item.target != item.module:
            graph[item.module].add(item.target)
    cycles = [sorted(component) for component in strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components of `graph`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_the_cycle_finder_finds_a_cycle():
    # The cycle test above must be able to fail.
    components = strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(map(sorted, components)) == [["a", "b", "c"], ["d"]]
