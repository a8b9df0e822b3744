"""Benchmark: the control plane's bookkeeping, queued lanes against a raw pool of as many connections, and how
often a control-database backend waits on the execution row.

Run: ``.venv/bin/python bench/control_plane.py`` (or ``make bench-control``; ``make bench`` includes it): 2,000
tenants, 1, 2, 4 and 8 lanes. A quick check: ``.venv/bin/python bench/control_plane.py --tenants 200 --lanes 1,4``.

On an embedded PostgreSQL 16 (its files in memory when there is room: ``support.bench_server``), the work is one
trivial version (``V1__t.sql``: ``CREATE TABLE t (id int);``) on each of N tenant schemas of one database, so that
what is measured is the bookkeeping around it, not the scripts. For each lane count L of ``--lanes``:

- raw pool: L threads of this process, each with one psycopg connection, applying to N new schemas what a run
  applies (the schema, the engine's history table, the version in a transaction with its history row) and nothing
  else (``fleet_migrate.run_raw_pool``), before and after every queued run: each queued run (``--rounds`` of them,
  default 1) is compared with the mean of the two raw pool runs around it, and the median round counts, because
  this machine's speed drifts by more than the difference measured; beside it, the best queued run against the
  best raw pool run, because this machine also switches between a fast and a slow state, the same work taking
  about twice the kernel time (each run's kernel share of the machine's CPU is recorded), and a pair of runs on
  either side of a switch measures the switch;
- queued: a fresh PostgreSQL control database (migrated, the N tenants registered by ``fleet_migrate.py register``)
  and a real ``qcluster`` with L workers on its ORM broker, ``MIGRATION_MAX_PER_DATABASE`` = L; a child process
  (``fleet_migrate.py submit``, the benchmarks' one call of the service that queues an execution) submits the
  execution with ``batch_size`` = L and polls its row. The time is the execution's ``started_at`` to
  ``completed_at``.

While the queued run goes, a thread of this process samples the control database every ``--sample-ms`` (default
20) from its own connection: a backend counts as waiting on the execution row when it waits on a lock
(``wait_event_type = 'Lock'``) and its lock on ``migrations_runner_migrationexecution`` is not granted (the table,
or the tuple a second waiter queues for) or is the tuple lock of the first waiter of a row (which then waits for
the holder's transaction). Of the samples taken between ``started_at`` and ``completed_at``: the lock-wait share
(samples with at least one such backend / samples), the mean number of such backends, and the same share for a
wait on any lock (the claim's advisory lock among them).

The same thread reads the CPU the server's processes spend meanwhile (``/proc``, every sample): the control
database's backends, the tenant database's and the server's own (WAL writer...). With the cluster's processes'
CPU and, for the raw pool, its client's and its connections' backends', each row says where a target's CPU goes
(``cpu_ms_per_target``): the work on the tenant schemas is the same on both sides, so what the queued run spends
above the raw pool is the control plane's.

Each variant uses fresh databases, so every run does the same work. Prints a table (lanes, seconds and targets/s of
both, the ratio, the lock-wait figures) with the machine's 1-minute load average, which is recorded too: the
benchmark shares the machine. Writes ``bench/results/control_plane.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Configures Django for this process (a control database of its own, unused here: the children have theirs).
from bench import fleet_migrate  # noqa: E402
from bench.fleet_migrate import (  # noqa: E402
    RawPoolRun,
    Work,
    cluster_cpu_s,
    machine_cpu_s,
    machine_system_s,
    run_raw_pool,
)
from bench.support import (  # noqa: E402
    RESULTS_DIR,
    ServerCpuSampler,
    bench_server,
    create_database,
    drop_database,
    server_cpu_split,
    workdir,
    write_results,
)
from migrations_runner.engine.sets import load_set  # noqa: E402

VERSION_FILE = "V1__t.sql"
STATEMENT = "CREATE TABLE t (id int);"
EXECUTION_TABLE = "migrations_runner_migrationexecution"
LOCK_WAIT_DEFINITION = (
    f"a control-database backend with wait_event_type 'Lock' whose lock on {EXECUTION_TABLE} is not granted, or is "
    "the tuple lock of a row's first waiter; share = samples with one or more / samples between the execution's "
    "started_at and completed_at"
)

# One row per sample: when (the server's clock), backends waiting on the execution row, backends waiting on any lock.
SAMPLE_QUERY = """
SELECT clock_timestamp(),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM pg_locks l
           WHERE l.pid = a.pid AND l.relation = %(table)s::regclass AND (NOT l.granted OR l.locktype = 'tuple')
       )),
       count(*)
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.wait_event_type = 'Lock'
"""


@dataclass(frozen=True)
class Sample:
    at: datetime
    execution_waiting: int
    any_waiting: int


class LockSampler(ServerCpuSampler):
    """A thread sampling the lock waits of a control database every ``period_s`` from a connection of its own, and
    the CPU of the server's processes with them."""

    thread_name = "lock-sampler"

    def __init__(self, conninfo: dict, period_s: float) -> None:
        super().__init__(conninfo, period_s)
        self.samples: list[Sample] = []

    def stop(self) -> list[Sample]:  # type: ignore[override]
        """Stop sampling and return the samples taken; raise when the sampler failed."""
        self._finish()
        return self.samples

    def sample(self, conn) -> None:
        rows = conn.execute(SAMPLE_QUERY, {"table": EXECUTION_TABLE}).fetchall()
        self.samples.extend(Sample(*row) for row in rows)
        super().sample(conn)


