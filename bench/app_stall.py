"""Benchmark: how long application queries wait behind a fleet migration when one tenant's table is held.

Run: ``.venv/bin/python bench/app_stall.py`` (or ``make bench``): about a minute with the defaults.

On an embedded PostgreSQL 16 (or the server of ``TEST_POSTGRES_URL`` when set), two databases of N tenant schemas
(default 6) are registered in the bench's own control database (SQLite) and brought to version 1 of a private
tenant set by ``services.execution_start``: V1 creates ``tasks`` with ``--rows`` rows. Version 2, the version under
test, is ``ALTER TABLE tasks ADD COLUMN priority integer``: instant, but it needs ACCESS EXCLUSIVE on the table.

Each side then runs the same measurement on its own database (both start at version 1, untouched):

- live application traffic: a thread per tenant with its own autocommit connection, a read by primary key then
  an update of one row, ``--pause-ms`` apart, each query timed, from ``--warmup`` seconds before the blocker until
  ``--tail`` seconds after the migration ended;
- the blocker: a transaction on the blocked tenant (``--blocked``, 0-based) that reads its ``tasks`` and stays
  open ``--blocker-seconds`` (a long report, an idle-in-transaction session). Its ACCESS SHARE lock blocks no
  application query, so every wait measured is the migration's: a waiting ``ALTER`` queues the queries behind it;
- ``--lead`` seconds after the blocker took its lock, the migration of version 2 over every tenant, in order:
  (a) psql: a shell loop, one ``psql`` per tenant with the server's default ``lock_timeout`` (0: wait for ever),
  each running the script in a transaction with its history row (the bundled ``psql`` binary; psycopg with the
  same text when there is none: the output says which); (b) ours: ``services.execution_start`` in this process
  (lanes as threads, ``MIGRATION_EXECUTOR=inline``) with the settings of this checkout.

Printed side by side: per tenant the longest application query and the p99, and when the migration finished the
tenant relative to the end of the blocker (negative: before it ended); ours' lock waits as the engine logged them.
``MIGRATION_LOCK_RETRY_FOR`` is capped at ``--blocker-seconds`` + 60 so that a run stays bounded in time; the
figures, the parameters and the settings are written to ``bench/results/app_stall.json``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The bench's own control database, never one from the caller's environment.
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-stall-"))
atexit.register(shutil.rmtree, WORKDIR, True)
os.environ["ADMIN_DATABASE_URL"] = f"sqlite:///{WORKDIR / 'control.sqlite3'}"
os.environ["MIGRATION_EXECUTOR"] = "inline"
for _name, _value in {
    "DJANGO_SETTINGS_MODULE": "infra_site.settings",
    "ENVIRONMENT": "testing",
    "LOG_LEVEL": "ERROR",
    "ENV_FILE": os.devnull,
}.items():
    os.environ.setdefault(_name, _value)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.support import RESULTS_DIR, bench_server, create_database, drop_database, percentile, write_results  # noqa: E402
from connections import services as registry  # noqa: E402
from connections.models import Tenant  # noqa: E402
from infra_site.embedded_postgres import _bin_dir  # noqa: E402
from migrations_runner import services  # noqa: E402
from migrations_runner.engine import history  # noqa: E402
from migrations_runner.engine.sets import Script, load_set  # noqa: E402
from migrations_runner.models import Origin, TargetRun  # noqa: E402
from migrations_runner.options import ExecutionOptions  # noqa: E402
from migrations_runner.selection import TargetSelection  # noqa: E402

V1 = """CREATE TABLE tasks (
    id bigint PRIMARY KEY,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tasks (id, title) SELECT g, 'task ' || g FROM generate_series(1, {rows}) AS g;
"""
V2 = "ALTER TABLE tasks ADD COLUMN priority integer;\n"
SIDES = ("psql", "ours")
GOAL_S = 1.5


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str

    def conninfo(self, database: str = "postgres") -> dict:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "dbname": database}


@contextlib.contextmanager
def postgres() -> Iterator[tuple[Server, str]]:
    """The server of ``TEST_POSTGRES_URL`` when set, else an embedded one removed at the end."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        parsed = urlparse(url)
        user = unquote(parsed.username or "postgres")
        yield Server(parsed.hostname or "127.0.0.1", parsed.port or 5432, user, unquote(parsed.password or "")), url
        return
    with bench_server() as embedded:
        yield Server(embedded.host, embedded.port, "postgres", embedded.password), "embedded PostgreSQL"


@dataclass
class Fleet:
    side: str
    database: str
    connection: str
    schemas: list[str]


def migrations_dir(name: str, scripts: dict[str, str]) -> Path:
    """A ``MIGRATIONS_DIR`` whose tenant set holds ``scripts`` (file name -> text)."""
    root = WORKDIR / name
    (root / "tenant").mkdir(parents=True)
    for filename, text in scripts.items():
        (root / "tenant" / filename).write_text(text)
    return root


def register(server: Server, side: str, tenants: int) -> Fleet:
    """A fresh database registered as a shared connection with one tenant per schema ``tenant_<side><i>``.

    The connection goes through ``connection_create`` (not probed); the tenants are a fixture inserted with
    ``bulk_create``, as ``bench.support.register_fleet`` does.
    """
    database = f"stall_{side}"
    create_database(server, database)
    connection = registry.connection_create(
        actor="bench",
        verify=False,
        name=f"stall-{side}",
        database_type="shared",
        region=f"stall-{side}",
        host=server.host,
        port=server.port,
        database_name=database,
        username=server.user,
        password=server.password,
        ssl_mode="disable",
    )
    slugs = [f"{side}{i}" for i in range(tenants)]
    Tenant.objects.bulk_create(
        Tenant(slug=slug, name=f"Tenant {slug}", connection=connection, schema_name=f"tenant_{slug}") for slug in slugs
    )
    return Fleet(side, database, connection.name, [f"tenant_{slug}" for slug in slugs])


def migrate(fleets: list[Fleet], directory: Path) -> None:
    """Bring the fleets' tenants to the last version of ``directory`` with the service (the common start)."""
    with override_settings(MIGRATIONS_DIR=directory):
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[f.connection for f in fleets]),
            options=ExecutionOptions(),
            actor="bench",
            origin=Origin.API,
            wait=True,
        )
    if execution.status != "completed":
        raise SystemExit(f"the base version did not apply: {execution.status} {execution.error}")


