"""A web worker on a PostgreSQL control database opens one connection and gives it to every request.

A sync worker serves one request at a time. Connections its pool held at rest were handed out in turn (first in,
first out), which made about 1 page request in 20 wait 10 to 80 ms longer for its statement's result; a pool
that opened its first connection in the background at start also opened a second for the first request, which
came before the first was ready. This runs gunicorn as ``manage.py serve`` runs it (sync workers, the settings'
pool) against a PostgreSQL control database and counts the worker's connections.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from tests.support.qcluster import ROOT, control_env
from tests.support.tools import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

USER = ("pool-reader", "pool-reader-password-1")
MAKE_USER = f"""
import django
django.setup()
from django.contrib.auth.models import User
User.objects.create_user({USER[0]!r}, password={USER[1]!r})
"""


def _sessions(control_url: str) -> list[int]:
    """The backend pids of the control database's sessions but this one."""
    name = control_url.rsplit("/", 1)[1]
    with psycopg.connect(control_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.parametrize("minimum", [None, "2"])
def test_a_sync_worker_gives_its_one_connection_to_every_request(pg_control, tmp_path, minimum):
    env = control_env(ADMIN_DATABASE_URL=pg_control, HOME=str(tmp_path))
    if minimum is not None:  # what an operator may still ask for: that many held, and handed out in turn
        env["DB_POOL_MIN_SIZE"] = minimum
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"], env=env, cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-c", MAKE_USER], env=env, cwd=ROOT, check=True)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "infra_site.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "--workers", "1", "--error-logfile", str(tmp_path / "gunicorn.log")],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    credentials = base64.b64encode(f"{USER[0]}:{USER[1]}".encode()).decode()
    seen: set[int] = set()

    def me() -> int | None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/auth/me/", headers={"Authorization": f"Basic {credentials}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (http://127.0.0.1 only)
                return response.status
        except OSError:
            return None

    try:
        assert wait_until(me, timeout=60, interval=0.2, message="the web server did not come up") == 200
        for _ in range(12):  # one after the other, each on a new HTTP connection, as a sync worker serves them
            assert me() == 200
            seen.update(_sessions(pg_control))
        held = _sessions(pg_control)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    if minimum is None:
        # One session, opened at the first request and given to all twelve.
        assert len(held) == 1, held
        assert seen == set(held)
    else:
        # The control: with connections held at rest the requests went to several sessions, which the count sees.
        assert len(held) >= int(minimum)
        assert len(seen) >= 2
