"""The history of the periodic connection checks: one snapshot per connection per check, and the runs."""

from __future__ import annotations

from django.db import models


class ConnectionSnapshot(models.Model):
    """One connectivity check of a registered connection by the periodic health check.

    The connection row keeps only the latest result (its health badge); these rows are the trend behind
    it, shown on the connection's admin page, and are pruned after ``HEALTH_SNAPSHOT_RETENTION_DAYS``.
    """

    connection = models.ForeignKey(
        "connections.DatabaseConnection", on_delete=models.CASCADE, related_name="health_snapshots"
    )
    checked_at = models.DateTimeField()
    is_healthy = models.BooleanField()
    response_time_ms = models.FloatField(null=True, blank=True)
    error_cause = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="", help_text="libpq's message, passwords removed.")
    server_version = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            models.Index(fields=["connection", "-checked_at"], name="health_snapshot_connection"),
            models.Index(fields=["checked_at"], name="health_snapshot_checked_at"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} at {self.checked_at:%Y-%m-%d %H:%M:%S}: {'up' if self.is_healthy else 'down'}"


class CheckRun(models.Model):
    """One run of the periodic connection check, by a task-queue worker.

    Written by whichever worker ran the check, so the newest row is also the queue's sign of life:
    ``/health/detailed`` reads the task queue as working while a run finished recently.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    connections_checked = models.PositiveIntegerField(default=0)
    connections_unhealthy = models.PositiveIntegerField(default=0)
    snapshots_pruned = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=128, blank=True, default="", help_text="host:pid of the worker.")

    class Meta:
        ordering = ["-finished_at"]
        indexes = [models.Index(fields=["finished_at"], name="health_checkrun_finished_at")]

    def __str__(self) -> str:
        return f"check at {self.finished_at:%Y-%m-%d %H:%M:%S}: {self.connections_checked} connection(s)"
