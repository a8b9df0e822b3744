"""Executions over a real fleet: dependency order, concurrency, failures, skips, drift, dry run, rollback."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connections as django_connections

from migrations_runner import selectors, services
from migrations_runner.engine.sets import load_set
from migrations_runner.exceptions import NoTargets, RollbackRefused
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import create_owned_table, runs_by_label

pytestmark = pytest.mark.postgres


def tenant_set(sets_dir):
    return load_set(sets_dir / "tenant", "tenant")


def created_tables(script) -> list[str]:
    return re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", script.content, flags=re.IGNORECASE)


def history(conn, schema) -> list[tuple[str, str]]:
    return conn.execute(
        f"SELECT version, checksum FROM {schema}.infra_schema_history WHERE type = 'SQL' ORDER BY installed_rank"  # noqa: S608
    ).fetchall()


def schemas(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant_%'")}


@pytest.mark.django_db(transaction=True)
def test_the_whole_fleet_migrates_in_dependency_order(fleet, sets_dir):
    execution = services.execution_start(
        selection=TargetSelection(scope="all"),
        options=ExecutionOptions(batch_size=8),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    runs = runs_by_label(execution)
    assert len(runs) == 44
    assert {run.status for run in runs.values()} == {TargetStatus.SUCCEEDED}
    admin = runs["admin/public"]
    for name in ("shared-us/public", "shared-eu/public", "analytics/public"):
        assert admin.completed_at <= runs[name].started_at
    for tenant in fleet.tenants:
        shared = runs[f"{tenant.connection.name}/public"]
        assert shared.completed_at <= runs[f"{tenant.connection.name}/{tenant.schema_name}"].started_at
    for kind, name in (("admin", "admin"), ("shared", "shared-us"), ("analytics", "analytics")):
        mset = load_set(sets_dir / kind, kind)
        with fleet.connect(name) as conn:
            assert history(conn, "public") == [(str(s.version), s.checksum) for s in mset.versions]
        assert runs[f"{name}/public"].to_version == str(mset.latest)
    expected = [(str(s.version), s.checksum) for s in tenant_set(sets_dir).versions]
    with fleet.connect("shared-us") as us, fleet.connect("shared-eu") as eu:
        for tenant in fleet.tenants:
            conn = us if tenant.connection.name == "shared-us" else eu
            assert history(conn, tenant.schema_name) == expected
    again = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(), actor="test", origin=Origin.API, wait=True
    )
    assert again.status == ExecutionStatus.COMPLETED
    assert all(not run.applied_versions for run in again.targets.all())


@pytest.mark.django_db(transaction=True)
def test_two_executions_at_once_apply_each_version_exactly_once(fleet, sets_dir, settings, launch_held):
    settings.MIGRATION_LOCK_WAIT = 1
    settings.MIGRATION_RETRY_ATTEMPTS = 30
    first = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(batch_size=6), actor="one", origin=Origin.API
    )
    second = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(batch_size=6), actor="two", origin=Origin.API
    )
    results = {}

    def run(execution):
        try:
            results[execution.pk] = services.execution_run(execution=execution)
        finally:
            django_connections.close_all()

    threads = [threading.Thread(target=run, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert {r.status for r in results.values()} == {ExecutionStatus.COMPLETED}
    versions = len(tenant_set(sets_dir).versions)
    with fleet.connect("shared-us") as us, fleet.connect("shared-eu") as eu:
        for tenant in fleet.tenants:
            conn = us if tenant.connection.name == "shared-us" else eu
            rows = history(conn, tenant.schema_name)
            assert len(rows) == versions
            assert len({version for version, _ in rows}) == versions
    applied = sum(len(r.applied_versions) for e in (first, second) for r in e.targets.all())
    assert applied == sum(len(r.pending_versions) for r in first.targets.all())


def conflicting_table(sets_dir):
    """A table that a tenant version >= 2 creates, and that version."""
    for script in tenant_set(sets_dir).versions[1:]:
        if script.transactional and created_tables(script):
            return created_tables(script)[0], script
    raise AssertionError("the tenant set creates no table after version 1")


@pytest.mark.django_db(transaction=True)
def test_a_conflicting_object_fails_that_tenant_at_that_version_only(fleet, sets_dir):
    table, script = conflicting_table(sets_dir)
    victim = fleet.tenants[3]
    with fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, table)
    execution = services.execution_start(
        selection=TargetSelection(scope="all"),
        options=ExecutionOptions(batch_size=5),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    runs = runs_by_label(execution)
    failed = runs[f"shared-us/{victim.schema_name}"]
    assert failed.status == TargetStatus.FAILED
    assert failed.error["sqlstate"] == "42P07"
    assert failed.error["version"] == str(script.version)
    assert failed.error["script"] == script.filename
    assert table in failed.error["statement"]
    assert "already exists" in failed.error["message"]
    others = [run for label, run in runs.items() if label != failed.label]
    assert {run.status for run in others} == {TargetStatus.SUCCEEDED}
    with fleet.connect("shared-us") as conn:
        versions = [v for v, _ in history(conn, victim.schema_name)]
        assert str(script.version) not in versions
        assert versions == [str(s.version) for s in tenant_set(sets_dir).versions if s.version < script.version]
        # None of the failing script's other tables exist (the transaction rolled back).
        for other in created_tables(script)[1:]:
            assert conn.execute("SELECT to_regclass(%s)", [f"{victim.schema_name}.{other}"]).fetchone()[0] is None
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [victim.schema_name, table],
        ).fetchone()[0]
        assert columns == 1


@pytest.mark.django_db(transaction=True)
def test_halt_skips_the_targets_not_yet_started(small_fleet, sets_dir):
    table, _script = conflicting_table(sets_dir)
    victim = small_fleet.tenants_in("eu-west")[0]  # targets run in (connection name, schema) order: the first one
    with small_fleet.connect("shared-eu") as conn:
        create_owned_table(conn, victim.schema_name, table)
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=1, on_failure="halt"),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    runs = list(selectors.execution_targets(execution=execution))
    assert runs[0].label == f"shared-eu/{victim.schema_name}"
    assert runs[0].status == TargetStatus.FAILED
    assert len(runs) == 6
    assert {run.status for run in runs[1:]} == {TargetStatus.SKIPPED}
    assert all(run.skip_reason == f"halted after shared-eu/{victim.schema_name} failed" for run in runs[1:])


@pytest.mark.django_db(transaction=True)
def test_a_failed_shared_database_skips_its_region_and_the_other_region_completes(small_fleet, sets_dir):
    shared_set = load_set(sets_dir / "shared", "shared")
    table = created_tables(shared_set.versions[0])[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, "public", table)
    execution = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(), actor="test", origin=Origin.API, wait=True
    )
    runs = runs_by_label(execution)
    assert runs["shared-us/public"].status == TargetStatus.FAILED
    assert runs["shared-eu/public"].status == TargetStatus.SUCCEEDED
    for tenant in small_fleet.tenants:
        run = runs[f"{tenant.connection.name}/{tenant.schema_name}"]
        if tenant.connection.region == "us-east":
            assert run.status == TargetStatus.SKIPPED
            assert run.skip_reason == "dependency shared-us/public failed"
        else:
            assert run.status == TargetStatus.SUCCEEDED
    with small_fleet.connect("shared-us") as conn:
        assert schemas(conn) == set()


@pytest.mark.django_db(transaction=True)
def test_editing_an_applied_script_is_drift_and_fails_before_any_change(small_fleet, sets_dir):
    assert (
        services.execution_start(
            selection=TargetSelection(scope="tenant"),
            options=ExecutionOptions(),
            actor="test",
            origin=Origin.API,
            wait=True,
        ).status
        == ExecutionStatus.COMPLETED
    )
    first = tenant_set(sets_dir).versions[0]
    path = sets_dir / "tenant" / first.filename
    path.write_text(path.read_text() + "\n-- edited after it was applied\n")
    (sets_dir / "tenant" / "V999__late_addition.sql").write_text("CREATE TABLE late_addition (x int);\n")
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    for run in execution.targets.all():
        assert run.status == TargetStatus.FAILED
        assert run.error["kind"] == "drift"
        assert first.filename in run.error["message"]
    with small_fleet.connect("shared-us") as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'late_addition'").fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_dry_run_reports_pending_versions_and_changes_nothing(fleet, sets_dir):
    versions = [str(s.version) for s in tenant_set(sets_dir).versions]
    execution = services.execution_start(
        selection=TargetSelection(scope="all"),
        options=ExecutionOptions(dry_run=True),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.dry_run
    assert execution.status == ExecutionStatus.COMPLETED
    runs = runs_by_label(execution)
    assert runs[f"shared-us/{fleet.tenants[0].schema_name}"].pending_versions == versions + [
        s.filename for s in tenant_set(sets_dir).repeatables
    ]
    for name in fleet.databases:
        with fleet.connect(name) as conn:
            assert schemas(conn) == set()
            assert (
                conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'infra_schema_history'").fetchone()[0] == 0
            )
            assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_each_run_depends_on_the_runs_of_the_targets_it_needs(small_fleet, settings):
    """Runs are inserted layer by layer, so each one is stored with the ids of the runs it depends on: a tenant on
    its region's shared database, a shared or analytics database on the admin database."""
    execution = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(dry_run=True), actor="test", origin=Origin.API
    )
    runs = runs_by_label(execution)
    by_id = {run.pk: run for run in runs.values()}
    admin = [run for run in runs.values() if run.database_type == "admin"]
    assert len(admin) == 1
    assert admin[0].depends_on == []
    for run in runs.values():
        needed = [by_id[pk] for pk in run.depends_on]
        if run.database_type in ("shared", "analytics"):
            assert needed == admin, run.label
        elif run.database_type == "tenant":
            assert [(n.database_type, n.region) for n in needed] == [("shared", run.region)], run.label
    assert {run.phase for run in runs.values()} == {0, 1, 2}
    assert sorted(by_id) == [run.pk for run in execution.targets.order_by("id")]


