"""Benchmark: migrating N tenant schemas of one database with the lanes, against one psql session and a raw pool.

Run: ``.venv/bin/python bench/fleet_migrate.py`` (or ``make bench``): N=1,000 and N=10,000, 40 to 50 minutes on 2 cores.
A quick check: ``.venv/bin/python bench/fleet_migrate.py --sizes 200 --queued-sizes 200 --quick``.

Starts an embedded PostgreSQL 16 (its files in memory when there is room: ``support.bench_server``) and, for
each N, measures in the same run:

- psql: one ``psql`` session running a file that applies the tenant set to every schema, each script in its own
  transaction with its history row (what a Flyway loop or a home-made script does at best);
- raw pool: 4 threads of this process, each with one psycopg connection, sending the same statements (no
  bookkeeping at all), each transaction in its own round trip as psql does (the lanes join a target's consecutive
  transactional scripts in one once they have seen them: ``MIGRATION_JOIN_SCRIPTS_MS``, recorded in the results);
- in-process (``--sizes``): ``services.execution_start`` with its lanes as threads of this process
  (``ThreadHost``), 1 lane (``batch_size=1``) and 4 lanes, in rounds with psql (psql, 1 lane, psql, 4 lanes;
  reversed every other round): each round's 1-lane run is compared with the mean of the two psql runs around it,
  its 4-lane run with the psql run beside it, the median of the rounds counts, and the times are the median
  round's; the 1-lane run is broken down from its own records (before the execution row, until the first claim,
  the targets' claim-to-outcome time, the lane's time between targets). Then no-op runs over the N up-to-date
  tenants, through the service and through ``run_migrations --sync`` in a fresh process (as many rounds, the best
  counts);
- no-op (``--noop-sizes``, default 10,000): N tenants whose histories are written up to date directly, runs
  over them through the service and through ``run_migrations --sync`` (process start and exit included;
  alternating, as many rounds, the best of each counts), against the time one connection takes to read the N
  histories alone;
- queued (``--queued-sizes``): lanes as django-q2 tasks of a real ``qcluster`` with 2 and 4 workers, on the ORM
  broker over a SQLite and over a PostgreSQL control database, and on Redis (Debian's ``redis-server``), with
  ``batch_size`` and ``MIGRATION_MAX_PER_DATABASE`` twice the workers. A child process submits the execution
  through ``services.execution_start`` (what ``run_migrations`` calls) and polls the execution's row every
  0.25 s (``run_migrations --wait`` would add its own per-poll target query to the machine's load). The time is
  the execution's ``started_at`` to ``completed_at``. Each variant runs between two raw pool runs (raw, variant,
  raw, variant, ..., raw, the variants' order reversed every other round) and its ratio is to the mean of those
  two: this machine's speed drifts by up to 2x within the hour, more than the difference measured, so only runs
  a minute apart compare. Per variant the median of its rounds' ratios counts (``--rounds``), its figures are
  those of its median round. Also the CPU time of the cluster's processes per target, the whole machine's busy
  CPU per target during the variant and during the raw pool runs around it (the control plane's whole cost,
  PostgreSQL's included, whatever the wall clock does), the share of CPU the machine's host stole meanwhile, and
  the raw pool's client CPU per target; and where a target's CPU went (``cpu_ms_per_target``, from ``/proc``:
  ``support.ServerCpuSampler``): the cluster, the control database's backends (a PostgreSQL control database's;
  SQLite's work is the cluster's, Redis's is not counted), the tenant database's, against the raw pool's client and
  its connections' backends. psql is the best of the in-process rounds of that N (run once here when
  there were none). One more variant, on the ORM broker over PostgreSQL with 4 workers, runs with
  ``MIGRATION_FINGERPRINT_AFTER_RUN`` off: the lanes read no fingerprint after their runs (the raw pool reads
  none either), so the difference to its default twin is what that catalog read costs the run.

The machine's 1-minute load average is recorded with each figure: the benchmark shares the machine.

Every side applies the same work: the tenant set's versions and repeatable scripts, with the same history rows.
From ``--small-set-from`` tenants on (default 5,000), every side applies only the tenant set's first
``--small-set-versions`` versions (default 3) and no repeatable, so N=10,000 takes minutes, not hours. The
in-process runs of the N of ``--small-set-sizes`` below that (default 1,000) are measured with the small set
too, after those with the whole set: the goal of the in-process lanes names both sets.

Overhead per target (queued), as in the earlier figures: ``(queued_s - raw_pool4_s) * min(workers, 4) / N`` in
milliseconds, what each of the parallel lanes spends per target beyond the raw pool's work.

``--quick``: only the 4-worker queued variants, and one round unless ``--rounds`` says otherwise. Databases are
dropped after each measurement; the embedded server, clusters, Redis and the work directory (control databases,
scripts, logs) go at the end.
Prints the figures and writes them to ``bench/results/fleet_migrate.json``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHILD_COMMANDS = ("register", "submit")
IS_CHILD = len(sys.argv) > 1 and sys.argv[1] in CHILD_COMMANDS
if not IS_CHILD:
    # The bench's own control database, never one from the caller's environment; children get theirs from it.
    WORKDIR = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    atexit.register(shutil.rmtree, WORKDIR, True)
    os.environ["ADMIN_DATABASE_URL"] = f"sqlite:///{WORKDIR / 'control.sqlite3'}"
    os.environ["LOG_LEVEL"] = "WARNING"
for _name, _value in {
    "DJANGO_SETTINGS_MODULE": "infra_site.settings",
    "ENVIRONMENT": "testing",
    "LOG_LEVEL": "WARNING",
    "ENV_FILE": os.devnull,
}.items():
    os.environ.setdefault(_name, _value)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.support import (  # noqa: E402
    RESULTS_DIR,
    SETS_DIR,
    ServerCpuSampler,
    bench_server,
    create_database,
    drop_database,
    history_statements,
    process_cpu_s,
    register_fleet,
    server_cpu_split,
    sets_dir,
    write_results,
)
from connections.models import DatabaseConnection  # noqa: E402
from infra_site.embedded_postgres import _bin_dir  # noqa: E402
from migrations_runner import services  # noqa: E402
from migrations_runner.engine import history  # noqa: E402
from migrations_runner.engine.sets import MigrationSet, load_set  # noqa: E402
from migrations_runner.engine.sqltext import split_statements  # noqa: E402
from migrations_runner.models import MigrationExecution, Origin  # noqa: E402
from migrations_runner.options import ExecutionOptions  # noqa: E402
from migrations_runner.selection import TargetSelection  # noqa: E402

OVERHEAD_DEFINITION = "(queued_s - raw_pool4_s) * min(workers, 4) / N, in ms"


@dataclass(frozen=True)
class Work:
    """The tenant set every side applies at one size: ``migrations_dir`` for ours, ``tenant_set`` for the baselines."""

    migrations_dir: Path
    tenant_set: MigrationSet

    @property
    def label(self) -> str:
        s = self.tenant_set
        return f"{len(s.versions)} versions + {len(s.repeatables)} repeatable"


def work_for(n: int, args: argparse.Namespace) -> Work:
    return small_work(args) if n >= args.small_set_from else Work(SETS_DIR, load_set(SETS_DIR / "tenant", "tenant"))


def small_work(args: argparse.Namespace) -> Work:
    """The small tenant set: the shipped set's first ``--small-set-versions`` versions, no repeatable."""
    directory = WORKDIR / f"sets-first-{args.small_set_versions}"
    if not directory.exists():
        sets_dir(directory, tenant_versions=args.small_set_versions)
    return Work(directory, load_set(directory / "tenant", "tenant"))