# --- the application and the blocker ------------------------------------------------------------------------------


@dataclass
class Traffic:
    """A thread per schema reading and updating one row of its ``tasks`` in a loop, each query timed."""

    server: Server
    database: str
    schemas: list[str]
    rows: int
    pause_s: float
    bound_s: float
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # schema -> [(start, seconds)]
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        ready = threading.Barrier(len(self.schemas) + 1)
        for schema in self.schemas:
            self.samples[schema] = []
            thread = threading.Thread(target=self._loop, args=(schema, ready), name=f"app-{schema}", daemon=True)
            thread.start()
            self._threads.append(thread)
        ready.wait(timeout=30)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.bound_s)

    def _loop(self, schema: str, ready: threading.Barrier) -> None:
        table = sql.Identifier(schema, "tasks")
        read = sql.SQL("SELECT id, title, done FROM {} WHERE id = %s").format(table)
        write = sql.SQL("UPDATE {} SET done = NOT done, updated_at = now() WHERE id = %s").format(table)
        options = f"-c statement_timeout={int(self.bound_s * 1000)}"  # a stuck bench ends, it does not hang
        with psycopg.connect(
            **self.server.conninfo(self.database), autocommit=True, application_name="bench-app", options=options
        ) as conn:
            ready.wait(timeout=30)
            samples = self.samples[schema]
            while not self._stop.is_set():
                for query in (read, write):
                    started = time.time()
                    conn.execute(query, [random.randint(1, self.rows)]).close()
                    samples.append((started, time.time() - started))
                self._stop.wait(self.pause_s)


def hold(server: Server, database: str, schema: str, seconds: float, held: threading.Event, times: dict) -> None:
    """Keep a transaction that read ``schema.tasks`` open ``seconds`` (its ACCESS SHARE lock with it)."""
    with psycopg.connect(**server.conninfo(database), application_name="bench-blocker") as conn:
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "tasks"))).fetchone()
        times["start"] = time.time()
        held.set()
        time.sleep(seconds)
        conn.commit()
        times["end"] = time.time()


# --- the two migrations -------------------------------------------------------------------------------------------


