"""The Prometheus exposition of ``/metrics``.

Two sources, chosen for a control plane whose work happens in several web workers and in qcluster processes
on any number of machines:

- ``ControlPlaneCollector`` reads the control database at scrape time: executions and target runs by
  status (labels: kind, database type, region; never a tenant), duration histograms whose buckets are
  counted by aggregate queries, the queue's depth, and the connections' latest health. Any web process
  answers a scrape with the same numbers, whichever process did the work, and nothing is lost when a
  process restarts.
- The HTTP request metrics of ``health.middleware`` live in the process that served the requests. With
  ``PROMETHEUS_MULTIPROC_DIR`` set they go through prometheus-client's multiprocess files, so every worker's
  requests are summed in each scrape; unset, a scrape reports the requests of the process that answers it.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from health import probes, selectors
from migrations_runner.models import FINISHED_TARGET_STATUSES, ExecutionStatus

logger = logging.getLogger(__name__)

FINISHED_EXECUTION_STATUSES = (
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.ROLLED_BACK,
)

HTTP_REQUESTS = Counter(
    "infra_http_requests",
    "HTTP requests answered, by view, method and status code.",
    ["view", "method", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    "infra_http_request_duration_seconds",
    "Time to answer an HTTP request, by view.",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)


def _histogram_buckets(bounds: tuple[float, ...], counts: list[int], total: int) -> list[tuple[str, float]]:
    return [*((f"{bound:g}", counts[i]) for i, bound in enumerate(bounds)), ("+Inf", total)]


class ControlPlaneCollector(Collector):
    """Figures read from the control database at each scrape (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("infra_control_database_up", "1 when the control database answered this scrape.")
        families: list[Metric] = []
        # A bounded round trip first: with the database down, Django would wait for a pooled connection for
        # the pool's whole timeout, longer than a scrape may take.
        if probes.control_database_check().is_healthy:
            try:
                families = list(self._families())
            except DatabaseError as exc:
                logger.warning("metrics: the control database did not answer", extra={"error": str(exc)})
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        yield from self._executions()
        yield self._execution_durations()
        yield from self._target_runs()
        yield self._target_run_durations()
        yield self._script_durations()
        yield from self._queue()
        yield from self._connections()

    def _executions(self) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            "infra_migration_executions",
            "Finished executions by kind and final status (a rollback moves its execution to rolled_back).",
            labels=["kind", "status"],
        )
        running = GaugeMetricFamily(
            "infra_migration_executions_active",
            "Executions pending or in progress, by kind.",
            labels=["kind", "status"],
        )
        for row in selectors.executions_by_status():
            family = finished if row["status"] in FINISHED_EXECUTION_STATUSES else running
            family.add_metric([row["kind"], row["status"]], row["count"])
        yield finished
        yield running
        waiting = GaugeMetricFamily(
            "infra_migration_executions_waiting",
            "Executions held between two canary waves, by what they wait for (soak time or a person's approval).",
            labels=["waiting"],
        )
        for reason, count in selectors.executions_waiting().items():
            waiting.add_metric([reason], count)
        yield waiting

    def _execution_durations(self) -> Metric:
        family = HistogramMetricFamily(
            "infra_migration_execution_duration_seconds",
            "Duration of finished executions (start to end), by kind and final status.",
            labels=["kind", "status"],
        )
        for row in selectors.execution_duration_buckets():
            counts = [row[f"le_{i}"] for i in range(len(selectors.EXECUTION_BUCKETS))]
            family.add_metric(
                [row["kind"], row["status"]],
                _histogram_buckets(selectors.EXECUTION_BUCKETS, counts, row["count"]),
                row["total"].total_seconds() if row["total"] else 0.0,
            )
        return family

    def _target_runs(self) -> Iterator[Metric]:
        labels = ["status", "database_type", "region"]
        finished = CounterMetricFamily(
            "infra_migration_target_runs", "Finished target runs by status, database type and region.", labels=labels
        )
        active = GaugeMetricFamily(
            "infra_migration_target_runs_active",
            "Target runs pending or running, by database type and region.",
            labels=labels,
        )
        for row in selectors.target_runs_by_status():
            family = finished if row["status"] in FINISHED_TARGET_STATUSES else active
            family.add_metric([row["status"], row["database_type"], row["region"]], row["count"])
        yield finished
        yield active

    def _target_run_durations(self) -> Metric:
        family = HistogramMetricFamily(
            "infra_migration_target_run_duration_seconds",
            "Duration of finished target runs, by database type and region.",
            labels=["database_type", "region"],
        )
        for row in selectors.target_run_duration_buckets():
            counts = [row[f"le_{i}"] for i in range(len(selectors.TARGET_RUN_BUCKETS))]
            family.add_metric(
                [row["database_type"], row["region"]],
                _histogram_buckets(selectors.TARGET_RUN_BUCKETS, counts, row["count"]),
                (row["total_ms"] or 0) / 1000,
            )
        return family

    def _script_durations(self) -> Metric:
        family = HistogramMetricFamily(
            "infra_migration_script_duration_seconds",
            "Duration of each migration script applied, by database type.",
            labels=["database_type"],
        )
        for database_type, count, total_ms, counts in selectors.script_duration_buckets():
            family.add_metric(
                [database_type], _histogram_buckets(selectors.SCRIPT_BUCKETS, counts, count), total_ms / 1000
            )
        return family

    def _queue(self) -> Iterator[Metric]:
        depth = selectors.queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("infra_task_queue_depth", "Tasks waiting in the broker for a worker.", value=depth)
        last_run = selectors.last_check_run()
        if last_run is not None:
            yield GaugeMetricFamily(
                "infra_health_check_last_run_timestamp_seconds",
                "When a queue worker last finished the periodic connection check.",
                value=last_run.finished_at.timestamp(),
            )

    def _connections(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "infra_connections",
            "Active connections by database type, region and latest health (healthy, unhealthy, unchecked).",
            labels=["database_type", "region", "state"],
        )
        for row in selectors.connections_by_state():
            state = {True: "healthy", False: "unhealthy", None: "unchecked"}[row["is_healthy"]]
            states.add_metric([row["database_type"], row["region"], state], row["count"])
        yield states
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        for database_type, region, milliseconds in selectors.connection_latencies():
            latencies[(database_type, region)].append(milliseconds / 1000)
        probe = GaugeHistogramMetricFamily(
            "infra_connection_probe_latency_seconds",
            "Latest connect-and-query time of the healthy active connections, by database type and region.",
            labels=["database_type", "region"],
        )
        for (database_type, region), values in sorted(latencies.items()):
            counts = [sum(1 for v in values if v <= bound) for bound in selectors.PROBE_BUCKETS]
            probe.add_metric(
                [database_type, region],
                _histogram_buckets(selectors.PROBE_BUCKETS, counts, len(values)),
                gsum_value=sum(values),
            )
        yield probe


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def exposition() -> bytes:
    """Render the metrics of this scrape in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector())
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REQUESTS)
        registry.register(HTTP_DURATION)
        registry.register(ProcessCollector(registry=None))
    return generate_latest(registry)
