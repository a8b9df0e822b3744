"""``manage.py demo`` (what ``make demo`` runs), end to end in child processes with their own control database.

The first run starts the embedded PostgreSQL, registers and migrates the fleet, creates the operator and
serves; Ctrl-C leaves no process behind. The second run reuses all of it and changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from infra_site.embedded_postgres import free_port
from tests.support.qcluster import ROOT
from tests.support.tools import coverage_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

TENANTS_PER_REGION = 10
CONNECTIONS = 6  # admin, shared us-east and eu-west, analytics, two dedicated tenant databases
LATE_TENANTS = 12  # registered after the first run's migration, left for the operator
TENANTS = 2 * TENANTS_PER_REGION + 2 + LATE_TENANTS
MIGRATED_TARGETS = 4 + 2 * TENANTS_PER_REGION + 2
FLEET_SIZE = ("--tenants-per-region", str(TENANTS_PER_REGION))


class Demo:
    """One ``manage.py demo`` process group, its output collected as it comes."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", *("--port", str(port), "--workers", "1"), *FLEET_SIZE],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.started = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_serving(self, timeout: float = 120) -> float:
        """Wait until the admin answers; return the seconds it took from the start."""

        def serving() -> bool:
            assert self.process.poll() is None, f"the demo exited:\n{self.output[-4000:]}"
            if "Serving on" not in self.output:
                return False
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/admin/login/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(
            serving,
            timeout=self.started + timeout - time.monotonic(),
            interval=0.2,
            message=lambda: f"the demo did not serve:\n{self.output[-4000:]}",
        )
        return time.monotonic() - self.started

    def processes(self, data_dir: Path) -> list[psutil.Process]:
        """The demo's descendants (web workers, task worker) and the embedded server's processes."""
        found = psutil.Process(self.process.pid).children(recursive=True)
        postmaster = psutil.Process(int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0]))
        return [*found, postmaster, *postmaster.children(recursive=True)]

    def interrupt(self) -> int:
        """Ctrl-C (SIGINT to the whole process group, as a terminal sends it); return the exit status."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def alive(processes: list[psutil.Process]) -> list[str]:
    """Describe the processes of ``processes`` still running (zombies awaiting their parent's wait are gone)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(" ".join(process.cmdline()) or process.name())
        except psutil.NoSuchProcess:
            continue
    return running


def servers_on(data_dir: Path) -> list[int]:
    """Pids of any postgres whose command line names ``data_dir``."""
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        if str(data_dir) in " ".join(process.info["cmdline"] or []):
            pids.append(process.pid)
    return pids


def registry(control: Path) -> dict[str, int]:
    with sqlite3.connect(control) as db:

        def count(query: str) -> int:
            return db.execute(query).fetchone()[0]

        return {
            "connections": count("SELECT count(*) FROM connections_databaseconnection WHERE deleted_at IS NULL"),
            "tenants": count("SELECT count(*) FROM connections_tenant"),
            "executions": count("SELECT count(*) FROM migrations_runner_migrationexecution"),
            "succeeded": count("SELECT coalesce(sum(targets_succeeded), 0) FROM migrations_runner_migrationexecution"),
            "late_runs": count(
                "SELECT count(*) FROM migrations_runner_targetrun r JOIN connections_tenant t ON t.id = r.tenant_id "
                "WHERE t.slug LIKE 'new\\_%' ESCAPE '\\'"
            ),
        }


def log_in(port: int, username: str, password: str) -> requests.Response:
    session = requests.Session()
    base = f"http://127.0.0.1:{port}"
    session.get(f"{base}/admin/login/", timeout=10)
    return session.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "next": "/admin/",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/admin/login/"},
        timeout=30,
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp tree: the server's socket path must stay short, and nothing may prune it mid-run.
    path = Path(tempfile.mkdtemp(prefix="infra-demo-"))
    yield path
    for pid in servers_on(path):
        psutil.Process(pid).kill()
    shutil.rmtree(path, ignore_errors=True)


def test_the_demo_builds_migrates_and_serves_and_a_second_run_reuses_everything(workdir):
    control, data_dir = workdir / "control.sqlite3", workdir / "demo-pg"
    env = {
        "PATH": os.environ["PATH"],
        **coverage_env(),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENV_FILE": os.devnull,
        "ENVIRONMENT": "development",
        "ADMIN_DATABASE_URL": f"sqlite:///{control}",
        "DEMO_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    first = Demo(env, free_port())
    try:
        first.wait_serving()
        credentials = re.search(r"Operator account \(infrastructure:admin\): (\S+) / (\S+)", first.output)
        assert credentials, first.output[-3000:]
        assert f"{MIGRATED_TARGETS}/{MIGRATED_TARGETS} succeeded" in first.output
        landed = log_in(first.port, credentials[1], credentials[2])
        assert landed.status_code == 200
        assert landed.url.endswith("/admin/"), "the operator could not log in"
        assert credentials[1] in landed.text
        after_first = registry(control)
        assert after_first == {
            "connections": CONNECTIONS,
            "tenants": TENANTS,
            "executions": 1,
            "succeeded": MIGRATED_TARGETS,
            "late_runs": 0,
        }
        processes = first.processes(data_dir)
        assert any("qcluster" in " ".join(p.cmdline()) for p in processes), "no task worker was started"
        # A web worker that exits (gunicorn starts another) leaves the server running.
        web_worker = next(p for p in psutil.Process(first.process.pid).children() if "qcluster" not in p.cmdline())
        web_worker.terminate()
        web_worker.wait(timeout=30)
        first.wait_serving()
        assert servers_on(data_dir)
        # A second demo on the same data directory is refused while this one runs.
        again = subprocess.run(
            [sys.executable, "manage.py", "demo", "--port", str(free_port())],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 1
        assert f"Another demo (pid {first.process.pid}) is running" in again.stderr
        processes = first.processes(data_dir)
        assert first.interrupt() == 0, first.output[-3000:]
        wait_until(lambda: not alive(processes), timeout=10, message=lambda: f"left behind: {alive(processes)}")
        assert not servers_on(data_dir)
    finally:
        first.kill()

    second = Demo(env, free_port())
    try:
        second.wait_serving()
        assert "Operator account: operator (its password was shown when it was created)." in second.output
        assert credentials[2] not in second.output
        assert "Migrations: the fleet is up to date." in second.output
        assert registry(control) == after_first
        processes = second.processes(data_dir)
        assert second.interrupt() == 0, second.output[-3000:]
        wait_until(lambda: not alive(processes), timeout=10, message=lambda: f"left behind: {alive(processes)}")
        assert not servers_on(data_dir)
    finally:
        second.kill()
