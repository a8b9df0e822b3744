"""Writes of the connection registry: connections, tenants, health checks and key rotation."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ExpressionWrapper, F
from django.utils import timezone

from connections.exceptions import (
    ConnectionNameTaken,
    ConnectionTestFailed,
    EncryptionKeyError,
    TenantConflict,
)
from connections.models import DatabaseConnection, DatabaseType, Tenant, TenantStatus
from connections.probe import ProbeResult, probe, redact
from connections.selectors import connection_params
from infra_site import crypto
from infra_site.errors import ValidationFailed
from infra_site.updates import model_update

logger = logging.getLogger(__name__)

# Changing any of these re-tests the connection before the change is stored.
DETAIL_FIELDS = (
    "host",
    "port",
    "database_name",
    "username",
    "password",
    "ssl_mode",
    "auth_methods",
    "connect_timeout",
)
# Where the stored password goes: changing any of these needs the password given again, or a user who may
# edit connections could point one at a server of theirs and receive the stored password on the re-test.
PASSWORD_BOUND_FIELDS = ("host", "port", "database_name", "username", "ssl_mode")
# What a person sets on a connection: the one declaration that the services, the API's serializer, the admin's
# form and fieldsets and ``add_connection`` take their fields from. Placement says what the database is and
# where; access says how to reach it.
PLACEMENT_FIELDS = ("name", "database_type", "region", "is_active")
ACCESS_FIELDS = (*DETAIL_FIELDS, "default_schema")
EDITABLE_FIELDS = (*PLACEMENT_FIELDS, *ACCESS_FIELDS)
TENANT_EDITABLE_FIELDS = ("name", "status", "connection", "schema_name")
HEALTH_FIELDS = ("is_healthy", "response_time_ms", "server_version", "checked_at", "error", "error_cause")


def _validation_failed(exc: ValidationError) -> ValidationFailed:
    details = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    first_field, first_errors = next(iter(details.items()))
    label = "" if first_field in ("__all__", "non_field_errors") else f"{first_field}: "
    return ValidationFailed(f"Invalid input: {label}{first_errors[0]}", details=details)


def _apply_health(connection: DatabaseConnection, result: ProbeResult) -> None:
    connection.is_healthy = result.ok
    connection.response_time_ms = result.response_time_ms
    connection.server_version = result.server_version[:255] if result.ok else connection.server_version
    connection.checked_at = timezone.now()
    connection.error = redact(result.error, connection.password)
    connection.error_cause = result.cause


def connection_probe(*, connection: DatabaseConnection) -> ProbeResult:
    """Run the connectivity check for a (possibly unsaved) connection and log its outcome."""
    result = probe(connection_params(connection))
    log_fields = {
        "connection": connection.name,
        "address": connection.address,
        "ok": result.ok,
        "cause": result.cause,
        "response_time_ms": result.response_time_ms,
    }
    if result.ok:
        logger.info("connection check passed", extra=log_fields)
    else:
        logger.warning("connection check failed", extra={**log_fields, "error": result.error})
    return result


def _full_clean(connection: DatabaseConnection) -> None:
    try:
        connection.full_clean(exclude=["password"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise _validation_failed(exc) from exc


def connection_check_name(*, name: str, exclude_id: uuid.UUID | None = None) -> None:
    """Raise ``ConnectionNameTaken`` when a live connection other than ``exclude_id`` has ``name``."""
    qs = DatabaseConnection.objects.filter(name=name)
    if exclude_id is not None:
        qs = qs.exclude(pk=exclude_id)
    if qs.exists():
        raise ConnectionNameTaken(f"A connection named {name!r} already exists.", details={"name": name})


def connection_verify(*, connection: DatabaseConnection, probe_result: ProbeResult | None = None) -> ProbeResult:
    """Return a passing connectivity check of ``connection``; raise ``ConnectionTestFailed`` otherwise."""
    result = probe_result or connection_probe(connection=connection)
    if not result.ok:
        raise ConnectionTestFailed(result, address=connection.address)
    return result


def connection_create(
    *,
    actor: str,
    verify: bool = True,
    probe_result: ProbeResult | None = None,
    **values: Any,
) -> DatabaseConnection:
    """Register a connection after a successful connectivity check (unless ``verify`` is false).

    ``probe_result`` lets an interface that already ran the check (the admin form) pass it on.
    When the check fails, ``ConnectionTestFailed`` is raised and nothing is stored.
    """
    connection = DatabaseConnection(created_by=actor, updated_by=actor)
    model_update(connection, fields=EDITABLE_FIELDS, changes=values)
    _full_clean(connection)
    connection_check_name(name=connection.name)
    if verify:
        _apply_health(connection, connection_verify(connection=connection, probe_result=probe_result))
    try:
        with transaction.atomic():
            connection.save()
    except IntegrityError as exc:
        raise ConnectionNameTaken(
            f"A connection named {connection.name!r} already exists.", details={"name": connection.name}
        ) from exc
    logger.info(
        "connection registered",
        extra={"connection": connection.name, "id": str(connection.pk), "actor": actor, "verified": verify},
    )
    return connection


def connection_check_password(*, connection: DatabaseConnection, changes: dict[str, Any]) -> None:
    """Raise ``ValidationFailed`` naming ``password`` when ``changes`` move a stored password without giving it.

    Moving means changing host, port, database, user or TLS mode: the stored password is for the old
    place and may only go to a new one when whoever makes the change knows it.
    """
    if changes.get("password") or not connection.password:
        return
    moved = [key for key in PASSWORD_BOUND_FIELDS if key in changes and changes[key] != getattr(connection, key)]
    if moved:
        message = f"Enter the password again to change {', '.join(moved)}: the stored one is not sent elsewhere."
        raise ValidationFailed(f"Invalid input: password: {message}", details={"password": [message]})


def connection_candidate(
    *, connection: DatabaseConnection, changes: dict[str, Any]
) -> tuple[DatabaseConnection, list[str]]:
    """Return the stored ``connection`` with ``changes`` applied (validated, not saved) and the changed fields.

    A blank or missing password keeps the stored one, unless the change moves it (``connection_check_password``).
    Raises ``ValidationFailed`` or ``ConnectionNameTaken`` before anything connects anywhere.
    """
    stored = DatabaseConnection.all_objects.get(pk=connection.pk)
    connection_check_password(connection=stored, changes=changes)
    changes = {key: value for key, value in changes.items() if key != "password" or value}
    changed = model_update(stored, fields=EDITABLE_FIELDS, changes=changes)
    if changed:
        _full_clean(stored)
    if "name" in changed:
        connection_check_name(name=stored.name, exclude_id=stored.pk)
    return stored, changed


def connection_update(
    *,
    connection: DatabaseConnection,
    actor: str,
    verify: bool = True,
    probe_result: ProbeResult | None = None,
    **changes: Any,
) -> DatabaseConnection:
    """Change a connection; a change of host, port, database, user, password, TLS or auth methods is re-tested first.

    A blank or missing password keeps the stored one, but changing host, port, database, user or TLS
    needs the password given again. When validation or the re-test fails nothing is changed.
    """
    candidate, changed = connection_candidate(connection=connection, changes=changes)
    if not changed:
        return connection
    retest = verify and any(key in DETAIL_FIELDS for key in changed)
    if retest:
        _apply_health(candidate, connection_verify(connection=candidate, probe_result=probe_result))
    candidate.updated_by = actor
    update_fields = [*changed, "updated_by", "updated_at", *(HEALTH_FIELDS if retest else ())]
    with transaction.atomic():
        candidate.save(update_fields=update_fields)
    logger.info(
        "connection updated",
        extra={"connection": candidate.name, "id": str(candidate.pk), "actor": actor, "fields": ",".join(changed)},
    )
    return candidate


def connection_delete(*, connection: DatabaseConnection, actor: str) -> DatabaseConnection:
    """Soft-delete a connection: it leaves lists and targets, its row and history stay."""
    if connection.deleted_at is None:
        connection.deleted_at = timezone.now()
        connection.deleted_by = actor
        connection.is_active = False
        connection.save(update_fields=["deleted_at", "deleted_by", "is_active", "updated_at"])
        logger.info(
            "connection deleted", extra={"connection": connection.name, "id": str(connection.pk), "actor": actor}
        )
    return connection


def connection_test(*, connection: DatabaseConnection) -> ProbeResult:
    """Check a registered connection now and store the result as its health snapshot."""
    result = connection_probe(connection=connection)
    _apply_health(connection, result)
    connection.save(update_fields=list(HEALTH_FIELDS))
    return result


def connection_test_many(
    *, connections: Iterable[DatabaseConnection], parallelism: int = 8
) -> list[tuple[DatabaseConnection, ProbeResult]]:
    """Check many connections concurrently and store each snapshot; return them in the given order."""
    items = list(connections)
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(items) or 1))) as pool:
        results = list(pool.map(lambda c: connection_probe(connection=c), items))
    for connection, result in zip(items, results, strict=True):
        _apply_health(connection, result)
        connection.save(update_fields=list(HEALTH_FIELDS))
    return list(zip(items, results, strict=True))


def tenant_default_schema(*, slug: str, connection: DatabaseConnection) -> str:
    """Return the schema a new tenant gets: ``public`` in a dedicated database, else ``tenant_<slug>``."""
    return "public" if connection.database_type == DatabaseType.TENANT else f"tenant_{slug}"


def _tenant_clean(tenant: Tenant) -> None:
    try:
        tenant.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise _validation_failed(exc) from exc
    if tenant.connection.deleted_at is not None:
        raise ValidationFailed(
            "Invalid input: connection: the connection has been deleted.",
            details={"connection": ["The connection has been deleted."]},
        )


def tenant_create(
    *,
    slug: str,
    name: str,
    connection: DatabaseConnection,
    actor: str,
    schema_name: str | None = None,
    status: str = TenantStatus.ACTIVE,
) -> Tenant:
    """Register a tenant whose schema already exists or is provisioned separately."""
    tenant = Tenant(
        slug=slug,
        name=name,
        connection=connection,
        schema_name=schema_name or tenant_default_schema(slug=slug, connection=connection),
        status=status,
        created_by=actor,
    )
    _tenant_clean(tenant)
    if Tenant.objects.filter(slug=slug).exists():
        raise TenantConflict(f"A tenant with slug {slug!r} already exists.", details={"slug": slug})
    if Tenant.objects.filter(connection=connection, schema_name=tenant.schema_name).exists():
        raise TenantConflict(
            f"Schema {tenant.schema_name!r} already belongs to a tenant on {connection.name}.",
            details={"schema_name": tenant.schema_name, "connection": connection.name},
        )
    try:
        with transaction.atomic():
            tenant.save()
    except IntegrityError as exc:
        raise TenantConflict(f"Tenant {slug!r} conflicts with an existing tenant.", details={"slug": slug}) from exc
    logger.info("tenant registered", extra={"tenant": slug, "connection": connection.name, "actor": actor})
    return tenant


def tenant_update(*, tenant: Tenant, actor: str, **changes: Any) -> Tenant:
    """Change a tenant's name, status or placement."""
    changed = model_update(tenant, fields=TENANT_EDITABLE_FIELDS, changes=changes)
    if not changed:
        return tenant
    _tenant_clean(tenant)
    try:
        with transaction.atomic():
            tenant.save(update_fields=[*changed, "updated_at"])
    except IntegrityError as exc:
        raise TenantConflict("The change conflicts with another tenant.", details={"slug": tenant.slug}) from exc
    logger.info("tenant updated", extra={"tenant": tenant.slug, "actor": actor, "fields": ",".join(changed)})
    return tenant


