"""Executions of migrations across the fleet and the run of each target within them."""

from __future__ import annotations

import uuid

from django.db import models

# The selection is a value object below the models (they store it as scope + filters); callers that import
# Scope from here keep doing so.
from migrations_runner.selection import Scope, TargetSelection


class ExecutionKind(models.TextChoices):
    MIGRATE = "migrate", "Migrate"
    ROLLBACK = "rollback", "Rollback"


class Purpose(models.TextChoices):
    """Why an execution exists; what runs when it finishes is registered per purpose (``services/completion.py``)."""

    MIGRATION = "migration", "Migration"
    ROLLBACK = "rollback", "Rollback"
    PROVISIONING = "provisioning", "Tenant provisioning"
    RETRY = "retry", "Retry of failed targets"


class Origin(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    COMMAND = "command", "Command"
    SCHEDULE = "schedule", "Schedule"


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    ROLLED_BACK = "rolled_back", "Rolled back"


class OnFailure(models.TextChoices):
    CONTINUE = "continue", "Continue with other targets"
    HALT = "halt", "Halt: start no more targets"


class TargetStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class Waiting(models.TextChoices):
    """What an execution between two waves waits for (nothing runs meanwhile)."""

    NOTHING = "", "Nothing"
    SOAK = "soak", "Soak time"
    APPROVAL = "approval", "Approval"


FINISHED_TARGET_STATUSES = (TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.SKIPPED, TargetStatus.CANCELLED)


class MigrationExecution(models.Model):
    """One run of migrations (or of a rollback) over a set of targets."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=ExecutionKind.choices, default=ExecutionKind.MIGRATE)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.MIGRATION)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    filters = models.JSONField(default=dict, blank=True)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    on_failure = models.CharField(max_length=16, choices=OnFailure.choices, default=OnFailure.CONTINUE)
    batch_size = models.PositiveIntegerField(default=10)
    executed_by = models.CharField(max_length=150)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.API)
    # The execution this one retries or rolls back.
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="spawned")
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="", help_text="Why the execution failed, halted or was cancelled.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    # The lanes' shared state: the phase being worked, and the last sign that a lane is at work.
    current_phase = models.SmallIntegerField(default=-1)
    active_at = models.DateTimeField(null=True, blank=True, help_text="Lanes spawned, or a target claimed or ended.")
    # Progress counters, kept by the same writes that change target runs, so progress never scans them.
    targets_total = models.PositiveIntegerField(default=0)
    targets_succeeded = models.PositiveIntegerField(default=0)
    targets_failed = models.PositiveIntegerField(default=0)
    targets_skipped = models.PositiveIntegerField(default=0)
    targets_cancelled = models.PositiveIntegerField(default=0)
    # Sum of the durations of the targets that ran and succeeded, and their number: the ETA's mean.
    run_duration_ms = models.BigIntegerField(default=0)
    runs_timed = models.PositiveIntegerField(default=0)

    # Canary waves (services/waves.py): [{"wave", "phase", "size"}] of the tenant targets; empty without waves.
    waves = models.JSONField(default=list, blank=True)
    failure_budget = models.CharField(max_length=16, blank=True, default="0", help_text="Per wave: 2, or 5%.")
    wave_pause_s = models.PositiveIntegerField(default=0, help_text="Soak time between two waves.")
    wave_approval = models.BooleanField(default=False, help_text="A person continues each next wave.")
    approved_wave = models.PositiveSmallIntegerField(default=1, help_text="The highest wave allowed to start.")
    waiting = models.CharField(max_length=16, choices=Waiting.choices, blank=True, default=Waiting.NOTHING)
    wait_until = models.DateTimeField(null=True, blank=True, help_text="End of the soak time.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["origin", "-created_at"]),
            # The API's list and the admin's changelist (which adds the id to the order): newest first, read in
            # index order instead of sorting every execution.
            models.Index(fields=["-created_at", "-id"], name="execution_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.scope} {str(self.id)[:8]} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in (ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS)

    @property
    def selection(self) -> TargetSelection:
        """The scope and filters this execution was started with."""
        return TargetSelection.from_stored(self.scope, self.filters)


class TargetRun(models.Model):
    """The work on one target within an execution: its status, versions and failure.

    On a PostgreSQL control database the table also has ``listed``, the run's JSON as the targets endpoint shows
    it, generated by PostgreSQL from the row (migration 0014); it is not a field: Django never writes it."""

    execution = models.ForeignKey(MigrationExecution, on_delete=models.CASCADE, related_name="targets")
    connection = models.ForeignKey("connections.DatabaseConnection", on_delete=models.PROTECT, related_name="+")
    tenant = models.ForeignKey(
        "connections.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="target_runs"
    )
    schema_name = models.CharField(max_length=63)
    database_type = models.CharField(max_length=16)
    region = models.CharField(max_length=32, blank=True, default="")
    phase = models.PositiveSmallIntegerField(default=0)
    wave = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Its canary wave (1-based), if any.")
    status = models.CharField(max_length=16, choices=TargetStatus.choices, default=TargetStatus.PENDING)
    from_version = models.CharField(max_length=64, blank=True, default="")
    to_version = models.CharField(max_length=64, blank=True, default="")
    depends_on = models.JSONField(default=list, blank=True, help_text="Ids of target runs that must succeed first.")
    pending_versions = models.JSONField(default=list, blank=True)
    applied_versions = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.JSONField(null=True, blank=True)
    skip_reason = models.TextField(blank=True, default="")
    # host:port of the database server, for the per-server cap of the lanes' claim.
    server = models.CharField(max_length=300, blank=True, default="")
    worker = models.CharField(max_length=128, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="The worker's last sign of life.")
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # Lock guard rails: how often a statement of this target waited lock_timeout for a table lock, since when,
    # who held it the last time, and when a target handed back to let others run may be claimed again.
    lock_waits = models.PositiveIntegerField(default=0)
    lock_blocked_since = models.DateTimeField(null=True, blank=True)
    waiting = models.TextField(blank=True, default="", help_text="The latest lock wait: who held the lock.")
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["phase", "id"]
        indexes = [
            # The claim: the next pending run of a phase, in id order.
            models.Index(fields=["execution", "status", "phase", "id"], name="target_run_claim"),
            # A page of an execution's runs, by key (phase, id), at any depth.
            models.Index(fields=["execution", "phase", "id"], name="target_run_page"),
            # The fleet view: the latest run of each target.
            models.Index(fields=["connection", "schema_name", "id"], name="target_run_latest"),
            # The per-server cap: running runs by server, across executions.
            models.Index(fields=["server"], condition=models.Q(status="running"), name="target_run_running_server"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["execution", "connection", "schema_name"], name="target_run_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.schema_name}"

    @property
    def label(self) -> str:
        return f"{self.connection.name}/{self.schema_name}"


class MigrationSchedule(models.Model):
    """A migration run that starts by itself: on a cron expression, or once at ``run_at``.

    Kept in sync with a django-q2 ``Schedule`` (``q_schedule``) that fires it.
    """

    name = models.SlugField(max_length=100, unique=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    filters = models.JSONField(default=dict, blank=True)
    options = models.JSONField(
        default=dict, blank=True, help_text="The options of each firing's execution (ExecutionOptions.as_dict)."
    )
    cron_expression = models.CharField(max_length=100, blank=True, default="")
    run_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    q_schedule = models.OneToOneField(
        "django_q.Schedule", on_delete=models.SET_NULL, null=True, blank=True, related_name="migration_schedule"
    )
    last_execution = models.ForeignKey(
        MigrationExecution, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_fired_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(~models.Q(cron_expression="") & models.Q(run_at__isnull=True))
                | (models.Q(cron_expression="") & models.Q(run_at__isnull=False)),
                name="schedule_cron_xor_run_at",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def selection(self) -> TargetSelection:
        """The scope and filters each firing runs over."""
        return TargetSelection.from_stored(self.scope, self.filters)


class SchemaShape(models.Model):
    """The catalog objects of a schema with a given fingerprint, stored once however many targets share it.

    ``definitions`` maps an object key (``column:tasks.priority``) to its canonical definition; see
    ``migrations_runner.engine.fingerprint``.
    """

    fingerprint = models.CharField(max_length=64, primary_key=True, help_text="SHA-256 of the definitions.")
    definitions = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.fingerprint[:12]


class SchemaFingerprint(models.Model):
    """The latest fingerprint of one target's schema: recorded after each successful target run and by scans.

    Targets of the same set at the same version should share one; those that do not drifted out of band.
    """

    connection = models.ForeignKey("connections.DatabaseConnection", on_delete=models.CASCADE, related_name="+")
    schema_name = models.CharField(max_length=63)
    tenant = models.ForeignKey("connections.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    database_type = models.CharField(max_length=16, help_text="The set the target gets.")
    version = models.CharField(max_length=64, blank=True, default="", help_text="Its set version when taken.")
    shape = models.ForeignKey(SchemaShape, on_delete=models.PROTECT, related_name="targets", db_column="fingerprint")
    execution = models.ForeignKey(
        MigrationExecution,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The execution whose run recorded it; empty when a scan did.",
    )
    taken_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "schema_name"], name="schema_fingerprint_target"),
        ]
        indexes = [
            # The majority of each (set, version): fingerprints counted per group.
            models.Index(fields=["database_type", "version", "shape"], name="schema_fingerprint_group"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.schema_name} {self.shape_id[:12]}"

    @property
    def fingerprint(self) -> str:
        return self.shape_id


class ScanState(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class FingerprintScan(models.Model):
    """A scan of the fleet's schema fingerprints, run in the background (a queue task), and its progress.

    One runs at a time: the constraint admits a single ``running`` row.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    filters = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=ScanState.choices, default=ScanState.RUNNING)
    total = models.PositiveIntegerField(default=0, help_text="Targets selected.")
    done = models.PositiveIntegerField(default=0, help_text="Targets read so far (scanned or unreachable).")
    scanned = models.PositiveIntegerField(default=0, help_text="Targets whose fingerprint was recorded.")
    unreachable = models.JSONField(default=list, blank=True, help_text="Databases it could not read.")
    error = models.TextField(blank=True, default="")
    started_by = models.CharField(max_length=150)
    started_at = models.DateTimeField()
    active_at = models.DateTimeField(help_text="Its last progress: a running scan silent for long was lost.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state="running"), name="fingerprint_scan_one_running"
            ),
        ]

    def __str__(self) -> str:
        return f"scan {str(self.id)[:8]} ({self.state})"

    @property
    def selection(self) -> TargetSelection:
        """The scope and filters the scan reads."""
        return TargetSelection.from_stored(self.scope, self.filters)
