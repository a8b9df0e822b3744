"""System checks of the migrations app: the dependency map (E001, E002) and the migration sets (W002)."""

from __future__ import annotations

import shutil

import pytest
from django.apps import apps
from django.core import checks

from migrations_runner.checks import TAG, check_dependencies, check_sets
from migrations_runner.engine.targets import DEFAULT_DEPENDENCIES
from tests.support.sets import SHIPPED_SETS


@pytest.fixture
def broken_sets(tmp_path, settings):
    """A copy of the shipped sets with a malformed file name and an undo script without its forward script."""
    root = tmp_path / "sets"
    shutil.copytree(SHIPPED_SETS, root)
    (root / "tenant" / "V99_missing_separator.sql").write_text("SELECT 1;")
    (root / "analytics" / "U77__undo_of_nothing.sql").write_text("SELECT 1;")
    settings.MIGRATIONS_DIR = root
    return root


@pytest.mark.parametrize(
    "dependencies",
    [
        ["admin", "shared"],
        {"tenant": "shared"},
        {"tenant": None},
    ],
    ids=["a-list", "a-string-value", "a-null-value"],
)
def test_a_dependency_map_of_the_wrong_shape_is_e001(settings, dependencies):
    settings.MIGRATION_DEPENDENCIES = dependencies
    errors = check_dependencies()
    assert [e.id for e in errors] == ["migrations_runner.E001"]
    assert errors[0].level == checks.ERROR
    assert "JSON object" in errors[0].msg


def test_each_unknown_database_type_is_its_own_e002_with_the_known_types_as_hint(settings):
    settings.MIGRATION_DEPENDENCIES = {"tenant": ["billing"], "reports": ["admin"]}
    errors = check_dependencies()
    assert [e.id for e in errors] == ["migrations_runner.E002", "migrations_runner.E002"]
    assert {e.msg for e in errors} == {
        "MIGRATION_DEPENDENCIES: unknown database type 'billing'.",
        "MIGRATION_DEPENDENCIES: unknown database type 'reports'.",
    }
    assert all("admin, shared, analytics, tenant" in e.hint for e in errors)


def test_a_cycle_is_a_system_check_error(settings):
    settings.MIGRATION_DEPENDENCIES = {"admin": ["tenant"], "tenant": ["admin"]}
    errors = check_dependencies()
    assert errors
    assert errors[0].id == "migrations_runner.E002"
    assert "cycle" in errors[0].msg
    settings.MIGRATION_DEPENDENCIES = DEFAULT_DEPENDENCIES
    assert check_dependencies() == []


def test_the_shipped_sets_pass_the_set_check(settings):
    assert settings.MIGRATIONS_DIR.is_dir()
    assert check_sets() == []


def test_each_problem_of_a_set_is_a_w002_warning_naming_the_set_and_file(broken_sets):
    warnings = check_sets()
    assert {w.id for w in warnings} == {"migrations_runner.W002"}
    assert all(w.level == checks.WARNING for w in warnings)
    messages = sorted(w.msg for w in warnings)
    assert len(messages) == 2
    assert messages[0].startswith("Migration set analytics: U77__undo_of_nothing.sql: undo script without")
    assert messages[1].startswith("Migration set tenant: V99_missing_separator.sql: malformed file name")


def test_a_missing_sets_directory_is_left_to_the_health_check(tmp_path, settings):
    settings.MIGRATIONS_DIR = tmp_path / "does-not-exist"
    assert check_sets() == []


def test_checks_run_only_for_this_app_when_apps_are_named(broken_sets, settings):
    settings.MIGRATION_DEPENDENCIES = {"tenant": ["tenant"]}
    others = [apps.get_app_config("connections"), apps.get_app_config("auth")]
    assert check_dependencies(app_configs=others) == []
    assert check_sets(app_configs=others) == []
    ours = [apps.get_app_config("migrations_runner")]
    assert [e.id for e in check_dependencies(app_configs=ours)] == ["migrations_runner.E002"]
    assert len(check_sets(app_configs=ours)) == 2


def test_the_checks_are_registered_under_the_migrations_tag(broken_sets, settings):
    settings.MIGRATION_DEPENDENCIES = {"admin": ["tenant"], "tenant": ["admin"]}
    found = checks.run_checks(tags=[TAG])
    ids = [m.id for m in found]
    assert "migrations_runner.E002" in ids
    assert ids.count("migrations_runner.W002") == 2
    assert any("cycle: " in m.msg for m in found if m.id == "migrations_runner.E002")
