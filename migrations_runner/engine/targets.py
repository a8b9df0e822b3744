"""Targets and the dependency order between them.

``MIGRATION_DEPENDENCIES`` maps a database type to the types it depends on
(default: shared and analytics depend on admin, tenant on shared). A target
depends on the targets of those types in the same execution that are in its
region, or that have no region (global ones such as admin). Phases are the
depth in that DAG; when a target fails, its dependents are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from migrations_runner.engine.sets import placeholder_context

DEFAULT_DEPENDENCIES: dict[str, list[str]] = {"shared": ["admin"], "analytics": ["admin"], "tenant": ["shared"]}


@dataclass(frozen=True)
class Target:
    """One (database, schema) pair and the set it gets."""

    connection_id: str
    connection_name: str
    database_type: str  # the set applied: admin | shared | analytics | tenant
    region: str
    schema: str
    tenant_slug: str = ""
    tenant_id: int | None = None
    create_schema: bool = False
    database: str = ""  # the database's name and the role we connect as, for ${flyway:database} / ${flyway:user}
    user: str = ""

    @property
    def key(self) -> str:
        return f"{self.connection_id}:{self.schema}"

    @property
    def label(self) -> str:
        return f"{self.connection_name}/{self.schema}"

    def placeholders(self, *, timestamp: str, environment: str) -> dict[str, str]:
        """This target's placeholder values for a run at ``timestamp`` (``YYYY-MM-DD HH:MM:SS``)."""
        return placeholder_context(
            schema=self.schema,
            tenant_slug=self.tenant_slug,
            region=self.region,
            database_type=self.database_type,
            user=self.user,
            database=self.database,
            timestamp=timestamp,
            environment=environment,
        )


def dependency_problems(dependencies: Mapping[str, Iterable[str]], known: Iterable[str]) -> list[str]:
    """Return what is wrong with a dependency map: unknown types and cycles."""
    known = set(known)
    problems = [
        f"unknown database type {name!r}"
        for name in sorted(set(dependencies) | {d for v in dependencies.values() for d in v})
        if name not in known
    ]
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycle = [*path[path.index(node) :], node]
            problems.append("cycle: " + " -> ".join(cycle))
            return
        visiting.add(node)
        for dep in dependencies.get(node, ()):
            visit(dep, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(dependencies):
        visit(node, [])
    return problems


def type_depth(dependencies: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Return each database type's phase: 0 with no dependencies, else 1 + the deepest dependency."""
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((of(dep) for dep in dependencies.get(node, ())), default=-1)
        return depth[node]

    for node in ("admin", "shared", "analytics", "tenant", *dependencies):
        of(node)
    return depth


@dataclass
class Plan:
    """Targets grouped into phases, with each target's direct dependencies."""

    phases: list[list[Target]]
    requires: dict[str, list[str]] = field(default_factory=dict)  # target key -> keys it depends on


def plan_phases(targets: Iterable[Target], dependencies: Mapping[str, Iterable[str]]) -> Plan:
    """Group targets into phases and record their dependencies within the same execution."""
    targets = list(targets)
    depth = type_depth(dependencies)
    by_phase: dict[int, list[Target]] = {}
    for target in targets:
        by_phase.setdefault(depth[target.database_type], []).append(target)
    phases = [sorted(by_phase[key], key=lambda t: (t.connection_name, t.schema)) for key in sorted(by_phase)]
    # Index targets by type so dependency lookup is not quadratic over the whole fleet.
    by_type: dict[str, list[Target]] = {}
    for target in targets:
        by_type.setdefault(target.database_type, []).append(target)
    requires = {}
    for target in targets:
        requires[target.key] = [
            other.key
            for dep_type in dependencies.get(target.database_type, ())
            for other in by_type.get(dep_type, ())
            if not other.region or other.region == target.region
        ]
    return Plan(phases=phases, requires=requires)
