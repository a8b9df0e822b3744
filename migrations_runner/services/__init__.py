"""Writes of the migrations app. Interfaces import from here; the modules are its parts."""

from migrations_runner.services.adoption import (
    adoption_needs_attention,
    baseline_selection,
    flyway_adopt,
    target_baseline,
)
from migrations_runner.services.executions import (
    execution_abort,
    execution_cancel,
    execution_continue,
    execution_retry,
    execution_rollback,
    execution_start,
    target_rollback,
)
from migrations_runner.services.fingerprints import (
    fingerprint_record,
    fingerprint_scan_run,
    fingerprint_scan_start,
    fleet_fingerprint_scan,
)
from migrations_runner.services.provisioning import provisioning_finish, tenant_provision
from migrations_runner.services.runner import (
    QueueHost,
    ThreadHost,
    execution_run,
    lane_work,
    targets_recover_lost,
)
from migrations_runner.services.schedules import (
    ensure_recovery_schedule,
    schedule_create,
    schedule_delete,
    schedule_fire,
    schedule_update,
)
from migrations_runner.services.targets import target_run_apply

__all__ = [
    "QueueHost",
    "ThreadHost",
    "adoption_needs_attention",
    "baseline_selection",
    "ensure_recovery_schedule",
    "execution_abort",
    "execution_cancel",
    "execution_continue",
    "execution_retry",
    "execution_rollback",
    "execution_run",
    "execution_start",
    "fingerprint_record",
    "fingerprint_scan_run",
    "fingerprint_scan_start",
    "fleet_fingerprint_scan",
    "flyway_adopt",
    "lane_work",
    "provisioning_finish",
    "schedule_create",
    "schedule_delete",
    "schedule_fire",
    "schedule_update",
    "target_baseline",
    "target_rollback",
    "target_run_apply",
    "targets_recover_lost",
    "tenant_provision",
]
