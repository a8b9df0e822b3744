"""The tests' PostgreSQL: one server per test process, scratch databases on it, the fleet's login role.

Plain psycopg, no Django: the engine's tests (tests/engine) use these too.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg
from psycopg import sql

from infra_site.embedded_postgres import EmbeddedPostgres, memory_parent

TEST_SERVER_MIN_FREE = 2 * 2**30  # bytes free in memory for a test session's server (its databases are small)

# The password of the login role the registry's tests connect with. It must never
# show up in a log record, a response or a stored error (see ``no_secrets_in_logs``).
REGISTRY_USER = "registry_user"
# Child processes (qcluster workers, commands) of the session inherit it through the environment.
REGISTRY_PASSWORD = os.environ.setdefault("TEST_REGISTRY_PASSWORD", "Reg1stry-" + secrets.token_hex(8))
SECRETS = {REGISTRY_PASSWORD}


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


@contextmanager
def postgres_server() -> Iterator[PgServer]:
    """Yield TEST_POSTGRES_URL's server when set, else a new embedded one (destroyed on exit), with the
    ``registry_user`` login role in place."""
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
        # directory from under a server another test session is still running. In memory when there is room: the
        # tests create and drop databases all along, which a disk file system makes slower as it goes.
        parent = memory_parent(TEST_SERVER_MIN_FREE)
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-test-pg-", dir=parent))).start()
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
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.destroy()


def database_create(server: PgServer, *, prefix: str) -> str:
    """Create a database owned by ``registry_user``, named ``prefix`` and a random suffix; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(REGISTRY_USER)))
    return name


def database_drop(server: PgServer, name: str) -> None:
    """Drop the database ``name``, closing the sessions still connected to it."""
    with server.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(server: PgServer) -> Iterator[PgDatabase]:
    """Yield a fresh database owned by ``registry_user``; drop it on exit."""
    database = PgDatabase(server=server, dbname=database_create(server, prefix="t"))
    try:
        yield database
    finally:
        database_drop(server, database.dbname)
