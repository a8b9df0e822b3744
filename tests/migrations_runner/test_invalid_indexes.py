"""A queue worker killed during a concurrent index build: the build's invalid index is dropped and rebuilt by
the retry, never recorded (the engine's side is tested in tests/engine/test_invalid_indexes.py)."""

from __future__ import annotations

import os
import signal

import pytest

from migrations_runner import services
from migrations_runner.models import ExecutionStatus, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.engine import (
    index_valid,
    open_snapshot,
    recorded_versions,
    wait_backend_gone,
    wait_for_old_snapshots,
)
from tests.support.qcluster import Cluster, control_env
from tests.support.waiting import wait_finished, wait_until

pytestmark = [pytest.mark.postgres]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_qcluster_killed_during_a_concurrent_build_is_lost_and_its_retry_rebuilds_the_index(small_fleet, settings):
    settings.MIGRATION_EXECUTOR = "queue"
    settings.MIGRATION_MAX_PER_DATABASE = 50
    settings.MIGRATION_LEASE_SECONDS = 6
    settings.MIGRATION_HEARTBEAT_SECONDS = 1
    tenant = small_fleet.tenants[0]
    index = f"{tenant.schema_name}.tasks_open_due_date_idx"  # the first build of the shipped V9
    clusters: list[Cluster] = []
    try:
        with small_fleet.connect("shared-us") as observer:
            with open_snapshot(lambda: small_fleet.connect("shared-us")):
                cluster = Cluster(control_env(), workers=1).start()
                clusters.append(cluster)
                execution = services.execution_start(
                    selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
                    options=ExecutionOptions(),
                    actor="test",
                    origin=Origin.API,
                )
                pid = wait_for_old_snapshots(observer, index)
                assert index_valid(observer, index) is False
                os.killpg(cluster.process.pid, signal.SIGKILL)
                cluster.process.wait(timeout=10)
                # The orphaned backend notices its client is gone (client_connection_check_interval) and exits.
                wait_backend_gone(observer, pid)
                assert index_valid(observer, index) is False

            run = execution.targets.get()

            def recovered() -> bool:
                services.targets_recover_lost()
                run.refresh_from_db()
                return run.status != TargetStatus.RUNNING

            wait_until(
                recovered,
                timeout=settings.MIGRATION_LEASE_SECONDS + 30,
                interval=0.5,
                message="the lost worker was not detected",
            )
            assert run.status == TargetStatus.FAILED
            assert run.error["kind"] == "worker_lost"
            execution = wait_finished(execution, timeout=30)
            assert execution.status == ExecutionStatus.FAILED
            assert "9" not in recorded_versions(observer, tenant.schema_name)

            clusters.append(Cluster(control_env(), workers=1).start())
            retry = services.execution_retry(execution=execution, actor="test", origin=Origin.API)
            retry = wait_finished(retry, timeout=120)
            assert retry.status == ExecutionStatus.COMPLETED
            assert retry.targets.get().to_version == "9"
            assert index_valid(observer, index) is True
            assert index_valid(observer, f"{tenant.schema_name}.invoices_unpaid_due_date_idx") is True
            assert recorded_versions(observer, tenant.schema_name)[-1] == "9"
    finally:
        for cluster in clusters:
            cluster.stop()
