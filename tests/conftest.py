"""Shared fixtures: a real PostgreSQL server, fresh databases, users with roles, and a log guard."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg
import pytest
from django.contrib.auth.models import Group, User
from django.views.debug import technical_500_response
from psycopg import sql
from rest_framework.test import APIClient

from infra_site.embedded_postgres import EmbeddedPostgres

# The password of the login role the registry's tests connect with. It must never
# show up in a log record, a response or a stored error (see ``no_secrets_in_logs``).
REGISTRY_USER = "registry_user"
# Child processes (qcluster workers, commands) of the session inherit it through the environment.
REGISTRY_PASSWORD = os.environ.setdefault("TEST_REGISTRY_PASSWORD", "Reg1stry-" + secrets.token_hex(8))
SECRETS = {REGISTRY_PASSWORD}


def coverage_env() -> dict[str, str]:
    """Coverage's settings for child processes (when the suite is measured), for a child's clean environment, so
    the code only a child runs (``demo``, ``serve``, settings refusing to start) is measured. Queue workers and
    gunicorn are left unmeasured: tracing would slow the timing-bound tests that run them."""
    return {key: value for key, value in os.environ.items() if key.startswith("COVERAGE_")}


def debug_page(request) -> str:
    """The page that DEBUG shows for a failure while serving ``request``."""
    try:
        raise RuntimeError("a failure while serving the request")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def require_tool(name: str) -> str:
    """Return the path of the command-line tool ``name``; skip the test without it, or fail it when ``CI=true``.

    ``make test`` installs the tools (Debian packages) when missing and run as root; elsewhere the tests that
    need one are skipped, with this one reason in the summary. Under CI nothing may be skipped for a missing tool.
    """
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (`make test` installs it with apt-get when run as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: a missing tool fails the tests that need it", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    superuser: str
    superuser_password: str

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.superuser_password,
            dbname=dbname,
            autocommit=True,
            **kwargs,
        )


@dataclass(frozen=True)
class PgDatabase:
    """A fresh database on the test server, reachable by ``registry_user`` with a password."""

    server: PgServer
    dbname: str
    user: str = REGISTRY_USER
    password: str = REGISTRY_PASSWORD

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def connection_values(self, **overrides) -> dict:
        """Values for ``connection_create`` / the API that reach this database."""
        values = {
            "name": f"db-{self.dbname.replace('_', '-')}",
            "database_type": "shared",
            "region": "us-east",
            "host": self.host,
            "port": self.port,
            "database_name": self.dbname,
            "username": self.user,
            "password": self.password,
            "ssl_mode": "disable",
            "connect_timeout": 3,
        }
        values.update(overrides)
        return values

    def connect(self) -> psycopg.Connection:
        return self.server.connect(self.dbname)


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
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        parsed = urlparse(url)
        server = PgServer(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            superuser=unquote(parsed.username or "postgres"),
            superuser_password=unquote(parsed.password or ""),
        )
        embedded = None
    else:
        # Its own directory, not pytest's tmp tree: pytest prunes old tmp trees, which could pull the data
        # directory from under a server another test session is still running.
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-test-pg-"))).start()
        server = PgServer(
            host=embedded.host, port=embedded.port, superuser="postgres", superuser_password=embedded.password
        )
    role, password = sql.Identifier(REGISTRY_USER), sql.Literal(REGISTRY_PASSWORD)
    with server.connect() as conn:
        # The test processes of one run share TEST_POSTGRES_URL's server, and the password (inherited): the
        # first creates the role, the others find it.
        try:
            conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(role, password))
        except psycopg.errors.DuplicateObject:
            conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(role, password))
    yield server
    if embedded is not None:
        embedded.destroy()


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh database owned by ``registry_user``, dropped after the test."""
    dbname = f"t_{uuid.uuid4().hex[:12]}"
    with pg_server.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(REGISTRY_USER))
        )
    yield PgDatabase(server=pg_server, dbname=dbname)
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


class _RecordCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


def leaked_secrets(lines: list[str]) -> int:
    """Count the captured log lines that contain a test password."""
    return sum(1 for line in lines if any(secret in line for secret in SECRETS))


@pytest.fixture(autouse=True)
def fresh_content_types() -> Iterator[None]:
    """Forget cached content types around each test: a transactional test's flush recreates them with new ids,
    and a stale cache would point admin log entries and permissions at rows that no longer exist."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    yield
    ContentType.objects.clear_cache()


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[_RecordCollector]:
    """Capture every log record (DEBUG and up) of each test and fail if a test password is in one."""
    collector = _RecordCollector()
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

    def make(*roles: str, username: str | None = None, password: str = "pw-for-tests") -> User:
        user = User.objects.create_user(username or f"user-{uuid.uuid4().hex[:8]}", password=password)
        for role in roles:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def api_as(make_user):
    """An API client authenticated (session) as a new user with the given roles."""

    def client(*roles: str) -> APIClient:
        api = APIClient()
        api.force_login(make_user(*roles))
        return api

    return client
