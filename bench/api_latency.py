"""Benchmark: API latency (p50/p95), 16 concurrent clients, 10,000 target runs, 10,000 executions, one running.

Run: ``.venv/bin/python bench/api_latency.py`` (or ``make bench``); a quick check:
``.venv/bin/python bench/api_latency.py --targets 1000 --executions 1000 --requests 10 --rounds 1``.

Everything runs on one embedded PostgreSQL 16 and the loopback interface:

- the control database is PostgreSQL (``ADMIN_DATABASE_URL=postgresql://...``), migrated by ``manage.py
  migrate``; ENVIRONMENT=testing, rate limit off;
- a finished execution of 10,000 target runs: planned by a dry run of ``services.execution_start`` over 10,000
  tenants (registered in bulk, ``bench.support.register_fleet``), then its runs and counters set in bulk to
  what a completed run of the tenant set records (a fixture: status, applied versions, timings, worker); and
  10,000 older finished executions (``--executions``, rows only) for the list; both tables then vacuumed and
  analyzed, as autovacuum leaves a table after many inserts;
- a running execution: a real ``qcluster`` (ORM broker on the control database, 2 workers) works its lanes over
  600 real tenant targets of a second database, with a tenant set of 2 versions that each ``pg_sleep`` 0.3 s,
  claiming and recording targets throughout the measurement (checked before and after);
- the server: ``gunicorn infra_site.wsgi:application`` with 2 sync workers, what ``manage.py serve
  --no-task-worker --workers 2`` starts, with an access log giving each request's time inside the worker
  (``%(D)s``), so queueing for a free worker shows as client latency minus server time;
- the client: a local user in the ``migrations:read`` group, HTTP Basic over real HTTP, with the default
  ``BASIC_AUTH_CACHE_SECONDS`` (30): each worker checks the login in full once (django-axes' lockout, the
  password hash, the user and its roles) and lets the same credentials from the same address in without any of
  it for 30 seconds. ENVIRONMENT=testing hashes passwords with MD5; what production's PBKDF2 costs a full
  check is measured apart and printed. Bearer tokens and sessions pay no password hash.

The pages of 100 target runs: the first page, the last page by cursor (the ``last`` link), and the last page by
offset, as older clients ask for it. The clients accept gzip, as HTTP clients do by default (``requests``,
browsers, ``curl --compressed``): the API sends its larger answers to reads compressed; the last page by cursor is
measured a second time by a client that does not (``, not compressed``), and each endpoint's bytes as sent are
recorded. Per endpoint, 16 client threads each send ``--requests`` GETs one after
another (a new connection each: sync workers close it), after a warm-up; rounds alternate the endpoints' order;
per endpoint the round with the lowest p95 counts (all rounds are kept). Also the SQL queries one request of
each endpoint makes and the latency of 20 requests one after the other (Django test client in this process),
and the PostgreSQL plans (``EXPLAIN ANALYZE``) of the page and list queries. Goals: p95 < 50 ms for the status,
the list and the first and last pages by cursor. Prints the figures and writes ``bench/results/api_latency.json``;
gunicorn, the cluster, the server and the work directory go at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import (  # noqa: E402
    RESULTS_DIR,
    SETS_DIR,
    bench_server,
    create_database,
    free_port,
    percentile,
    register_fleet,
    workdir,
    write_results,
)

USER = ("bench-api-reader", "bench-api-reader-password")
UNCOMPRESSED = ", not compressed"  # the endpoint measured with a client that does not accept gzip
CLIENTS = 16
GOAL_P95_MS = 50.0
SLOW_VERSIONS = 2


def slow_sets(dest: Path, sleep_s: float) -> Path:
    """A ``MIGRATIONS_DIR`` whose tenant set has versions that each sleep ``sleep_s`` on the server."""
    for database_type in ("admin", "shared", "analytics"):
        shutil.copytree(SETS_DIR / database_type, dest / database_type)
    (dest / "tenant").mkdir()
    for version in range(1, SLOW_VERSIONS + 1):
        (dest / "tenant" / f"V{version}__slow_step_{version}.sql").write_text(
            f"CREATE TABLE step_{version} (id integer);\nSELECT pg_sleep({sleep_s});\n"
        )
    return dest


def base_env(control_url: str, migrations_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENVIRONMENT": "testing",
        "ENV_FILE": os.devnull,
        "ADMIN_DATABASE_URL": control_url,
        "MIGRATIONS_DIR": str(migrations_dir),
        "MIGRATION_EXECUTOR": "queue",
        "RATE_LIMIT_ENABLED": "false",
        "BASIC_AUTH_CACHE_SECONDS": "30",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


# --- fixtures (this process runs Django on the control database once the server is up) -----------------------------


def big_execution(server, n: int):
    """A completed execution of N target runs, planned by the service and then set finished in bulk."""
    from datetime import timedelta

    from django.test.utils import override_settings
    from django.utils import timezone

    from migrations_runner import services
    from migrations_runner.engine.sets import load_set
    from migrations_runner.models import MigrationExecution, Origin, TargetRun
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection

    create_database(server, "api_big")
    fleet = register_fleet(
        server=server, database="api_big", name="big-fleet", region="big", slugs=[f"b{i:05d}" for i in range(n)]
    )
    with override_settings(MIGRATIONS_DIR=SETS_DIR):
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[fleet.name]),
            options=ExecutionOptions(dry_run=True),
            actor="bench",
            origin=Origin.COMMAND,
        )
    tenant = load_set(SETS_DIR / "tenant", "tenant")
    applied = [
        {"version": str(s.version), "script": s.filename, "duration_ms": 4, "kind": "SQL"} for s in tenant.versions
    ] + [{"version": "", "script": s.filename, "duration_ms": 2, "kind": "REPEATABLE"} for s in tenant.repeatables]
    now = timezone.now()
    TargetRun.objects.filter(execution=execution).update(
        status="succeeded",
        to_version=str(tenant.latest),
        applied_versions=applied,
        attempts=1,
        worker="bench-worker:4242",
        started_at=now - timedelta(minutes=5),
        completed_at=now,
        duration_ms=45,
    )
    MigrationExecution.objects.filter(pk=execution.pk).update(
        dry_run=False,
        status="completed",
        completed_at=now,
        current_phase=0,
        targets_succeeded=n,
        run_duration_ms=45 * n,
        runs_timed=n,
    )
    return execution.pk


def history_executions(count: int) -> None:
    """``count`` older finished executions of 50 targets each (rows only, one a minute before the other)."""
    from datetime import timedelta

    from django.utils import timezone

    from migrations_runner.models import MigrationExecution

    now = timezone.now()
    created = MigrationExecution.objects.bulk_create(
        (
            MigrationExecution(
                scope="tenant",
                status="completed",
                executed_by="bench",
                started_at=now,
                completed_at=now,
                targets_total=50,
                targets_succeeded=50,
                current_phase=0,
            )
            for _ in range(count)
        ),
        batch_size=1000,
    )
    for i, execution in enumerate(created):  # auto_now_add set them all to now
        execution.created_at = now - timedelta(minutes=count - i)
    MigrationExecution.objects.bulk_update(created, ["created_at"], batch_size=1000)


def settle(*models) -> None:
    """``VACUUM ANALYZE`` the tables the fixture wrote in bulk: what autovacuum does to a table after many inserts
    (PostgreSQL 13 and later vacuum on inserts too), so the measurement sees a control database in its steady
    state rather than the minute after a bulk load: plans on the tables' statistics (planning a run analyzes the
    runs table itself, services/executions.py), counts from the visibility map."""
    from django.db import connection

    with connection.cursor() as cursor:
        for model in models:
            cursor.execute("VACUUM ANALYZE " + connection.ops.quote_name(model._meta.db_table))


def query_plans(big) -> dict[str, dict]:
    """PostgreSQL's plans (``EXPLAIN ANALYZE``) of the statement the targets endpoint reads a page of 100 runs by
    cursor with (the execution's count, the page's keys and their runs, each with the JSON PostgreSQL keeps of it),
    for the first and the last page, of the keys of the last page by offset, and of the list's first page (its
    count, kept by triggers, its keys, then its executions' JSON): the index each reads, whether it sorts, and its
    execution time."""
    import uuid

    from django.db import connection
    from django.utils import timezone

    from infra_site.keyset import FIRST_PAGE, LAST_PAGE
    from migrations_runner import selectors
    from migrations_runner.selectors import executions

    runs = selectors.execution_target_rows(execution=selectors.execution_get(execution_id=big))
    count = runs.count()
    queries = {
        "targets last page (offset, keys)": runs.values_list("pk", flat=True)[max(0, count - 100) : count],
        "list (keys)": selectors.execution_list().values_list("pk", flat=True)[:50],
    }
    list_keys = list(queries["list (keys)"])
    key = uuid.UUID(str(big))
    raw: dict[str, tuple[str, list | dict]] = {
        # What a page by cursor is read with, and the list's count and executions (the JSON PostgreSQL keeps).
        "targets first page (one statement)": executions._target_page_query(key, None, FIRST_PAGE, 101),
        "targets last page (cursor, one statement)": executions._target_page_query(key, None, LAST_PAGE, 101),
        "list (count, kept)": (executions._EXECUTION_COUNT_SQL, []),
        "list (executions, rendered)": (executions._RENDERED_EXECUTIONS_SQL, [timezone.now(), list_keys]),
    }
    explained = {}
    with connection.cursor() as cursor:
        for name, (query, params) in raw.items():
            cursor.execute("EXPLAIN ANALYZE " + query, params)
            explained[name] = "\n".join(row[0] for row in cursor.fetchall())
    plans = {}
    for name, queryset in [*queries.items(), *explained.items()]:
        text = queryset if isinstance(queryset, str) else queryset.explain(analyze=True)
        indexes = sorted(
            {line.split(" using ")[1].split()[0] for line in text.splitlines() if " using " in line}
            | {
                line.split("Bitmap Index Scan on ")[1].split()[0]
                for line in text.splitlines()
                if "Bitmap Index" in line
            }
        )
        plans[name] = {
            "indexes": indexes,
            "sorts": "Sort" in text,
            "execution_ms": float(text.rsplit("Execution Time: ", 1)[1].split()[0]),
            "plan": text.splitlines(),
        }
    return plans


def reader_user() -> None:
    from django.contrib.auth.models import Group, User

    from infra_site import roles

    user = User.objects.create_user(USER[0], password=USER[1])
    user.groups.add(Group.objects.get_or_create(name=roles.MIGRATIONS_READ)[0])


def start_background(server, n: int, migrations_dir: Path):
    """Queue an execution over N tenants of the slow set (the cluster works it); return its id."""
    from django.test.utils import override_settings

    from migrations_runner import services
    from migrations_runner.models import Origin
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection

    create_database(server, "api_background")
    fleet = register_fleet(
        server=server,
        database="api_background",
        name="background-fleet",
        region="background",
        slugs=[f"g{i:05d}" for i in range(n)],
    )
    with override_settings(MIGRATIONS_DIR=migrations_dir):
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", connections=[fleet.name]),
            options=ExecutionOptions(batch_size=2),
            actor="bench",
            origin=Origin.COMMAND,
        )
    return execution.pk


def execution_state(pk) -> dict:
    from migrations_runner.models import MigrationExecution, TargetRun

    row = MigrationExecution.objects.filter(pk=pk).values("status", "targets_total", "targets_succeeded").get()
    row["running"] = TargetRun.objects.filter(execution_id=pk, status="running").count()
    return row


def password_hash_ms() -> dict:
    """What checking a password costs with production's hasher (PBKDF2, Django's default iterations)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    encoded = hasher.encode(USER[1], hasher.salt())
    times = []
    for _ in range(5):
        started = time.perf_counter()
        hasher.verify(USER[1], encoded)
        times.append((time.perf_counter() - started) * 1000)
    return {"pbkdf2_iterations": hasher.iterations, "ms_per_check": round(min(times), 1)}


