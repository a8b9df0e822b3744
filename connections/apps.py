from django.apps import AppConfig
from django.core import checks


class ConnectionsConfig(AppConfig):
    """The registry of the fleet's databases and tenants."""

    name = "connections"
    verbose_name = "Connection registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from connections.checks import check_connection_allowed_hosts

        checks.register(check_connection_allowed_hosts)
