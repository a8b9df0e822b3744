"""Errors of the connection registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connections.probe import ProbeResult
from infra_site.errors import Conflict, NotFound, ValidationFailed

if TYPE_CHECKING:
    pass


class ConnectionTestFailed(ValidationFailed):
    """The connectivity check failed, so nothing was stored."""

    code = "connection_test_failed"

    def __init__(self, result: ProbeResult, *, address: str) -> None:
        super().__init__(
            f"Connection test to {address} failed: {result.description}.",
            details={"cause": result.cause, "description": result.description, "error": result.error},
        )
        self.result = result


class ConnectionNotFound(NotFound):
    code = "connection_not_found"


class ConnectionNameTaken(Conflict):
    code = "connection_name_taken"


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class TenantConflict(Conflict):
    code = "tenant_conflict"


class EncryptionKeyError(ValidationFailed):
    code = "encryption_key_error"
