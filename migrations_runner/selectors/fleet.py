"""Reads of each target's state: from its latest target run (the control database only), or from its own
database's history (``fleet_status_live``, which connects to every target database)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypedDict

from django.db.models import Case, CharField, Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, NullIf

from connections import selectors as registry
from connections.models import DatabaseType, Tenant
from migrations_runner.engine.sets import MigrationSet, Version
from migrations_runner.exceptions import NoTargets
from migrations_runner.models import Scope, TargetRun, TargetStatus
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors.plans import TargetPlan, target_plans
from migrations_runner.selectors.sets import sets_load
from migrations_runner.selectors.targets import SCOPE_TYPES, schema_states, targets_resolve

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _LatestRun(TypedDict):
        latest_run_id: int | None

    # The targetable tenants, each annotated with the id of its latest target run.
    TenantTargets = QuerySet[WithAnnotations[Tenant, _LatestRun]]


def fleet_status_live(selection: TargetSelection | None = None) -> list[TargetPlan]:
    """Each target's current version, pending versions and drift, read from every target database's history
    (one connection per database); [] when no target matches."""
    try:
        targets = targets_resolve(selection or TargetSelection())
    except NoTargets:
        return []
    sets = sets_load(strict=False)
    plans = target_plans(targets, schema_states(targets), sets)
    return [plans[t.key] for t in targets]


# A target's state from its latest run: ``drifted`` when it failed on drift, ``failing`` when it failed otherwise,
# else ``behind`` or ``up_to_date`` by the versions of its set after the one the run left it at; ``unknown`` when
# it never ran.
FLEET_STATES = ("up_to_date", "behind", "drifted", "failing", "unknown")
FLEET_PER_PAGE = 100
_TYPE_ORDER = {kind: index for index, kind in enumerate(SCOPE_TYPES[Scope.ALL])}
_DEFAULT_SCHEMA_TYPES = (DatabaseType.ADMIN, DatabaseType.SHARED, DatabaseType.ANALYTICS)


def _latest_run_id(connection_field: str, schema_field: str) -> Subquery:
    """The id of the latest target run of the target an outer row names (the index ``target_run_latest``)."""
    return Subquery(
        TargetRun.objects.filter(connection_id=OuterRef(connection_field), schema_name=OuterRef(schema_field))
        .order_by("-id")
        .values("id")[:1]
    )


def _run_version() -> Case:
    """Where a run left its target: ``to_version`` once it succeeded (a full rollback leaves ''), else where it
    stopped or, when it never read the target (pending, or unreachable), where planning found it."""
    return Case(
        When(status=TargetStatus.SUCCEEDED, then=F("to_version")),
        default=Coalesce(NullIf(F("to_version"), Value("")), F("from_version")),
    )


def _error_kind() -> Coalesce:
    return Coalesce(KT("error__kind"), Value(""), output_field=CharField())


def version_pending_count(*, mset: MigrationSet | None, version: str | None) -> int | None:
    """How many versions of ``mset`` come after ``version`` ('' when none is applied); None when unknown."""
    if version is None or mset is None:
        return None
    if not version:
        return len(mset.versions)
    try:
        current = Version.parse(version)
    except ValueError:
        return None
    return sum(1 for script in mset.versions if script.require_version() > current)


def _state(run_status: str | None, error_kind: str, pending: int | None) -> str:
    if run_status is None:
        return "unknown"
    if run_status == TargetStatus.FAILED:
        return "drifted" if error_kind == "drift" else "failing"
    return "behind" if pending else "up_to_date"


@dataclass(frozen=True)
class FleetTarget:
    """One target of the fleet with what its latest target run says about it."""

    database_type: str
    region: str
    connection_name: str
    schema_name: str
    tenant_slug: str  # '' for a database's default schema
    tenant_name: str
    version: str | None  # None: never run
    pending: int | None
    state: str  # one of FLEET_STATES
    run_status: str
    error_kind: str
    error_message: str
    execution_id: uuid.UUID | None
    execution_status: str
    execution_created_at: datetime | None

    @property
    def key(self) -> str:
        """``t:<tenant slug>`` or ``c:<connection name>``: how the fleet page names a selected target."""
        return f"t:{self.tenant_slug}" if self.tenant_slug else f"c:{self.connection_name}"

    @property
    def label(self) -> str:
        return f"{self.connection_name}/{self.schema_name}"


@dataclass(frozen=True)
class FleetPage:
    targets: list[FleetTarget]
    total: int
    page: int
    per_page: int

    @property
    def num_pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def _runs_by_id(ids: list[int]) -> dict[int, Mapping[str, Any]]:
    """The fields of the given target runs (and of their executions) that the fleet shows, in one query."""
    if not ids:
        return {}
    rows = (
        TargetRun.objects.filter(pk__in=ids)
        .annotate(version=_run_version(), kind=_error_kind(), message=KT("error__message"))
        .values(
            "id", "status", "version", "kind", "message", "execution_id", "execution__status", "execution__created_at"
        )
    )
    return {row["id"]: row for row in rows}


def _fleet_target(
    values: Mapping[str, Any], run: Mapping[str, Any] | None, sets: dict[str, MigrationSet]
) -> FleetTarget:
    version = run["version"] if run else None
    pending = version_pending_count(mset=sets.get(values["database_type"]), version=version)
    return FleetTarget(
        database_type=values["database_type"],
        region=values["region"],
        connection_name=values["connection_name"],
        schema_name=values["schema_name"],
        tenant_slug=values.get("tenant_slug", ""),
        tenant_name=values.get("tenant_name", ""),
        version=version,
        pending=pending,
        state=_state(run["status"] if run else None, run["kind"] if run else "", pending),
        run_status=run["status"] if run else "",
        error_kind=run["kind"] if run else "",
        error_message=(run["message"] or "") if run else "",
        execution_id=run["execution_id"] if run else None,
        execution_status=run["execution__status"] if run else "",
        execution_created_at=run["execution__created_at"] if run else None,
    )


def _database_targets(
    database_type: str | None, region: str | None, sets: dict[str, MigrationSet]
) -> list[FleetTarget]:
    """The targets that are a database's default schema (admin, shared, analytics, and a dedicated tenant
    database no tenant describes), as ``targets_resolve`` finds them; two queries."""
    qs = registry.connection_list(is_active=True, database_type=database_type, region=region or None)
    qs = qs.filter(
        Q(database_type__in=_DEFAULT_SCHEMA_TYPES)
        | Q(database_type=DatabaseType.TENANT) & ~Exists(Tenant.objects.filter(connection=OuterRef("pk")))
    )
    rows = list(
        qs.annotate(latest_run_id=_latest_run_id("pk", "default_schema"))
        .values("database_type", "region", "latest_run_id", connection_name=F("name"), schema_name=F("default_schema"))
        .order_by()
    )
    runs = _runs_by_id([row["latest_run_id"] for row in rows if row["latest_run_id"]])
    targets = [_fleet_target(row, runs.get(row["latest_run_id"]), sets) for row in rows]
    return sorted(targets, key=lambda t: (_TYPE_ORDER.get(t.database_type, 9), t.region, t.connection_name))


def _tenant_targets(database_type: str | None, region: str | None) -> TenantTargets | None:
    """The tenants that are targets (active, on an active connection), each with its latest run's id."""
    if database_type and database_type != DatabaseType.TENANT:
        return None
    qs = registry.tenant_list_targetable()
    if region:
        qs = qs.filter(connection__region=region)
    return qs.annotate(latest_run_id=_latest_run_id("connection_id", "schema_name"))


