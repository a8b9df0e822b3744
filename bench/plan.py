"""Benchmark: a dry-run plan over 10,000 tenant schemas that are all one version behind: seconds and peak memory.

Run: ``.venv/bin/python bench/plan.py`` (or ``make bench``); a quick check: ``--tenants 1000 --rounds 1``.

The fixture: one database of an embedded PostgreSQL 16 with N schemas, each holding only the history table the
engine creates (``history.CREATE_TABLE``) with the rows of every tenant version but the last and of the
repeatable script, so every target's plan has exactly one pending version (checked). One psycopg session creates
them, 250 schemas per batch of statements (one transaction each). The tenants are registered in the control
database with ``bench.support.register_fleet``: the connection through ``connection_create``, the tenants with
``bulk_create``, skipping ``tenant_create``'s per-tenant validation and lookups (a fixture, not what is measured).

Measured on a SQLite and on a PostgreSQL control database (the same embedded server), each operation in a fresh
child process so that its peak memory is its own, in alternating rounds (the best time counts):

- ``selector``: ``selectors.plan(TargetSelection(scope="tenant", connections=[...]))``;
- ``dry_run``: ``services.execution_start(dry_run=True, ...)``: plans, and records the execution and its N target
  runs (deleted again after the measurement, untimed);
- ``api``: ``POST /api/v1/migrations/dynamic/plan/`` through DRF's ``APIClient`` in the child (the whole
  middleware and view stack and the JSON rendering of the N rows, no socket; the user is force-authenticated).

Memory, per operation: ``ru_maxrss``, the peak resident set size of the whole child process (interpreter, Django
and the operation; also given just before the operation), from the timed runs; and the ``tracemalloc`` peak,
the Python allocations of the operation alone, from one more run (tracing slows the run, so it is not timed).
Goal: under 5 s, peak under 300 MB. Prints the figures and writes ``bench/results/plan.json``; the server and
the work directory are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from bench.support import RESULTS_DIR, bench_server, create_database, history_statements, workdir, write_results  # noqa: E402

MODES = ("selector", "dry_run", "api")
CONNECTION = "plan-fleet"
USER = ("bench-plan-reader", "bench-plan-reader-password")
GOAL_S, GOAL_MB = 5.0, 300


# --- the fixture --------------------------------------------------------------------------------------------------


def create_schemas(server, database: str, n: int, batch: int = 250) -> float:
    """Create N tenant schemas one version behind (history rows only); return the seconds it took."""
    import psycopg

    from migrations_runner.engine.sets import load_set

    tenant = load_set(ROOT / "migration_sets" / "tenant", "tenant")
    applied = [*tenant.versions[:-1], *tenant.repeatables]
    started = time.perf_counter()
    with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
        for first in range(0, n, batch):
            statements = []
            for i in range(first, min(first + batch, n)):
                schema = f"tenant_p{i:05d}"
                statements.append(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                statements += history_statements(schema, applied)
            # One simple-protocol round trip, one implicit transaction per batch.
            conn.execute(sql.SQL(";\n").join(statements))
    return time.perf_counter() - started


def child_env(control_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENVIRONMENT": "testing",
        "ENV_FILE": os.devnull,
        "ADMIN_DATABASE_URL": control_url,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }


def child(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=1800
    )
    if result.returncode != 0:
        raise SystemExit(f"plan.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- children -----------------------------------------------------------------------------------------------------


def setup_django() -> None:
    import django

    django.setup()


def register_main(argv: list[str]) -> None:
    """``plan.py register``: migrate the control database, register the fleet and a ``migrations:read`` user."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--tenants", type=int, required=True)
    args = parser.parse_args(argv)
    setup_django()
    from types import SimpleNamespace

    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from bench.support import register_fleet
    from infra_site import roles

    call_command("migrate", verbosity=0)
    server = SimpleNamespace(
        host="127.0.0.1", port=int(os.environ["BENCH_PG_PORT"]), password=os.environ["BENCH_PG_PASSWORD"]
    )
    started = time.perf_counter()
    register_fleet(
        server=server,
        database=args.database,
        name=CONNECTION,
        region="plan",
        slugs=[f"p{i:05d}" for i in range(args.tenants)],
    )
    seconds = time.perf_counter() - started
    user = User.objects.create_user(USER[0], password=USER[1])
    user.groups.add(Group.objects.get_or_create(name=roles.MIGRATIONS_READ)[0])
    print(json.dumps({"register_s": seconds}))


