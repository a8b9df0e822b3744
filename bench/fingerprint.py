"""Benchmark: a fleet fingerprint scan of 1,000 tenant schemas, and what recording a fingerprint adds to each run.

Run: ``.venv/bin/python bench/fingerprint.py`` (or ``make bench``); about two minutes on 2 cores. A quick check:
``--tenants 200 --rounds 1 --run-tenants 40``.

Starts an embedded PostgreSQL 16 and a SQLite control database in a work directory, then:

- fixture: N tenant schemas (default 1,000) in one database, each holding what the shipped tenant set creates
  and its history rows, written by one psycopg session (the scripts as rendered for the schema, ``CONCURRENTLY``
  dropped so that ten schemas go in one round trip); registered with ``bench.support.register_fleet``;
- scan: ``services.fleet_fingerprint_scan`` over the N tenants (what ``fleet_fingerprint --scan`` and the API
  call): chunks of ``SCAN_CHUNK`` schemas, at most ``MIGRATION_MAX_PER_DATABASE`` (4) at once on the server,
  recorded in the control database; the best of ``--rounds`` (goal: under 10 s), and once with the cap at 1 (one
  connection at a time) for comparison. Checked: every tenant scanned, one fingerprint, no outlier. Then two
  tenants are altered by hand and scanned again: exactly those two are outliers. Also the report
  (``fingerprint_report``, control database only) over the N recorded fingerprints;
- the catalog query of one schema on that database of N schemas (what recording after a run sends), mean of 50;
- recording after runs: ``services.execution_start`` over ``--run-tenants`` fresh schemas (4 lanes in this
  process), timing every ``fingerprint_record`` call of the lanes (per target: p50, p95, mean wall time, and the
  mean CPU time of this process in the lane's thread); and the same run
  with recording replaced by a no-op, in alternating rounds, for the end-to-end difference per target
  (``(with_s - without_s) * lanes / targets``; noisy, the machine is shared).

The machine's 1-minute load average is recorded with each figure. Prints the figures and writes
``bench/results/fingerprint.json``; the server and the work directory are removed at the end.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
atexit.register(shutil.rmtree, WORKDIR, True)
os.environ["ADMIN_DATABASE_URL"] = f"sqlite:///{WORKDIR / 'control.sqlite3'}"
for _name, _value in {
    "DJANGO_SETTINGS_MODULE": "infra_site.settings",
    "ENVIRONMENT": "testing",
    "LOG_LEVEL": "WARNING",
    "ENV_FILE": os.devnull,
}.items():
    os.environ[_name] = _value

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.support import (  # noqa: E402
    RESULTS_DIR,
    SETS_DIR,
    bench_server,
    create_database,
    drop_database,
    history_statements,
    percentile,
    register_fleet,
    write_results,
)
from connections.models import DatabaseConnection  # noqa: E402
from migrations_runner import services  # noqa: E402
from migrations_runner.engine import fingerprint  # noqa: E402
from migrations_runner.engine.sets import MigrationSet, load_set  # noqa: E402
from migrations_runner.models import Origin, SchemaFingerprint, SchemaShape  # noqa: E402
from migrations_runner.options import ExecutionOptions  # noqa: E402
from migrations_runner.selection import TargetSelection  # noqa: E402
from migrations_runner.selectors import fingerprints as fingerprint_selectors  # noqa: E402
from migrations_runner.services import fingerprints as fingerprint_services  # noqa: E402

GOAL_S = 10.0
FLEET = "fp-fleet"
SCHEMAS_PER_ROUND_TRIP = 10


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- the fixture --------------------------------------------------------------------------------------------------


def migrated_schema_sql(schema: str, mset: MigrationSet) -> str:
    """What the tenant set creates in ``schema`` and its history rows, as one string of statements."""
    scripts = [*mset.versions, *mset.repeatables]
    context = {"schema": schema, "tenant_slug": schema.removeprefix("tenant_"), "region": "", "database_type": "tenant"}
    parts = [
        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)),
        sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)),
    ]
    # In one implicit transaction of many statements, indexes cannot be built CONCURRENTLY: the same index.
    parts += [sql.SQL(s.render(context).replace("CONCURRENTLY", "")) for s in scripts]
    parts += history_statements(schema, scripts)
    parts.append(sql.SQL("RESET search_path"))
    return sql.SQL(";\n").join(parts).as_string(None)


def create_fleet(server, database: str, slugs: list[str]) -> float:
    """N migrated tenant schemas in ``database``; returns the seconds it took."""
    mset = load_set(SETS_DIR / "tenant", "tenant")
    started = time.perf_counter()
    with psycopg.connect(**server.conninfo(database), autocommit=True) as conn:
        for first in range(0, len(slugs), SCHEMAS_PER_ROUND_TRIP):
            batch = slugs[first : first + SCHEMAS_PER_ROUND_TRIP]
            conn.execute(";\n".join(migrated_schema_sql(f"tenant_{slug}", mset) for slug in batch))
    return time.perf_counter() - started


# --- the scan -----------------------------------------------------------------------------------------------------


def scan(n: int, *, cap: int) -> dict:
    with override_settings(MIGRATION_MAX_PER_DATABASE=cap):
        result = services.fleet_fingerprint_scan(selection=TargetSelection(scope="tenant", connections=[FLEET]))
    if result.scanned != n or result.unreachable:
        raise SystemExit(f"scan: {result.scanned} of {n} scanned, unreachable {result.unreachable}")
    return {"seconds": result.seconds, "load_average_1min": load()}


def report_seconds() -> tuple[float, fingerprint_selectors.FingerprintReport]:
    started = time.perf_counter()
    report = fingerprint_selectors.fingerprint_report(TargetSelection(scope="tenant"))
    return time.perf_counter() - started, report


def scan_section(server, n: int, rounds: int) -> dict:
    slugs = [f"f{i:05d}" for i in range(n)]
    create_database(server, "fp_fleet")
    fixture_s = create_fleet(server, "fp_fleet", slugs)
    print(f"fixture: {n} migrated tenant schemas in {fixture_s:.1f}s", flush=True)
    register_fleet(server=server, database="fp_fleet", name=FLEET, region="fp", slugs=slugs)
    runs = [scan(n, cap=4) for _ in range(rounds)]
    sequential = scan(n, cap=1)
    best = min(runs, key=lambda r: r["seconds"])
    report_s, report = report_seconds()
    if SchemaShape.objects.count() != 1 or report.outliers or report.targets != n:
        raise SystemExit(f"expected one fingerprint and no outlier, got {report.as_dict()['groups']}")
    print(
        f"scan of {n} tenants: {best['seconds']:.2f}s (goal < {GOAL_S:.0f}s: "
        f"{'met' if best['seconds'] < GOAL_S else 'MISSED'}; rounds {[round(r['seconds'], 2) for r in runs]}), "
        f"one connection at a time {sequential['seconds']:.2f}s; report over {n} recorded: {report_s * 1000:.0f} ms",
        flush=True,
    )
    with psycopg.connect(**server.conninfo("fp_fleet"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {}.tasks ADD COLUMN archived boolean").format(sql.Identifier("tenant_f00007"))
        )
        conn.execute(sql.SQL("DROP INDEX {}.tasks_open_due_date_idx").format(sql.Identifier("tenant_f00100")))
        single = []
        for slug in slugs[:50]:
            started = time.perf_counter()
            fingerprint.read_fingerprints(conn, [f"tenant_{slug}"])
            single.append((time.perf_counter() - started) * 1000)
    altered = scan(n, cap=4)
    _, report = report_seconds()
    outliers = {o.schema: [e.text for e in o.diff] for o in report.outliers}
    if set(outliers) != {"tenant_f00007", "tenant_f00100"}:
        raise SystemExit(f"expected 2 outliers, got {outliers}")
    print(f"  after altering 2 tenants: {altered['seconds']:.2f}s, outliers {outliers}", flush=True)
    print(
        f"  catalog query of one schema on a database of {n}: mean {statistics.mean(single):.2f} ms, "
        f"p95 {percentile(single, 95):.2f} ms",
        flush=True,
    )
    DatabaseConnection.objects.filter(name=FLEET).update(is_active=False)
    drop_database(server, "fp_fleet")
    return {
        "tenants": n,
        "fixture_create_s": round(fixture_s, 1),
        "scan_s": round(best["seconds"], 3),
        "scan_rounds_s": [round(r["seconds"], 3) for r in runs],
        "scan_load_average_1min": [r["load_average_1min"] for r in runs],
        "scan_one_connection_at_a_time_s": round(sequential["seconds"], 3),
        "scan_with_2_outliers_s": round(altered["seconds"], 3),
        "outliers_found": outliers,
        "report_ms": round(report_s * 1000, 1),
        "catalog_query_one_schema_ms": {
            "mean": round(statistics.mean(single), 3),
            "p95": round(percentile(single, 95), 3),
        },
        "goal_s": GOAL_S,
        "goal_met": best["seconds"] < GOAL_S,
    }


# --- recording after runs ------------------------------------------------------------------------------------------


class _TimedFlush:
    """``FingerprintBuffer._read_and_store`` (a batch read and stored, beside the lane or in it) with each call timed
    (wall time, and this process's CPU time in the thread that does it; the rest is the server's work on the catalog
    query, the control database, and waiting for the cores)."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.targets = 0
        self._lock = threading.Lock()
        self._flush = fingerprint_services.FingerprintBuffer._read_and_store

    def __enter__(self) -> _TimedFlush:
        timed, flush = self, self._flush

        def timed_flush(buffer: fingerprint_services.FingerprintBuffer, runs: list) -> None:
            count = len(runs)
            started, cpu = time.perf_counter(), time.thread_time()
            flush(buffer, runs)
            if count:
                with timed._lock:
                    timed.ms.append((time.perf_counter() - started) * 1000)
                    timed.cpu_ms.append((time.thread_time() - cpu) * 1000)
                    timed.targets += count

        fingerprint_services.FingerprintBuffer._read_and_store = timed_flush
        return self

    def __exit__(self, *exc) -> None:
        fingerprint_services.FingerprintBuffer._read_and_store = self._flush


