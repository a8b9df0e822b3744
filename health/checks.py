"""System checks of what the health endpoints would report at run time, caught at start-up instead.

All are cheap and local, except the broker's, which talks to Redis and is therefore a deployment check
(``manage.py check --deploy``), with a one-second timeout.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core import checks

from migrations_runner.engine.sets import DATABASE_TYPES

TAG = "health"
# With more web and queue worker processes than this on a SQLite control database, writers (heartbeats of
# running targets, the ORM broker's task hand-outs, sessions) queue behind SQLite's single write lock.
# The project's tests run 2 web and 4 queue workers on it without waiting near the 30 s busy timeout.
SQLITE_MAX_PROCESSES = 8
BROKER_PING_TIMEOUT = 1.0


def _ours(app_configs) -> bool:
    return app_configs is None or any(config.name == "health" for config in app_configs)


def check_broker(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A Redis broker (Q_BROKER_URL) must answer a ping."""
    url = settings.Q_CLUSTER.get("redis")
    if not _ours(app_configs) or not isinstance(url, str):
        return []
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=BROKER_PING_TIMEOUT, socket_timeout=BROKER_PING_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return [
            checks.Error(
                f"The task queue's broker (Q_BROKER_URL) does not answer: {exc}.",
                hint="Start Redis or correct Q_BROKER_URL; leave it unset for the ORM broker on the control database.",
                id="health.E001",
            )
        ]
    finally:
        client.close()
    return []


def check_migrations_dir(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """MIGRATIONS_DIR must be a folder holding at least one set folder (admin/, shared/, analytics/, tenant/)."""
    if not _ours(app_configs):
        return []
    root = settings.MIGRATIONS_DIR
    if not root.is_dir():
        return [
            checks.Error(
                f"MIGRATIONS_DIR {root} is not a directory.",
                hint="Point MIGRATIONS_DIR at the folder of the migration sets, or unset it for the repository's "
                "migration_sets/. Until then executions have nothing to apply.",
                id="health.E002",
            )
        ]
    if not any((root / database_type).is_dir() for database_type in DATABASE_TYPES):
        return [
            checks.Warning(
                f"MIGRATIONS_DIR {root} holds none of the set folders {', '.join(DATABASE_TYPES)}.",
                hint="MIGRATIONS_DIR names the folder that contains admin/, shared/, analytics/ and tenant/.",
                id="health.W001",
            )
        ]
    return []


OIDC_SETTINGS = ("KEYCLOAK_URL", "KEYCLOAK_CLIENT_ID", "KEYCLOAK_CLIENT_SECRET")


def check_oidc_complete(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Keycloak login needs all of KEYCLOAK_URL, KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET, or none."""
    if not _ours(app_configs):
        return []
    missing = [name for name in OIDC_SETTINGS if not getattr(settings, name)]
    if not missing or len(missing) == len(OIDC_SETTINGS):
        return []
    return [
        checks.Warning(
            f"OpenID Connect is half configured: {', '.join(missing)} not set, so Keycloak login is off.",
            hint=f"Set {', '.join(missing)} too, or unset {', '.join(n for n in OIDC_SETTINGS if n not in missing)}.",
            id="health.W002",
        )
    ]


def check_sqlite_processes(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A SQLite control database serves one machine and one writer at a time."""
    if not _ours(app_configs) or settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        return []
    messages: list[checks.CheckMessage] = []
    processes = settings.WORKERS + settings.Q_WORKERS
    if processes > SQLITE_MAX_PROCESSES:
        messages.append(
            checks.Warning(
                f"The control database is SQLite and WORKERS + Q_WORKERS is {processes} processes.",
                hint="SQLite lets one process write at a time: reads are fine from many workers, but running "
                "targets' heartbeats, the queue's task hand-outs and logins wait for each other, and a wait "
                "beyond 30 s fails with 'database is locked'. Use PostgreSQL (ADMIN_DATABASE_URL) or at most "
                f"{SQLITE_MAX_PROCESSES} processes.",
                id="health.W003",
            )
        )
    if "redis" in settings.Q_CLUSTER:
        messages.append(
            checks.Warning(
                "The control database is SQLite but the task queue uses Redis (Q_BROKER_URL).",
                hint="A Redis broker serves queue workers on several machines, and they cannot share a SQLite "
                "file: use PostgreSQL (ADMIN_DATABASE_URL), or the ORM broker with workers on this machine.",
                id="health.W004",
            )
        )
    return messages


def check_multiprocess_dir(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """PROMETHEUS_MULTIPROC_DIR, when set, must be a writable directory."""
    path = settings.PROMETHEUS_MULTIPROC_DIR
    if not _ours(app_configs) or not path or (os.path.isdir(path) and os.access(path, os.W_OK)):
        return []
    return [
        checks.Error(
            f"PROMETHEUS_MULTIPROC_DIR {path} is not a writable directory.",
            hint="Create it (empty at every start, e.g. on a tmpfs) or unset PROMETHEUS_MULTIPROC_DIR.",
            id="health.E003",
        )
    ]


def check_metrics_token(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A deployment without METRICS_TOKEN answers /metrics with 403."""
    if not _ours(app_configs) or settings.METRICS_TOKEN or not settings.IS_DEPLOYED:
        return []
    return [
        checks.Warning(
            f"METRICS_TOKEN is not set: /metrics answers 403 in {settings.ENVIRONMENT}.",
            hint="Set METRICS_TOKEN and give Prometheus the same value as a bearer token.",
            id="health.W005",
        )
    ]
