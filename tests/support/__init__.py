"""Plain helpers shared by the test packages (fixtures live in conftest.py files): the PostgreSQL server and its
databases, fleets, migration sets, the engine on one target, child processes, the OIDC login, waiting for signals.
Test modules import these, never another test module or a conftest (tests/test_suite_layout.py checks)."""
