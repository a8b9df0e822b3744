from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class MigrationsRunnerConfig(AppConfig):
    """Fleet-wide SQL migrations: sets, plans, executions, schedules."""

    name = "migrations_runner"
    verbose_name = "Migrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from migrations_runner import checks as app_checks

        checks.register(app_checks.check_dependencies, app_checks.TAG)
        checks.register(app_checks.check_sets, app_checks.TAG)
        post_migrate.connect(_ensure_recovery_schedule, sender=self)


def _ensure_recovery_schedule(sender, **kwargs) -> None:
    """After migrate: the periodic lost-target check exists (a django-q2 schedule)."""
    from django.db import connection

    from migrations_runner.services import ensure_recovery_schedule

    if "django_q_schedule" in connection.introspection.table_names():  # absent when only some apps migrated
        ensure_recovery_schedule()
