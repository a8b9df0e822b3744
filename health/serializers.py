"""Shapes of the health endpoints' responses (they also document them in the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers

from health.probes import OverallStatus, Status


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Stable machine code.")
    message = serializers.CharField()
    details = serializers.DictField(help_text="Context; for a 503 of /health/detailed, the whole report.")


class LivenessSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="Always 'healthy' while the process serves.")
    timestamp = serializers.DateTimeField()
    version = serializers.CharField(help_text="Version of the infra-control-plane package.")
    environment = serializers.CharField()


class ServiceHealthSerializer(serializers.Serializer):
    name = serializers.CharField(
        help_text="control_database, task_queue, broker, oidc_provider, migrations, "
        "or connection:<name> per active connection."
    )
    is_healthy = serializers.BooleanField()
    status = serializers.ChoiceField(choices=Status.choices)
    response_time_ms = serializers.FloatField(allow_null=True)
    checked_at = serializers.DateTimeField(allow_null=True, help_text="Null for a connection not checked yet.")
    live = serializers.BooleanField(
        help_text="Checked during this request. False for a connection's result as the periodic check stored it "
        "(anonymous callers, and authenticated ones past their HEALTH_LIVE_PROBE_INTERVAL)."
    )
    details = serializers.DictField(
        help_text="Addresses, users, server versions and errors: only for the roles databases:read or "
        "infrastructure:admin; empty for everyone else."
    )


class SummarySerializer(serializers.Serializer):
    total_services = serializers.IntegerField()
    healthy_services = serializers.IntegerField()
    unhealthy_services = serializers.IntegerField()


class DetailedHealthSerializer(serializers.Serializer):
    overall_status = serializers.ChoiceField(choices=OverallStatus.choices)
    timestamp = serializers.DateTimeField()
    services = ServiceHealthSerializer(many=True)
    summary = SummarySerializer()


class ExecutionCountsSerializer(serializers.Serializer):
    by_status = serializers.DictField(child=serializers.IntegerField())
    total = serializers.IntegerField()


class DurationsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)


class TargetRunCountsSerializer(serializers.Serializer):
    by_status = serializers.DictField(child=serializers.IntegerField())
    total = serializers.IntegerField()
    duration_ms = DurationsSerializer(help_text="Of the target runs that finished in the last 24 h.")


class QueueFiguresSerializer(serializers.Serializer):
    depth = serializers.IntegerField(allow_null=True, help_text="Tasks waiting; null when Redis did not answer.")
    last_check_run = serializers.DateTimeField(allow_null=True, help_text="The last periodic connection check.")


class ConnectionCountsSerializer(serializers.Serializer):
    healthy = serializers.IntegerField()
    unhealthy = serializers.IntegerField()
    unchecked = serializers.IntegerField()


class ProcessFiguresSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    memory_rss_bytes = serializers.IntegerField()
    cpu_user_seconds = serializers.FloatField()
    cpu_system_seconds = serializers.FloatField()
    uptime_seconds = serializers.FloatField()


class MetricsSerializer(serializers.Serializer):
    """The JSON figures of ``/health/metrics``."""

    timestamp = serializers.DateTimeField()
    executions = ExecutionCountsSerializer(help_text="All executions, by current status.")
    target_runs_24h = TargetRunCountsSerializer(help_text="Target runs of the executions of the last 24 h.")
    queue = QueueFiguresSerializer()
    connections = ConnectionCountsSerializer(help_text="Active connections by their latest check.")
    process = ProcessFiguresSerializer(help_text="The process that answered.")
