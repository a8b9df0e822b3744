"""Benchmark: migrating N tenant schemas of one database, ours against a single psql session.

Run: ``.venv/bin/python bench/fleet_migrate.py`` (or ``make bench``). Starts an embedded
PostgreSQL 16, and for each N (default 200 and 1000) measures in the same run:

- baseline: one ``psql`` session executing the sample tenant set for every schema, each
  script in its own transaction together with a history insert (what a Flyway loop or a
  home-made script does at best);
- ours, in-process and sequential (``batch_size=1``), and in-process with 4 threads;
- a no-op run over the N up-to-date tenants (nothing pending), through the service and
  through the ``run_migrations`` command in a fresh process;
- the queued path (``--queued-sizes``, default 1000): real ``qcluster`` processes with 2 and
  4 workers, on the ORM broker over the SQLite and over a PostgreSQL control database, and
  on Redis when ``redis-server`` is installed, against a raw parallel baseline (a thread
  pool of 4 psycopg connections applying the same scripts, no bookkeeping).

Prints the figures and writes them to ``bench/results/fleet_migrate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONTROL_DB = Path(tempfile.mkdtemp(prefix="bench-control-")) / "control.sqlite3"
# The bench's own control database; a ``register`` child gets its control database from its caller.
for _name, _value in {
    "DJANGO_SETTINGS_MODULE": "infra_site.settings",
    "ENVIRONMENT": "testing",
    "ADMIN_DATABASE_URL": f"sqlite:///{CONTROL_DB}",
    "LOG_LEVEL": "WARNING",
    "ENV_FILE": os.devnull,
}.items():
    os.environ.setdefault(_name, _value)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from psycopg import sql  # noqa: E402

from connections import services as registry  # noqa: E402
from connections.models import DatabaseConnection, Tenant  # noqa: E402
from infra_site.embedded_postgres import _bin_dir, temporary_server  # noqa: E402
from migrations_runner import services  # noqa: E402
from migrations_runner.engine import history  # noqa: E402
from migrations_runner.engine.sets import load_set  # noqa: E402
from migrations_runner.engine.sqltext import split_statements  # noqa: E402

TENANT_SET = load_set(ROOT / "migration_sets" / "tenant", "tenant")


def psql_script(schemas: list[str]) -> str:
    """The baseline as one psql file: every version for every schema, one transaction per script with its row."""
    statements = (operation.rstrip().rstrip(";") + ";" for schema in schemas for operation in raw_operations(schema))
    return "\n".join(["\\set ON_ERROR_STOP on", *statements]) + "\n"


def raw_operations(schema: str) -> list[str]:
    """The baseline's work for one schema as client calls: one per transaction, one per non-transactional statement."""
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
    for script in TENANT_SET.versions:
        row = history.insert_row(
            schema=schema,
            version=str(script.version),
            description=script.description,
            kind="SQL",
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


def create_database(server, name: str) -> None:
    import psycopg

    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_baseline(server, n: int) -> float:
    database = f"baseline_{n}"
    create_database(server, database)
    script = Path(tempfile.mkdtemp()) / "baseline.sql"
    script.write_text(psql_script([f"tenant_b{i:05d}" for i in range(n)]))
    env = {**os.environ, "PGPASSWORD": server.password}
    command = [
        str(_bin_dir() / "psql"),
        "-X",
        "-q",
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-d",
        database,
        "-f",
        str(script),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"baseline psql failed: {result.stderr[-2000:]}")
    return elapsed


def register(server, n: int, label: str) -> DatabaseConnection:
    database = f"ours_{label}_{n}"
    create_database(server, database)
    connection = registry.connection_create(
        actor="bench",
        verify=False,
        name=f"shared-{label}-{n}",
        database_type="shared",
        region=f"r{label}-{n}",
        host=server.host,
        port=server.port,
        database_name=database,
        username="postgres",
        password=server.password,
        ssl_mode="disable",
    )
    Tenant.objects.bulk_create(
        Tenant(
            slug=f"t{label}{n}x{i:05d}",
            name=f"Tenant {i}",
            connection=connection,
            schema_name=f"tenant_t{label}{n}x{i:05d}",
        )
        for i in range(n)
    )
    return connection


def timed_execution(connection: DatabaseConnection, batch_size: int) -> tuple[float, str]:
    started = time.perf_counter()
    execution = services.execution_start(
        scope="tenant", connections=[connection.name], executed_by="bench", batch_size=batch_size
    )
    elapsed = time.perf_counter() - started
    return elapsed, execution.status


def noop_command(connection: DatabaseConnection) -> float:
    env = {**os.environ}
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_migrations",
            "--scope",
            "tenant",
            "--connection",
            connection.name,
            "--sync",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"no-op command failed: {result.stderr[-2000:]}")
    return elapsed


