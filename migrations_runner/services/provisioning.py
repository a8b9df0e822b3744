"""Provisioning a tenant: register it, create its schema, run the tenant set on it."""

from __future__ import annotations

import logging

from connections import services as registry
from connections.models import DatabaseConnection, Tenant, TenantStatus
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import ProvisioningFailed
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, Purpose, Scope, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services.completion import on_finished
from migrations_runner.services.executions import _launch, _record

logger = logging.getLogger(__name__)


def tenant_provision(
    *,
    slug: str,
    name: str,
    connection: DatabaseConnection,
    actor: str,
    origin: Origin,
    schema_name: str | None = None,
    wait: bool = False,
) -> tuple[Tenant, MigrationExecution]:
    """Create (or resume) a tenant in ``provisioning`` and launch the execution that migrates its schema (as
    ``execution_start`` launches, ``wait`` included); return the tenant and that execution.

    The tenant becomes active when the execution completes. On failure it stays in ``provisioning`` with the
    error and nothing is dropped; provisioning again resumes from the versions already applied.
    """
    tenant = Tenant.objects.filter(slug=slug).select_related("connection").first()
    if tenant is None:
        tenant = registry.tenant_create(
            slug=slug,
            name=name,
            connection=connection,
            schema_name=schema_name,
            actor=actor,
            status=TenantStatus.PROVISIONING,
        )
    elif tenant.status != TenantStatus.PROVISIONING:
        raise ProvisioningFailed(
            f"Tenant {slug!r} exists and is {tenant.status}; only a tenant still provisioning can be provisioned.",
            code="tenant_exists",
            details={"slug": slug, "status": tenant.status},
        )
    target = Target(
        connection_id=str(tenant.connection_id),
        connection_name=tenant.connection.name,
        database_type="tenant",
        region=tenant.connection.region,
        schema=tenant.schema_name,
        tenant_slug=tenant.slug,
        tenant_id=tenant.pk,
        create_schema=tenant.schema_name != "public",
    )
    recorded = _record(
        selection=TargetSelection(scope=Scope.SINGLE, tenants=[tenant.slug]),
        options=ExecutionOptions(batch_size=1),
        actor=actor,
        origin=origin,
        targets=[target],
        metadata={"provision": slug},
        purpose=Purpose.PROVISIONING,
    )
    execution = _launch(recorded, wait=wait)
    tenant.refresh_from_db()
    return tenant, execution


@on_finished(Purpose.PROVISIONING)
def provisioning_finish(execution: MigrationExecution) -> None:
    """After a provisioning execution ends: activate its tenant, or keep it provisioning with the error."""
    run = execution.targets.select_related("tenant").first()
    tenant = run.tenant if run is not None else None
    if tenant is None or tenant.status != TenantStatus.PROVISIONING:
        return
    slug = tenant.slug
    if execution.status == ExecutionStatus.COMPLETED and run is not None and run.status == TargetStatus.SUCCEEDED:
        tenant.status, tenant.error = TenantStatus.ACTIVE, ""
    else:
        error = (run.error if run is not None else None) or {}
        tenant.error = f"version {error.get('version') or '?'}: {error.get('message', execution.error or 'failed')}" + (
            f" [SQLSTATE {error['sqlstate']}]" if error.get("sqlstate") else ""
        )
    tenant.save(update_fields=["status", "error", "updated_at"])
    logger.info(
        "tenant provisioning finished",
        extra={"tenant": slug, "status": tenant.status, "execution": str(execution.pk)},
    )
