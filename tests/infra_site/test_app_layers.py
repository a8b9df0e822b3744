"""The apps stack in one direction: infra_site < connections < migrations_runner < health < console; none imports
one above it, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ["infra_site", "connections", "migrations_runner", "health", "console"]


def imported_packages(path: Path) -> set[str]:
    """The top-level packages that the module at ``path`` imports anywhere in its body."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def test_the_stack_is_read_from_real_imports():
    assert "connections" in imported_packages(ROOT / "console" / "admin.py")
    assert "infra_site" in imported_packages(ROOT / "connections" / "admin.py")


@pytest.mark.parametrize("app", STACK[:-1])
def test_an_app_imports_none_above_it(app):
    above = set(STACK[STACK.index(app) + 1 :])
    upward = {
        f"{path.relative_to(ROOT)}: {sorted(imported_packages(path) & above)}"
        for path in (ROOT / app).rglob("*.py")
        if imported_packages(path) & above
    }
    assert upward == set()
