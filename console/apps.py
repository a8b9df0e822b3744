from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator's pages that combine the registry, the migrations and health: the admin's dashboard, the
    registry's migration actions, and the demo."""

    name = "console"
    verbose_name = "Console"