@pytest.mark.django_db(transaction=True)
def test_rollback_returns_every_target_to_its_previous_version(small_fleet, sets_dir):
    tenant_versions = tenant_set(sets_dir).versions
    # Start from a tenant fleet at version 2, so the rollback has somewhere to return to.
    for path in sorted((sets_dir / "tenant").glob("[VUR]*.sql")):
        if path.name.startswith("R__") or int(re.match(r"[VU](\d+)", path.name).group(1)) > 2:
            path.rename(path.with_suffix(".hold"))
    base = services.execution_start(
        selection=TargetSelection(scope="all"), options=ExecutionOptions(), actor="test", origin=Origin.API, wait=True
    )
    assert base.status == ExecutionStatus.COMPLETED
    for path in (sets_dir / "tenant").glob("*.hold"):
        path.rename(path.with_suffix(".sql"))
    upgrade = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert upgrade.status == ExecutionStatus.COMPLETED
    rollback = services.execution_rollback(execution=upgrade, actor="test", origin=Origin.API, wait=True)
    assert rollback.status == ExecutionStatus.COMPLETED, [r.error for r in rollback.targets.all()]
    upgrade.refresh_from_db()
    assert upgrade.status == ExecutionStatus.ROLLED_BACK
    assert rollback.metadata["rollback_of"] == str(upgrade.pk)
    with small_fleet.connect("shared-us") as conn:
        for tenant in small_fleet.tenants_in("us-east"):
            assert [v for v, _ in history(conn, tenant.schema_name)] == [str(v.version) for v in tenant_versions[:2]]
            undo_rows = conn.execute(
                f"SELECT count(*) FROM {tenant.schema_name}.infra_schema_history WHERE type = 'UNDO'"  # noqa: S608
            ).fetchone()[0]
            assert undo_rows == len(tenant_versions) - 2
    with pytest.raises(RollbackRefused):
        services.execution_rollback(execution=upgrade, actor="test", origin=Origin.API, wait=True)


