"""The selectors package: no import hidden inside a function, the package re-exports every subject module's public
names, and plans keep their JSON shape. (That no read imports a write is a contract of ``.importlinter``.)"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from migrations_runner import selectors
from migrations_runner.selectors.plans import TargetPlan
from migrations_runner.serializers import TargetPlanSerializer, unredacted_context

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "migrations_runner" / "selectors"
SUBJECTS = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def imported_modules(source: str) -> list[tuple[str, bool]]:
    """Every module ``source`` imports from (``from x import y`` also counts as ``x.y``), and whether the import
    is inside a function."""
    tree = ast.parse(source)
    nested = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(f"{node.module}.{alias.name}", id(node) in nested) for alias in node.names]
    return found


def test_the_scan_sees_an_import_inside_a_function():
    hidden = "def read():\n    from migrations_runner.services.runner import lane_work\n"
    assert imported_modules(hidden) == [("migrations_runner.services.runner.lane_work", True)]
    assert imported_modules("from migrations_runner import services\n") == [("migrations_runner.services", False)]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_no_migrations_selector_hides_an_import_inside_a_function(path):
    assert [name for name, nested in imported_modules(path.read_text()) if nested] == []


def defined_names(source: str) -> list[str]:
    """The public names a module defines at its top level: functions, classes, constants."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [name.id for target in node.targets for name in ast.walk(target) if isinstance(name, ast.Name)]
    return [name for name in names if not name.startswith("_")]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_package_re_exports_every_public_name_of_its_subject_modules(subject):
    module = importlib.import_module(f"migrations_runner.selectors.{subject}")
    public = defined_names((PACKAGE / f"{subject}.py").read_text())
    assert public
    assert [name for name in public if getattr(selectors, name, None) is not getattr(module, name)] == []
    assert set(public) <= set(selectors.__all__)


def plan_json(plan: TargetPlan) -> dict:
    return TargetPlanSerializer(plan, context=unredacted_context()).data


def test_a_planned_target_shows_every_field_but_error():
    plan = TargetPlan(
        target="shared-us/acme",
        connection="shared-us",
        schema="acme",
        database_type="tenant",
        region="us-east",
        tenant="acme",
        current_version="2",
        latest_version="3",
        pending=["3"],
        schema_exists=True,
        phase=1,
    )
    assert plan_json(plan) == {
        "target": "shared-us/acme",
        "connection": "shared-us",
        "schema": "acme",
        "database_type": "tenant",
        "region": "us-east",
        "tenant": "acme",
        "current_version": "2",
        "latest_version": "3",
        "pending": ["3"],
        "drift": [],
        "out_of_order": [],
        "refusal": "",
        "callbacks": [],
        "schema_exists": True,
    }


def test_a_target_whose_history_could_not_be_read_shows_only_the_error_and_empty_versions():
    plan = TargetPlan(
        target="shared-eu/public",
        connection="shared-eu",
        schema="public",
        database_type="shared",
        region="eu-west",
        tenant=None,
        error="connection refused",
    )
    shown = plan_json(plan)
    assert list(shown) == ["target", "error", "current_version", "pending", "drift"]
    assert shown == {
        "target": "shared-eu/public",
        "error": "connection refused",
        "current_version": None,
        "pending": [],
        "drift": [],
    }
