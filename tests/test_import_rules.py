"""The shape of the house: the engine (``benchmark/``) stands below methods, tasks and reports.

Read from the source's own import statements (``ast``), so a forbidden import fails here
whether or not it is ever executed: the engine imports no plug-in module (the registry loads
them by name), reports import only the engine, and methods and tasks reach each other only
through the registry. The command line alone may call the reports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package → top-level packages of this repository it must not import
FORBIDDEN: dict[str, frozenset[str]] = {
    "benchmark": frozenset({"methods", "tasks", "reports", "tools"}),
    "reports": frozenset({"methods", "tasks", "tools"}),
    "methods": frozenset({"tasks", "reports", "tools"}),
    "tasks": frozenset({"methods", "reports", "tools"}),
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


# The command line is the one place that composes the engine with the reports (``benchmark report``).
ALLOWED: frozenset[tuple[str, str]] = frozenset({("benchmark/cli.py", "reports")})


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for line, top in imported_packages(path):
            if top in FORBIDDEN[package] and (name, top) not in ALLOWED:
                found.append(f"{name}:{line} imports {top}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_stands_below_it(package: str) -> None:
    assert violations(package) == []


def test_the_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("def late():\n    from methods.coresets import KCenter\n    import tasks.base\n")
    assert [top for _, top in imported_packages(module)] == ["methods", "tasks"]


def test_relative_imports_stay_inside_their_package(tmp_path: Path) -> None:
    # A relative import cannot leave its package, so it is never a violation; the rule must not
    # mistake ``from . import x`` for a top-level package.
    module = tmp_path / "probe.py"
    module.write_text("from . import sibling\nfrom .contracts import TokenBatch\n")
    assert imported_packages(module) == []
