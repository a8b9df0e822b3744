"""Errors of the migrations app."""

from infra_site.errors import Conflict, NotFound, ValidationFailed


class NoTargets(ValidationFailed):
    code = "no_targets"


class InvalidMigrationSets(ValidationFailed):
    code = "invalid_migration_sets"


class LintFailed(ValidationFailed):
    """The scripts a run would apply hold lint errors and ``MIGRATION_LINT`` is ``block``."""

    code = "lint_failed"


class ExecutionNotFound(NotFound):
    code = "execution_not_found"


class RollbackRefused(Conflict):
    code = "rollback_refused"


class TargetUnreachable(ValidationFailed):
    code = "target_unreachable"


class RetryRefused(Conflict):
    code = "retry_refused"


class InvalidSchedule(ValidationFailed):
    code = "invalid_schedule"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class ProvisioningFailed(ValidationFailed):
    code = "provisioning_failed"


class ExecutionFinished(Conflict):
    code = "execution_finished"


class InvalidSelection(ValidationFailed):
    code = "invalid_selection"


class InvalidOptions(ValidationFailed):
    """Execution options out of their bounds; ``details`` names each wrong option."""

    code = "invalid_options"


class InvalidWaves(InvalidOptions):
    code = "invalid_waves"


class NotAwaitingApproval(Conflict):
    code = "not_awaiting_approval"


class FingerprintScanRunning(Conflict):
    code = "fingerprint_scan_running"


class FingerprintScanNotFound(NotFound):
    code = "fingerprint_scan_not_found"
