"""API shapes of executions, target runs, plans and migration sets."""

from __future__ import annotations

from rest_framework import serializers

from connections import validators
from connections.serializers import TenantSerializer
from migrations_runner.models import MigrationExecution, MigrationSchedule, OnFailure, Scope, TargetRun


class FiltersSerializer(serializers.Serializer):
    """What narrows a scope: regions, connections and tenants."""

    regions = serializers.ListField(
        child=serializers.CharField(max_length=32, validators=[validators.validate_region]),
        required=False,
        default=list,
    )
    connections = serializers.ListField(
        child=serializers.CharField(max_length=63, validators=[validators.validate_connection_name]),
        required=False,
        default=list,
    )
    tenants = serializers.ListField(
        child=serializers.CharField(max_length=48, validators=[validators.validate_tenant_slug]),
        required=False,
        default=list,
    )


class ScopeSerializer(FiltersSerializer):
    """What to migrate: a scope narrowed by regions, connections and tenants."""

    scope = serializers.ChoiceField(choices=Scope.choices, default=Scope.ALL)


class ExecuteSerializer(ScopeSerializer):
    dry_run = serializers.BooleanField(default=False)
    on_failure = serializers.ChoiceField(choices=OnFailure.choices, default=OnFailure.CONTINUE)
    batch_size = serializers.IntegerField(min_value=1, max_value=500, required=False)


class RollbackSerializer(serializers.Serializer):
    execution_id = serializers.UUIDField()


class ExecutionSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    error_message = serializers.CharField(source="error", read_only=True, help_text="The seed's name for `error`.")

    class Meta:
        model = MigrationExecution
        fields = [
            "id",
            "kind",
            "scope",
            "filters",
            "dry_run",
            "status",
            "on_failure",
            "batch_size",
            "executed_by",
            "origin",
            "parent",
            "cancel_requested",
            "error",
            "error_message",
            "created_at",
            "started_at",
            "completed_at",
            "progress",
        ]
        read_only_fields = fields

    def get_progress(self, execution: MigrationExecution) -> dict:
        from migrations_runner.selectors import execution_progress

        # A list view hands the running targets of the whole page in the context (one query per page).
        running = self.context.get("running")
        return execution_progress(
            execution=execution, running_targets=None if running is None else running.get(execution.pk, [])
        )


class ExecutionDetailSerializer(ExecutionSerializer):
    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "metadata"]
        read_only_fields = fields


class TargetRunSerializer(serializers.ModelSerializer):
    connection = serializers.CharField(source="connection.name")
    tenant = serializers.CharField(
        source="tenant.slug", default=None, allow_null=True, help_text="Null for a target that is not a tenant's."
    )

    class Meta:
        model = TargetRun
        fields = [
            "id",
            "connection",
            "tenant",
            "schema_name",
            "database_type",
            "region",
            "phase",
            "status",
            "from_version",
            "to_version",
            "pending_versions",
            "applied_versions",
            "attempts",
            "error",
            "skip_reason",
            "worker",
            "started_at",
            "completed_at",
            "duration_ms",
        ]
        read_only_fields = fields


class ScheduleSerializer(serializers.ModelSerializer):
    filters = FiltersSerializer(required=False, help_text="regions, connections and tenants that narrow the scope.")

    class Meta:
        model = MigrationSchedule
        fields = [
            "id",
            "name",
            "scope",
            "filters",
            "dry_run",
            "on_failure",
            "batch_size",
            "cron_expression",
            "run_at",
            "enabled",
            "last_execution",
            "last_fired_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_execution", "last_fired_at", "created_by", "created_at", "updated_at"]
        extra_kwargs = {"batch_size": {"min_value": 1, "max_value": 500}}
        validators = []

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "filters" in values:
            values["filters"] = dict(values["filters"])
        return values


class ProvisionSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=48, validators=[validators.validate_tenant_slug])
    name = serializers.CharField(max_length=200)
    connection = serializers.CharField(max_length=63, validators=[validators.validate_connection_name])
    schema_name = serializers.CharField(max_length=255, required=False, validators=[validators.validate_schema_name])


class TargetPlanSerializer(serializers.Serializer):
    """What a run would do on one target."""

    target = serializers.CharField()
    connection = serializers.CharField(required=False)
    schema = serializers.CharField(required=False)
    database_type = serializers.CharField(required=False)
    region = serializers.CharField(required=False, allow_blank=True)
    tenant = serializers.CharField(required=False, allow_null=True)
    current_version = serializers.CharField(allow_null=True)
    latest_version = serializers.CharField(required=False, allow_null=True)
    pending = serializers.ListField(child=serializers.CharField())
    drift = serializers.ListField(child=serializers.CharField())
    schema_exists = serializers.BooleanField(required=False)
    error = serializers.CharField(required=False, help_text="Why the target's history could not be read.")


class PlanSerializer(serializers.Serializer):
    targets = TargetPlanSerializer(many=True)
    count = serializers.IntegerField()


class FleetStatusSerializer(PlanSerializer):
    behind = serializers.IntegerField()
    drifted = serializers.IntegerField()
    unreachable = serializers.IntegerField()


class SetVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    description = serializers.CharField()
    script = serializers.CharField()
    checksum = serializers.CharField()
    undo = serializers.BooleanField()
    transactional = serializers.BooleanField()


class MigrationSetSerializer(serializers.Serializer):
    database_type = serializers.CharField()
    versions = SetVersionSerializer(many=True)
    repeatables = serializers.ListField(child=serializers.DictField())
    latest = serializers.CharField(allow_null=True)
    problems = serializers.ListField(child=serializers.CharField())


class SetsSerializer(serializers.Serializer):
    sets = MigrationSetSerializer(many=True)


class MigrationsHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    timestamp = serializers.DateTimeField()
    sets = serializers.DictField(child=serializers.DictField(), help_text="Per database type: versions, latest.")
    problems = serializers.ListField(child=serializers.CharField())
    executions_in_progress = serializers.IntegerField()
    executions_stuck = serializers.IntegerField()


class ProvisionResultSerializer(serializers.Serializer):
    tenant = TenantSerializer(help_text="The tenant, as in /api/v1/tenants/{slug}/.")
    execution = ExecutionSerializer()