# --- the baselines ------------------------------------------------------------------------------------------------


def raw_operations(schema: str, mset: MigrationSet) -> list[str]:
    """The baseline's work for one schema as client calls: one per transaction, one per non-transactional statement.

    The same as the engine's: schema and history table, then every version and every repeatable script, each
    with its history row.
    """
    context = {
        "schema": schema,
        "tenant_slug": schema.removeprefix("tenant_"),
        "region": "bench",
        "database_type": "tenant",
    }
    operations = [
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        sql.SQL(history.CREATE_TABLE).format(table=history.table(schema)).as_string(None),
    ]
    for script in [*mset.versions, *mset.repeatables]:
        row = history.insert_row(
            schema=schema,
            version=str(script.version) if script.version else None,
            description=script.description,
            kind="SQL" if script.version else "REPEATABLE",
            script=script.filename,
            checksum=script.checksum,
            installed_by="baseline",
            execution_id=None,
            execution_time_ms=0,
        ).as_string(None)
        body = script.render(context)
        if script.transactional:
            operations.append(f"BEGIN;\nSET LOCAL search_path TO {schema}, public;\n{body}\n;{row};\nCOMMIT;")
        else:
            operations.append(f"SET search_path TO {schema}, public")
            operations.extend(split_statements(body))
            operations += [row, "RESET search_path"]
    return operations


def psql_script(schemas: list[str], mset: MigrationSet) -> str:
    """The baseline as one psql file: every version for every schema, one transaction per script with its row."""
    statements = (op.rstrip().rstrip(";") + ";" for schema in schemas for op in raw_operations(schema, mset))
    return "\n".join(["\\set ON_ERROR_STOP on", *statements]) + "\n"


def run_psql(server, n: int, work: Work) -> float:
    """Seconds one psql session takes to apply the work to N new schemas."""
    database = f"baseline_{n}"
    create_database(server, database)
    script = WORKDIR / f"baseline_{n}.sql"
    script.write_text(psql_script([f"tenant_b{i:05d}" for i in range(n)], work.tenant_set))
    command = [str(_bin_dir() / "psql"), "-X", "-q", "-h", server.host, "-p", str(server.port), "-U", "postgres"]
    command += ["-d", database, "-f", str(script)]
    started = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, "PGPASSWORD": server.password}, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    script.unlink()
    drop_database(server, database)
    if result.returncode != 0:
        raise SystemExit(f"baseline psql failed: {result.stderr[-2000:]}")
    return elapsed