def _tenant_run_groups(tenants: TenantTargets) -> list[Mapping[str, Any]]:
    """The latest runs of ``tenants`` counted by (version, status, error kind): one aggregate query."""
    return list(
        TargetRun.objects.filter(pk__in=tenants.values("latest_run_id"))
        .annotate(version=_run_version(), kind=_error_kind())
        .values("version", "status", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )


class _Fleet:
    """The fleet narrowed by database type and region, read lazily so that its page and its counts share queries."""

    def __init__(self, database_type: str | None, region: str | None) -> None:
        self.database_type, self.region = database_type, region
        self.sets = sets_load(strict=False)
        self.tenant_set = self.sets.get(DatabaseType.TENANT)

    @cached_property
    def databases(self) -> list[FleetTarget]:
        return _database_targets(self.database_type, self.region, self.sets)

    @cached_property
    def tenants(self) -> TenantTargets | None:
        return _tenant_targets(self.database_type, self.region)

    @cached_property
    def tenant_total(self) -> int:
        return self.tenants.count() if self.tenants is not None else 0

    @cached_property
    def tenant_groups(self) -> list[tuple[str, int, str]]:
        """(state, number of tenants, version) for each (version, status, error kind) of the tenants' latest runs."""
        if self.tenants is None:
            return []
        return [(self._group_state(group), group["n"], group["version"]) for group in _tenant_run_groups(self.tenants)]

    def _group_state(self, group: Mapping[str, Any]) -> str:
        pending = version_pending_count(mset=self.tenant_set, version=group["version"])
        return _state(group["status"], group["kind"], pending)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FLEET_STATES, 0)
        for target in self.databases:
            counts[target.state] += 1
        counts["unknown"] += self.tenant_total
        for state, number, _ in self.tenant_groups:
            counts[state] += number
            counts["unknown"] -= number
        counts["total"] = sum(counts[state] for state in FLEET_STATES)
        return counts

    def _tenants_in_state(self, tenants: TenantTargets, state: str) -> TenantTargets:
        if state == "unknown":
            return tenants.filter(latest_run_id__isnull=True)
        latest = TargetRun.objects.filter(pk=OuterRef("latest_run_id")).annotate(
            version=_run_version(), kind=_error_kind()
        )
        if state == "drifted":
            return tenants.filter(Exists(latest.filter(status=TargetStatus.FAILED, kind="drift")))
        if state == "failing":
            return tenants.filter(Exists(latest.filter(status=TargetStatus.FAILED).exclude(kind="drift")))
        # Which versions are behind needs the set: take the versions the latest runs hold, classified here.
        versions = [version for group_state, _, version in self.tenant_groups if group_state == state]
        return tenants.filter(Exists(latest.exclude(status=TargetStatus.FAILED).filter(version__in=versions)))

    def page(self, state: str | None, number: int, per_page: int) -> FleetPage:
        databases = [t for t in self.databases if state in (None, t.state)]
        tenants = self.tenants
        if tenants is not None and state:
            tenants = self._tenants_in_state(tenants, state)
        tenant_total = self.tenant_total if not state else tenants.count() if tenants is not None else 0
        total = len(databases) + tenant_total
        number = min(max(1, number), max(1, math.ceil(total / per_page)))
        start, end = (number - 1) * per_page, number * per_page
        targets = databases[start:end]
        tenant_start, tenant_end = max(0, start - len(databases)), max(0, end - len(databases))
        if tenants is not None and tenant_end > tenant_start:
            rows = list(
                tenants.order_by("connection__region", "slug").values(
                    "latest_run_id",
                    "schema_name",
                    tenant_slug=F("slug"),
                    tenant_name=F("name"),
                    connection_name=F("connection__name"),
                    region=F("connection__region"),
                )[tenant_start:tenant_end]
            )
            runs = _runs_by_id([row["latest_run_id"] for row in rows if row["latest_run_id"]])
            targets += [
                _fleet_target(
                    {**row, "database_type": DatabaseType.TENANT},
                    runs.get(row["latest_run_id"]) if row["latest_run_id"] else None,
                    self.sets,
                )
                for row in rows
            ]
        return FleetPage(targets=targets, total=total, page=number, per_page=per_page)


