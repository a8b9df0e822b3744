"""Reads of the recorded schema fingerprints: each set version's majority fingerprint, and the outliers. Only the
control database is read (fingerprints are recorded after each successful target run and by fleet scans)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q, QuerySet

from connections.models import TenantStatus
from infra_site.errors import NotFound
from migrations_runner.engine.fingerprint import DiffEntry, diff
from migrations_runner.exceptions import FingerprintScanNotFound
from migrations_runner.models import FingerprintScan, SchemaFingerprint, SchemaShape, Scope
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors.fleet import FleetTarget
from migrations_runner.selectors.targets import SCOPE_TYPES

MATCH, OUTLIER = "match", "outlier"


@dataclass(frozen=True)
class FingerprintGroup:
    """The targets of one set at one version, by fingerprint, most common (the majority) first.

    A group's majority is its most common fingerprint over every current target of the fleet that has one
    recorded; the group's targets with another fingerprint are its outliers, each with a diff against the majority.
    Filters narrow which targets and outliers are listed, never the majority.
    """

    database_type: str
    version: str  # '' for targets with no version applied
    fingerprints: list[tuple[str, int]]  # (fingerprint, targets)

    @property
    def majority(self) -> str:
        return self.fingerprints[0][0]

    @property
    def targets(self) -> int:
        return sum(n for _, n in self.fingerprints)

    @property
    def outliers(self) -> int:
        return self.targets - self.fingerprints[0][1]

    @property
    def tied(self) -> bool:
        """Whether another fingerprint is as common as the majority (which is then the first by hash)."""
        return len(self.fingerprints) > 1 and self.fingerprints[1][1] == self.fingerprints[0][1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database_type": self.database_type,
            "version": self.version,
            "majority": self.majority,
            "targets": self.targets,
            "outliers": self.outliers,
            "tied": self.tied,
            "fingerprints": [{"fingerprint": h, "targets": n} for h, n in self.fingerprints],
        }


@dataclass(frozen=True)
class TargetFingerprint:
    """One target's recorded fingerprint, whether it matches its group's majority, and how it differs."""

    id: int
    connection: str
    schema: str
    tenant: str | None
    database_type: str
    region: str
    version: str
    fingerprint: str
    taken_at: datetime
    execution_id: uuid.UUID | None
    group: FingerprintGroup
    diff: list[DiffEntry] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.connection}/{self.schema}"

    @property
    def state(self) -> str:
        return MATCH if self.fingerprint == self.group.majority else OUTLIER

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.label,
            "connection": self.connection,
            "schema": self.schema,
            "tenant": self.tenant,
            "database_type": self.database_type,
            "region": self.region,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "majority": self.group.majority,
            "majority_targets": self.group.fingerprints[0][1],
            "tied": self.group.tied,
            "state": self.state,
            "taken_at": self.taken_at,
            "execution": self.execution_id,
            "diff": [entry.as_dict() for entry in self.diff],
        }


@dataclass(frozen=True)
class FingerprintReport:
    """The fleet's groups, and the targets (and outliers among them) that the filters select."""

    targets: int
    groups: list[FingerprintGroup]
    outliers: list[TargetFingerprint]

    def as_dict(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "outlier_count": len(self.outliers),
            "groups": [group.as_dict() for group in self.groups],
            "outliers": [outlier.as_dict() for outlier in self.outliers],
        }


@dataclass(frozen=True)
class FingerprintState:
    """What the fleet view shows of a target's fingerprint."""

    id: int
    state: str  # MATCH | OUTLIER
    tied: bool


_TARGET_FIELDS = {
    "connection_name": F("connection__name"),
    "region": F("connection__region"),
    "tenant_slug": F("tenant__slug"),
}


def _current() -> QuerySet[SchemaFingerprint]:
    """The fingerprints of the fleet's current targets: active tenants' schemas and live databases' default
    schemas (a suspended or deleted tenant's record stays, unlisted)."""
    return SchemaFingerprint.objects.filter(connection__is_active=True, connection__deleted_at__isnull=True).filter(
        Q(tenant__status=TenantStatus.ACTIVE, tenant__connection=F("connection"))
        | Q(tenant__isnull=True, schema_name=F("connection__default_schema"))
    )


def _selected(selection: TargetSelection) -> QuerySet[SchemaFingerprint]:
    qs = _current().filter(database_type__in=SCOPE_TYPES[Scope(selection.scope)])
    if selection.regions:
        qs = qs.filter(connection__region__in=selection.regions)
    if selection.connections:
        qs = qs.filter(connection__name__in=selection.connections)
    if selection.tenants:
        qs = qs.filter(tenant__slug__in=selection.tenants)
    return qs


def fingerprint_groups() -> dict[tuple[str, str], FingerprintGroup]:
    """Every (database type, version) group of the fleet with its fingerprints counted: one aggregate query."""
    counts: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    rows = _current().values_list("database_type", "version", "shape").annotate(n=Count("id")).order_by()
    for database_type, version, shape, n in rows:
        counts[(database_type, version)].append((shape, n))
    return {
        key: FingerprintGroup(key[0], key[1], sorted(prints, key=lambda p: (-p[1], p[0])))
        for key, prints in counts.items()
    }