class RawPoolRun(NamedTuple):
    seconds: float
    client_cpu_s: float  # this process's
    machine_busy_s: float  # the whole machine's, PostgreSQL's included
    steal_s: float  # taken by the machine's host
    machine_system_s: float = 0.0  # of machine_busy_s, in the kernel
    server_cpu_s: float = 0.0  # its connections' backends' (0 when the server's processes cannot be read)


def run_raw_pool(server, n: int, work: Work, threads: int = 4) -> RawPoolRun:
    """``threads`` psycopg connections applying the work to N new schemas: the seconds, this process's CPU seconds
    and the machine's busy and stolen CPU seconds meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    database = f"rawpool_{n}"
    create_database(server, database)
    schemas = [f"tenant_r{i:05d}" for i in range(n)]

    def apply(chunk: list[str]) -> float:
        """Apply the work to ``chunk``; the CPU seconds its connection's backend spent meanwhile."""
        with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
            backend = conn.info.backend_pid
            before = process_cpu_s(backend) or 0.0
            for schema in chunk:
                for operation in raw_operations(schema, work.tenant_set):
                    conn.execute(operation)
            after = process_cpu_s(backend)
            return after - before if after is not None else 0.0

    (busy, steal), system = machine_cpu_s(), machine_system_s()
    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        server_cpu = sum(pool.map(apply, [schemas[i::threads] for i in range(threads)]))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    (busy_end, steal_end), system_end = machine_cpu_s(), machine_system_s()
    drop_database(server, database)
    return RawPoolRun(elapsed, cpu, busy_end - busy, steal_end - steal, system_end - system, server_cpu)


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has spent so far: busy (user, system, interrupts) and stolen by its host."""
    import psutil

    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    return busy, times.steal


def machine_system_s() -> float:
    """CPU seconds the whole machine has spent so far in its kernel (part of ``machine_cpu_s``'s busy)."""
    import psutil

    return psutil.cpu_times().system


# --- in-process lanes ---------------------------------------------------------------------------------------------


def register(server, n: int, label: str) -> tuple[DatabaseConnection, str]:
    database = f"ours_{label}_{n}"
    create_database(server, database)
    connection = register_fleet(
        server=server,
        database=database,
        name=f"shared-{label}-{n}",
        region=f"r{label}-{n}",
        slugs=[f"t{label}{n}x{i:05d}" for i in range(n)],
    )
    return connection, database


def lane_breakdown(execution: MigrationExecution, called_at: datetime, elapsed: float) -> dict:
    """Where the time of a 1-lane execution went, per target in ms, from the timestamps of its own rows."""
    rows = list(execution.targets.values_list("started_at", "completed_at", "applied_versions"))
    n = len(rows)
    first_claim = min(started for started, _, _ in rows)
    last_outcome = max(completed for _, completed, _ in rows)
    targets = sum((completed - started).total_seconds() for started, completed, _ in rows)
    scripts_ms = sum(a["duration_ms"] for _, _, applied in rows for a in applied)
    scripts = sum(len(applied) for _, _, applied in rows)
    parts = {
        "before_execution_row": (execution.created_at - called_at).total_seconds(),
        "until_first_claim": (first_claim - execution.created_at).total_seconds(),
        "targets_claim_to_outcome": targets,
        "between_targets": (last_outcome - first_claim).total_seconds() - targets,
        "after_last_outcome": elapsed
        - (execution.created_at - called_at).total_seconds()
        - (last_outcome - execution.created_at).total_seconds(),
    }
    return {
        "ms_per_target": {name: round(seconds * 1000 / n, 3) for name, seconds in parts.items()},
        # The engine records whole milliseconds per script (truncated), hence a range.
        "scripts_ms_per_target_range": [round(scripts_ms / n, 3), round((scripts_ms + scripts) / n, 3)],
        "explained": {
            "before_execution_row": "resolve the targets, load the sets, read N histories",
            "until_first_claim": "insert the N target runs, open the execution, start the lane",
            "targets_claim_to_outcome": "per target from its claim to its outcome: load the run, the engine "
            "(lock, history read, schema and history table, scripts, unlock)",
            "between_targets": "record an outcome and claim the next (one transaction each)",
            "after_last_outcome": "the last record, finishing the execution, the thread host's exit",
        },
    }


def inprocess_run(server, n: int, work: Work, *, batch_size: int, label: str) -> tuple[dict, DatabaseConnection, str]:
    connection, database = register(server, n, label)
    with override_settings(MIGRATIONS_DIR=work.migrations_dir):
        called_at, started = timezone.now(), time.perf_counter()
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[connection.name]),
            options=ExecutionOptions(batch_size=batch_size),
            actor="bench",
            origin=Origin.API,
            wait=True,
        )
        elapsed = time.perf_counter() - started
    if execution.status != "completed" or execution.targets_succeeded != n:
        raise SystemExit(f"in-process run {label} ended {execution.status}: {execution.error}")
    result = {"seconds": elapsed}
    if batch_size == 1:
        result["breakdown"] = lane_breakdown(execution, called_at, elapsed)
    # Its tenants are no longer targets: later runs resolve only their own (targets_resolve reads all).
    DatabaseConnection.objects.filter(pk=connection.pk).update(is_active=False)
    return result, connection, database