def raw_parallel(server, n: int, threads: int = 4) -> float:
    """The raw parallel baseline: ``threads`` psycopg connections applying the scripts, no bookkeeping."""
    import psycopg

    database = f"rawpool_{n}"
    create_database(server, database)
    schemas = [f"tenant_r{i:05d}" for i in range(n)]

    def work(chunk: list[str]) -> None:
        with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
            for schema in chunk:
                for operation in raw_operations(schema):
                    conn.execute(operation)

    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [schemas[i::threads] for i in range(threads)]))
    return time.perf_counter() - started


def queued_run(server, n: int, workers: int, control: str, broker: str) -> dict:
    """Register N tenants in a control database, start a qcluster, run ``run_migrations --wait``; time it."""
    from tests.qcluster import Cluster, RedisServer

    env = {
        **os.environ,
        "ADMIN_DATABASE_URL": control,
        "MIGRATION_EXECUTOR": "queue",
        "MIGRATION_MAX_PER_DATABASE": str(workers * 2),
        "Q_BROKER_URL": broker,
        "LOG_LEVEL": "INFO",  # the cluster's "running." line tells it is up
        "PYTHONPATH": str(ROOT),
    }
    redis = None
    if broker == "redis":
        redis = RedisServer().start()
        env["Q_BROKER_URL"] = redis.url
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True, cwd=ROOT)
    label = f"q{workers}{broker[:1] or 'o'}{control[:2]}"
    registered = subprocess.run(
        [
            sys.executable,
            __file__,
            "register",
            "--tenants",
            str(n),
            "--label",
            label,
            "--port",
            str(server.port),
            "--password",
            server.password,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    name = registered.stdout.strip().splitlines()[-1]
    cluster = Cluster(env, workers=workers).start()
    try:
        result = subprocess.run(
            [
                *manage,
                "run_migrations",
                "--scope",
                "tenant",
                "--connection",
                name,
                "--batch-size",
                str(workers * 2),
                "--wait",
                "--poll",
                "0.2",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=1800,
        )
    finally:
        cluster.stop()
        if redis:
            redis.stop()
    if result.returncode != 0:
        raise SystemExit(f"queued run failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
    data = json.loads(result.stdout)
    from datetime import datetime

    elapsed = (
        datetime.fromisoformat(data["completed_at"]) - datetime.fromisoformat(data["started_at"])
    ).total_seconds()
    return {"seconds": elapsed, "succeeded": data["progress"]["completed"]}


def register_main(argv: list[str]) -> None:
    """``fleet_migrate.py register``: register a database of N tenants in the configured control database."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args(argv)
    from types import SimpleNamespace

    call_command("migrate", verbosity=0)
    server = SimpleNamespace(
        host="127.0.0.1",
        port=args.port,
        password=args.password,
        conninfo=lambda db="postgres": {
            "host": "127.0.0.1",
            "port": args.port,
            "user": "postgres",
            "password": args.password,
            "dbname": db,
        },
    )
    print(register(server, args.tenants, args.label).name)


def queued_section(server, sizes: list[int]) -> list[dict]:
    import shutil

    rows = []
    for n in sizes:
        raw = raw_parallel(server, n)
        baseline = run_baseline(server, n)
        variants = []
        for workers in (2, 4):
            variants.append(("orm-sqlite", workers, f"sqlite:///{Path(tempfile.mkdtemp()) / 'q.sqlite3'}", ""))
        pg_control = f"control_q_{n}"
        create_database(server, pg_control)
        pg_url = f"postgresql://postgres:{server.password}@127.0.0.1:{server.port}/{pg_control}"
        variants.append(("orm-postgresql", 4, pg_url, ""))
        if shutil.which("redis-server"):
            variants.append(("redis", 4, f"sqlite:///{Path(tempfile.mkdtemp()) / 'r.sqlite3'}", "redis"))
        for broker, workers, control, broker_url in variants:
            outcome = queued_run(server, n, workers, control, broker_url)
            seconds = outcome["seconds"]
            row = {
                "tenants": n,
                "broker": broker,
                "workers": workers,
                "queued_s": round(seconds, 3),
                "targets_per_s": round(n / seconds, 1),
                "succeeded": outcome["succeeded"],
                "baseline_psql_s": round(baseline, 3),
                "raw_pool4_s": round(raw, 3),
                "ratio_vs_psql": round(seconds / baseline, 3),
                "ratio_vs_raw_pool4": round(seconds / raw, 3),
                # What each of the parallel lanes spends per target beyond the raw pool's work.
                "overhead_ms_per_target": round((seconds - raw) * min(workers, 4) / n * 1000, 2),
            }
            rows.append(row)
            print(
                f"queued N={n} {broker:<15} {workers} workers {seconds:7.2f}s ({row['targets_per_s']}/s)  "
                f"psql {baseline:.2f}s (ratio {row['ratio_vs_psql']})  raw pool4 {raw:.2f}s "
                f"(ratio {row['ratio_vs_raw_pool4']})  overhead {row['overhead_ms_per_target']} ms/target",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds per size; the best of each counts.")
    parser.add_argument("--queued-sizes", type=int, nargs="*", default=[1000])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "fleet_migrate.json")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    results = {"tenant_set_versions": len(TENANT_SET.versions), "rounds": args.rounds, "runs": [], "queued": []}
    with temporary_server() as server:
        for n in args.sizes:
            times: dict[str, list[float]] = {"baseline": [], "sequential": [], "parallel4": []}
            for round_no in range(args.rounds):
                # Alternate the order so checkpoints and cache state do not favour one side.
                order = (
                    ["baseline", "sequential", "parallel4"]
                    if round_no % 2 == 0
                    else ["sequential", "parallel4", "baseline"]
                )
                for kind in order:
                    if kind == "baseline":
                        times[kind].append(run_baseline(server, n))
                        continue
                    connection = register(server, n, f"{kind[:3]}{round_no}")
                    elapsed, status = timed_execution(connection, batch_size=1 if kind == "sequential" else 4)
                    assert status == "completed", status
                    times[kind].append(elapsed)
                    if kind == "sequential":
                        up_to_date = connection
            noop, status = timed_execution(up_to_date, batch_size=1)
            assert status == "completed", status
            noop_cli = noop_command(up_to_date)
            baseline, sequential, parallel = (min(times[k]) for k in ("baseline", "sequential", "parallel4"))
            row = {
                "tenants": n,
                "baseline_psql_s": round(baseline, 3),
                "ours_sequential_s": round(sequential, 3),
                "ours_parallel4_s": round(parallel, 3),
                "all_rounds_s": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
                "ratio_sequential": round(sequential / baseline, 3),
                "ratio_parallel4": round(parallel / baseline, 3),
                "baseline_targets_per_s": round(n / baseline, 1),
                "ours_sequential_targets_per_s": round(n / sequential, 1),
                "ours_parallel4_targets_per_s": round(n / parallel, 1),
                "noop_service_s": round(noop, 3),
                "noop_command_s": round(noop_cli, 3),
            }
            results["runs"].append(row)
            print(
                f"N={n:5d}  psql {baseline:7.2f}s ({row['baseline_targets_per_s']}/s)  "
                f"ours seq {sequential:7.2f}s ({row['ours_sequential_targets_per_s']}/s, "
                f"ratio {row['ratio_sequential']})"
                f"  ours x4 {parallel:7.2f}s (ratio {row['ratio_parallel4']})  "
                f"no-op {noop:5.2f}s service / {noop_cli:5.2f}s command",
                flush=True,
            )
        results["queued"] = queued_section(server, args.queued_sizes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["register"]:
        register_main(sys.argv[2:])
    else:
        main()
