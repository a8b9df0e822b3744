from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    """The registry of the fleet's databases and tenants."""

    name = "connections"
    verbose_name = "Connection registry"
    default_auto_field = "django.db.models.BigAutoField"
