"""The migration tests' fleet, for the API-wide tests that need real ids and names."""

from tests.migrations_runner.conftest import sets_dir, small_fleet

__all__ = ["sets_dir", "small_fleet"]