def noop_runs(
    server, connection: DatabaseConnection, database: str, work: Work, rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds of ``rounds`` runs each over N up-to-date tenants: the service, and ``run_migrations --sync`` in a
    fresh process (alternating); then the database goes."""
    DatabaseConnection.objects.filter(pk=connection.pk).update(is_active=True)
    command = [sys.executable, str(ROOT / "manage.py"), "run_migrations", "--scope", "tenant"]
    command += ["--connection", connection.name, "--sync", "--json"]
    env = {**os.environ, "MIGRATIONS_DIR": str(work.migrations_dir)}
    service: list[float] = []
    cli: list[float] = []
    for _ in range(rounds):
        with override_settings(MIGRATIONS_DIR=work.migrations_dir):
            started = time.perf_counter()
            execution = services.execution_start(
                selection=TargetSelection(scope="tenant", connections=[connection.name]),
                options=ExecutionOptions(batch_size=1),
                actor="bench",
                origin=Origin.API,
                wait=True,
            )
            service.append(time.perf_counter() - started)
        assert execution.status == "completed", execution.status
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        cli.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"no-op command failed: {result.stderr[-2000:]}")
    DatabaseConnection.objects.filter(pk=connection.pk).update(is_active=False)
    drop_database(server, database)
    return service, cli


def _noop_figures(service: list[float], cli: list[float]) -> dict:
    """The best round of each (as for the other timings) and every round."""
    return {
        "noop_service_s": round(min(service), 3),
        "noop_command_s": round(min(cli), 3),
        "noop_rounds_s": {"service": [round(v, 3) for v in service], "command": [round(v, 3) for v in cli]},
    }


def inprocess_section(server, n: int, work: Work, rounds: int, psql_times: list[float], tag: str = "") -> dict:
    """The in-process rounds at N (``tag`` names its fleets apart from another section's at the same N)."""
    times: dict[str, list[float]] = {"psql": [], "lanes1": [], "lanes4": []}
    loads: dict[str, list[float]] = {"psql": [], "lanes1": [], "lanes4": []}
    breakdowns: list[dict] = []
    around: list[tuple[float, float]] = []  # per round, the psql runs before and after its 1-lane run
    beside: list[float] = []  # per round, the psql run next to its 4-lane run
    keep = None  # the last 1-lane fleet, up to date: the no-op runs use it
    for round_no in range(rounds):
        # Each round's 1-lane run between two psql runs, compared with their mean (this machine's speed drifts by
        # more than what is measured); the order reversed every other round so that checkpoints and cache state
        # do not favour one side.
        order = ["psql", "lanes1", "psql", "lanes4"] if round_no % 2 == 0 else ["lanes4", "psql", "lanes1", "psql"]
        ran: list[tuple[str, float]] = []
        for kind in order:
            if kind == "psql":
                seconds = run_psql(server, n, work)
                times["psql"].append(seconds)
                loads["psql"].append(round(os.getloadavg()[0], 2))
                ran.append((kind, seconds))
                continue
            result, connection, database = inprocess_run(
                server, n, work, batch_size=1 if kind == "lanes1" else 4, label=f"{tag}{kind[-1]}r{round_no}"
            )
            times[kind].append(result["seconds"])
            loads[kind].append(round(os.getloadavg()[0], 2))
            ran.append((kind, result["seconds"]))
            if kind == "lanes1":
                breakdowns.append({"seconds": result["seconds"], **result["breakdown"]})
                if keep:
                    drop_database(server, keep[1])
                keep = (connection, database)
            else:
                drop_database(server, database)
        kinds = [kind for kind, _ in ran]
        one = kinds.index("lanes1")
        around.append((ran[one - 1][1], ran[one + 1][1]))
        four = kinds.index("lanes4")
        beside.append(ran[four + 1 if four == 0 else four - 1][1])
    noop = _noop_figures(*noop_runs(server, *keep, work, rounds))
    psql_times.extend(times["psql"])
    # Each round's 1-lane ratio is to the mean of the psql runs around it, its 4-lane ratio to the psql run beside
    # it; the median round (the lower of two middle ones) gives the times, the median of the rounds the ratios.
    ratios1 = [one / statistics.mean(pair) for one, pair in zip(times["lanes1"], around, strict=True)]
    ratios4 = [four / psql for four, psql in zip(times["lanes4"], beside, strict=True)]
    middle = median_round(ratios1)
    psql, lanes1, lanes4 = statistics.mean(around[middle]), times["lanes1"][middle], times["lanes4"][middle]
    row = {
        "tenants": n,
        "work": work.label,
        "psql_s": round(psql, 3),
        "lanes1_s": round(lanes1, 3),
        "lanes4_s": round(lanes4, 3),
        "ratio_lanes1_vs_psql": round(statistics.median(ratios1), 3),
        "ratio_lanes1_vs_psql_rounds": [round(ratio, 3) for ratio in ratios1],
        "psql_around_lanes1_s": [[round(before, 3), round(after, 3)] for before, after in around],
        "goal_lanes1_vs_psql": 1.15,
        # The fastest 1-lane run against the fastest psql run around one: this machine also switches between a fast
        # and a slow state, and a pair of runs on either side of a switch measures the switch.
        "ratio_lanes1_best_vs_best": round(min(times["lanes1"]) / min(min(pair) for pair in around), 3),
        "ratio_lanes4_vs_psql": round(statistics.median(ratios4), 3),
        "ratio_lanes4_vs_psql_rounds": [round(ratio, 3) for ratio in ratios4],
        "psql_ms_per_target": round(psql * 1000 / n, 3),
        "lanes1_ms_per_target": round(lanes1 * 1000 / n, 3),
        "lanes4_ms_per_target": round(lanes4 * 1000 / n, 3),
        "all_rounds_s": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
        "load_average_1min_after_each_round": loads,
        "lanes1_breakdown_of_median_round": breakdowns[middle],
        **noop,
    }
    print(
        f"in-process N={n:<6} ({work.label})  psql {psql:8.2f}s  1 lane {lanes1:8.2f}s "
        f"(x{row['ratio_lanes1_vs_psql']}, goal <= 1.15)  4 lanes {lanes4:8.2f}s (x{row['ratio_lanes4_vs_psql']})  "
        f"no-op {noop['noop_service_s']:.2f}s service / {noop['noop_command_s']:.2f}s command",
        flush=True,
    )
    parts = row["lanes1_breakdown_of_median_round"]
    detail = "  ".join(f"{name} {ms:.3f}" for name, ms in parts["ms_per_target"].items())
    low, high = parts["scripts_ms_per_target_range"]
    print(
        f"    1 lane, ms per target: {detail}  (scripts {low:.2f}..{high:.2f} of the claim-to-outcome time; "
        f"psql {row['psql_ms_per_target']:.3f} per target in all)",
        flush=True,
    )
    return row


def noop_section(server, n: int, work: Work, rounds: int) -> dict:
    """A no-op run over N tenants whose histories say they are up to date (written directly: nothing to apply),
    through the service and through ``run_migrations --sync`` in a fresh process, against the time reading the N
    histories alone takes the server (one connection, the engine's bulk read: what any tool pays)."""
    import psycopg

    database = f"noop_{n}"
    create_database(server, database)
    slugs = [f"noop{n}x{i:05d}" for i in range(n)]
    connection = register_fleet(
        server=server, database=database, name=f"shared-noop-{n}", region=f"rnoop-{n}", slugs=slugs
    )
    scripts = [*work.tenant_set.versions, *work.tenant_set.repeatables]
    if any(script.uses_placeholders for script in work.tenant_set.repeatables):
        raise SystemExit("the no-op fixture records the scripts' own checksums: no repeatable may use placeholders")
    schemas = [f"tenant_{slug}" for slug in slugs]
    with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
        for schema in schemas:
            create = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))
            conn.execute(sql.SQL("; ").join([create, *history_statements(schema, scripts)]))
    started = time.perf_counter()
    with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
        states = history.read_states(conn, schemas)
    read_alone = time.perf_counter() - started
    assert all(state.has_history for state in states.values())
    noop = _noop_figures(*noop_runs(server, connection, database, work, rounds))  # drops the database
    service, command = noop["noop_service_s"], noop["noop_command_s"]
    row = {
        "tenants": n,
        "work": work.label,
        **noop,
        "histories_read_alone_s": round(read_alone, 3),
        "goal_command_s": 3.0 if n >= 10_000 else None,
    }
    print(
        f"no-op N={n:<6} ({work.label})  service {service:.2f}s  run_migrations --sync {command:.2f}s  "
        f"(reading the {n} histories alone, one connection: {read_alone:.2f}s)",
        flush=True,
    )
    return row


