"""The engine, and the engine's tests, import in a Python where Django cannot be imported."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import migrations_runner.engine
from tests.support.qcluster import ROOT

ENGINE_MODULES = sorted(
    f"migrations_runner.engine.{m.name}" for m in pkgutil.iter_modules(migrations_runner.engine.__path__)
)
ENGINE_TESTS = sorted(f"tests.engine.{path.stem}" for path in Path(__file__).parent.glob("*.py"))

# Django is blocked before anything else is imported: ``import django`` must fail, or the check proves nothing.
WITHOUT_DJANGO = """
import importlib, sys
sys.modules["django"] = None
try:
    import django
except ImportError:
    pass
else:
    sys.exit("django could still be imported")
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def import_without_django(*modules: str) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh Python where ``django`` cannot be imported and no settings are named."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DJANGO, *modules],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_module_that_needs_django_fails_the_check():
    result = import_without_django("migrations_runner.models")
    assert result.returncode != 0
    assert "django" in result.stderr


def test_every_engine_module_imports_without_django():
    assert "migrations_runner.engine.apply" in ENGINE_MODULES
    result = import_without_django(*ENGINE_MODULES)
    assert result.returncode == 0, result.stderr


def test_the_engine_tests_and_the_fixtures_they_use_import_without_django():
    assert "tests.engine.test_sets" in ENGINE_TESTS
    result = import_without_django("tests.conftest", *ENGINE_TESTS)
    assert result.returncode == 0, result.stderr
