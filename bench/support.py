"""What the benchmarks share: a work directory removed at the end, databases on the embedded server, the tenant
set a run applies, fleet registration in bulk, percentiles, and the CPU the server's processes spend.

Nothing here configures Django; the functions that need it import it when called, after the script set it up.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SETS_DIR = ROOT / "migration_sets"


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for a benchmark's files (control databases, logs, scripts), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Bytes free a file system in memory needs to hold the benchmarks' server (10,000 tenants of the shipped set take
# about 7 GB).
MEMORY_FILES_MIN_FREE = 8 * 2**30
server_files: dict[str, str] = {}  # where the files of this process's server went (``bench_server``)


@contextlib.contextmanager
def bench_server(**settings: str) -> Iterator:
    """The benchmarks' embedded server (``temporary_server``), its files in memory when there is room
    (``embedded_postgres.memory_parent`` says why); recorded in ``server_files`` for the results.

    The benchmarks drop each variant's database before the next one creates its own. Measured here, six raw pool
    runs of 1,000 tenants in a row on ext4: 10.1-10.7 s or 16.2-18.0 s, kernel time 4.8 s against 12-13 s, the
    difference in ``find_get_block_common`` and ``recently_deleted`` (per ``perf``); on tmpfs, 8.3-8.7 s each time,
    kernel time 2.8-3.0 s. The server is already set to measure the work and not the disk (``fsync`` off)."""
    from infra_site.embedded_postgres import filesystem_of, memory_parent, temporary_server

    with temporary_server(parent=memory_parent(MEMORY_FILES_MIN_FREE), **settings) as server:
        server_files.clear()
        server_files.update(parent=str(server.data_dir.parent), filesystem=filesystem_of(server.data_dir) or "unknown")
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(server, name: str) -> None:
    """(Re)create database ``name`` on the embedded server."""
    import psycopg

    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server, name: str) -> None:
    """Drop database ``name``, so the catalogs of the runs that follow stay as small as those before."""
    import psycopg

    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def sets_dir(dest: Path, *, tenant_versions: int) -> Path:
    """A ``MIGRATIONS_DIR`` at ``dest``: the repository's sets, the tenant set cut to its first ``tenant_versions``
    versions (their undo scripts with them, no repeatable)."""
    from migrations_runner.engine.sets import load_set

    for database_type in ("admin", "shared", "analytics"):
        shutil.copytree(SETS_DIR / database_type, dest / database_type)
    kept = {str(s.version) for s in load_set(SETS_DIR / "tenant", "tenant").versions[:tenant_versions]}
    (dest / "tenant").mkdir(parents=True)
    for path in (SETS_DIR / "tenant").glob("[VU]*__*.sql"):
        version = path.name[1:].split("__", 1)[0].replace("_", ".")
        if version in kept:
            shutil.copy2(path, dest / "tenant" / path.name)
    return dest


def register_fleet(*, server, database: str, name: str, region: str, slugs: list[str]):
    """Register ``database`` as a shared connection holding one tenant per slug (schema ``tenant_<slug>``).

    The connection goes through ``connections.services.connection_create`` (not probed); the tenants are a
    benchmark fixture inserted with ``bulk_create``, skipping the per-tenant validation and the two lookups
    ``tenant_create`` makes for each one.
    """
    from connections import services as registry
    from connections.models import Tenant

    connection = registry.connection_create(
        actor="bench",
        verify=False,
        name=name,
        database_type="shared",
        region=region,
        host=server.host,
        port=server.port,
        database_name=database,
        username="postgres",
        password=server.password,
        ssl_mode="disable",
    )
    Tenant.objects.bulk_create(
        (
            Tenant(slug=slug, name=f"Tenant {slug}", connection=connection, schema_name=f"tenant_{slug}")
            for slug in slugs
        ),
        batch_size=1000,
    )
    return connection


def history_statements(schema: str, scripts) -> list[sql.Composable]:
    """The engine's history table in ``schema`` and a row for each of ``scripts`` (versioned or repeatable), as a
    fixture writes them without running anything."""
    from migrations_runner.engine import history

    rows = [
        history.insert_row(
            schema=schema,
            version=str(script.version) if script.version else None,
            description=script.description,
            kind="SQL" if script.version else "REPEATABLE",
            script=script.filename,
            checksum=script.checksum,
            installed_by="bench",
            execution_id=None,
            execution_time_ms=1,
        )
        for script in scripts
    ]
    return [sql.SQL(history.CREATE_TABLE).format(table=history.table(schema)), *rows]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def code_state() -> dict:
    """The commit measured, and how many tracked files of the working tree differed from it (read-only git): the
    results files that earlier benchmarks of the same run wrote, and untracked files, are not code changes."""
    import subprocess

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return {"commit": git("rev-parse", "HEAD"), "changed_files": len(changed.splitlines())}


def write_results(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` with when it was measured (UTC) and the code state it was measured on:
    the README's figures name both (bench/readme_table.py)."""
    measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"server_files": dict(server_files)} if server_files else {}
    path.write_text(
        json.dumps({**data, **extra, "measured_at": measured_at, "code": code_state()}, indent=2, default=str) + "\n"
    )
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` of this machine has used so far, from ``/proc`` (cheap enough to
    read for every server process at every sample); None when it cannot be read (gone, no ``/proc``, or another
    machine's: a server at ``TEST_POSTGRES_URL``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServerCpu:
    """The CPU the server's processes spend while sampled, per database (or per kind of server process): a process
    seen at the first sample counts from there, one that appears later counts its whole life (it began meanwhile),
    and each counts up to its last reading (a process that ends between two samples loses what it spent since the
    one before)."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[tuple[str, str], float]] = {}
        self._sampled = False

    def read(self, processes: list[tuple[int, str, str]]) -> None:
        for pid, database, kind in processes:
            cpu = process_cpu_s(pid)
            if cpu is None:
                continue
            self._first.setdefault(pid, cpu if not self._sampled else 0.0)
            self._last[pid] = ((database, kind), cpu)
        self._sampled = True

    def by_group(self) -> dict[tuple[str, str], float]:
        """CPU seconds per (database, kind of process); the server's own processes have no database."""
        spent: dict[tuple[str, str], float] = {}
        for pid, (group, cpu) in self._last.items():
            spent[group] = spent.get(group, 0.0) + cpu - self._first[pid]
        return spent


def server_cpu_split(by_group: dict[tuple[str, str], float], *, control: str, tenants: str) -> dict[str, float]:
    """The server's CPU of a queued run: its control database's backends, its tenant database's, and the server's
    own processes (WAL writer, checkpointer...); other databases' backends are not the run's."""
    split = {"control_backends": 0.0, "tenant_backends": 0.0, "server_other": 0.0}
    for (database, _kind), spent in by_group.items():
        if database == control:
            split["control_backends"] += spent
        elif database == tenants:
            split["tenant_backends"] += spent
        elif not database:
            split["server_other"] += spent
    return split


# The server's processes: each backend's database (none for the server's own processes) and its kind (shown to a
# role that may read every session's statistics, as the benchmarks' superuser; '' to others).
PROCESSES_QUERY = """
SELECT pid, coalesce(datname, ''), coalesce(backend_type, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()
"""


class ServerCpuSampler:
    """A thread reading the server's processes every ``period_s`` from a connection of its own (``conninfo``) into
    a ``ServerCpu``, from ``start`` to ``stop``; a subclass samples more at each reading (``sample``)."""

    thread_name = "server-cpu-sampler"

    def __init__(self, conninfo: dict, period_s: float = 0.05) -> None:
        self.conninfo = conninfo
        self.period_s = period_s
        self.cpu = ServerCpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._error: BaseException | None = None

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> dict[tuple[str, str], float]:
        """Stop reading and return the CPU seconds per (database, kind of process); raise when the sampler failed."""
        self._finish()
        return self.cpu.by_group()

    def _finish(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the {self.thread_name} failed") from self._error

    def sample(self, conn) -> None:
        """One reading (on the sampler's connection)."""
        self.cpu.read(conn.execute(PROCESSES_QUERY).fetchall())

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(**self.conninfo, autocommit=True) as conn:
                next_at = time.monotonic()
                while not self._stop.is_set():
                    self.sample(conn)
                    next_at += self.period_s
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
                self.cpu.read(conn.execute(PROCESSES_QUERY).fetchall())  # what each process spent until the end
        except BaseException as error:  # reported by stop(), in the caller's thread
            self._error = error