def lock_waits(samples: list[Sample], started_at: datetime, completed_at: datetime) -> dict:
    """The lock-wait figures of the samples taken while the execution ran."""
    during = [s for s in samples if started_at <= s.at <= completed_at]
    n = len(during)
    if not n:
        raise SystemExit("no lock sample fell between the execution's started_at and completed_at")
    return {
        "samples": n,
        "execution_row_share": round(sum(1 for s in during if s.execution_waiting) / n, 4),
        "execution_row_mean_waiting": round(sum(s.execution_waiting for s in during) / n, 3),
        "execution_row_max_waiting": max(s.execution_waiting for s in during),
        "any_lock_share": round(sum(1 for s in during if s.any_waiting) / n, 4),
        "any_lock_mean_waiting": round(sum(s.any_waiting for s in during) / n, 3),
    }


def trivial_work(directory: Path) -> Work:
    """A ``MIGRATIONS_DIR`` at ``directory`` whose tenant set is the one trivial version."""
    (directory / "tenant").mkdir(parents=True)
    (directory / "tenant" / VERSION_FILE).write_text(STATEMENT + "\n")
    return Work(directory, load_set(directory / "tenant", "tenant"))


def fleet_child(command: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``fleet_migrate.py <command>`` (``register`` or ``submit``) against the control database of ``env``."""
    return subprocess.run(
        [sys.executable, fleet_migrate.__file__, command, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
    )


def queued_run(server, *, n: int, lanes: int, work: Work, sample_s: float) -> dict:
    """Fresh control and tenant databases, a qcluster of ``lanes`` workers, the execution submitted and timed."""
    from tests.support.qcluster import Cluster

    control, database = f"control_q{lanes}", f"tenants_q{lanes}"
    env = {
        **os.environ,
        "ADMIN_DATABASE_URL": server.url(control),
        "MIGRATIONS_DIR": str(work.migrations_dir),
        "MIGRATION_EXECUTOR": "queue",
        "MIGRATION_MAX_PER_DATABASE": str(lanes),
        "Q_BROKER_URL": "",
        "LOG_LEVEL": "INFO",  # the cluster's "running." line tells it is up
        "PYTHONPATH": str(ROOT),
        "BENCH_PG_PORT": str(server.port),
        "BENCH_PG_PASSWORD": server.password,
    }
    cluster = None
    try:
        create_database(server, control)
        manage = [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"]
        subprocess.run(manage, env=env, check=True, capture_output=True, cwd=ROOT)
        create_database(server, database)
        registered = fleet_child(
            "register", "--tenants", str(n), "--label", f"q{lanes}", "--database", database, env=env
        )
        if registered.returncode != 0:
            raise SystemExit(f"registering the tenants failed: {registered.stderr[-2000:]}")
        name = registered.stdout.strip().splitlines()[-1]
        cluster = Cluster(env, workers=lanes).start()
        cpu = cluster_cpu_s(cluster)
        sampler = LockSampler(server.conninfo(control), sample_s).start()
        (busy, _), system = machine_cpu_s(), machine_system_s()
        try:
            submitted = fleet_child("submit", "--connection", name, "--batch-size", str(lanes), env=env)
        finally:
            samples = sampler.stop()
        (busy_end, _), system_end = machine_cpu_s(), machine_system_s()
        cpu = cluster_cpu_s(cluster) - cpu
        load = os.getloadavg()[0]
    finally:
        if cluster:
            cluster.stop()
            cluster.log.unlink(missing_ok=True)
        drop_database(server, database)
        drop_database(server, control)
    if submitted.returncode != 0:
        raise SystemExit(f"queued run failed: {submitted.stdout[-2000:]} {submitted.stderr[-2000:]}")
    row = json.loads(submitted.stdout.strip().splitlines()[-1])
    if row["status"] != "completed" or row["targets_succeeded"] != n:
        raise SystemExit(f"queued run ended {row['status']}: {row}")
    started_at, completed_at = datetime.fromisoformat(row["started_at"]), datetime.fromisoformat(row["completed_at"])
    return {
        "seconds": (completed_at - started_at).total_seconds(),
        "cluster_cpu_s": cpu,
        "system_share": (system_end - system) / (busy_end - busy) if busy_end > busy else 0.0,
        "lock_waits": lock_waits(samples, started_at, completed_at),
        "load": load,
        "server_cpu_s": server_cpu_split(sampler.cpu.by_group(), control=control, tenants=database),
    }


def measure(server, *, n: int, lanes: int, work: Work, sample_s: float, rounds: int) -> dict:
    """``rounds`` queued runs of ``lanes`` lanes, each between two runs of the raw pool of ``lanes`` connections (raw,
    queued, raw, queued, ..., raw) and compared with their mean: this machine's speed drifts by more than the
    difference measured. The median round counts; its figures are the row's. Beside it, the best queued run
    against the best raw pool run: this machine also switches between a fast and a slow state (the same work
    taking about twice the kernel time: each run's share of the machine's CPU spent in the kernel is recorded), and
    a pair of runs on either side of a switch measures the switch."""
    raws = [run_raw_pool(server, n, work, threads=lanes)]
    runs = []
    for _ in range(rounds):
        runs.append(queued_run(server, n=n, lanes=lanes, work=work, sample_s=sample_s))
        raws.append(run_raw_pool(server, n, work, threads=lanes))
    around = [(raws[i].seconds + raws[i + 1].seconds) / 2 for i in range(rounds)]
    ratios = [run["seconds"] / raw for run, raw in zip(runs, around, strict=True)]
    middle = fleet_migrate.median_round(ratios)
    queued, raw_s = runs[middle], around[middle]
    raw_cpu_s = (raws[middle].client_cpu_s + raws[middle + 1].client_cpu_s) / 2
    queued_s, waits = queued["seconds"], queued["lock_waits"]
    return {
        "lanes": lanes,
        "queued_s": round(queued_s, 3),
        "raw_pool_s": round(raw_s, 3),
        "raw_pool_around_s": [round(raws[middle].seconds, 3), round(raws[middle + 1].seconds, 3)],
        "ratio_queued_vs_raw_pool": round(statistics.median(ratios), 3),
        "ratio_queued_vs_raw_pool_rounds": [round(ratio, 3) for ratio in ratios],
        "queued_rounds_s": [round(run["seconds"], 3) for run in runs],
        "raw_pool_runs_s": [round(raw.seconds, 3) for raw in raws],
        "ratio_best_vs_best": round(min(run["seconds"] for run in runs) / min(raw.seconds for raw in raws), 3),
        "system_share_queued_rounds": [round(run["system_share"], 3) for run in runs],
        "system_share_raw_pool_runs": [
            round(raw.machine_system_s / raw.machine_busy_s, 3) if raw.machine_busy_s else 0.0 for raw in raws
        ],
        "queued_targets_per_s": round(n / queued_s, 1),
        "raw_pool_targets_per_s": round(n / raw_s, 1),
        "execution_row_lock_wait_share": waits["execution_row_share"],
        "execution_row_mean_waiting": waits["execution_row_mean_waiting"],
        "lock_waits": waits,
        "cluster_cpu_ms_per_target": round(queued["cluster_cpu_s"] * 1000 / n, 2),
        "raw_pool_client_cpu_ms_per_target": round(raw_cpu_s * 1000 / n, 2),
        "cpu_ms_per_target": cpu_per_target(queued, raws[middle], raws[middle + 1], n),
        "load_average_1min_at_end": round(queued["load"], 2),
    }


def cpu_per_target(queued: dict, raw_before: RawPoolRun, raw_after: RawPoolRun, n: int) -> dict:
    """Where the CPU of a target goes, in ms: the queued run's cluster (lanes, their control threads, the workers'
    polling), control-database backends, tenant backends and the server's own processes; the raw pool's client and
    backends (the mean of the two runs around the queued one). The server's figures need its processes on this
    machine (``/proc``): 0 otherwise."""
    server = queued["server_cpu_s"]
    ours = {
        "cluster": queued["cluster_cpu_s"],
        "control_backends": server["control_backends"],
        "tenant_backends": server["tenant_backends"],
        "server_other": server["server_other"],
    }
    raw = {
        "client": (raw_before.client_cpu_s + raw_after.client_cpu_s) / 2,
        "backends": (raw_before.server_cpu_s + raw_after.server_cpu_s) / 2,
    }
    queued_ms = {key: round(value * 1000 / n, 3) for key, value in ours.items()}
    raw_ms = {key: round(value * 1000 / n, 3) for key, value in raw.items()}
    # The server's own processes are left out of both totals: the raw pool's share of them is not measured.
    queued_ms["total"] = round(sum(ours[k] for k in ("cluster", "control_backends", "tenant_backends")) * 1000 / n, 3)
    raw_ms["total"] = round(sum(raw.values()) * 1000 / n, 3)
    return {"queued": queued_ms, "raw_pool": raw_ms}


HEADER = (
    f"{'lanes':>5} {'queued s':>9} {'raw s':>8} {'ratio':>6} {'best':>6} {'queued/s':>9} {'raw/s':>8} "
    f"{'row lock wait':>13} {'mean waiting':>12} {'any lock wait':>13} {'load':>5} "
    f"{'CPU ms/target: queued (cluster, control, tenants) / raw pool (client, backends)':>80}"
)


def table_row(row: dict) -> str:
    return (
        f"{row['lanes']:>5} {row['queued_s']:>9.2f} {row['raw_pool_s']:>8.2f} {row['ratio_queued_vs_raw_pool']:>6.2f} "
        f"{row['ratio_best_vs_best']:>6.2f} "
        f"{row['queued_targets_per_s']:>9.1f} {row['raw_pool_targets_per_s']:>8.1f} "
        f"{row['execution_row_lock_wait_share']:>13.1%} {row['execution_row_mean_waiting']:>12.3f} "
        f"{row['lock_waits']['any_lock_share']:>13.1%} {row['load_average_1min_at_end']:>5.2f} "
        f"{cpu_text(row['cpu_ms_per_target']):>80}"
    )


def cpu_text(cpu: dict) -> str:
    queued, raw = cpu["queued"], cpu["raw_pool"]
    return (
        f"{queued['total']:.2f} ({queued['cluster']:.2f}, {queued['control_backends']:.2f}, "
        f"{queued['tenant_backends']:.2f}) / {raw['total']:.2f} ({raw['client']:.2f}, {raw['backends']:.2f})"
    )


def lane_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("lane counts are positive integers separated by commas, e.g. 1,2,4,8")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000, help="Tenant schemas (default 2,000).")
    parser.add_argument("--lanes", type=lane_counts, default=[1, 2, 4, 8], help="Lane counts (default 1,2,4,8).")
    parser.add_argument("--sample-ms", type=float, default=20, help="Lock sampling period (default 20 ms).")
    parser.add_argument("--rounds", type=int, default=1, help="Queued runs per lane count, each between raw pool runs.")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "control_plane.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    print(f"{args.tenants} tenants, {VERSION_FILE}: {STATEMENT}  load average (1 min) {load_at_start:.2f}", flush=True)
    print(HEADER, flush=True)
    rows = []
    started = time.perf_counter()
    with workdir("bench-control-") as scratch, bench_server() as server:
        work = trivial_work(scratch / "sets")
        for lanes in args.lanes:
            rows.append(
                measure(
                    server, n=args.tenants, lanes=lanes, work=work, sample_s=args.sample_ms / 1000, rounds=args.rounds
                )
            )
            print(table_row(rows[-1]), flush=True)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min_at_start": round(load_at_start, 2),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "parameters": {
            "tenants": args.tenants,
            "lanes": args.lanes,
            "version": VERSION_FILE,
            "statement": STATEMENT,
            "sample_ms": args.sample_ms,
            "rounds": args.rounds,
            "control_database": "PostgreSQL (the embedded server), ORM broker",
        },
        "lock_wait_definition": LOCK_WAIT_DEFINITION,
        "rows": rows,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    four = next((row for row in rows if row["lanes"] == 4), None)
    if four:
        print(
            f"4 lanes: queued {four['queued_s']:.2f} s against the raw pool of 4 {four['raw_pool_s']:.2f} s "
            f"(x{four['ratio_queued_vs_raw_pool']}; best against best x{four['ratio_best_vs_best']}); the execution "
            "row's lock-wait share "
            f"{four['execution_row_lock_wait_share']:.1%}, {four['execution_row_mean_waiting']} backends waiting "
            "on average",
            flush=True,
        )
    write_results(args.output, results)


if __name__ == "__main__":
    main()