# --- queued lanes -------------------------------------------------------------------------------------------------


def cluster_cpu_s(cluster) -> float:
    """CPU seconds (user + system) used so far by the cluster's processes."""
    import psutil

    total = 0.0
    for pid in cluster.pids():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def queued_run(server, n: int, work: Work, *, workers: int, broker: str, fingerprints: bool = True) -> dict:
    """Register N tenants in a fresh control database, start a qcluster, submit the execution and time it.
    ``fingerprints``: the lanes read each target's fingerprint after its run (``MIGRATION_FINGERPRINT_AFTER_RUN``,
    the default)."""
    from tests.support.qcluster import Cluster, RedisServer

    label = f"q{workers}{broker.replace('orm-', '')[:2]}{'' if fingerprints else 'nf'}"
    scratch = WORKDIR / f"queued-{label}-{n}"
    scratch.mkdir()
    pg_control = f"control_{label}_{n}"
    if broker == "orm-postgresql":
        create_database(server, pg_control)
        control = server.url(pg_control)
    else:
        control = f"sqlite:///{scratch / 'control.sqlite3'}"
    env = {
        **os.environ,
        "ADMIN_DATABASE_URL": control,
        "MIGRATIONS_DIR": str(work.migrations_dir),
        "MIGRATION_EXECUTOR": "queue",
        "MIGRATION_MAX_PER_DATABASE": str(workers * 2),
        "Q_BROKER_URL": "",
        "LOG_LEVEL": "INFO",  # the cluster's "running." line tells it is up
        "MIGRATION_FINGERPRINT_AFTER_RUN": "true" if fingerprints else "false",
        "PYTHONPATH": str(ROOT),
        "BENCH_PG_PORT": str(server.port),
        "BENCH_PG_PASSWORD": server.password,
    }
    redis = RedisServer().start() if broker == "redis" else None
    if redis:
        env["Q_BROKER_URL"] = redis.url
    database = f"ours_{label}_{n}"
    cluster = None
    try:
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True, cwd=ROOT)
        create_database(server, database)
        registered = subprocess.run(
            [sys.executable, __file__, "register", "--tenants", str(n), "--label", label, "--database", database],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        name = registered.stdout.strip().splitlines()[-1]
        cluster = Cluster(env, workers=workers).start()
        cpu = cluster_cpu_s(cluster)
        sampler = ServerCpuSampler(server.conninfo()).start()
        try:
            submitted = subprocess.run(
                [sys.executable, __file__, "submit", "--connection", name, "--batch-size", str(workers * 2)],
                env=env,
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=3600,
            )
        finally:
            server_cpu = server_cpu_split(sampler.stop(), control=pg_control, tenants=database)
        cpu = cluster_cpu_s(cluster) - cpu
        load = os.getloadavg()[0]
    finally:
        if cluster:
            cluster.stop()
            cluster.log.unlink(missing_ok=True)
        if redis:
            redis.stop()
        drop_database(server, database)
        if broker == "orm-postgresql":
            drop_database(server, pg_control)
        shutil.rmtree(scratch, ignore_errors=True)
    if submitted.returncode != 0:
        raise SystemExit(f"queued run failed: {submitted.stdout[-2000:]} {submitted.stderr[-2000:]}")
    data = json.loads(submitted.stdout.strip().splitlines()[-1])
    if data["status"] != "completed" or data["targets_succeeded"] != n:
        raise SystemExit(f"queued run ended {data['status']}: {data}")
    seconds = (
        datetime.fromisoformat(data["completed_at"]) - datetime.fromisoformat(data["started_at"])
    ).total_seconds()
    return {
        "seconds": seconds,
        "succeeded": data["targets_succeeded"],
        "cluster_cpu_s": cpu,
        "server_cpu_s": server_cpu,
        "machine_busy_s": data["machine_busy_s"],
        "steal_s": data["steal_s"],
        "load": load,
    }


def queued_section(server, n: int, work: Work, *, quick: bool, rounds: int, psql_times: list[float]) -> list[dict]:
    """Each queued variant between two raw pool runs (raw, variant, raw, variant, ..., raw; the order reversed
    every other round): its ratio is to the mean of the two runs around it, measured within a minute of it,
    because this machine's speed drifts by more than the difference measured over a longer span. Per variant
    the median of its rounds counts."""
    if not psql_times:  # the in-process rounds of this N measured it already
        psql_times.append(run_psql(server, n, work))
    variants = [
        (broker, workers, True) for broker in ("orm-sqlite", "orm-postgresql", "redis") for workers in (2, 4)
    ] + [("orm-postgresql", 4, False)]
    if quick:
        variants = [(broker, workers, read) for broker, workers, read in variants if workers == 4]
    if not shutil.which("redis-server"):
        print("redis-server is not installed: no Redis figures", flush=True)
        variants = [(broker, workers, read) for broker, workers, read in variants if broker != "redis"]
    measured: dict[tuple[str, int, bool], list[dict]] = {variant: [] for variant in variants}
    raw = run_raw_pool(server, n, work)
    for round_no in range(rounds):
        for broker, workers, fingerprints in variants if round_no % 2 == 0 else list(reversed(variants)):
            outcome = queued_run(server, n, work, workers=workers, broker=broker, fingerprints=fingerprints)
            after = run_raw_pool(server, n, work)
            measured[(broker, workers, fingerprints)].append({**outcome, "raw": [raw, after]})
            raw = after
    psql = min(psql_times)
    rows = [_queued_row(n, work, variant, runs, psql) for variant, runs in measured.items()]
    for row in rows:
        print(
            f"queued N={n:<6} {row['broker']:<15} {row['workers']} workers"
            f"{'' if row['fingerprints_after_run'] else ' (no fingerprints)'} {row['queued_s']:8.2f}s "
            f"({row['targets_per_s']:7.1f}/s)  psql {psql:7.2f}s (x{row['ratio_vs_psql']})  raw pool4 around it "
            f"{row['raw_pool4_s']:7.2f}s (x{row['ratio_vs_raw_pool4']}, rounds {row['ratio_vs_raw_pool4_rounds']})  "
            f"overhead {row['overhead_ms_per_target']:6.2f} ms/target  machine CPU "
            f"{row['machine_cpu_ms_per_target']:.2f} ms/target (raw pool "
            f"{row['raw_pool4_machine_cpu_ms_per_target']:.2f})  cluster CPU "
            f"{row['cluster_cpu_ms_per_target']:.2f} ms/target (raw pool client "
            f"{row['raw_pool4_client_cpu_ms_per_target']:.2f})  CPU ms/target: queued "
            f"{_cpu_text(row['cpu_ms_per_target'])}",
            flush=True,
        )
    return rows


def _cpu_text(cpu: dict) -> str:
    queued, raw = cpu["queued"], cpu["raw_pool"]
    return (
        f"{queued['total']:.2f} (cluster {queued['cluster']:.2f}, control {queued['control_backends']:.2f}, tenants "
        f"{queued['tenant_backends']:.2f}), raw pool {raw['total']:.2f} (client {raw['client']:.2f}, backends "
        f"{raw['backends']:.2f})"
    )


def median_round(ratios: list[float]) -> int:
    """The index of the median round by its ratio (the lower of the two middle ones for an even number)."""
    return sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]