def psql_binary() -> Path | None:
    bundled = _bin_dir() / "psql"
    if bundled.exists():
        return bundled
    found = shutil.which("psql")
    return Path(found) if found else None


def script_text(schema: str, script: Script) -> str:
    """Version 2 for one schema as a psql loop would send it: one transaction with its history row."""
    context = {"schema": schema, "tenant_slug": schema.removeprefix("tenant_"), "region": "", "database_type": "tenant"}
    row = history.insert_row(
        schema=schema,
        version=str(script.version),
        description=script.description,
        kind="SQL",
        script=script.filename,
        checksum=script.checksum,
        installed_by="psql",
        execution_id=None,
    ).as_string(None)
    path = sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)).as_string(None)
    return f"BEGIN;\n{path};\n{script.render(context)}\n{row};\nCOMMIT;\n"


def run_psql(server: Server, fleet: Fleet, script: Script, bound_s: float) -> dict[str, float]:
    """For each tenant in order, one client with the default ``lock_timeout``; when each finished."""
    binary = psql_binary()
    finished = {}
    for schema in fleet.schemas:
        text = script_text(schema, script)
        if binary is None:
            with psycopg.connect(**server.conninfo(fleet.database), autocommit=True) as conn:
                conn.execute(text.encode())
        else:
            command = [str(binary), "-X", "-q", "-h", server.host, "-p", str(server.port)]
            command += ["-U", server.user, "-d", fleet.database, "-c", text]
            env = {**os.environ, "PGPASSWORD": server.password, "PGAPPNAME": "bench-psql"}
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=bound_s)
            if result.returncode != 0:
                raise SystemExit(f"psql failed on {schema}: {result.stderr[-2000:]}")
        finished[schema] = time.time()
    return finished


