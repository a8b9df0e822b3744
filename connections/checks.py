"""System checks of the connection registry."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from connections.hosts import entry_problem


def check_connection_allowed_hosts(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every ``CONNECTION_ALLOWED_HOSTS`` entry must be one the host policy understands."""
    if app_configs is not None and not any(config.name == "connections" for config in app_configs):
        return []
    return [
        checks.Error(
            f"CONNECTION_ALLOWED_HOSTS: {problem}.",
            hint="Use host names, '*.domain' wildcards, IP addresses, CIDR ranges, socket directories or '*'.",
            id="connections.E001",
        )
        for entry in settings.CONNECTION_ALLOWED_HOSTS
        if (problem := entry_problem(entry))
    ]
