"""Reads of the health app: the figures of /health/metrics and /metrics, and the connections' snapshots.

Everything here is read from the control database, so every web process reports the same numbers whichever
process (web worker, queue worker on any machine) did the work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import psutil
from django.conf import settings
from django.db import connection as control
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.utils import timezone

from connections.models import DatabaseConnection
from health.models import CheckRun, ConnectionSnapshot
from migrations_runner.models import FINISHED_TARGET_STATUSES, MigrationExecution, TargetRun, TargetStatus

# Upper bounds (seconds) of the duration histograms.
EXECUTION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
TARGET_RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
SCRIPT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def executions_by_status() -> list[Mapping[str, Any]]:
    """Executions counted by kind and current status."""
    return list(MigrationExecution.objects.order_by().values("kind", "status").annotate(count=Count("id")))


def executions_waiting() -> dict[str, int]:
    """Unfinished executions held between two canary waves, by what they wait for (``soak``, ``approval``)."""
    rows = (
        MigrationExecution.objects.filter(status__in=["pending", "in_progress"])
        .exclude(waiting="")
        .order_by()
        .values("waiting")
        .annotate(count=Count("id"))
    )
    counts = {"soak": 0, "approval": 0}
    counts.update({row["waiting"]: row["count"] for row in rows})
    return counts


def target_runs_by_status(*, since=None) -> list[Mapping[str, Any]]:
    """Target runs counted by status, database type and region (of executions created ``since``, if given)."""
    runs = TargetRun.objects.order_by()
    if since is not None:
        runs = runs.filter(execution__created_at__gte=since)
    return list(runs.values("status", "database_type", "region").annotate(count=Count("id")))


def execution_duration_buckets() -> list[Mapping[str, Any]]:
    """Per kind and final status: finished executions, their total duration, and how many took at most each
    bound of ``EXECUTION_BUCKETS`` (keys ``le_0``, ``le_1``...): one aggregate query."""
    duration = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
    bounds = {
        f"le_{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(EXECUTION_BUCKETS)
    }
    return list(
        MigrationExecution.objects.order_by()
        .filter(started_at__isnull=False, completed_at__isnull=False)
        .annotate(duration=duration)
        .values("kind", "status")
        .annotate(count=Count("id"), total=Sum("duration"), **bounds)
    )


def target_run_duration_buckets() -> list[Mapping[str, Any]]:
    """Per database type and region: finished runs with a duration, their total (ms), and how many took at
    most each bound of ``TARGET_RUN_BUCKETS`` (keys ``le_0``, ``le_1``...): one aggregate query."""
    bounds = {
        f"le_{i}": Count("id", filter=Q(duration_ms__lte=bound * 1000)) for i, bound in enumerate(TARGET_RUN_BUCKETS)
    }
    return list(
        TargetRun.objects.order_by()
        .filter(status__in=FINISHED_TARGET_STATUSES, duration_ms__isnull=False)
        .values("database_type", "region")
        .annotate(count=Count("id"), total_ms=Sum("duration_ms"), **bounds)
    )


# One row per script applied: the target run's database type and the script's duration (ms).
_SCRIPT_DURATIONS = {
    "sqlite": """
        SELECT t.database_type AS database_type, CAST(json_extract(e.value, '$.duration_ms') AS REAL) AS duration
        FROM {table} t, json_each(CASE WHEN json_type(t.applied_versions) = 'array'
                                       THEN t.applied_versions ELSE '[]' END) e
    """,
    "postgresql": """
        SELECT t.database_type AS database_type, (e.value ->> 'duration_ms')::double precision AS duration
        FROM {table} t CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(t.applied_versions) = 'array' THEN t.applied_versions ELSE '[]'::jsonb END
        ) AS e(value)
    """,
}


def script_duration_buckets() -> list[tuple[str, int, float, list[int]]]:
    """Per database type: scripts applied (from the target runs' ``applied_versions``), their total duration
    (ms) and the count at most each bound of ``SCRIPT_BUCKETS``; computed by the database in one query."""
    scripts = _SCRIPT_DURATIONS.get(control.vendor)
    if scripts is None:
        return []
    buckets = ", ".join("SUM(CASE WHEN s.duration <= %s THEN 1 ELSE 0 END)" for _ in SCRIPT_BUCKETS)
    query = (
        f"SELECT s.database_type, COUNT(*), COALESCE(SUM(s.duration), 0), {buckets} "  # noqa: S608 (no input)
        f"FROM ({scripts.format(table=TargetRun._meta.db_table)}) s "
        "WHERE s.duration IS NOT NULL GROUP BY s.database_type"
    )
    with control.cursor() as cursor:
        cursor.execute(query, [bound * 1000 for bound in SCRIPT_BUCKETS])
        return [(row[0], row[1], float(row[2]), [int(n) for n in row[3:]]) for row in cursor.fetchall()]


def connections_by_state() -> list[Mapping[str, Any]]:
    """Active connections counted by database type, region and latest health (True, False, None: unchecked)."""
    return list(
        DatabaseConnection.objects.order_by()
        .filter(is_active=True)
        .values("database_type", "region", "is_healthy")
        .annotate(count=Count("id"))
    )


def connection_latencies() -> list[tuple[str, str, float]]:
    """Database type, region and latest response time (ms) of every active connection whose check passed."""
    rows = (
        DatabaseConnection.objects.order_by()
        .filter(is_active=True, is_healthy=True, response_time_ms__isnull=False)
        .values_list("database_type", "region", "response_time_ms")
    )
    return cast("list[tuple[str, str, float]]", list(rows))  # the filter leaves out a null response_time_ms


def orm_waiting_tasks(*, now=None) -> QuerySet:
    """The ORM broker's tasks that no cluster has taken (a taken task is locked until its retry time)."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    # django-q2's ORM broker files tasks under the cluster's name. Its get_broker() is not used here: it
    # closes the request's database connection when it is past CONN_MAX_AGE.
    return OrmQ.objects.filter(key=Conf.CLUSTER_NAME, lock__lte=now or timezone.now())


def queue_depth() -> int | None:
    """Tasks waiting in the broker for a worker; None when the broker (Redis) does not answer."""
    if "redis" not in settings.Q_CLUSTER:
        return orm_waiting_tasks().count()
    import redis
    from django_q.brokers import get_broker

    timeout = settings.HEALTH_CHECK_TIMEOUT
    client = redis.Redis.from_url(settings.Q_CLUSTER["redis"], socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return client.llen(get_broker().list_key)
    except redis.RedisError:
        return None
    finally:
        client.close()


def last_lane_heartbeat() -> datetime | None:
    """The newest lease renewal of a running target run: a lane at work says a queue worker is alive, even when
    lanes keep the periodic check waiting in the queue."""
    running = TargetRun.objects.filter(status=TargetStatus.RUNNING, heartbeat_at__isnull=False)
    return running.order_by("-heartbeat_at").values_list("heartbeat_at", flat=True).first()


def last_check_run() -> CheckRun | None:
    return CheckRun.objects.order_by("-finished_at").first()


def _percentile(values: QuerySet, count: int, fraction: float) -> float | None:
    """The nearest-rank percentile of an ordered ``values_list`` of ``count`` values."""
    if not count:
        return None
    return float(values[max(0, math.ceil(fraction * count) - 1)])


def process_figures() -> dict[str, Any]:
    """This process: pid, resident memory, CPU time and uptime."""
    process = psutil.Process()
    cpu = process.cpu_times()
    return {
        "pid": process.pid,
        "memory_rss_bytes": process.memory_info().rss,
        "cpu_user_seconds": round(cpu.user, 3),
        "cpu_system_seconds": round(cpu.system, 3),
        "uptime_seconds": round(time.time() - process.create_time(), 1),
    }


def metrics_summary() -> dict[str, Any]:
    """The figures of ``/health/metrics``: executions, the last day's target runs, queue, connections, process."""
    now = timezone.now()
    since = now - timedelta(hours=24)
    executions: dict[str, int] = {}
    for row in executions_by_status():
        executions[row["status"]] = executions.get(row["status"], 0) + row["count"]
    runs: dict[str, int] = {}
    for row in target_runs_by_status(since=since):
        runs[row["status"]] = runs.get(row["status"], 0) + row["count"]
    timed = TargetRun.objects.filter(completed_at__gte=since, duration_ms__isnull=False)
    stats = timed.aggregate(count=Count("id"), mean=Avg("duration_ms"))
    ordered = timed.order_by("duration_ms").values_list("duration_ms", flat=True)
    states = {"healthy": 0, "unhealthy": 0, "unchecked": 0}
    for row in connections_by_state():
        key = {True: "healthy", False: "unhealthy", None: "unchecked"}[row["is_healthy"]]
        states[key] += row["count"]
    last_run = last_check_run()
    return {
        "timestamp": now,
        "executions": {"by_status": executions, "total": sum(executions.values())},
        "target_runs_24h": {
            "by_status": runs,
            "total": sum(runs.values()),
            "duration_ms": {
                "count": stats["count"],
                "mean": round(stats["mean"], 1) if stats["mean"] is not None else None,
                "p95": _percentile(ordered, stats["count"], 0.95),
            },
        },
        "queue": {"depth": queue_depth(), "last_check_run": last_run.finished_at if last_run else None},
        "connections": states,
        "process": process_figures(),
    }


def connection_snapshots(*, connection: DatabaseConnection, hours: int = 24) -> list[ConnectionSnapshot]:
    """The snapshots of the last ``hours`` of one connection, oldest first."""
    since = timezone.now() - timedelta(hours=hours)
    return list(connection.health_snapshots.filter(checked_at__gte=since).order_by("checked_at"))