class LockWaits(logging.Handler):
    """The engine's "waiting for a table lock" records of a run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.waits: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "waiting for a table lock, retrying":
            self.waits.append(
                {
                    "at": record.created,
                    "target": getattr(record, "target", ""),
                    "attempt": getattr(record, "lock_attempt", None),
                    "pause_s": getattr(record, "delay_s", None),
                    "blocker": getattr(record, "blocker", ""),
                }
            )


@contextlib.contextmanager
def lock_waits_recorded() -> Iterator[LockWaits]:
    logger = logging.getLogger("migrations_runner.engine.apply")
    handler, level, propagate = LockWaits(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # recorded here, not printed among the figures
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run_ours(fleet: Fleet, directory: Path, retry_for_s: float) -> tuple[dict[str, float], list[dict]]:
    """``services.execution_start`` over the fleet; when each tenant finished, and the lock waits logged."""
    with (
        override_settings(MIGRATIONS_DIR=directory, MIGRATION_LOCK_RETRY_FOR=retry_for_s),
        lock_waits_recorded() as recorded,
    ):
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[fleet.connection]),
            options=ExecutionOptions(),
            actor="bench",
            origin=Origin.API,
            wait=True,
        )
    runs = TargetRun.objects.filter(execution=execution).values("schema_name", "status", "completed_at", "error")
    failed = [r for r in runs if r["status"] != "succeeded"]
    if execution.status != "completed" or failed:
        raise SystemExit(f"our run ended {execution.status}: {failed or execution.error}")
    return {r["schema_name"]: r["completed_at"].timestamp() for r in runs}, recorded.waits


# --- one side -----------------------------------------------------------------------------------------------------


def measure(server: Server, fleet: Fleet, args: argparse.Namespace, run) -> dict:
    """Traffic, the blocker, then ``run()`` (the migration; when it finished each schema); the figures."""
    bound_s = args.blocker_seconds + 120
    blocked = fleet.schemas[args.blocked]
    traffic = Traffic(server, fleet.database, fleet.schemas, args.rows, args.pause_ms / 1000, bound_s).start()
    time.sleep(args.warmup)
    held, blocker_times = threading.Event(), {}
    blocker = threading.Thread(
        target=hold, args=(server, fleet.database, blocked, args.blocker_seconds, held, blocker_times), daemon=True
    )
    blocker.start()
    if not held.wait(timeout=30):
        raise SystemExit("the blocker did not get its lock")
    time.sleep(args.lead)
    started = time.time()
    finished, lock_waits = run()
    ended = time.time()
    blocker.join(timeout=bound_s)
    time.sleep(args.tail)
    traffic.stop()
    blocker_end = blocker_times["end"]
    tenants = []
    for schema in fleet.schemas:
        latencies = [seconds for _, seconds in traffic.samples[schema]]
        longest_at, longest = max(traffic.samples[schema], key=lambda sample: sample[1])
        tenants.append(
            {
                "schema": schema,
                "blocked": schema == blocked,
                "queries": len(latencies),
                "longest_wait_s": round(longest, 3),
                "longest_wait_started_after_migration_start_s": round(longest_at - started, 3),
                "p99_ms": round(percentile(latencies, 99) * 1000, 2),
                "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                "queries_over_goal": sum(1 for s in latencies if s > GOAL_S),
                "finished_after_blocker_end_s": round(finished[schema] - blocker_end, 3),
            }
        )
    others = [t for t in tenants if not t["blocked"]]
    return {
        "tenants": tenants,
        "longest_wait_s": max(t["longest_wait_s"] for t in tenants),
        "longest_wait_blocked_tenant_s": next(t["longest_wait_s"] for t in tenants if t["blocked"]),
        "longest_wait_other_tenants_s": max(t["longest_wait_s"] for t in others),
        "blocked_finished_after_blocker_end_s": next(
            t["finished_after_blocker_end_s"] for t in tenants if t["blocked"]
        ),
        "others_last_finished_after_blocker_end_s": max(t["finished_after_blocker_end_s"] for t in others),
        "migration_started_after_blocker_start_s": round(started - blocker_times["start"], 3),
        "migration_seconds": round(ended - started, 3),
        "blocker_held_s": round(blocker_end - blocker_times["start"], 3),
        "lock_waits": [
            {"at_after_blocker_start_s": round(wait["at"] - blocker_times["start"], 3)}
            | {key: value for key, value in wait.items() if key != "at"}
            for wait in lock_waits
        ],
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def report(results: dict, args: argparse.Namespace) -> None:
    a, b = (results["sides"][side] for side in SIDES)
    lock_timeout = results["settings"]["MIGRATION_LOCK_TIMEOUT"]
    print(
        f"\n{args.tenants} tenants, tenant {args.blocked} held {args.blocker_seconds:g} s; "
        f"(a) {results['psql_client']} with lock_timeout 0, (b) ours with lock_timeout {lock_timeout:g} s"
    )
    groups = ("longest wait s", "p99 ms", "after unblock s", "queries", f"over {GOAL_S:g} s")
    print(f"{'':<13}" + "".join(f"{group:>20}" for group in groups))
    print(f"{'tenant':<13}" + f"{'(a) psql':>10}{'(b) ours':>10}" * len(groups))
    for ta, tb in zip(a["tenants"], b["tenants"], strict=True):
        name = ta["schema"].removeprefix("tenant_psql") + (" (blocked)" if ta["blocked"] else "")
        cells = [
            f"{t[key]:>10{spec}}"
            for key, spec in (
                ("longest_wait_s", ".3f"),
                ("p99_ms", ".1f"),
                ("finished_after_blocker_end_s", ".2f"),
                ("queries", "d"),
                ("queries_over_goal", "d"),
            )
            for t in (ta, tb)
        ]
        print(f"{name:<13}" + "".join(cells))
    for wait in b["lock_waits"]:
        print(
            f"  ours, {wait['at_after_blocker_start_s']:6.2f} s after the blocker began: lock wait {wait['attempt']} "
            f"on {wait['target']}, next try in {wait['pause_s']} s: {wait['blocker']}"
        )
    blocked, others = "blocked_finished_after_blocker_end_s", "others_last_finished_after_blocker_end_s"
    print(
        f"longest application wait: (a) psql {a['longest_wait_s']:.3f} s, (b) ours {b['longest_wait_s']:.3f} s "
        f"(goal <= {GOAL_S} s: {'met' if results['summary']['goal_met'] else 'NOT met'}); after the blocker ended, "
        f"the blocked tenant finished at {a[blocked]:+.2f} s (a) / {b[blocked]:+.2f} s (b), the last other tenant "
        f"at {a[others]:+.2f} s (a) / {b[others]:+.2f} s (b)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=6, help="Tenant schemas per side (default 6).")
    parser.add_argument("--blocked", type=int, default=2, help="0-based index of the blocked tenant (default 2).")
    parser.add_argument("--blocker-seconds", type=float, default=15, help="How long the blocker holds (default 15).")
    parser.add_argument("--rows", type=int, default=10000, help="Rows of each tenant's tasks table (default 10,000).")
    parser.add_argument("--pause-ms", type=float, default=10, help="Pause of each app thread per loop (default 10).")
    parser.add_argument("--warmup", type=float, default=1, help="Seconds of traffic before the blocker (default 1).")
    parser.add_argument("--lead", type=float, default=0.5, help="Seconds from blocker to migration (default 0.5).")
    parser.add_argument("--tail", type=float, default=1, help="Seconds of traffic after the migration (default 1).")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "app_stall.json")
    args = parser.parse_args()
    if args.tenants < 2 or not 0 <= args.blocked < args.tenants:
        parser.error("--tenants must be 2 or more (the blocked one and others), --blocked one of them")
    call_command("migrate", verbosity=0)
    retry_for_s = min(settings.MIGRATION_LOCK_RETRY_FOR, args.blocker_seconds + 60)
    binary = psql_binary()
    client = "psycopg (no psql binary found)"
    if binary:
        client = "psql " + subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[-1]
    started = time.perf_counter()
    with postgres() as (server, where):
        v1_dir = migrations_dir("v1", {"V1__create_tasks.sql": V1.format(rows=args.rows)})
        v2_dir = migrations_dir("v2", {"V1__create_tasks.sql": V1.format(rows=args.rows), "V2__add_priority.sql": V2})
        v2 = load_set(v2_dir / "tenant", "tenant").versions[-1]
        fleets = {side: register(server, side, args.tenants) for side in SIDES}
        migrate(list(fleets.values()), v1_dir)
        try:
            sides = {
                "psql": measure(
                    server,
                    fleets["psql"],
                    args,
                    lambda: (run_psql(server, fleets["psql"], v2, args.blocker_seconds + 120), []),
                ),
                "ours": measure(server, fleets["ours"], args, lambda: run_ours(fleets["ours"], v2_dir, retry_for_s)),
            }
        finally:
            for fleet in fleets.values():
                drop_database(server, fleet.database)
        with psycopg.connect(**server.conninfo()) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "server": {"where": where if where == "embedded PostgreSQL" else "TEST_POSTGRES_URL", "version": version},
        "parameters": {
            "tenants": args.tenants,
            "blocked_tenant_index": args.blocked,
            "blocker_seconds": args.blocker_seconds,
            "rows_per_tenant": args.rows,
            "app_pause_ms": args.pause_ms,
            "warmup_s": args.warmup,
            "lead_s": args.lead,
            "tail_s": args.tail,
            "version_under_test": V2.strip(),
            "blocker": "a transaction that read the blocked tenant's tasks, left open (ACCESS SHARE)",
            "application": "per tenant: SELECT by primary key, then UPDATE of one row, autocommit, each timed",
        },
        "psql_client": client,
        "settings": {
            "MIGRATION_LOCK_TIMEOUT": settings.MIGRATION_LOCK_TIMEOUT,
            "MIGRATION_LOCK_RETRIES": settings.MIGRATION_LOCK_RETRIES,
            "MIGRATION_LOCK_RETRY_FOR": retry_for_s,
            "MIGRATION_BATCH_SIZE": settings.MIGRATION_BATCH_SIZE,
            "MIGRATION_MAX_PER_DATABASE": settings.MIGRATION_MAX_PER_DATABASE,
        },
        "sides": sides,
    }
    results["summary"] = {
        "longest_wait_psql_s": sides["psql"]["longest_wait_s"],
        "longest_wait_ours_s": sides["ours"]["longest_wait_s"],
        "goal_longest_wait_ours_s": GOAL_S,
        "goal_met": sides["ours"]["longest_wait_s"] <= GOAL_S,
        "blocked_finished_after_blocker_end_s": {s: sides[s]["blocked_finished_after_blocker_end_s"] for s in SIDES},
        "others_last_finished_after_blocker_end_s": {
            s: sides[s]["others_last_finished_after_blocker_end_s"] for s in SIDES
        },
    }
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    report(results, args)
    write_results(args.output, results)


if __name__ == "__main__":
    main()
