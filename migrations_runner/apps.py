from django.apps import AppConfig


class MigrationsRunnerConfig(AppConfig):
    """Fleet-wide SQL migrations: sets, plans, executions, schedules."""

    name = "migrations_runner"
    verbose_name = "Migrations"
    default_auto_field = "django.db.models.BigAutoField"
