from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class HealthConfig(AppConfig):
    """Liveness, readiness and metrics of the control plane, and the periodic connection checks."""

    name = "health"
    verbose_name = "Health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from health import checks as app_checks

        for check in (
            app_checks.check_migrations_dir,
            app_checks.check_oidc_complete,
            app_checks.check_sqlite_processes,
            app_checks.check_multiprocess_dir,
        ):
            checks.register(check, app_checks.TAG)
        # These touch the network or matter only where the service is deployed.
        checks.register(app_checks.check_broker, app_checks.TAG, deploy=True)
        checks.register(app_checks.check_metrics_token, app_checks.TAG, deploy=True)
        post_migrate.connect(_ensure_health_schedule, sender=self)


def _ensure_health_schedule(sender, **kwargs) -> None:
    """After migrate: the periodic connection check exists, at the interval HEALTH_CHECK_INTERVAL gives."""
    from django.db import connection

    from health.services import ensure_health_schedule

    if "django_q_schedule" in connection.introspection.table_names():  # absent when only some apps migrated
        ensure_health_schedule()