def fleet_targets(
    *,
    database_type: str | None = None,
    region: str | None = None,
    state: str | None = None,
    page: int = 1,
    per_page: int = FLEET_PER_PAGE,
) -> FleetPage:
    """One page of the fleet's targets, by database type and region, each with its state from its latest target
    run; reads only the control database, in at most six queries whatever the page size or the fleet's size."""
    return _Fleet(database_type, region).page(state, page, per_page)


def fleet_counts(*, database_type: str | None = None, region: str | None = None) -> dict[str, int]:
    """How many targets are in each of ``FLEET_STATES``, and ``total``; four queries whatever the fleet's size."""
    return _Fleet(database_type, region).counts()


def fleet_overview(
    *,
    database_type: str | None = None,
    region: str | None = None,
    state: str | None = None,
    page: int = 1,
    per_page: int = FLEET_PER_PAGE,
) -> tuple[FleetPage, dict[str, int]]:
    """``fleet_targets`` and ``fleet_counts`` of one filter together, sharing their queries (seven at most)."""
    fleet = _Fleet(database_type, region)
    return fleet.page(state, page, per_page), fleet.counts()


def fleet_regions() -> list[str]:
    """The regions of the fleet's active connections, for the fleet's filters."""
    return list(
        registry.connection_list(is_active=True)
        .exclude(region="")
        .order_by("region")
        .values_list("region", flat=True)
        .distinct()
    )


def tenants_with_version(*, tenants: QuerySet[Tenant]) -> QuerySet[Tenant]:
    """``tenants`` annotated with ``latest_version``: where their latest target run left them (None: never run)."""
    latest = TargetRun.objects.filter(connection_id=OuterRef("connection_id"), schema_name=OuterRef("schema_name"))
    return tenants.annotate(latest_version=Subquery(latest.order_by("-id").annotate(v=_run_version()).values("v")[:1]))