def migrate_run(server, label: str, m: int, lanes: int, record: bool) -> float:
    database = f"fp_run_{label}"
    create_database(server, database)
    name = f"fp-run-{label}"
    register_fleet(
        server=server, database=database, name=name, region="run", slugs=[f"r{label}x{i:04d}" for i in range(m)]
    )
    with override_settings(MIGRATION_FINGERPRINT_AFTER_RUN=record):
        started = time.perf_counter()
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[name]),
            options=ExecutionOptions(batch_size=lanes),
            actor="bench",
            origin=Origin.API,
            wait=True,
        )
        seconds = time.perf_counter() - started
    if execution.status != "completed" or execution.targets_succeeded != m:
        raise SystemExit(f"run {label} ended {execution.status}: {execution.error}")
    DatabaseConnection.objects.filter(name=name).update(is_active=False)
    drop_database(server, database)
    return seconds


def recording_section(server, m: int, rounds: int, lanes: int = 4) -> dict:
    with_s, without_s, loads = [], [], []
    with _TimedFlush() as timed:
        for number in range(rounds):
            order = ("with", "without") if number % 2 == 0 else ("without", "with")
            for variant in order:
                seconds = migrate_run(server, f"{variant}{number}", m, lanes, variant == "with")
                (with_s if variant == "with" else without_s).append(seconds)
                loads.append(load())
    recorded = SchemaFingerprint.objects.filter(execution__isnull=False).count()
    if recorded != m * rounds or timed.targets != m * rounds:
        raise SystemExit(f"recording: {recorded} fingerprints recorded, {timed.targets} flushed, expected {m * rounds}")
    end_to_end = (min(with_s) - min(without_s)) * lanes / m * 1000
    figures = {
        "targets_per_run": m,
        "lanes": lanes,
        "rounds": rounds,
        "batches": len(timed.ms),
        "record_ms_per_target": {
            "wall": round(sum(timed.ms) / timed.targets, 2),
            "client_cpu": round(sum(timed.cpu_ms) / timed.targets, 2),
            "batch_p95_ms": round(percentile(timed.ms, 95), 2),
        },
        "run_with_recording_s": [round(s, 2) for s in with_s],
        "run_without_recording_s": [round(s, 2) for s in without_s],
        "end_to_end_ms_per_target": round(end_to_end, 2),
        "end_to_end_definition": "(best with - best without) * lanes / targets",
        "run_ms_per_target_and_lane": round(min(without_s) * lanes / m * 1000, 1),
        "load_average_1min": loads,
    }
    record = figures["record_ms_per_target"]
    print(
        f"recording after a run ({m} targets, {lanes} lanes, {len(timed.ms)} batches): {record['wall']:.2f} ms per "
        f"target (client CPU {record['client_cpu']:.2f}; batch p95 {record['batch_p95_ms']:.1f} ms) against "
        f"{figures['run_ms_per_target_and_lane']} ms per target and lane for the run itself; end to end "
        f"{end_to_end:+.2f} ms per target "
        f"(with {figures['run_with_recording_s']} s, without {figures['run_without_recording_s']} s)",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="Tenant schemas scanned.")
    parser.add_argument("--rounds", type=int, default=3, help="Scans of them (the best counts).")
    parser.add_argument("--run-tenants", type=int, default=200, help="Tenants of each run with and without recording.")
    parser.add_argument("--run-rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "fingerprint.json")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with bench_server() as server:
        results = {
            "scan": scan_section(server, args.tenants, args.rounds),
            "recording": recording_section(server, args.run_tenants, args.run_rounds),
        }
    write_results(args.output, results)


if __name__ == "__main__":
    main()
