"""Benchmark: how long the operator console's heaviest pages take to render on a big control database.

Run: ``.venv/bin/python bench/admin_render.py`` (or ``make bench``), about a minute; ``--profile`` adds a cProfile
of every page whose p95 misses the goal.

The fixture, in a scratch SQLite control database migrated with ``migrate``: four connections (admin, analytics,
shared us-east and eu-west; never contacted), 10,000 tenants on the two shared ones, a finished execution that took
every tenant to version 8, and the execution measured: 10,000 target runs to version 9, still in progress (8,940
succeeded with their applied version, 60 failed with a SQLSTATE and the failing statement, 40 running, the rest
pending), and 300 older small executions for the list. The connections are created with
``DatabaseConnection.objects.create(..., password="x")`` and everything else with ``bulk_create``: a benchmark
fixture, skipping the services' validation and probes.

Measured through Django's test ``Client`` (in this process, DEBUG off, no test instrumentation), logged in with
``force_login`` as a user holding ``migrations:execute``: the executions change list, the execution's detail
(change view), its progress fragment, and the fleet view (first page, and a state-filtered page) when the fleet
view exists. Each page: a warm-up, then N=30 timed requests; p50 and p95 in milliseconds, and the queries of one
request, and this process's CPU time per request (SQLite runs in it too: the page's own cost, whatever else the
machine runs). Goal: p95 under 300 ms. Prints the table and writes ``bench/results/admin_render.json``.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The bench's own control database, never one from the caller's environment.
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-admin-render-"))
atexit.register(shutil.rmtree, WORKDIR, True)
os.environ["ADMIN_DATABASE_URL"] = f"sqlite:///{WORKDIR / 'control.sqlite3'}"
for _name, _value in {
    "DJANGO_SETTINGS_MODULE": "infra_site.settings",
    "ENVIRONMENT": "testing",
    "LOG_LEVEL": "WARNING",
    "ENV_FILE": os.devnull,
    "RATE_LIMIT_ENABLED": "false",
}.items():
    os.environ.setdefault(_name, _value)

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.support import RESULTS_DIR, percentile, write_results  # noqa: E402
from connections.models import DatabaseConnection, Tenant  # noqa: E402
from infra_site import roles  # noqa: E402
from migrations_runner.models import (  # noqa: E402
    ExecutionStatus,
    MigrationExecution,
    Origin,
    TargetRun,
    TargetStatus,
)

GOAL_P95_MS = 300.0
TENANTS = 10_000
OLD_EXECUTIONS = 300
SUCCEEDED, FAILED, RUNNING = 9_000, 60, 40
STATEMENT = (
    "CREATE TABLE projects (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "    key text NOT NULL CHECK (key ~ '^[A-Z][A-Z0-9]{1,9}$'),\n    name text NOT NULL\n)"
)


def applied(versions: range) -> list[dict]:
    return [{"version": str(v), "script": f"V{v}__script.sql", "duration_ms": 12, "kind": "SQL"} for v in versions]


def build_fixture() -> tuple[MigrationExecution, User]:
    """The fleet, the executions and the user the pages are rendered for."""
    call_command("migrate", verbosity=0, interactive=False)
    connections = {
        name: DatabaseConnection.objects.create(
            name=name,
            database_type=kind,
            region=region,
            host="127.0.0.1",
            port=5432,
            database_name=name.replace("-", "_"),
            username="bench",
            password="x",
            ssl_mode="disable",
        )
        for name, kind, region in [
            ("admin", "admin", ""),
            ("analytics", "analytics", ""),
            ("shared-us", "shared", "us-east"),
            ("shared-eu", "shared", "eu-west"),
        ]
    }
    shared = [connections["shared-us"], connections["shared-eu"]]
    Tenant.objects.bulk_create(
        (
            Tenant(
                slug=f"t{i:05d}",
                name=f"Tenant {i}",
                connection=shared[i % 2],
                schema_name=f"tenant_t{i:05d}",
            )
            for i in range(TENANTS)
        ),
        batch_size=2000,
    )
    tenants = list(Tenant.objects.select_related("connection").order_by("pk"))
    now = timezone.now()
    MigrationExecution.objects.bulk_create(
        MigrationExecution(
            scope="tenant",
            status=ExecutionStatus.COMPLETED if i % 10 else ExecutionStatus.FAILED,
            executed_by="bench",
            origin=Origin.API,
            targets_total=20,
            targets_succeeded=20 if i % 10 else 18,
            targets_failed=0 if i % 10 else 2,
            started_at=now - timedelta(days=30, minutes=i),
            completed_at=now - timedelta(days=30, minutes=i) + timedelta(seconds=40),
        )
        for i in range(OLD_EXECUTIONS)
    )

    def runs(execution: MigrationExecution, status_of, to_version: str) -> list[TargetRun]:
        rows = []
        for index, tenant in enumerate(tenants):
            status = status_of(index)
            done = status in (TargetStatus.SUCCEEDED, TargetStatus.FAILED)
            rows.append(
                TargetRun(
                    execution=execution,
                    connection=tenant.connection,
                    tenant=tenant,
                    schema_name=tenant.schema_name,
                    database_type="tenant",
                    region=tenant.connection.region,
                    server="127.0.0.1:5432",
                    status=status,
                    from_version="" if to_version == "8" else "8",
                    to_version=to_version if status == TargetStatus.SUCCEEDED else "",
                    pending_versions=["9"] if to_version == "9" else [str(v) for v in range(1, 9)],
                    applied_versions=applied(range(1, 9) if to_version == "8" else range(9, 10))
                    if status == TargetStatus.SUCCEEDED
                    else [],
                    error={
                        "kind": "sql",
                        "message": 'relation "projects" already exists',
                        "sqlstate": "42P07",
                        "version": "9",
                        "script": "V9__script.sql",
                        "statement": STATEMENT,
                        "statement_index": 0,
                    }
                    if status == TargetStatus.FAILED
                    else None,
                    worker="bench:1" if status != TargetStatus.PENDING else "",
                    started_at=now if status != TargetStatus.PENDING else None,
                    heartbeat_at=now if status == TargetStatus.RUNNING else None,
                    completed_at=now if done else None,
                    duration_ms=150 if done else None,
                )
            )
        return rows

    previous = MigrationExecution.objects.create(
        scope="tenant",
        status=ExecutionStatus.COMPLETED,
        executed_by="bench",
        targets_total=TENANTS,
        targets_succeeded=TENANTS,
        started_at=now - timedelta(days=1),
        completed_at=now - timedelta(days=1) + timedelta(minutes=20),
    )
    TargetRun.objects.bulk_create(runs(previous, lambda i: TargetStatus.SUCCEEDED, "8"), batch_size=2000)

    def current_status(index: int) -> str:
        if index < SUCCEEDED:
            return TargetStatus.FAILED if index % (SUCCEEDED // FAILED) == 0 else TargetStatus.SUCCEEDED
        if index < SUCCEEDED + RUNNING:
            return TargetStatus.RUNNING
        return TargetStatus.PENDING

    execution = MigrationExecution.objects.create(
        scope="tenant",
        status=ExecutionStatus.IN_PROGRESS,
        executed_by="bench",
        origin=Origin.ADMIN,
        batch_size=40,
        targets_total=TENANTS,
        targets_succeeded=SUCCEEDED - FAILED,
        targets_failed=FAILED,
        run_duration_ms=150 * (SUCCEEDED - FAILED),
        runs_timed=SUCCEEDED - FAILED,
        started_at=now - timedelta(minutes=5),
        active_at=now,
    )
    TargetRun.objects.bulk_create(runs(execution, current_status, "9"), batch_size=2000)
    user = User.objects.create_user("bench-operator", password="x")
    user.groups.add(Group.objects.get_or_create(name=roles.MIGRATIONS_EXECUTE)[0])
    return execution, user


def pages(execution: MigrationExecution) -> dict[str, str]:
    urls = {
        "execution change list": reverse("admin:migrations_runner_migrationexecution_changelist"),
        "execution detail": reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk]),
        "progress fragment": reverse(
            "admin:migrations_runner_migrationexecution_progress_fragment", args=[execution.pk]
        ),
    }
    try:
        fleet = reverse("admin:migrations_runner_fleet")
    except NoReverseMatch:
        print("the fleet view (admin:migrations_runner_fleet) is not there: not measured", flush=True)
    else:
        urls["fleet view"] = fleet
        urls["fleet view, state=behind, page 50"] = f"{fleet}?state=behind&page=50"
    return urls


def measure(client: Client, url: str, *, n: int, warmup: int) -> dict:
    for _ in range(warmup):
        assert client.get(url).status_code == 200, url
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    queries = len(captured)  # read now: the next request clears the connection's query log
    timings, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        timings.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        assert response.status_code == 200, url
    return {
        "url": url,
        "n": n,
        "p50_ms": round(percentile(timings, 50), 1),
        "p95_ms": round(percentile(timings, 95), 1),
        "max_ms": round(max(timings), 1),
        # This process's CPU time (Python and SQLite, both in-process): what the page costs, whatever else runs.
        "cpu_p50_ms": round(percentile(cpu, 50), 1),
        "cpu_p95_ms": round(percentile(cpu, 95), 1),
        "queries": queries,
        "bytes": len(response.content),
    }


def profile(client: Client, url: str, *, requests: int = 5, top: int = 20) -> str:
    """cProfile of ``requests`` renders of ``url``: the project's functions by cumulative time, then every
    function by its own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(url)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(rf"{ROOT}/(?!\.venv)", top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile every page whose p95 misses the goal")
    args = parser.parse_args()

    start = time.perf_counter()
    execution, user = build_fixture()
    print(f"fixture: {TENANTS} tenants, {TargetRun.objects.count()} target runs in {time.perf_counter() - start:.1f} s")
    client = Client()
    client.force_login(user)
    urls = pages(execution)
    results = {name: measure(client, url, n=args.requests, warmup=args.warmup) for name, url in urls.items()}

    columns = ("p50_ms", "p95_ms", "max_ms", "cpu_p50_ms", "cpu_p95_ms", "queries")
    print(f"\n{'page':<36}" + "".join(f"{c:>11}" for c in columns) + f"  goal p95 < {GOAL_P95_MS:.0f} ms")
    for name, row in results.items():
        verdict = "ok" if row["p95_ms"] < GOAL_P95_MS else "MISSED"
        print(f"{name:<36}" + "".join(f"{row[c]:>11}" for c in columns) + f"  {verdict}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    missed = [name for name, row in results.items() if row["p95_ms"] >= GOAL_P95_MS]
    profiles = {}
    if args.profile:
        for name in missed:
            profiles[name] = profile(client, results[name]["url"])
            print(f"\n--- cProfile of {name} ({results[name]['url']}) ---\n{profiles[name]}")
    write_results(
        RESULTS_DIR / "admin_render.json",
        {
            "fixture": {
                "tenants": TENANTS,
                "target_runs_of_the_execution": TENANTS,
                "target_runs_total": TargetRun.objects.count(),
                "executions": MigrationExecution.objects.count(),
                "control_database": "sqlite",
            },
            "client": "django.test.Client, force_login, in-process",
            "requests": args.requests,
            "warmup": args.warmup,
            "goal_p95_ms": GOAL_P95_MS,
            "pages": results,
            "missed_goal": missed,
            "load_average_1min": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "profiles": profiles,
        },
    )


if __name__ == "__main__":
    main()
