from django.apps import AppConfig


class HealthConfig(AppConfig):
    """Liveness, readiness and metrics of the control plane."""

    name = "health"
    verbose_name = "Health"
    default_auto_field = "django.db.models.BigAutoField"