def measure_main(argv: list[str]) -> None:
    """``plan.py measure``: run one operation once in this fresh process; print its time and memory as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    import resource
    import tracemalloc

    setup_django()
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from migrations_runner import selectors, services
    from migrations_runner.models import MigrationExecution, Origin
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection

    client = APIClient()
    client.force_authenticate(User.objects.get(username=USER[0]))
    # What every mode needs before its first query (imports, the connection), so only the operation is timed.
    MigrationExecution.objects.exists()

    def run():
        if args.mode == "selector":
            return selectors.plan(TargetSelection(scope="tenant", connections=[CONNECTION]))
        if args.mode == "dry_run":
            return services.execution_start(
                selection=TargetSelection(scope="tenant", connections=[CONNECTION]),
                options=ExecutionOptions(dry_run=True),
                actor="bench",
                origin=Origin.API,
                wait=True,
            )
        response = client.post(
            "/api/v1/migrations/dynamic/plan/", {"scope": "tenant", "connections": [CONNECTION]}, format="json"
        )
        assert response.status_code == 200, response.content[:500]
        return response.content

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.trace:
        tracemalloc.start()
    started = time.perf_counter()
    outcome = run()
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.trace else None
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.mode == "selector":
        pending = {len(row.pending) for row in outcome}
        count, extra = len(outcome), {}
    elif args.mode == "dry_run":
        pending = {len(p) for p in outcome.targets.values_list("pending_versions", flat=True).iterator()}
        count, extra = outcome.targets_total, {"status": outcome.status, "succeeded": outcome.targets_succeeded}
        outcome.delete()
    else:
        body = json.loads(outcome)
        pending = {len(row["pending"]) for row in body["targets"]}
        count, extra = body["count"], {"response_mb": round(len(outcome) / 2**20, 2)}
    if count != args.tenants or pending != {1}:
        raise SystemExit(f"{args.mode}: {count} targets, pending counts {pending}; expected {args.tenants} and {{1}}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "load_average_1min": round(os.getloadavg()[0], 2),
                "ru_maxrss_before_mb": round(rss_before, 1),
                "ru_maxrss_mb": round(rss_peak, 1),
                "tracemalloc_peak_mb": round(traced_peak, 1) if traced_peak is not None else None,
                "targets": count,
                **extra,
            }
        )
    )


# --- main ---------------------------------------------------------------------------------------------------------


def measure_control(env: dict[str, str], n: int, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for round_no in range(rounds):
        order = MODES if round_no % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            runs[mode].append(child(env, "measure", "--mode", mode, "--tenants", str(n)))
    summary = {}
    for mode in MODES:
        traced = child(env, "measure", "--mode", mode, "--tenants", str(n), "--trace")
        best = min(runs[mode], key=lambda r: r["seconds"])
        summary[mode] = {
            "seconds": round(best["seconds"], 3),
            "all_rounds_s": [round(r["seconds"], 3) for r in runs[mode]],
            "load_average_1min_of_rounds": [r["load_average_1min"] for r in runs[mode]],
            "ru_maxrss_mb": max(r["ru_maxrss_mb"] for r in runs[mode]),
            "ru_maxrss_before_operation_mb": min(r["ru_maxrss_before_mb"] for r in runs[mode]),
            "tracemalloc_peak_mb": traced["tracemalloc_peak_mb"],
            "seconds_while_tracing": round(traced["seconds"], 3),
            **{k: v for k, v in best.items() if k in ("status", "succeeded", "response_mb")},
        }
        summary[mode]["goal_met"] = summary[mode]["seconds"] < GOAL_S and summary[mode]["ru_maxrss_mb"] < GOAL_MB
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per control database.")
    parser.add_argument("--controls", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "plan.json")
    args = parser.parse_args()

    results = {
        "tenants": args.tenants,
        "pending_per_target": 1,
        "rounds": args.rounds,
        "memory": "ru_maxrss: peak RSS of the whole child process (max over the timed rounds); tracemalloc: peak "
        "Python allocations of the operation alone (one traced, untimed run)",
        "goal": {"seconds": GOAL_S, "peak_mb": GOAL_MB},
        "controls": {},
    }
    with workdir("bench-plan-") as scratch, bench_server() as server:
        create_database(server, "plan_fleet")
        results["fixture_create_s"] = round(create_schemas(server, "plan_fleet", args.tenants), 1)
        print(f"fixture: {args.tenants} schemas one version behind in {results['fixture_create_s']}s", flush=True)
        for control in args.controls:
            if control == "postgresql":
                create_database(server, "plan_control")
                url = server.url("plan_control")
            else:
                url = f"sqlite:///{scratch / 'control.sqlite3'}"
            env = {**child_env(url), "BENCH_PG_PORT": str(server.port), "BENCH_PG_PASSWORD": server.password}
            registered = child(env, "register", "--database", "plan_fleet", "--tenants", str(args.tenants))
            summary = measure_control(env, args.tenants, args.rounds)
            results["controls"][control] = {"register_fixture_s": round(registered["register_s"], 1), **summary}
            for mode, figures in summary.items():
                print(
                    f"{control:<10} {mode:<9} {figures['seconds']:7.3f}s (goal < {GOAL_S:.0f}s)  "
                    f"ru_maxrss {figures['ru_maxrss_mb']:6.1f} MB (before the operation "
                    f"{figures['ru_maxrss_before_operation_mb']:.1f}; goal < {GOAL_MB})  tracemalloc peak "
                    f"{figures['tracemalloc_peak_mb']:6.1f} MB  {'met' if figures['goal_met'] else 'MISSED'}"
                    f"  rounds {figures['all_rounds_s']}",
                    flush=True,
                )
    write_results(args.output, results)


if __name__ == "__main__":
    commands = {"register": register_main, "measure": measure_main}
    if sys.argv[1:2] and sys.argv[1] in commands:
        commands[sys.argv[1]](sys.argv[2:])
    else:
        main()