def one_client(paths: dict[str, str], requests: int) -> tuple[dict[str, int], dict[str, dict]]:
    """The SQL queries one request of each endpoint makes, and the latency of ``requests`` requests one after the
    other, nothing else asking (Django's test client, HTTP Basic, in this process): what a request costs without
    waiting for a worker."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=basic_header())
    counts, latencies = {}, {}
    for name, path in paths.items():
        accept = {"HTTP_ACCEPT_ENCODING": "gzip"} if compressed(name) else {}
        client.get(path, **accept)  # warm: the first request of a process loads the URLconf and more
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, **accept)
        assert response.status_code == 200, (name, response.status_code, response.content[:300])
        counts[name] = len(captured.captured_queries)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path, **accept)
            times.append((time.perf_counter() - started) * 1000)
        latencies[name] = figures(times)
    return counts, latencies


# --- the server, the cluster, the clients ---------------------------------------------------------------------------


class Gunicorn:
    """``gunicorn infra_site.wsgi:application`` with sync workers and an access log of server-side durations."""

    def __init__(self, env: dict[str, str], port: int, workers: int, scratch: Path) -> None:
        self.env, self.port, self.workers = env, port, workers
        self.access_log = scratch / "access.log"
        self.error_log = scratch / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Gunicorn:
        command = [sys.executable, "-m", "gunicorn", "infra_site.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers), "--timeout", "120"]
        command += ["--access-logfile", str(self.access_log), "--access-logformat", "%(s)s %(D)s %(U)s"]
        command += ["--error-logfile", str(self.error_log)]
        self.process = subprocess.Popen(command, env=self.env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/api/v1/migrations/", headers={"Authorization": basic_header()})
                if conn.getresponse().status == 200:
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not start: {self.error_log.read_text()[-2000:]}")

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def server_ms(self, since: int) -> list[float]:
        """Server-side durations (ms) of the requests logged after byte ``since``."""
        time.sleep(0.2)  # gunicorn writes the line after the response
        with self.access_log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode().splitlines()
        return [int(line.split()[1]) / 1000 for line in lines if line.startswith("200 ")]

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def has_goal(endpoint: str) -> bool:
    return "offset" not in endpoint and compressed(endpoint)


def compressed(endpoint: str) -> bool:
    """Whether the client asks for gzip, as HTTP clients do by default (all but the one row measured without)."""
    return not endpoint.endswith(UNCOMPRESSED)


def last_link(port: int, path: str) -> str:
    """The path of the ``last`` link of the page at ``path``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": basic_header(), "Accept": "application/json"})
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return urlsplit(body["last"])._replace(scheme="", netloc="").geturl()


