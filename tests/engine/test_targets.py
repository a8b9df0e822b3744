"""The dependency DAG over database types, phases and the start-up check."""

from migrations_runner.engine.targets import (
    DEFAULT_DEPENDENCIES,
    Target,
    dependency_problems,
    plan_phases,
    type_depth,
)

TYPES = ("admin", "shared", "analytics", "tenant")


def target(kind, region="", schema="public", name=None):
    name = name or f"{kind}-{region or 'global'}"
    return Target(connection_id=name, connection_name=name, database_type=kind, region=region, schema=schema)


def test_default_dependencies_give_three_phases():
    assert dependency_problems(DEFAULT_DEPENDENCIES, TYPES) == []
    depth = type_depth(DEFAULT_DEPENDENCIES)
    assert depth["admin"] == 0
    assert depth["shared"] == depth["analytics"] == 1
    assert depth["tenant"] == 2


def test_cycles_and_unknown_types_are_reported():
    problems = dependency_problems({"admin": ["tenant"], "tenant": ["shared"], "shared": ["admin"]}, TYPES)
    assert any(p.startswith("cycle: ") for p in problems)
    assert dependency_problems({"tenant": ["billing"]}, TYPES) == ["unknown database type 'billing'"]


def test_tenants_wait_for_the_shared_database_of_their_region_only():
    admin = target("admin")
    us, eu = target("shared", "us-east"), target("shared", "eu-west")
    analytics = target("analytics")
    t_us = target("tenant", "us-east", "tenant_a", "shared-us-east")
    t_eu = target("tenant", "eu-west", "tenant_b", "shared-eu-west")
    plan = plan_phases([t_us, t_eu, us, eu, analytics, admin], DEFAULT_DEPENDENCIES)
    assert [t.key for t in plan.phases[0]] == [admin.key]
    assert {t.key for t in plan.phases[1]} == {us.key, eu.key, analytics.key}
    assert {t.key for t in plan.phases[2]} == {t_us.key, t_eu.key}
    assert plan.requires[t_us.key] == [us.key]
    assert plan.requires[t_eu.key] == [eu.key]
    assert plan.requires[us.key] == [admin.key]
    assert plan.requires[analytics.key] == [admin.key]
