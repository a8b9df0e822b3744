"""Reads of the targets a selection names (control database) and of their schemas: ``schema_states`` and
``schema_sizes`` connect to every target database, one connection per database, in parallel."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.db import connection as control_db
from django.db.models import QuerySet

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType, Tenant
from migrations_runner.engine import history
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import NoTargets
from migrations_runner.models import Scope
from migrations_runner.selection import TargetSelection

SCOPE_TYPES = {
    Scope.ALL: ("admin", "shared", "analytics", "tenant"),
    Scope.ADMIN: ("admin",),
    Scope.REGIONAL: ("shared", "analytics"),
    Scope.TENANT: ("tenant",),
    Scope.SINGLE: ("admin", "shared", "analytics", "tenant"),
}


def _target(connection: DatabaseConnection, set_type: str, schema: str, tenant: Tenant | None = None) -> Target:
    return Target(
        connection_id=str(connection.pk),
        connection_name=connection.name,
        database_type=set_type,
        region=connection.region,
        schema=schema,
        tenant_slug=tenant.slug if tenant else "",
        tenant_id=tenant.pk if tenant else None,
        create_schema=schema != "public",
        database=connection.database_name,
        user=connection.username,
    )


# Parameters a filtered query of the registry holds besides the values of one IN list (its other conditions).
_OWN_PARAMS = 50


def _slices(values: Sequence[str], *, beside: int = 0) -> Iterator[Sequence[str]]:
    """``values`` in slices small enough for one IN list in a query with ``beside`` other values, under the
    control database's limit on parameters per query (SQLite's can be 999; PostgreSQL takes them all at once)."""
    limit = control_db.features.max_query_params
    size = max(1, limit - beside - _OWN_PARAMS) if limit else max(1, len(values))
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _tenants_named(tenants: QuerySet[Tenant], slugs: Sequence[str], *, beside: int = 0) -> list[Tenant]:
    """The tenants of ``tenants`` with one of ``slugs``, in slug order, looked up a slice of slugs at a time."""
    found = [tenant for part in _slices(slugs, beside=beside) for tenant in tenants.filter(slug__in=part)]
    return sorted(found, key=lambda tenant: tenant.slug)


def selection_unknown(selection: TargetSelection) -> dict[str, list[str]]:
    """What a selection names that the registry does not hold: regions no live connection is in, connection
    names no live connection has, tenant slugs no tenant of a live connection has; field -> one message each."""
    unknown: dict[str, list[str]] = {}
    live = registry.connection_list()
    if selection.regions:
        known = set(live.filter(region__in=selection.regions).values_list("region", flat=True))
        missing = [f"No connection is in region {r!r}." for r in selection.regions if r not in known]
        if missing:
            unknown["regions"] = missing
    if selection.connections:
        known = set(live.filter(name__in=selection.connections).values_list("name", flat=True))
        missing = [f"No connection named {n!r}." for n in selection.connections if n not in known]
        if missing:
            unknown["connections"] = missing
    if selection.tenants:
        tenants = registry.tenant_list()
        known = {
            slug
            for part in _slices(selection.tenants)
            for slug in tenants.filter(slug__in=part).values_list("slug", flat=True)
        }
        missing = [f"No tenant with slug {t!r}." for t in selection.tenants if t not in known]
        if missing:
            unknown["tenants"] = missing
    return unknown


def targets_resolve(selection: TargetSelection) -> list[Target]:
    """Return the targets of a selection; raise ``NoTargets`` when none match."""
    types = SCOPE_TYPES[Scope(selection.scope)]
    # The targets need no passwords: leave them encrypted (decrypting per tenant row costs).
    live = registry.connection_list(is_active=True).defer("password")
    if selection.regions:
        live = live.filter(region__in=selection.regions)
    if selection.connections:
        live = live.filter(name__in=selection.connections)
    targets: list[Target] = []
    if not selection.tenants:
        for connection in live.filter(database_type__in=[t for t in types if t != "tenant"]):
            targets.append(_target(connection, connection.database_type, connection.default_schema))
    if "tenant" in types:
        tenant_qs = registry.tenant_list_targetable().defer("connection__password")
        if selection.regions:
            tenant_qs = tenant_qs.filter(connection__region__in=selection.regions)
        if selection.connections:
            tenant_qs = tenant_qs.filter(connection__name__in=selection.connections)
        if selection.tenants:
            beside = len(selection.regions) + len(selection.connections)
            tenants = _tenants_named(tenant_qs, selection.tenants, beside=beside)
        else:
            tenants = list(tenant_qs)
        for tenant in tenants:
            targets.append(_target(tenant.connection, "tenant", tenant.schema_name, tenant))
        if not selection.tenants:
            # A dedicated tenant database that no tenant row describes still gets the tenant set.
            bare = live.filter(database_type=DatabaseType.TENANT).exclude(tenants__isnull=False)
            targets.extend(_target(c, "tenant", c.default_schema) for c in bare)
    details = selection.as_kwargs()
    if not targets:
        raise NoTargets(f"No target matches {selection.describe()}.", details=details)
    if selection.scope == Scope.SINGLE and len(targets) != 1:
        raise NoTargets(
            f"Scope 'single' needs exactly one target; {selection.describe()} matches {len(targets)}.",
            details={**details, "matched": [t.label for t in targets[:20]]},
        )
    return targets


def _read_database(connection: DatabaseConnection, schemas: list[str]) -> dict[str, history.SchemaState] | str:
    try:
        with psycopg.connect(**registry.connection_params(connection).kwargs(autocommit=True)) as conn:
            return history.read_states(conn, schemas)
    except psycopg.Error as exc:
        return (exc.diag.message_primary or str(exc)).strip()


def schema_states(targets: list[Target]) -> dict[str, history.SchemaState | str]:
    """Read every target's history, one connection per database, databases in parallel.

    Returns target key -> state, or an error message when the database was unreachable.
    """
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk(list(by_connection))

    def read(connection_id: str) -> tuple[list[Target], dict[str, history.SchemaState] | str]:
        group = by_connection[connection_id]
        return group, _read_database(connections[uuid.UUID(connection_id)], [t.schema for t in group])

    result: dict[str, history.SchemaState | str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(by_connection)) or 1) as pool:
        for group, states in pool.map(read, list(by_connection)):
            for target in group:
                result[target.key] = states if isinstance(states, str) else states[target.schema]
    return result


SCHEMA_BYTES_QUERY = """
SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind IN ('r', 'm', 'p')), 0)::bigint
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = ANY(%s)
GROUP BY n.nspname
"""


def schema_sizes(targets: list[Target]) -> dict[str, int]:
    """Each target's schema size in bytes (tables with their indexes and TOAST; 0 when the schema does not exist
    or the database is unreachable): one catalog query per database, databases in parallel."""
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk(list(by_connection))

    def read(connection_id: str) -> tuple[list[Target], dict[str, int]]:
        group = by_connection[connection_id]
        params = registry.connection_params(connections[uuid.UUID(connection_id)])
        try:
            with psycopg.connect(**params.kwargs(autocommit=True)) as conn:
                rows = conn.execute(SCHEMA_BYTES_QUERY, [[t.schema for t in group]]).fetchall()
        except psycopg.Error:
            return group, {}
        return group, {schema: int(size) for schema, size in rows}

    sizes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(by_connection)) or 1) as pool:
        for group, by_schema in pool.map(read, list(by_connection)):
            for target in group:
                sizes[target.key] = by_schema.get(target.schema, 0)
    return sizes