def _diffs(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], list[DiffEntry]]:
    """The diff of each (majority, outlier) pair of fingerprints, loading every shape involved in one query."""
    definitions = dict(
        SchemaShape.objects.filter(pk__in={h for pair in pairs for h in pair}).values_list("pk", "definitions")
    )
    return {(majority, other): diff(definitions[majority], definitions[other]) for majority, other in pairs}


def _target(row: dict, group: FingerprintGroup, entries: list[DiffEntry]) -> TargetFingerprint:
    return TargetFingerprint(
        id=row["id"],
        connection=row["connection_name"],
        schema=row["schema_name"],
        tenant=row["tenant_slug"],
        database_type=row["database_type"],
        region=row["region"],
        version=row["version"],
        fingerprint=row["shape"],
        taken_at=row["taken_at"],
        execution_id=row["execution"],
        group=group,
        diff=entries,
    )


def _rows(qs: QuerySet[SchemaFingerprint]) -> QuerySet:
    return qs.values(
        "id", "schema_name", "database_type", "version", "shape", "taken_at", "execution", **_TARGET_FIELDS
    )


def fingerprint_report(selection: TargetSelection | None = None) -> FingerprintReport:
    """The fleet's fingerprint groups, and the outliers among the selected targets with their diffs; five queries
    at most, a diff computed once per distinct (majority, outlier) pair."""
    selection = selection or TargetSelection()
    groups = fingerprint_groups()
    selected = list(_selected(selection).values_list("id", "database_type", "version", "shape"))
    # A group missing from ``groups`` was recorded after they were counted: it is left for the next report.
    outlier_ids = [
        pk
        for pk, kind, version, shape in selected
        if (kind, version) in groups and shape != groups[kind, version].majority
    ]
    rows = list(_rows(SchemaFingerprint.objects.filter(pk__in=outlier_ids)).order_by("connection__name", "schema_name"))
    pairs = {(groups[(row["database_type"], row["version"])].majority, row["shape"]) for row in rows}
    diffs = _diffs(pairs) if pairs else {}
    outliers = []
    for row in rows:
        group = groups[(row["database_type"], row["version"])]
        outliers.append(_target(row, group, diffs[(group.majority, row["shape"])]))
    ordered_groups = sorted(groups.values(), key=lambda g: (g.database_type, g.version))
    return FingerprintReport(targets=len(selected), groups=ordered_groups, outliers=outliers)


def fingerprint_target_get(*, fingerprint_id: int) -> TargetFingerprint:
    """One target's recorded fingerprint with its diff against its group's majority (empty when it matches)."""
    row = _rows(_current().filter(pk=fingerprint_id)).first()
    if row is None:
        raise NotFound(
            f"No current target has a fingerprint with id {fingerprint_id}.",
            code="fingerprint_not_found",
            details={"id": fingerprint_id},
        )
    group = fingerprint_groups().get((row["database_type"], row["version"]))
    if group is None:  # recorded since the groups were counted: its own group, which it leads
        group = FingerprintGroup(row["database_type"], row["version"], [(row["shape"], 1)])
    entries = []
    if row["shape"] != group.majority:
        entries = _diffs({(group.majority, row["shape"])})[(group.majority, row["shape"])]
    return _target(row, group, entries)


def fingerprint_states(*, targets: Iterable[FleetTarget]) -> dict[tuple[str, str], FingerprintState]:
    """(connection name, schema) -> the recorded fingerprint's state, for the fleet view's targets: two queries."""
    wanted = {(t.connection_name, t.schema_name) for t in targets}
    if not wanted:
        return {}
    recorded = _current().filter(
        connection__name__in={name for name, _ in wanted}, schema_name__in={schema for _, schema in wanted}
    )
    rows = [
        row
        for row in recorded.values_list("id", "connection__name", "schema_name", "database_type", "version", "shape")
        if (row[1], row[2]) in wanted
    ]
    if not rows:
        return {}
    groups = fingerprint_groups()
    states = {}
    for pk, name, schema, kind, version, shape in rows:
        group = groups.get((kind, version))
        if group is None:  # recorded since the groups were counted
            continue
        states[(name, schema)] = FingerprintState(pk, MATCH if shape == group.majority else OUTLIER, group.tied)
    return states


def fingerprint_scan_get(*, scan_id: uuid.UUID | str) -> FingerprintScan:
    """Return a fingerprint scan by id; raise ``FingerprintScanNotFound``."""
    try:
        return FingerprintScan.objects.get(pk=scan_id)
    except (FingerprintScan.DoesNotExist, ValidationError, ValueError) as exc:
        raise FingerprintScanNotFound(f"No fingerprint scan with id {scan_id}.", details={"id": str(scan_id)}) from exc


def fingerprint_scan_latest() -> FingerprintScan:
    """Return the latest fingerprint scan (running or finished); raise ``FingerprintScanNotFound`` before the first."""
    scan = FingerprintScan.objects.order_by("-started_at").first()
    if scan is None:
        raise FingerprintScanNotFound("No fingerprint scan has been started yet.")
    return scan