def basic_header() -> str:
    return "Basic " + base64.b64encode(f"{USER[0]}:{USER[1]}".encode()).decode()


def load(port: int, path: str, *, clients: int, requests: int, compressed: bool = True) -> tuple[list[float], int]:
    """``clients`` threads each GET ``path`` ``requests`` times, accepting gzip as HTTP clients do by default
    unless not ``compressed``; return every latency in ms (all must be 200, each body read in full and
    decompressed) and the bytes of the last body as sent."""
    headers = {"Authorization": basic_header(), "Accept": "application/json"}
    if compressed:
        headers["Accept-Encoding"] = "gzip"
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        mine = []
        start.wait()
        for _ in range(requests):
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                sent[0] = len(body)
                if response.getheader("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
            finally:
                conn.close()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                with lock:
                    errors.append(f"{response.status}: {body[:200]!r}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{path}: {len(errors)} request(s) failed, first {errors[0]}")
    return latencies, sent[0]


def figures(values: list[float]) -> dict:
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1),
        "requests": len(values),
    }


def measure(server: Gunicorn, paths: dict[str, str], *, rounds: int, requests: int) -> dict:
    for name, path in paths.items():  # warm-up: every worker loads its code and opens its pool
        load(server.port, path, clients=4, requests=3, compressed=compressed(name))
    rounds_by_endpoint: dict[str, list[dict]] = {name: [] for name in paths}
    for round_no in range(rounds):
        order = list(paths) if round_no % 2 == 0 else list(reversed(paths))
        for name in order:
            offset = server.log_offset()
            started = time.perf_counter()
            client_ms, sent = load(
                server.port, paths[name], clients=CLIENTS, requests=requests, compressed=compressed(name)
            )
            elapsed = time.perf_counter() - started
            rounds_by_endpoint[name].append(
                {
                    "client": figures(client_ms),
                    "response_bytes": sent,
                    "server": figures(server.server_ms(offset)),
                    "requests_per_s": round(len(client_ms) / elapsed, 1),
                    "load_average_1min": round(os.getloadavg()[0], 2),
                }
            )
    result = {}
    for name, measured in rounds_by_endpoint.items():
        best = min(measured, key=lambda r: r["client"]["p95_ms"])
        result[name] = {"path": paths[name], **best, "all_rounds": measured}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000, help="Target runs of the finished execution.")
    parser.add_argument("--executions", type=int, default=10_000, help="Older finished executions, for the list.")
    parser.add_argument("--background-targets", type=int, default=600)
    parser.add_argument("--background-sleep", type=float, default=0.3, help="pg_sleep of each of its 2 versions.")
    parser.add_argument("--requests", type=int, default=25, help="Requests per client, endpoint and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (WORKERS' default: 2).")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "api_latency.json")
    args = parser.parse_args()
    from tests.support.qcluster import Cluster

    cluster = gunicorn = None
    with workdir("bench-api-") as scratch, bench_server() as server:
        try:
            create_database(server, "api_control")
            env = base_env(server.url("api_control"), slow_sets(scratch / "sets", args.background_sleep))
            subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            os.environ.update(env)
            import django

            django.setup()
            from migrations_runner.models import MigrationExecution, TargetRun

            started = time.perf_counter()
            big = big_execution(server, args.targets)
            history_executions(args.executions)
            reader_user()
            settle(MigrationExecution, TargetRun)
            fixture_s = time.perf_counter() - started
            print(
                f"fixture: execution of {args.targets} target runs and {args.executions} older executions in "
                f"{fixture_s:.1f}s"
            )
            gunicorn = Gunicorn(env, free_port(), workers=args.workers, scratch=scratch).start()
            cluster = Cluster({**env, "LOG_LEVEL": "INFO"}, workers=2).start()
            background = start_background(server, args.background_targets, Path(env["MIGRATIONS_DIR"]))
            deadline = time.monotonic() + 60
            while execution_state(background)["running"] == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the background execution did not start: {cluster.output()[-2000:]}")
                time.sleep(0.2)
            last_page = max(0, args.targets - 100)
            targets = f"/api/v1/migrations/{big}/targets/?limit=100"
            paths = {
                f"status (finished, {args.targets} runs)": f"/api/v1/migrations/status/{big}/",
                "status (running)": f"/api/v1/migrations/status/{background}/",
                "targets first page": targets,
                "targets last page (cursor)": last_link(gunicorn.port, targets),
                f"targets last page (cursor){UNCOMPRESSED}": last_link(gunicorn.port, targets),
                f"targets ?offset={last_page}": f"{targets}&offset={last_page}",
                f"list ({args.executions + 2} executions)": "/api/v1/migrations/",
            }
            before = execution_state(background)
            measured = measure(gunicorn, paths, rounds=args.rounds, requests=args.requests)
            after = execution_state(background)
            queries, alone = one_client(paths, requests=20)
            plans = query_plans(big)
            hashing = password_hash_ms()
        finally:
            if gunicorn:
                gunicorn.stop()
            if cluster:
                cluster.stop()
                cluster.log.unlink(missing_ok=True)
    running_throughout = after["status"] == "in_progress" and after["running"] > 0
    worked = after["targets_succeeded"] - before["targets_succeeded"]
    results = {
        "clients": CLIENTS,
        "server": f"gunicorn infra_site.wsgi:application, {args.workers} sync workers; PostgreSQL control database",
        "auth": (
            "HTTP Basic, local user in migrations:read (ENVIRONMENT=testing: MD5 password hasher), verified logins "
            "remembered BASIC_AUTH_CACHE_SECONDS=30 (the default) per worker"
        ),
        "requests_per_client_endpoint_round": args.requests,
        "rounds": args.rounds,
        "execution_target_runs": args.targets,
        "executions": args.executions + 2,
        "background": {
            "targets": args.background_targets,
            "versions_sleep_s": [args.background_sleep] * SLOW_VERSIONS,
            "before": before,
            "after": after,
            "targets_done_during_measurement": worked,
            "running_throughout": running_throughout,
        },
        "goal": {"p95_ms": GOAL_P95_MS, "endpoints": [name for name in measured if has_goal(name)]},
        "endpoints": measured,
        "sql_queries_per_request": queries,
        "one_client_in_process": alone,
        "query_plans": plans,
        "production_password_hash": hashing,
    }
    print(
        f"{CLIENTS} clients, gunicorn {args.workers} sync workers, PostgreSQL control database; background execution "
        f"{'running throughout' if running_throughout else 'NOT running throughout'} ({worked} targets done meanwhile)"
    )
    print(f"{'endpoint':<34} {'p50':>7} {'p95':>7} {'max':>7}  server p50/p95   req/s  queries  alone p50")
    for name, figures_ in measured.items():
        client, server_side = figures_["client"], figures_["server"]
        mark = ""
        if has_goal(name):
            mark = "  goal met" if client["p95_ms"] < GOAL_P95_MS else f"  goal MISSED (p95 >= {GOAL_P95_MS:.0f} ms)"
        print(
            f"{name:<34} {client['p50_ms']:7.1f} {client['p95_ms']:7.1f} {client['max_ms']:7.1f}  "
            f"{server_side['p50_ms']:6.1f}/{server_side['p95_ms']:6.1f}  {figures_['requests_per_s']:6.1f}  "
            f"{queries[name]:4d}  {alone[name]['p50_ms']:9.1f}{mark}"
        )
    for name, query_plan in plans.items():
        how = ", ".join(query_plan["indexes"]) or "no index"
        sorts = "sorts" if query_plan["sorts"] else "no sort"
        print(f"plan of {name}: {how}, {sorts}, {query_plan['execution_ms']} ms")
    print(
        f"production's PBKDF2 ({hashing['pbkdf2_iterations']} iterations) would add {hashing['ms_per_check']} ms "
        "of CPU to each HTTP Basic request"
    )
    write_results(args.output, results)


if __name__ == "__main__":
    main()
