"""The test suite's layout: test modules share code only through tests/support (and the OIDC provider's
launcher), and fixtures only through conftest.py files, never by importing another test module or a conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED = ("tests.support", "tests.oidc_provider.launcher")


def suite_imports(path: Path, *, root: Path) -> list[str]:
    """The modules of the suite under ``root`` that ``path`` imports, anywhere in it (functions too), dotted."""
    package = list(path.relative_to(root.parent).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[: len(package) - node.level + 1], node.module or ""]) if node.level else ""
            module = base.strip(".") or node.module or ""
            # ``from . import test_x`` names the module in the alias; otherwise the module imported from counts.
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if name == root.name or name.startswith(root.name + ".")]
    return found


def not_shared(modules: list[str]) -> list[str]:
    return [name for name in modules if not any(name == p or name.startswith(p + ".") for p in SHARED)]


def test_the_check_sees_imports_of_a_test_module_and_of_a_conftest(tmp_path):
    folder = tmp_path / "tests" / "pkg"
    folder.mkdir(parents=True)
    module = folder / "test_x.py"
    module.write_text(
        "from tests.pkg.test_y import helper\n"
        "from tests.support.waiting import wait_until\n"
        "from . import test_z\n"
        "def test_it():\n"
        "    from tests.conftest import SLOW_FIXTURES\n"
    )
    imported = suite_imports(module, root=tmp_path / "tests")
    assert not_shared(imported) == ["tests.pkg.test_y", "tests.pkg.test_z", "tests.conftest"]


def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest():
    wrong = {
        str(path.relative_to(TESTS.parent)): bad
        for path in sorted(TESTS.rglob("*.py"))
        if "node_modules" not in path.parts and (bad := not_shared(suite_imports(path, root=TESTS)))
    }
    assert not wrong, f"share helpers through tests/support and fixtures through conftest.py: {wrong}"
