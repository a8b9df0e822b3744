"""Errors of the health endpoints."""

from __future__ import annotations

from typing import Any

from rest_framework import status

from infra_site.errors import ApplicationError, NotFound


class UnknownService(NotFound):
    code = "service_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"No service named {name!r}.", details={"name": name})


class ControlDatabaseUnavailable(ApplicationError):
    """The control database does not answer: the control plane cannot work (503)."""

    code = "control_database_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self, details: dict[str, Any] | None = None) -> None:
        super().__init__("The control database is unreachable.", details=details)


class MetricsClosed(ApplicationError):
    """``/metrics`` in staging or production without ``METRICS_TOKEN``."""

    code = "metrics_closed"
    status_code = status.HTTP_403_FORBIDDEN

    def __init__(self) -> None:
        super().__init__("Set METRICS_TOKEN to scrape /metrics outside development and testing.")
