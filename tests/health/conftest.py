"""Fixtures of the health tests: a PostgreSQL server of their own to stop, queue clusters, and
the app served by a child process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from rest_framework.test import APIClient

from infra_site.embedded_postgres import EmbeddedPostgres, free_port, wait_for_port
from tests.support.qcluster import ROOT, Cluster, control_env


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A second embedded PostgreSQL that a test may stop and start again (same port, same data)."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-health-pg-"))).start()
    yield server
    server.destroy()


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def queue_settings(settings):
    settings.MIGRATION_EXECUTOR = "queue"
    settings.MIGRATION_MAX_PER_DATABASE = 50
    return settings


@pytest.fixture
def clusters() -> Iterator:
    """Start real ``qcluster`` processes on this test's control database; all are stopped afterwards."""
    started: list[Cluster] = []

    def start(workers: int = 2, **env: str) -> Cluster:
        cluster = Cluster(control_env(**env), workers=workers).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


class Served:
    """``manage.py serve`` (gunicorn, no task worker) in a child process, with its own environment."""

    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.env = env
        self.port = free_port()
        self.workers = workers
        self.log = Path(tempfile.mkstemp(prefix="serve-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> Served:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "manage.py"),
                    "serve",
                    "--no-task-worker",
                    "--workers",
                    str(self.workers),
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(f"serve did not start:\n{self.output()[-3000:]}") from exc
        return self

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def serve() -> Iterator:
    """Start the app in child processes; each is stopped after the test."""
    started: list[Served] = []

    def start(env: dict[str, str], workers: int = 1) -> Served:
        served = Served(env, workers=workers)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
