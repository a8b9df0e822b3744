"""Reads of the targets a selection names (control database) and of their schemas: ``schema_states`` and
``schema_sizes`` connect to every target database, one connection per database, in parallel."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.conf import settings
from django.db import connection as control_db
from django.db.models import QuerySet

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType
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


def _target(
    connection: DatabaseConnection, set_type: str, schema: str, *, slug: str = "", tenant_id: int | None = None
) -> Target:
    return Target(
        connection_id=str(connection.pk),
        connection_name=connection.name,
        database_type=set_type,
        region=connection.region,
        schema=schema,
        tenant_slug=slug,
        tenant_id=tenant_id,
        create_schema=schema != "public",
        database=connection.database_name,
        user=connection.username,
    )


_TENANT_FIELDS = ("pk", "slug", "schema_name", "connection_id")


# Parameters a filtered query of the registry holds besides the values of one IN list (its other conditions).
_OWN_PARAMS = 50


def _slices(values: Sequence[str], *, beside: int = 0) -> Iterator[Sequence[str]]:
    """``values`` in slices small enough for one IN list in a query with ``beside`` other values, under the
    control database's limit on parameters per query (SQLite's can be 999; PostgreSQL takes them all at once)."""
    limit = control_db.features.max_query_params
    size = max(1, limit - beside - _OWN_PARAMS) if limit else max(1, len(values))
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _tenants_named(tenants: QuerySet, slugs: Sequence[str], *, beside: int = 0) -> list[tuple]:
    """The rows (``_TENANT_FIELDS``) of ``tenants`` with one of ``slugs``, in slug order, looked up a slice of
    slugs at a time."""
    found = [row for part in _slices(slugs, beside=beside) for row in tenants.filter(slug__in=part)]
    return sorted(found, key=lambda row: row[1])


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
        tenant_qs = registry.tenant_list_targetable()
        if selection.regions:
            tenant_qs = tenant_qs.filter(connection__region__in=selection.regions)
        if selection.connections:
            tenant_qs = tenant_qs.filter(connection__name__in=selection.connections)
        # Rows, not model instances (a fleet has tens of thousands), and each connection once.
        rows = tenant_qs.values_list(*_TENANT_FIELDS)
        if selection.tenants:
            beside = len(selection.regions) + len(selection.connections)
            tenants = _tenants_named(rows, selection.tenants, beside=beside)
        else:
            tenants = list(rows)
        owners = live.in_bulk({row[3] for row in tenants})
        for pk, slug, schema, connection_id in tenants:
            targets.append(_target(owners[connection_id], "tenant", schema, slug=slug, tenant_id=pk))
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


# A database with many schemas has its histories read over several connections at once (the server opens every
# history table: that work spreads over its cores), slices of at least this many schemas, at most
# ``MIGRATION_MAX_PER_DATABASE`` connections per database.
_STATES_SLICE = 1000


def schema_states(targets: list[Target]) -> dict[str, history.SchemaState | str]:
    """Read every target's history, databases in parallel, a database's schemas in slices over a few connections.

    Returns target key -> state, or an error message when the database was unreachable.
    """
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk(list(by_connection))
    per_database = max(1, settings.MIGRATION_MAX_PER_DATABASE)
    slices: list[tuple[str, list[Target]]] = []
    for connection_id, group in by_connection.items():
        count = min(per_database, max(1, len(group) // _STATES_SLICE))
        slices += [(connection_id, group[i::count]) for i in range(count)]

    def read(part: tuple[str, list[Target]]) -> tuple[list[Target], dict[str, history.SchemaState] | str]:
        connection_id, group = part
        return group, _read_database(connections[uuid.UUID(connection_id)], [t.schema for t in group])

    result: dict[str, history.SchemaState | str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(slices)) or 1) as pool:
        for group, states in pool.map(read, slices):
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
