"""The fleet fixtures of the migrations tests, shared with the reliability suite."""

from tests.migrations_runner.conftest import fleet, sets_dir, small_fleet  # noqa: F401
