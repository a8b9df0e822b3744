"""API shapes of connections and tenants. The password is write-only."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework import serializers

from connections import validators
from connections.models import DatabaseConnection, Tenant
from connections.services import EDITABLE_FIELDS


class DatabaseConnectionSerializer(serializers.ModelSerializer):
    name = serializers.CharField(max_length=63, validators=[validators.validate_connection_name])
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only. On update, blank or missing keeps the stored password; changing host, port, "
        "database_name, username or ssl_mode needs it given again.",
    )
    verify = serializers.BooleanField(
        write_only=True,
        required=False,
        default=True,
        help_text="Test connectivity before storing (default true). False registers it untested.",
    )

    class Meta:
        model = DatabaseConnection
        read_only_fields = [
            "id",
            "is_healthy",
            "response_time_ms",
            "server_version",
            "checked_at",
            "error",
            "error_cause",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
        ]
        # The editable fields are the services' one list; ``verify`` is an instruction, not a field.
        fields = ["id", *EDITABLE_FIELDS, "verify", *read_only_fields[1:]]
        extra_kwargs = {
            "port": {"min_value": 1, "max_value": 65535},
            "connect_timeout": {"min_value": 1, "max_value": 120},
        }


class ProbeResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    response_time_ms = serializers.FloatField(allow_null=True)
    server_version = serializers.CharField()
    cause = serializers.CharField()
    description = serializers.CharField()
    error = serializers.CharField()


class TenantSerializer(serializers.ModelSerializer):
    slug = serializers.CharField(max_length=48, validators=[validators.validate_tenant_slug])
    connection = serializers.SlugRelatedField(slug_field="name", queryset=DatabaseConnection.objects.all())
    schema_name = serializers.CharField(
        max_length=255,
        required=False,
        validators=[validators.validate_schema_name],
        help_text="Defaults to tenant_<slug> (public in a dedicated tenant database).",
    )
    region = serializers.CharField(read_only=True)

    class Meta:
        model = Tenant
        fields = [
            "slug",
            "name",
            "connection",
            "schema_name",
            "status",
            "region",
            "error",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["error", "created_by", "created_at", "updated_at"]
        # Uniqueness is the service's to check (a 409), not a required-field rule of the serializer.
        validators: list[Callable[..., None]] = []
