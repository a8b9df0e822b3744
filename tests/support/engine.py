"""Applying sets to one target through the engine alone, and watching concurrent index builds on the server.

Plain psycopg, no Django: the engine's tests (tests/engine) use these, and so do queue tests that watch an
index build from outside.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from migrations_runner.engine.apply import ApplyOptions, ConnectionSource, TargetSpec
from migrations_runner.engine.sets import MigrationSet, load_set
from tests.support.postgres import PgDatabase
from tests.support.waiting import wait_until

SCHEMA = "tenant_a"
SPEC = TargetSpec(
    schema=SCHEMA,
    create_schema=True,
    context={"schema": SCHEMA, "tenant_slug": "a", "region": "us-east", "database_type": "tenant"},
    label=f"test/{SCHEMA}",
)


def engine_source(pg: PgDatabase, application_name: str = "infra-test") -> ConnectionSource:
    """A connection source as the runners build one: the fleet's login role, our application name."""
    return ConnectionSource(
        lambda: psycopg.connect(
            host=pg.host,
            port=pg.port,
            dbname=pg.dbname,
            user=pg.user,
            password=pg.password,
            application_name=application_name,
        )
    )


def write_set(folder: Path, scripts: dict[str, str]) -> MigrationSet:
    """Write scripts into a tenant set folder and load it."""
    folder.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (folder / name).write_text(text)
    mset = load_set(folder, "tenant")
    assert not mset.problems
    return mset


def options(**overrides) -> ApplyOptions:
    """Apply options for tests: installed by ``test``, retries 0.1 s apart unless ``overrides`` say otherwise."""
    return ApplyOptions(installed_by="test", **{"retry_backoff_s": 0.1, **overrides})


def recorded_versions(conn: psycopg.Connection, schema: str = SCHEMA) -> list[str]:
    """The versions the schema's history holds as applied (``SQL`` rows), in the order they were applied."""
    query = sql.SQL("SELECT version FROM {}.infra_schema_history WHERE type = 'SQL' ORDER BY installed_rank")
    return [version for (version,) in conn.execute(query.format(sql.Identifier(schema)))]


def index_valid(conn: psycopg.Connection, index: str) -> bool | None:
    """Whether the (schema-qualified) index is valid; None when it does not exist."""
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [index]).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def open_snapshot(connect: Callable[[], psycopg.Connection]) -> Iterator[psycopg.Connection]:
    """A REPEATABLE READ transaction that has read something: concurrent index builds wait for it to end."""
    with connect() as holder:
        holder.autocommit = False
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM pg_class").fetchone()
        yield holder
        holder.rollback()


@contextlib.contextmanager
def table_locked(pg: PgDatabase, table: str, seconds: float = 1.0) -> Iterator[None]:
    """``table`` (schema-qualified) locked ACCESS EXCLUSIVE by another session while the block runs, released after
    ``seconds``: past several lock timeouts of the block's statements, whose retries meanwhile are what is tested."""
    holder = pg.connect()
    holder.autocommit = False
    holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*table.split("."))))
    release = threading.Timer(seconds, holder.rollback)
    release.start()
    try:
        yield
    finally:
        release.join()
        holder.close()


def wait_for_old_snapshots(observer: psycopg.Connection, index: str, timeout: float = 90) -> int:
    """Wait until a concurrent build of ``index`` waits for old snapshots (index still INVALID); return its pid."""
    row = wait_until(
        lambda: observer.execute(
            "SELECT pid FROM pg_stat_progress_create_index "
            "WHERE index_relid = to_regclass(%s) AND phase = 'waiting for old snapshots'",
            [index],
        ).fetchone(),
        timeout=timeout,
        interval=0.05,
        message=f"no build of {index} reached the wait for old snapshots",
    )
    return row[0]


def wait_backend_gone(observer: psycopg.Connection, pid: int, timeout: float = 30) -> None:
    """Wait until the server backend ``pid`` has exited."""
    wait_until(
        lambda: not observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone(),
        timeout=timeout,
        message=f"backend {pid} still alive",
    )