def _queued_row(n: int, work: Work, variant: tuple[str, int, bool], runs: list[dict], psql: float) -> dict:
    """A variant's figures: those of its median round (by its ratio to the raw pool around it), with every
    round's ratio and the raw pool runs around each; beside them, its fastest run against the fastest raw pool run
    around one of its runs (this machine also switches between a fast and a slow state)."""
    raws = [sum(pool.seconds for pool in run["raw"]) / 2 for run in runs]
    best, best_raw = min(run["seconds"] for run in runs), min(pool.seconds for run in runs for pool in run["raw"])
    ratios = [run["seconds"] / raw for run, raw in zip(runs, raws, strict=True)]
    middle = median_round(ratios)
    run, raw = runs[middle], raws[middle]
    seconds = run["seconds"]
    raw_busy = sum(pool.machine_busy_s for pool in run["raw"]) / 2
    broker, workers, fingerprints = variant
    return {
        "tenants": n,
        "work": work.label,
        "broker": broker,
        "workers": workers,
        "fingerprints_after_run": fingerprints,
        "lanes": workers * 2,
        "queued_s": round(seconds, 3),
        "targets_per_s": round(n / seconds, 1),
        "succeeded": run["succeeded"],
        "psql_s": round(psql, 3),
        "raw_pool4_s": round(raw, 3),
        "raw_pool4_rounds_s": [round(pool.seconds, 3) for pool in run["raw"]],
        "ratio_vs_psql": round(seconds / psql, 3),
        "ratio_vs_raw_pool4": round(statistics.median(ratios), 3),
        "ratio_vs_raw_pool4_rounds": [round(ratio, 3) for ratio in ratios],
        "overhead_ms_per_target": round((seconds - raw) * min(workers, 4) / n * 1000, 2),
        "queued_rounds_s": [round(each["seconds"], 3) for each in runs],
        "raw_pool4_around_rounds_s": [[round(pool.seconds, 3) for pool in each["raw"]] for each in runs],
        "ratio_best_vs_best": round(best / best_raw, 3),
        "overhead_best_vs_best_ms_per_target": round((best - best_raw) * min(workers, 4) / n * 1000, 2),
        "cluster_cpu_ms_per_target": round(run["cluster_cpu_s"] * 1000 / n, 2),
        "machine_cpu_ms_per_target": round(run["machine_busy_s"] * 1000 / n, 2),
        "raw_pool4_machine_cpu_ms_per_target": round(raw_busy * 1000 / n, 2),
        "raw_pool4_client_cpu_ms_per_target": round(min(pool.client_cpu_s for pool in run["raw"]) * 1000 / n, 2),
        "cpu_ms_per_target": _cpu_per_target(run, n),
        "steal_share": round(run["steal_s"] / max(run["steal_s"] + run["machine_busy_s"], 1e-9), 3),
        "load_average_1min_at_end": round(run["load"], 2),
    }


