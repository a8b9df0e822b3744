"""System checks of the migrations app: the dependency DAG and the migration sets."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from migrations_runner.engine.sets import DATABASE_TYPES, load_sets
from migrations_runner.engine.targets import dependency_problems

TAG = "migrations"


def _ours(app_configs) -> bool:
    return app_configs is None or any(config.name == "migrations_runner" for config in app_configs)


def check_dependencies(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """MIGRATION_DEPENDENCIES must name known database types and have no cycle."""
    if not _ours(app_configs):
        return []
    deps = settings.MIGRATION_DEPENDENCIES
    if not isinstance(deps, dict) or not all(isinstance(v, list) for v in deps.values()):
        return [
            checks.Error(
                "MIGRATION_DEPENDENCIES must be a JSON object mapping a database type to a list of types.",
                id="migrations_runner.E001",
            )
        ]
    return [
        checks.Error(
            f"MIGRATION_DEPENDENCIES: {problem}.",
            hint=f"Database types are {', '.join(DATABASE_TYPES)}; dependencies must form a DAG.",
            id="migrations_runner.E002",
        )
        for problem in dependency_problems(deps, DATABASE_TYPES)
    ]


def check_sets(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Report problems of the migration sets under MIGRATIONS_DIR (runs refuse broken sets); a missing
    directory is the health app's check (health.E002)."""
    if not _ours(app_configs) or not settings.MIGRATIONS_DIR.is_dir():
        return []
    return [
        checks.Warning(f"Migration set {kind}: {problem}", id="migrations_runner.W002")
        for kind, mset in load_sets(settings.MIGRATIONS_DIR, placeholders=settings.MIGRATION_PLACEHOLDERS).items()
        for problem in mset.problems
    ]
