"""Health of what the control plane depends on: each check bounded in time, the report of all of them.

Services: the control database (a round trip), the task queue (workers seen at work, queued tasks, recent
failures), the broker, the OpenID Connect provider, the migration sets, and every active registered
connection as ``connection:<name>``: probed now, or (``live_connections=False``) as the periodic check last
stored it, which costs a read of the control database whatever the peers do. Checks that touch the network
run in a thread pool, each with at most ``HEALTH_CHECK_TIMEOUT`` seconds; a check that has not answered by
then is reported unhealthy and left to finish on its own (every one of them ends by its own timeout), so one
silent peer cannot make a caller wait longer than that.

The control database is checked first: the checks of the queue, the migrations and the connections read it,
and Django would wait for a pooled connection for its pool's whole timeout when the server is down.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connections
from django.db import models as db_models
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Min
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Failure
from redis import Redis

from connections import selectors as registry
from connections.models import DatabaseConnection
from connections.probe import ConnectionParams, probe, redact
from connections.services import connection_params
from health import selectors
from health.exceptions import ControlDatabaseUnavailable, UnknownService
from health.models import CheckRun
from infra_site.auth import provider
from migrations_runner.selectors import migrations_health

logger = logging.getLogger(__name__)

CONTROL_DATABASE = "control_database"
TASK_QUEUE = "task_queue"
BROKER = "broker"
OIDC_PROVIDER = "oidc_provider"
MIGRATIONS = "migrations"
SERVICES = (CONTROL_DATABASE, TASK_QUEUE, BROKER, OIDC_PROVIDER, MIGRATIONS)
CONNECTION_PREFIX = "connection:"

# A queued task older than this means the workers do not keep up (lanes hand over every few seconds).
QUEUE_STALL_SECONDS = 300
# The provider's discovery document is fetched at most once per this many seconds per process.
OIDC_CACHE_SECONDS = 30.0
# Threads of one report. Checks start in turn: past this many silent peers, the next ones wait for a thread
# and may be reported as timed out without having been tried.
MAX_THREADS = 32


class Status(db_models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"
    NOT_CONFIGURED = "not_configured", "Not configured"
    # A connection the periodic check has not reached yet.
    UNCHECKED = "unchecked", "Not checked yet"


class OverallStatus(db_models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNHEALTHY = "unhealthy", "Unhealthy"


@dataclasses.dataclass(frozen=True)
class ServiceHealth:
    """The outcome of one check. ``details`` holds addresses, versions and errors: for privileged callers only.

    ``live`` is False for a connection's result as the periodic check stored it (``checked_at`` tells its age).
    """

    name: str
    is_healthy: bool
    status: str
    response_time_ms: float | None
    checked_at: datetime | None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    live: bool = True

    def as_dict(self, *, private: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "is_healthy": self.is_healthy,
            "status": self.status,
            "response_time_ms": self.response_time_ms,
            "checked_at": self.checked_at,
            "live": self.live,
            "details": self.details if private else {},
        }


@dataclasses.dataclass(frozen=True)
class HealthReport:
    timestamp: datetime
    services: list[ServiceHealth]

    @property
    def overall_status(self) -> str:
        """Unhealthy without the control database, degraded when anything else is unhealthy."""
        if any(s.name == CONTROL_DATABASE and not s.is_healthy for s in self.services):
            return OverallStatus.UNHEALTHY
        if any(not s.is_healthy for s in self.services):
            return OverallStatus.DEGRADED
        return OverallStatus.HEALTHY

    def as_dict(self, *, private: bool) -> dict[str, Any]:
        healthy = sum(1 for s in self.services if s.is_healthy)
        return {
            "overall_status": self.overall_status,
            "timestamp": self.timestamp,
            "services": [s.as_dict(private=private) for s in self.services],
            "summary": {
                "total_services": len(self.services),
                "healthy_services": healthy,
                "unhealthy_services": len(self.services) - healthy,
            },
        }


@dataclasses.dataclass(frozen=True)
class _Outcome:
    healthy: bool
    details: dict[str, Any]
    status: str = ""
    response_time_ms: float | None = None


def _service(name: str, outcome: _Outcome, elapsed_ms: float) -> ServiceHealth:
    status = outcome.status or (Status.HEALTHY if outcome.healthy else Status.UNHEALTHY)
    response = outcome.response_time_ms if outcome.response_time_ms is not None else round(elapsed_ms, 2)
    return ServiceHealth(name, outcome.healthy, status, response, timezone.now(), outcome.details)


def _run(name: str, check: Callable[[], _Outcome]) -> ServiceHealth:
    """Run one check and time it; an exception makes the service unhealthy with the error in its details."""
    started = time.perf_counter()
    try:
        outcome = check()
    except Exception as exc:  # any failure of a dependency is that service's ill health
        logger.warning("health check failed", extra={"service": name, "error": f"{type(exc).__name__}: {exc}"})
        outcome = _Outcome(False, {"error": f"{type(exc).__name__}: {exc}"})
    return _service(name, outcome, (time.perf_counter() - started) * 1000)


class _Pending:
    """A check running in the pool, and the moment it must have answered by (``timeout`` after its start).

    ``details`` are what is known without the check (a connection's address): a check past its deadline
    is reported with them.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        name: str,
        check: Callable[[], _Outcome],
        timeout: float,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.details = details or {}
        self.started = time.perf_counter()
        self.deadline = time.monotonic() + timeout
        self.future: Future[ServiceHealth] = pool.submit(_run, name, check)

    def result(self) -> ServiceHealth:
        try:
            return self.future.result(timeout=max(0.0, self.deadline - time.monotonic()))
        except FutureTimeout:
            elapsed = (time.perf_counter() - self.started) * 1000
            details = {**self.details, "cause": "timeout", "error": f"no answer within {self.timeout:g} s"}
            return _service(self.name, _Outcome(False, details), elapsed)


# --- The control database ---


@functools.cache
def _shipped_migrations() -> frozenset[tuple[str, str]]:
    """The newest migration of each app as this code ships them (read from disk once per process)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes())


def _control_database() -> _Outcome:
    """A round trip on a connection of this thread, closed afterwards (it returns to the pool, if any), and
    whether the database holds this code's tables: every other check reads them."""
    database = connections["default"]
    try:
        with database.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        # Django's SQLite backend is the sqlite3 module, so the library's version is that backend's.
        version = database.pg_version if isinstance(database, PostgreSQLWrapper) else sqlite3.sqlite_version
        missing = _shipped_migrations() - set(MigrationRecorder(database).applied_migrations())
    except DatabaseError as exc:
        message = redact(str(exc).strip(), database.settings_dict.get("PASSWORD") or "")
        return _Outcome(False, {**_control_address(), "error": message})
    finally:
        database.close()
    if missing:
        apps = ", ".join(sorted({app for app, _ in missing}))
        error = f"the control database is not migrated (behind: {apps}): run `manage.py migrate`"
        return _Outcome(False, {**_control_address(), "server_version": str(version), "error": error})
    return _Outcome(True, {**_control_address(), "server_version": str(version)})


def _control_address() -> dict[str, Any]:
    config = settings.DATABASES["default"]
    return {
        "vendor": config["ENGINE"].rsplit(".", 1)[-1],
        "host": config.get("HOST") or "",
        "port": config.get("PORT") or "",
        "name": str(config.get("NAME") or ""),
        "user": config.get("USER") or "",
    }


# --- The broker and the task queue ---


def _redis_url() -> str:
    url = settings.Q_CLUSTER.get("redis")
    return url if isinstance(url, str) else ""


def _redis_state(timeout: float) -> Callable[[], _Outcome]:
    """Ping Redis, read the queue's length and count the clusters whose statistics are fresh (3 s expiry)."""

    def check() -> _Outcome:
        client = Redis.from_url(_redis_url(), socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
            return _Outcome(
                True,
                {
                    "queued_tasks": client.llen(get_broker().list_key),
                    "clusters_alive": len(client.keys(f"{Conf.Q_STAT}:*")),
                },
            )
        finally:
            client.close()

    return check


def _redis_address() -> dict[str, Any]:
    parts = urlsplit(_redis_url())
    return {"host": parts.hostname or "", "port": parts.port or 6379}


def _orm_queue_state() -> dict[str, Any]:
    """Tasks waiting in the ORM broker (not taken by a cluster) and the age of the oldest."""
    now = timezone.now()
    waiting = selectors.orm_waiting_tasks(now=now)
    oldest = waiting.aggregate(oldest=Min("lock"))["oldest"]
    return {
        "queued_tasks": waiting.count(),
        "oldest_queued_age_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
    }


def _broker(redis: ServiceHealth | None) -> _Outcome:
    if redis is not None:
        details = {"kind": "redis", **_redis_address()}
        if not redis.is_healthy:
            details["error"] = redis.details.get("error", "")
        return _Outcome(redis.is_healthy, details, response_time_ms=redis.response_time_ms)
    _orm_queue_state()  # the ORM broker is a table of the control database: a query on it is its ping
    return _Outcome(True, {"kind": "orm", "database": settings.Q_CLUSTER.get("orm", "default")})


def worker_seen_within() -> timedelta:
    """How recent the last periodic check must be for the queue to count as worked: two intervals and a
    scheduler cycle (django-q2's scheduler wakes about every 30 s)."""
    return timedelta(seconds=2 * settings.HEALTH_CHECK_INTERVAL + 60)


def _task_queue(redis: ServiceHealth | None) -> _Outcome:
    """Workers at work (Redis: clusters' fresh statistics; ORM broker: a recent periodic check run by a worker),
    tasks waiting and for how long, and the failures of the last hour."""
    now = timezone.now()
    last_run = CheckRun.objects.order_by("-finished_at").values_list("finished_at", flat=True).first()
    beat = selectors.last_lane_heartbeat()
    details: dict[str, Any] = {
        "broker": "redis" if _redis_url() else "orm",
        "clusters_alive": None,
        "last_worker_activity": max((t for t in (last_run, beat) if t is not None), default=None),
        "failures_last_hour": Failure.objects.filter(stopped__gte=now - timedelta(hours=1)).count(),
    }
    if redis is not None:
        if not redis.is_healthy:
            return _Outcome(False, {**details, "error": "the broker (Redis) did not answer"})
        details.update(redis.details, oldest_queued_age_seconds=None)
        working = redis.details["clusters_alive"] > 0
    else:
        details.update(_orm_queue_state())
        lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
        working = (last_run is not None and now - last_run <= worker_seen_within()) or (
            beat is not None and now - beat <= lease
        )
    oldest = details["oldest_queued_age_seconds"]
    if not working:
        details["error"] = "no queue worker seen at work: start `manage.py qcluster`"
    elif oldest is not None and oldest > QUEUE_STALL_SECONDS:
        details["error"] = f"the oldest queued task has waited {oldest:.0f} s: the workers do not keep up"
    return _Outcome("error" not in details, details)


# --- The identity provider ---

_oidc_cache: dict[str, tuple[float, _Outcome]] = {}
_oidc_lock = threading.Lock()


def _oidc_provider() -> _Outcome:
    """Whether the realm's discovery document is readable and names the expected issuer (cached briefly)."""
    if not provider.oidc_configured():
        return _Outcome(True, {}, status=Status.NOT_CONFIGURED)
    issuer = provider.issuer()
    with _oidc_lock:
        cached = _oidc_cache.get(issuer)
    if cached and time.monotonic() - cached[0] < OIDC_CACHE_SECONDS:
        return dataclasses.replace(cached[1], details={**cached[1].details, "cached": True})
    started = time.perf_counter()
    try:
        # The fetch and validation that login uses; provider.endpoints() caches for good, so it cannot tell
        # whether the provider answers now.
        provider.endpoints_discover(issuer=issuer)
    except provider.ProviderUnavailable as exc:
        outcome = _Outcome(False, {"issuer": issuer, "error": exc.message, **exc.details})
    else:
        outcome = _Outcome(True, {"issuer": issuer})
    outcome = dataclasses.replace(outcome, response_time_ms=round((time.perf_counter() - started) * 1000, 2))
    with _oidc_lock:
        _oidc_cache[issuer] = (time.monotonic(), outcome)
    return outcome


# --- The migration sets ---


def _migrations() -> _Outcome:
    report = migrations_health()
    return _Outcome(report["status"] == "healthy", report)


# --- Registered connections ---


def _connection_static(connection) -> dict[str, Any]:
    return {
        "database_type": connection.database_type,
        "region": connection.region,
        "host": connection.host,
        "port": connection.port,
        "database": connection.database_name,
        "user": connection.username,
    }


def _stored(connection: DatabaseConnection) -> ServiceHealth:
    """A connection's entry from the result the periodic check (or the last test) stored on it: no probe."""
    details = _connection_static(connection)
    if connection.checked_at is None:
        status = Status.UNCHECKED
    elif connection.is_healthy:
        status = Status.HEALTHY
        details["server_version"] = connection.server_version
    else:
        status = Status.UNHEALTHY
        details.update(cause=connection.error_cause, error=connection.error)
    return ServiceHealth(
        CONNECTION_PREFIX + connection.name,
        bool(connection.is_healthy),
        status,
        connection.response_time_ms,
        connection.checked_at,
        details,
        live=False,
    )


def _probe(params: ConnectionParams, static: dict[str, Any], timeout: float) -> Callable[[], _Outcome]:
    # libpq's connect_timeout covers the handshake (2 s at least); the report's deadline covers the rest.
    bounded = dataclasses.replace(params, connect_timeout=max(1, min(params.connect_timeout, math.ceil(timeout))))

    def check() -> _Outcome:
        result = probe(bounded)
        if result.ok:
            return _Outcome(
                True, {**static, "server_version": result.server_version}, response_time_ms=result.response_time_ms
            )
        return _Outcome(
            False, {**static, "cause": result.cause, "description": result.description, "error": result.error}
        )

    return check


# --- The report ---


def _unavailable(name: str) -> ServiceHealth:
    return _service(name, _Outcome(False, {"error": "not checked: the control database is unreachable"}), 0.0)


def control_database_check() -> ServiceHealth:
    """The control database's round trip alone, within ``HEALTH_CHECK_TIMEOUT`` (before reading it at length)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    try:
        timeout = settings.HEALTH_CHECK_TIMEOUT
        return _Pending(pool, CONTROL_DATABASE, _control_database, timeout, details=_control_address()).result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def system_health(*, only: str | None = None, live_connections: bool = True) -> HealthReport:
    """Check every service (or ``only`` that one) within the time bounds and return the report; without
    ``live_connections``, the connections' entries are their stored results (no connection is opened to them).

    Raises ``UnknownService`` for a name that is no service, and ``ControlDatabaseUnavailable`` when ``only``
    names a connection and the control database, which knows the connections, does not answer.
    """
    if only is not None and only not in SERVICES and not only.startswith(CONNECTION_PREFIX):
        raise UnknownService(only)

    def wanted(name: str) -> bool:
        return only is None or only == name

    timeout = settings.HEALTH_CHECK_TIMEOUT
    pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="health")
    try:
        control = _Pending(pool, CONTROL_DATABASE, _control_database, timeout, details=_control_address())
        oidc = _Pending(pool, OIDC_PROVIDER, _oidc_provider, timeout) if wanted(OIDC_PROVIDER) else None
        queue_wanted = wanted(TASK_QUEUE) or wanted(BROKER)
        redis = _Pending(pool, BROKER, _redis_state(timeout), timeout) if _redis_url() and queue_wanted else None
        database = control.result()
        up = database.is_healthy
        if not up and only is not None and only.startswith(CONNECTION_PREFIX):
            raise ControlDatabaseUnavailable()
        connection_checks: list[_Pending] = []
        stored: list[ServiceHealth] = []
        if up and live_connections:
            connection_checks = _submit_probes(pool, only, timeout)
        elif up:
            stored = [_stored(connection) for connection in _active_connections(only)]
        redis_health = redis.result() if redis else None
        services: list[ServiceHealth] = [database] if wanted(CONTROL_DATABASE) else []
        if wanted(TASK_QUEUE):
            services.append(_run(TASK_QUEUE, lambda: _task_queue(redis_health)) if up else _unavailable(TASK_QUEUE))
        if wanted(BROKER):
            broker_ready = up or redis_health is not None
            services.append(_run(BROKER, lambda: _broker(redis_health)) if broker_ready else _unavailable(BROKER))
        if oidc is not None:
            services.append(oidc.result())
        if wanted(MIGRATIONS):
            services.append(_run(MIGRATIONS, _migrations) if up else _unavailable(MIGRATIONS))
        services += [pending.result() for pending in connection_checks] + stored
    finally:
        # Checks past their deadline finish on their own (each has its own timeout); nobody waits for them.
        pool.shutdown(wait=False, cancel_futures=True)
    return HealthReport(timestamp=timezone.now(), services=services)


def _active_connections(only: str | None) -> list[DatabaseConnection]:
    """Every active connection by name (or the one ``only`` names); raise ``UnknownService`` for none."""
    if only is not None and not only.startswith(CONNECTION_PREFIX):
        return []
    connections_qs = registry.connection_list(is_active=True).order_by("name")
    if only is not None:
        connections_qs = connections_qs.filter(name=only[len(CONNECTION_PREFIX) :])
    found = list(connections_qs)
    if only is not None and not found:
        raise UnknownService(only)
    return found


def _submit_probes(pool: ThreadPoolExecutor, only: str | None, timeout: float) -> list[_Pending]:
    """Start the probe of every active connection (or of the one ``only`` names); raise ``UnknownService``."""
    probes = []
    for connection in _active_connections(only):
        static = _connection_static(connection)
        check = _probe(connection_params(connection), static, timeout)
        probes.append(_Pending(pool, CONNECTION_PREFIX + connection.name, check, timeout, details=static))
    return probes
