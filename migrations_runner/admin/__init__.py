"""The operator console in the Django admin: executions, the Run flow, schedules, the fleet, migration sets."""

from migrations_runner.admin import (
    executions,  # noqa: F401
    fleet,  # noqa: F401
    schedules,  # noqa: F401
    tenants,  # noqa: F401
)