if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _StoredToken(TypedDict):
    token: bytes | None  # the stored ciphertext of the password


@dataclass
class RotationReport:
    total: int = 0
    rotated: int = 0
    already_current: int = 0
    failed: list[str] = field(default_factory=list)


def encryption_key_rotate(
    *,
    old_keys: Iterable[str] = (),
    dry_run: bool = False,
    on_row: Callable[[DatabaseConnection, str, RotationReport], None] | None = None,
) -> RotationReport:
    """Re-encrypt every stored password (soft-deleted rows included) with the current key.

    Each row is re-encrypted in its own transaction, under a row lock, so an
    interruption leaves every row readable under either the old or the new key;
    running again finishes the job (rows already under the current key are skipped).
    Rows that no known key decrypts are reported and left untouched; a real run then
    raises ``EncryptionKeyError`` carrying the report, a dry run returns it.
    ``on_row(row, outcome, report)`` is called after each row ("rotated", "current", "undecryptable").
    """
    old_keys = [key for key in old_keys if key]
    current = crypto.current_key()
    ids = list(DatabaseConnection.all_objects.order_by("pk").values_list("pk", flat=True))
    report = RotationReport(total=len(ids))
    for pk in ids:
        with transaction.atomic():
            # The stored ciphertext as bytes: the wrapper's output field skips the decrypting converter.
            row = (
                DatabaseConnection.all_objects.select_for_update()
                .annotate(token=ExpressionWrapper(F("password"), output_field=models.BinaryField()))
                .only("pk", "name")
                .get(pk=pk)
            )
            outcome = _rotate_row(row, current=current, old_keys=old_keys, dry_run=dry_run)
        if outcome == "undecryptable":
            report.failed.append(row.name)
        elif outcome == "rotated":
            report.rotated += 1
        else:
            report.already_current += 1
        if on_row:
            on_row(row, outcome, report)
    logger.info(
        "encryption key rotation finished",
        extra={
            "total": report.total,
            "rotated": report.rotated,
            "already_current": report.already_current,
            "failed": len(report.failed),
            "dry_run": dry_run,
        },
    )
    if report.failed and not dry_run:
        raise EncryptionKeyError(
            f"{len(report.failed)} password(s) could not be decrypted with any known key; they were left unchanged.",
            details={"connections": report.failed},
        )
    return report


def _rotate_row(
    row: WithAnnotations[DatabaseConnection, _StoredToken], *, current: str, old_keys: list[str], dry_run: bool
) -> str:
    if row.token is None:
        return "current"
    try:
        crypto.decrypt_with(row.token, current)
    except crypto.DecryptionError:
        pass
    else:
        return "current"
    try:
        plaintext, _key = crypto.decrypt_text(row.token, extra_keys=old_keys)
    except crypto.DecryptionError:
        return "undecryptable"
    if not dry_run:
        DatabaseConnection.all_objects.filter(pk=row.pk).update(password=plaintext)
    return "rotated"
