"""A child process on a control database of its own (a PostgreSQL one, where the suite's is SQLite): Django set
up and migrated, one registered connection (``listed``), and ``seen``, an execute wrapper that keeps the first word
of each statement Django sends in ``statements``. The test's code runs after that and prints one JSON line last."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support.qcluster import ROOT, control_env

SETUP = textwrap.dedent(
    """
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)

    from connections import services as registry

    statements = []

    def seen(execute, sql, params, many, context):
        statements.append(sql.split(None, 1)[0].upper())
        return execute(sql, params, many, context)

    listed = registry.connection_create(
        actor="test", verify=False, name="listed-eu", database_type="shared", region="eu-west", host="127.0.0.1",
        port=5432, database_name="app", username="app", password="secret", ssl_mode="disable", connect_timeout=5,
    )
    """
)


def run_control_child(code: str, control_url: str, *, timeout: float = 100) -> dict:
    """Run ``SETUP`` then ``code`` in a child whose control database is ``control_url``; the JSON it printed last."""
    child = subprocess.run(
        [sys.executable, "-c", SETUP + textwrap.dedent(code)],
        cwd=ROOT,
        env=control_env(ADMIN_DATABASE_URL=control_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(child.stdout.strip().splitlines()[-1])