def _cpu_per_target(run: dict, n: int) -> dict:
    """Where a target's CPU went, in ms: the queued run's cluster, control-database backends (none with a control
    database outside the server: SQLite's work is the cluster's, Redis's is not counted) and tenant backends; the
    raw pool's client and backends (the mean of the two runs around it). The server's own processes are left out of
    both: the raw pool's share of them is not measured."""
    server = run["server_cpu_s"]
    queued = {
        "cluster": run["cluster_cpu_s"],
        "control_backends": server["control_backends"],
        "tenant_backends": server["tenant_backends"],
    }
    pools = run["raw"]
    raw = {
        "client": sum(pool.client_cpu_s for pool in pools) / len(pools),
        "backends": sum(pool.server_cpu_s for pool in pools) / len(pools),
    }
    queued_ms = {key: round(value * 1000 / n, 3) for key, value in queued.items()}
    raw_ms = {key: round(value * 1000 / n, 3) for key, value in raw.items()}
    queued_ms["total"] = round(sum(queued.values()) * 1000 / n, 3)
    raw_ms["total"] = round(sum(raw.values()) * 1000 / n, 3)
    return {"queued": queued_ms, "raw_pool": raw_ms}


def overhead_growth(rows: list[dict]) -> list[dict]:
    """Overhead per target of each queued variant at each N, side by side."""
    table: dict[tuple[str, int, bool], dict] = {}
    for row in rows:
        fingerprints = row["fingerprints_after_run"]
        entry = table.setdefault(
            (row["broker"], row["workers"], fingerprints),
            {"broker": row["broker"], "workers": row["workers"], "fingerprints_after_run": fingerprints},
        )
        entry[f"N={row['tenants']}"] = {"overhead_ms_per_target": row["overhead_ms_per_target"], "work": row["work"]}
    return list(table.values())


