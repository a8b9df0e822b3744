"""Shared fixtures: a real PostgreSQL server, fresh databases, fleets on it, users with roles, queue settings, and
a log guard.

The engine's tests (tests/engine) need none of Django, and run with its plugin left out too
(``pytest tests/engine -p no:django``): this module therefore imports Django, and the helpers built on it, in the
fixtures that use them, not at its top.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.logs import RecordCollector, leaked_secrets
from tests.support.postgres import PgDatabase, PgServer, postgres_server, scratch_database
from tests.support.sets import SHIPPED_SETS
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from tests.support.fleet import Fleet

# A test that uses one of these fixtures starts a server, a browser or a queue cluster: it is marked ``slow``
# (``pytest -m "not slow"`` leaves it out). Tests that start one by themselves carry the marker explicitly.
SLOW_FIXTURES = frozenset({"clusters", "serve", "oidc_provider", "chromium", "two_servers"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session: TEST_POSTGRES_URL when set, else an embedded one."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh database owned by ``registry_user``, dropped after the test."""
    with scratch_database(pg_server) as database:
        yield database


@pytest.fixture
def pg_control(pg_server: PgServer) -> Iterator[str]:
    """A fresh PostgreSQL control database on the session's server, as an ``ADMIN_DATABASE_URL`` for a child
    process; dropped after the test."""
    from psycopg import sql

    name = f"control_{uuid.uuid4().hex[:10]}"
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"postgresql://{pg_server.superuser}:{pg_server.superuser_password}@{pg_server.host}:{pg_server.port}/{name}"
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentPeer:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers, and counts who came."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.addresses: list[tuple[str, int]] = []
        self._sentinels: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, address = self.listener.accept()
            except OSError:
                continue
            self.accepted.append(conn)
            self.addresses.append(address)

    def connections_so_far(self) -> int:
        """How many connections reached the peer before now, not counting the sentinels this opens to ask.

        The listener accepts in arrival order, so once the sentinel is accepted every earlier connection is.
        """
        sentinel = socket.create_connection(("127.0.0.1", self.port))
        try:
            address = sentinel.getsockname()
            wait_until(
                lambda: address in self.addresses,
                timeout=10,
                interval=0.02,
                message="the silent peer did not accept the sentinel",
            )
            self._sentinels.add(address)
            return sum(1 for came in self.addresses if came not in self._sentinels)
        finally:
            sentinel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.listener.close()


@pytest.fixture
def silent_peer() -> Iterator[SilentPeer]:
    peer = SilentPeer()
    yield peer
    peer.close()


@pytest.fixture
def silent_port(silent_peer: SilentPeer) -> int:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    return silent_peer.port


@pytest.fixture(autouse=True)
def fresh_content_types(request: pytest.FixtureRequest) -> Iterator[None]:
    """Forget cached content types and verified Basic logins around each test: a transactional test's flush
    recreates content types with new ids, and a stale cache would point admin log entries and permissions at rows
    that no longer exist; a test's rolled-back users must not log in in the next test."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield  # a run without Django (the engine's tests) caches nothing
        return
    from django.contrib.contenttypes.models import ContentType

    from infra_site.auth import basic_cache

    ContentType.objects.clear_cache()
    basic_cache.clear()
    yield
    ContentType.objects.clear_cache()
    basic_cache.clear()


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[RecordCollector]:
    """Capture every log record (DEBUG and up) of each test and fail if a test password is in one."""
    collector = RecordCollector()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector
    root.removeHandler(collector)
    root.setLevel(previous)
    leaked = leaked_secrets(collector.lines)
    assert not leaked, f"a password appeared in {leaked} log record(s)"


@pytest.fixture
def make_user(db):
    """Create a user holding the given roles (Django groups)."""
    from django.contrib.auth.models import Group, User

    def make(*roles: str, username: str | None = None, password: str = "pw-for-tests") -> User:
        user = User.objects.create_user(username or f"user-{uuid.uuid4().hex[:8]}", password=password)
        for role in roles:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def api_as(make_user):
    """An API client authenticated (session) as a new user with the given roles."""
    from rest_framework.test import APIClient

    def client(*roles: str) -> APIClient:
        api = APIClient()
        api.force_login(make_user(*roles))
        return api

    return client


@pytest.fixture
def admin_as(client, make_user):
    """The test client, logged in (session) as a new user with the given roles."""

    def login(*granted: str):
        client.force_login(make_user(*granted))
        return client

    return login


@pytest.fixture
def sets_dir(tmp_path, settings) -> Path:
    """A private copy of the shipped migration sets that a test may edit."""
    target = tmp_path / "migration_sets"
    shutil.copytree(SHIPPED_SETS, target)
    settings.MIGRATIONS_DIR = target
    return target


@pytest.fixture
def fleet(pg_server, sets_dir, db) -> Iterator[Fleet]:
    """1 admin, 2 shared (us-east, eu-west) with 20 tenant schemas each, 1 analytics database."""
    from tests.support.fleet import build_fleet, drop_fleet

    built = build_fleet(pg_server, tenants_per_region=20)
    yield built
    drop_fleet(built)


@pytest.fixture
def small_fleet(pg_server, sets_dir, db) -> Iterator[Fleet]:
    """The same layout with 3 tenants per region."""
    from tests.support.fleet import build_fleet, drop_fleet

    built = build_fleet(pg_server, tenants_per_region=3)
    yield built
    drop_fleet(built)


@pytest.fixture
def queue_settings(settings):
    """Executions go to the queue, with short leases and heartbeats (child workers and a live server share these
    settings)."""
    settings.MIGRATION_EXECUTOR = "queue"
    settings.MIGRATION_MAX_PER_DATABASE = 50
    settings.MIGRATION_LEASE_SECONDS = 6
    settings.MIGRATION_HEARTBEAT_SECONDS = 1
    return settings


@pytest.fixture(autouse=True)
def _no_lease_outlives_its_test() -> Iterator[None]:
    """Each test ends with no target run under this process's lease: the heartbeat thread would otherwise renew
    ids of one test's runs in the databases of the tests after it (and fail in each new in-memory SQLite one)."""
    yield
    from migrations_runner.services.runner.leases import Leases

    with Leases._lock:
        Leases._held.clear()
        Leases._cancelled.clear()
