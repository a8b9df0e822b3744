from django.apps import AppConfig
from django.core import checks


class MigrationsRunnerConfig(AppConfig):
    """Fleet-wide SQL migrations: sets, plans, executions, schedules."""

    name = "migrations_runner"
    verbose_name = "Migrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from migrations_runner import checks as app_checks

        checks.register(app_checks.check_dependencies, app_checks.TAG)
        checks.register(app_checks.check_sets, app_checks.TAG)