# --- children -----------------------------------------------------------------------------------------------------


def register_main(argv: list[str]) -> None:
    """``fleet_migrate.py register``: register a database of N tenants in the control database of the environment."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    from types import SimpleNamespace

    server = SimpleNamespace(
        host="127.0.0.1", port=int(os.environ["BENCH_PG_PORT"]), password=os.environ["BENCH_PG_PASSWORD"]
    )
    connection = register_fleet(
        server=server,
        database=args.database,
        name=f"shared-{args.label}-{args.tenants}",
        region=f"r{args.label}-{args.tenants}",
        slugs=[f"t{args.label}{args.tenants}x{i:05d}" for i in range(args.tenants)],
    )
    print(connection.name)


def submit_main(argv: list[str]) -> None:
    """``fleet_migrate.py submit``: queue an execution over a connection's tenants, wait for it, print its row."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", connections=[args.connection]),
        options=ExecutionOptions(batch_size=args.batch_size),
        actor="bench",
        origin=Origin.API,
    )
    busy, steal = machine_cpu_s()  # from the execution's queueing to its end: its lanes' work, and nothing else's
    fields = ["status", "started_at", "completed_at", "targets_total", "targets_succeeded", "targets_failed", "error"]
    deadline = time.monotonic() + args.timeout
    while True:
        row = MigrationExecution.objects.filter(pk=execution.pk).values(*fields).get()
        if row["status"] not in ("pending", "in_progress") or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    busy_end, steal_end = machine_cpu_s()
    print(json.dumps({**row, "machine_busy_s": busy_end - busy, "steal_s": steal_end - steal}, default=str))


# --- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000], help="N of the in-process runs.")
    parser.add_argument("--queued-sizes", type=int, nargs="*", default=[1000, 10000], help="N of the queued runs.")
    parser.add_argument(
        "--noop-sizes", type=int, nargs="*", default=[10000], help="N of the no-op runs over up-to-date tenants."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="Alternating rounds (in-process: the best counts; queued: the median; default 2).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="Only the 4-worker queued variants, and one round unless --rounds."
    )
    parser.add_argument("--small-set-from", type=int, default=5000, help="From this N on, the small tenant set.")
    parser.add_argument("--small-set-versions", type=int, default=3, help="Versions of the small tenant set.")
    parser.add_argument(
        "--small-set-sizes",
        type=int,
        nargs="*",
        default=[1000],
        help="N of --sizes below --small-set-from whose in-process runs are measured with the small set too.",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "fleet_migrate.json")
    args = parser.parse_args()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    call_command("migrate", verbosity=0)
    results = {
        "machine": {"cpus": os.cpu_count()},
        "rounds": rounds,
        "quick": args.quick,
        "work_by_size": {},
        "overhead_definition": OVERHEAD_DEFINITION,
        # The lanes join a target's consecutive transactional scripts in one round trip (0: they do not).
        "join_scripts_ms": settings.MIGRATION_JOIN_SCRIPTS_MS,
        "in_process": [],
        "queued": [],
        "noop": [],
    }
    started = time.perf_counter()
    with bench_server() as server:
        for n in args.noop_sizes:
            results["noop"].append(noop_section(server, n, work_for(n, args), rounds))
        for n in sorted(set(args.sizes) | set(args.queued_sizes)):
            work = work_for(n, args)
            results["work_by_size"][str(n)] = work.label
            psql_times: list[float] = []
            if n in args.sizes:
                results["in_process"].append(inprocess_section(server, n, work, rounds, psql_times))
                if n in args.small_set_sizes and n < args.small_set_from:
                    results["in_process"].append(inprocess_section(server, n, small_work(args), rounds, [], "s"))
            if n in args.queued_sizes:
                results["queued"] += queued_section(
                    server, n, work, quick=args.quick, rounds=rounds, psql_times=psql_times
                )
    results["overhead_growth"] = overhead_growth(results["queued"])
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(f"queued overhead per target, {OVERHEAD_DEFINITION}:")
    for entry in results["overhead_growth"]:
        figures = "  ".join(
            f"{key} {value['overhead_ms_per_target']:6.2f} ms ({value['work']})"
            for key, value in entry.items()
            if key.startswith("N=")
        )
        unread = "" if entry["fingerprints_after_run"] else " (no fingerprints)"
        print(f"    {entry['broker']:<15} {entry['workers']} workers{unread}  {figures}")
    write_results(args.output, results)


if __name__ == "__main__":
    if sys.argv[1:2] == ["register"]:
        register_main(sys.argv[2:])
    elif sys.argv[1:2] == ["submit"]:
        submit_main(sys.argv[2:])
    else:
        main()
