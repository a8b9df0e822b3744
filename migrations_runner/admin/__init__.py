"""The operator console in the Django admin: executions, the Run flow, schedules, the fleet, migration sets."""

from migrations_runner.admin import executions  # noqa: F401
