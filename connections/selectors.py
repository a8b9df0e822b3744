"""Reads of the connection registry. Soft-deleted connections never appear here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from connections.exceptions import ConnectionNotFound, TenantNotFound
from connections.models import DatabaseConnection, Tenant, TenantStatus
from connections.probe import ConnectionParams, redact_address
from infra_site import roles


def connection_list(
    *,
    database_type: str | None = None,
    region: str | None = None,
    is_active: bool | None = None,
    is_healthy: bool | None = None,
    names: list[str] | None = None,
) -> QuerySet[DatabaseConnection]:
    """Return live (not soft-deleted) connections, narrowed by the given filters."""
    qs = DatabaseConnection.objects.all()
    if database_type:
        qs = qs.filter(database_type=database_type)
    if region is not None:
        qs = qs.filter(region=region)
    if is_active is not None:
        qs = qs.filter(is_active=is_active)
    if is_healthy is not None:
        qs = qs.filter(is_healthy=is_healthy)
    if names:
        qs = qs.filter(name__in=names)
    return qs


def connection_get(*, connection_id: uuid.UUID | str) -> DatabaseConnection:
    """Return a live connection by id; raise ``ConnectionNotFound``."""
    try:
        return DatabaseConnection.objects.get(pk=connection_id)
    except (DatabaseConnection.DoesNotExist, ValidationError, ValueError) as exc:
        raise ConnectionNotFound(f"No connection with id {connection_id}.", details={"id": str(connection_id)}) from exc


def connection_get_by_name(*, name: str) -> DatabaseConnection:
    """Return a live connection by name; raise ``ConnectionNotFound``."""
    try:
        return DatabaseConnection.objects.get(name=name)
    except DatabaseConnection.DoesNotExist as exc:
        raise ConnectionNotFound(f"No connection named {name!r}.", details={"name": name}) from exc


def tenant_list(
    *, status: str | None = None, region: str | None = None, connection: DatabaseConnection | None = None
) -> QuerySet[Tenant]:
    """Return tenants whose connection is live, narrowed by the given filters."""
    qs = Tenant.objects.select_related("connection").filter(connection__deleted_at__isnull=True)
    if status:
        qs = qs.filter(status=status)
    if region is not None:
        qs = qs.filter(connection__region=region)
    if connection is not None:
        qs = qs.filter(connection=connection)
    return qs


def tenant_get(*, slug: str) -> Tenant:
    """Return a tenant by slug; raise ``TenantNotFound``."""
    try:
        return Tenant.objects.select_related("connection").get(slug=slug, connection__deleted_at__isnull=True)
    except Tenant.DoesNotExist as exc:
        raise TenantNotFound(f"No tenant with slug {slug!r}.", details={"slug": slug}) from exc


def tenant_list_targetable() -> QuerySet[Tenant]:
    """Return the tenants that migrations apply to: active, on a live and active connection."""
    return tenant_list(status=TenantStatus.ACTIVE).filter(connection__is_active=True)


def error_redactor(*, user: Any) -> Callable[[Any], Any]:
    """The function that shows stored errors to ``user``: unchanged for holders of databases:read (as /health
    shows addresses to them alone), else with every host, port and user name of the registry hidden.

    It takes a string, or a dict or list of them (a target run's error), and returns the same shape.
    """
    if roles.has_role(user, roles.DATABASES_READ):
        return lambda value: value
    known: list[str] = []
    for host, port, username in DatabaseConnection.all_objects.values_list("host", "port", "username"):
        known.extend((host, str(port), username))

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            return redact_address(value, *known)
        if isinstance(value, dict):
            return {key: redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [redact(item) for item in value]
        return value

    return redact


def connection_params(connection: DatabaseConnection) -> ConnectionParams:
    """Return the parameters to open a connection to a registered database.

    They carry the connection's allowed authentication methods and ``CONNECTION_ALLOWED_HOSTS``, so a
    row stored before either rule existed cannot send the password where the rules now forbid it.
    """
    return ConnectionParams(
        host=connection.host,
        port=connection.port,
        dbname=connection.database_name,
        user=connection.username,
        password=connection.password,
        sslmode=connection.ssl_mode,
        connect_timeout=connection.connect_timeout,
        require_auth=connection.auth_methods,
        allowed_hosts=tuple(settings.CONNECTION_ALLOWED_HOSTS),
    )