@pytest.mark.django_db(transaction=True)
def test_rollback_with_a_missing_undo_script_is_refused_and_changes_nothing(small_fleet, sets_dir):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED
    undo = sorted(tenant_set(sets_dir).undo.items())[2][1]
    (sets_dir / "tenant" / undo.filename).unlink()
    with pytest.raises(RollbackRefused) as refused:
        services.execution_rollback(execution=execution, actor="test", origin=Origin.API, wait=True)
    assert any(undo.filename.split("__")[0] in item for item in refused.value.details["missing_undo_scripts"])
    assert MigrationExecution.objects.count() == 1
    with small_fleet.connect("shared-us") as conn:
        tenant = small_fleet.tenants[0]
        assert len(history(conn, tenant.schema_name)) == len(tenant_set(sets_dir).versions)


@pytest.mark.django_db(transaction=True)
def test_one_target_rolls_back_to_a_version(small_fleet, sets_dir):
    services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    tenant = small_fleet.tenants[0]
    rollback = services.target_rollback(
        connection=tenant.connection,
        schema=tenant.schema_name,
        to_version="1",
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert rollback.status == ExecutionStatus.COMPLETED
    with small_fleet.connect("shared-us") as conn:
        assert [v for v, _ in history(conn, tenant.schema_name)] == ["1"]
        other = small_fleet.tenants[1]
        assert len(history(conn, other.schema_name)) == len(tenant_set(sets_dir).versions)


@pytest.mark.django_db(transaction=True)
def test_no_matching_target_is_an_error_not_an_empty_run(small_fleet):
    with pytest.raises(NoTargets):
        services.execution_start(
            selection=TargetSelection(scope="tenant", tenants=["nobody"]),
            options=ExecutionOptions(),
            actor="test",
            origin=Origin.API,
            wait=True,
        )
    with pytest.raises(NoTargets):
        services.execution_start(
            selection=TargetSelection(scope="single", regions=["us-east"]),
            options=ExecutionOptions(),
            actor="test",
            origin=Origin.API,
            wait=True,
        )
    single = services.execution_start(
        selection=TargetSelection(scope="single", tenants=["us000"]),
        options=ExecutionOptions(dry_run=True),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert single.targets.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_dependency_cycle_refuses_to_run(small_fleet, settings):
    from infra_site.errors import ValidationFailed

    settings.MIGRATION_DEPENDENCIES = {"admin": ["tenant"], "tenant": ["admin"]}
    with pytest.raises(ValidationFailed, match="cycle"):
        services.execution_start(
            selection=TargetSelection(scope="all"),
            options=ExecutionOptions(),
            actor="test",
            origin=Origin.API,
            wait=True,
        )
