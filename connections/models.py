"""The registry: the fleet's databases (connections) and the tenants they hold."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from connections import validators
from infra_site.crypto import EncryptedTextField


class DatabaseType(models.TextChoices):
    ADMIN = "admin", "Admin"
    SHARED = "shared", "Shared (regional)"
    ANALYTICS = "analytics", "Analytics"
    TENANT = "tenant", "Dedicated tenant"


class SslMode(models.TextChoices):
    DISABLE = "disable", "disable"
    PREFER = "prefer", "prefer"
    REQUIRE = "require", "require"
    VERIFY_CA = "verify-ca", "verify-ca"
    VERIFY_FULL = "verify-full", "verify-full"


class AuthMethods(models.TextChoices):
    """Values of libpq's ``require_auth``: the authentication methods a connection answers.

    Whatever the server asks for outside the chosen methods, libpq refuses before sending anything,
    so a server posing as the database cannot obtain the password in cleartext or as an md5 hash.
    """

    SCRAM = "scram-sha-256", "scram-sha-256"
    SCRAM_OR_NONE = "scram-sha-256,none", "scram-sha-256, or none (trust/peer servers)"
    SCRAM_OR_MD5 = "scram-sha-256,md5", "scram-sha-256 or md5 (verify-full only)"
    MD5 = "md5", "md5 (verify-full only)"
    PASSWORD = "password", "cleartext password (verify-full only)"


# These send the password, or an md5 hash open to offline guessing, to whoever answers: only to a server
# whose certificate names the host.
PASSWORD_REVEALING_AUTH_METHODS = (AuthMethods.SCRAM_OR_MD5, AuthMethods.MD5, AuthMethods.PASSWORD)


class LiveConnectionManager(models.Manager):
    """Connections that have not been soft-deleted."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class DatabaseConnection(models.Model):
    """One database of the fleet that the control plane can reach and migrate.

    The password is stored encrypted and is write-only everywhere. The latest
    connectivity check is kept on the row as a health snapshot.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63, validators=[validators.validate_connection_name])
    database_type = models.CharField(max_length=16, choices=DatabaseType.choices)
    region = models.CharField(max_length=32, blank=True, default="", validators=[validators.validate_region])
    host = models.CharField(
        max_length=255,
        validators=[validators.validate_connection_host],
        help_text="Host name, IP address, or a Unix-socket directory; CONNECTION_ALLOWED_HOSTS must allow it.",
    )
    port = models.PositiveIntegerField(default=5432)
    database_name = models.CharField(max_length=63)
    username = models.CharField(max_length=63)
    password = EncryptedTextField(blank=True, default="")
    ssl_mode = models.CharField(max_length=16, choices=SslMode.choices, default=SslMode.PREFER)
    auth_methods = models.CharField(
        max_length=32,
        choices=AuthMethods.choices,
        default=AuthMethods.SCRAM,
        help_text="Authentication methods the connection accepts (libpq require_auth). "
        "md5 and cleartext password need ssl_mode verify-full.",
    )
    connect_timeout = models.PositiveSmallIntegerField(default=5, help_text="Seconds.")
    default_schema = models.CharField(max_length=63, default="public", validators=[validators.validate_identifier])
    is_active = models.BooleanField(default=True)

    is_healthy = models.BooleanField(null=True, blank=True, default=None)
    response_time_ms = models.FloatField(null=True, blank=True)
    server_version = models.CharField(max_length=255, blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_cause = models.CharField(max_length=32, blank=True, default="")

    created_by = models.CharField(max_length=150, blank=True, default="")
    updated_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.CharField(max_length=150, blank=True, default="")

    objects = LiveConnectionManager()
    all_objects = models.Manager()  # noqa: DJ012 (ruff reads a second manager as a field)

    class Meta:
        ordering = ["database_type", "region", "name"]
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(deleted_at__isnull=True), name="connection_name_unique_live"
            ),
            models.CheckConstraint(condition=Q(port__gte=1, port__lte=65535), name="connection_port_range"),
            models.CheckConstraint(
                condition=Q(connect_timeout__gte=1, connect_timeout__lte=120), name="connection_timeout_range"
            ),
            models.CheckConstraint(
                condition=Q(ssl_mode=SslMode.VERIFY_FULL) | ~Q(auth_methods__in=PASSWORD_REVEALING_AUTH_METHODS),
                name="connection_weak_auth_needs_verify_full",
            ),
        ]
        indexes = [models.Index(fields=["database_type", "region"])]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<DatabaseConnection {self.name} {self.database_type} {self.host}:{self.port}/{self.database_name}>"

    def clean(self) -> None:
        if self.database_type == DatabaseType.SHARED and not self.region:
            raise ValidationError({"region": "A shared database belongs to a region."})
        if self.auth_methods in PASSWORD_REVEALING_AUTH_METHODS and self.ssl_mode != SslMode.VERIFY_FULL:
            raise ValidationError(
                {
                    "auth_methods": "md5 and cleartext password authentication are only allowed with ssl_mode "
                    "verify-full: they reveal the password to whatever server answers."
                }
            )
        if self._default_schema_holds_a_tenant():
            raise ValidationError(
                {"default_schema": f"Schema {self.default_schema!r} belongs to a tenant of this database."}
            )

    def _default_schema_holds_a_tenant(self) -> bool:
        """Tell whether a tenant's schema is this database's default schema (one schema, two migration sets).

        A dedicated tenant database is exempt: its default schema is a target only when no tenant describes it.
        """
        if self._state.adding or self.database_type == DatabaseType.TENANT:
            return False
        return self.tenants.filter(schema_name=self.default_schema).exists()

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def address(self) -> str:
        """Where the database is, without credentials."""
        return f"{self.host}:{self.port}/{self.database_name}"


class TenantStatus(models.TextChoices):
    PROVISIONING = "provisioning", "Provisioning"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    ARCHIVED = "archived", "Archived"


class Tenant(models.Model):
    """A customer of the SaaS: a schema in a shared database, or a dedicated tenant database."""

    slug = models.CharField(max_length=48, unique=True, validators=[validators.validate_tenant_slug])
    name = models.CharField(max_length=200)
    connection = models.ForeignKey(DatabaseConnection, on_delete=models.PROTECT, related_name="tenants")
    schema_name = models.CharField(max_length=63, validators=[validators.validate_schema_name])
    status = models.CharField(max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    error = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "schema_name"], name="tenant_schema_unique_per_database"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def region(self) -> str:
        return self.connection.region

    def clean(self) -> None:
        """Check the rules that involve the connection (the field validators check the rest)."""
        if not self.connection_id:
            return
        connection = self.connection
        if connection.database_type not in (DatabaseType.SHARED, DatabaseType.TENANT):
            raise ValidationError(
                {"connection": "A tenant lives in a shared database or in a dedicated tenant database."}
            )
        if self.schema_name == "public" and connection.database_type != DatabaseType.TENANT:
            raise ValidationError(
                {"schema_name": "'public' is only allowed for a tenant in a dedicated tenant database."}
            )
        if self.schema_name == connection.default_schema and connection.database_type != DatabaseType.TENANT:
            raise ValidationError(
                {"schema_name": f"Schema {self.schema_name!r} is the default schema of connection {connection.name}."}
            )
