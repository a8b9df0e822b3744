"""The settings module evaluated in this process with a given environment (``runpy``, a namespace of its own:
the running Django settings are untouched), for the start-up refusals and the derived values.

``test_settings.py`` proves the same refusals through ``manage.py`` in child processes; these are the fast,
in-process half of it.
"""

from __future__ import annotations

import os
import re
import runpy
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

import infra_site.settings

SOURCE = infra_site.settings.__file__
READ = sorted(set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', open(SOURCE).read())))  # noqa: SIM115
GOOD_KEY = "k" * 40
PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": "s" * 50,
    "APP_ENCRYPTION_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "infra.example.com",
    "CONNECTION_ALLOWED_HOSTS": "10.0.0.0/8",
    "LOCAL_LOGIN_ENABLED": "false",
}


@pytest.fixture
def load(monkeypatch):
    """Evaluate the settings with only ``env`` set (no .env file) and return their values."""

    def evaluate(**env: str) -> dict:
        for name in READ:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENV_FILE", os.devnull)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(SOURCE)

    return evaluate


def test_the_variables_read_were_found():
    assert {"ENVIRONMENT", "SECRET_KEY", "ADMIN_DATABASE_URL", "Q_BROKER_URL"} <= set(READ)


def test_testing_starts_with_the_development_values(load):
    values = load(ENVIRONMENT="testing")
    assert values["SECRET_KEY"] == values["DEV_SECRET_KEY"]
    assert values["ALLOWED_HOSTS"] == ["*"]
    assert values["DEBUG"] is False
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENVIRONMENT": "prod"}, "ENVIRONMENT must be one of development, staging, production, testing; got 'prod'"),
        (
            {"LOGIN_FAILURE_LIMIT": "0"},
            "LOGIN_FAILURE_LIMIT, LOGIN_ADDRESS_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1.",
        ),
        (
            {"LOGIN_ADDRESS_FAILURE_LIMIT": "0"},
            "LOGIN_FAILURE_LIMIT, LOGIN_ADDRESS_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1.",
        ),
        (
            {"LOGIN_LOCKOUT_MINUTES": "0"},
            "LOGIN_FAILURE_LIMIT, LOGIN_ADDRESS_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1.",
        ),
        ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT must be 0 or more."),
        ({"HEALTH_LIVE_PROBE_INTERVAL": "-1"}, "HEALTH_LIVE_PROBE_INTERVAL must be 0 or more."),
        ({"CORS_ALLOW_ORIGINS": "*"}, "CORS_ALLOW_ORIGINS=* together with CORS_ALLOW_CREDENTIALS=true"),
        ({"HEALTH_CHECK_TIMEOUT": "0"}, "HEALTH_CHECK_TIMEOUT must be positive"),
        ({"HEALTH_SNAPSHOT_RETENTION_DAYS": "0"}, "HEALTH_SNAPSHOT_RETENTION_DAYS at least 1"),
        ({"MIGRATION_EXECUTOR": "celery"}, "MIGRATION_EXECUTOR must be 'queue' or 'inline'; got 'celery'."),
        ({"APP_ENCRYPTION_KEY": ""}, "APP_ENCRYPTION_KEY must not be empty."),
        ({"DB_POOL_MIN_SIZE": "-1"}, "DB_POOL_MIN_SIZE must be at least 0 and DB_POOL_MAX_SIZE at least 1"),
        ({"DB_POOL_MIN_SIZE": "4", "DB_POOL_MAX_SIZE": "3"}, "and at least DB_POOL_MIN_SIZE; got 4 and 3."),
        ({"DB_POOL_MAX_SIZE": "0"}, "DB_POOL_MIN_SIZE must be at least 0 and DB_POOL_MAX_SIZE at least 1"),
        ({"MIGRATION_CLAIM_AHEAD_BELOW_S": "-1"}, "MIGRATION_CLAIM_AHEAD_BELOW_S must be 0 (never claim ahead)"),
        ({"MIGRATION_JOIN_SCRIPTS_MS": "-1"}, "MIGRATION_JOIN_SCRIPTS_MS must be 0 (a round trip a script) or more"),
    ],
    ids=[
        "environment",
        "failure-limit",
        "address-failure-limit",
        "lockout-minutes",
        "proxies",
        "live-probe-interval",
        "cors",
        "health-timeout",
        "retention",
        "executor",
        "key",
        "pool-minimum",
        "pool-bounds",
        "pool-maximum",
        "claim-ahead",
        "join-scripts",
    ],
)
def test_a_bad_value_stops_start_up_naming_it(load, env, message):
    with pytest.raises(ImproperlyConfigured) as stopped:
        load(**{"ENVIRONMENT": "testing", **env})
    assert message in str(stopped.value)


def test_cors_any_origin_is_allowed_without_credentials(load):
    values = load(ENVIRONMENT="testing", CORS_ALLOW_ORIGINS="*", CORS_ALLOW_CREDENTIALS="false")
    assert values["CORS_ALLOW_CREDENTIALS"] is False


def test_production_with_nothing_set_names_every_problem(load):
    with pytest.raises(ImproperlyConfigured) as stopped:
        load(ENVIRONMENT="production")
    message = str(stopped.value)
    assert message.startswith("Refusing to start in production: ")
    for problem in (
        "SECRET_KEY must be set to a secret value",
        "APP_ENCRYPTION_KEY must be set to a secret value",
        "ALLOWED_HOSTS must list the host names",
        "CONNECTION_ALLOWED_HOSTS must list the database hosts",
        "KEYCLOAK_URL, KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET must be set in production",
    ):
        assert problem in message


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32 characters long in production."),
        ({"APP_ENCRYPTION_KEY": "short"}, "APP_ENCRYPTION_KEY must be at least 32 characters long in production."),
        ({"DEBUG": "true"}, "DEBUG must be off in production."),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must name the hosts explicitly in production, not '*'."),
        (
            {"LOCAL_LOGIN_ENABLED": "true"},
            "KEYCLOAK_URL, KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET must be set in production, "
            "or LOCAL_LOGIN_ENABLED set to false.",
        ),
    ],
    ids=["secret-key", "encryption-key", "debug", "any-host", "local-login-without-oidc"],
)
def test_production_refuses_each_weakness_alone(load, override, problem):
    with pytest.raises(ImproperlyConfigured) as stopped:
        load(**{**PRODUCTION, **override})
    assert str(stopped.value) == f"Refusing to start in production: {problem}"


def test_staging_refuses_the_development_key_but_not_a_short_one(load):
    with pytest.raises(ImproperlyConfigured, match="Refusing to start in staging: SECRET_KEY must be set"):
        load(ENVIRONMENT="staging", APP_ENCRYPTION_KEY=GOOD_KEY)
    values = load(ENVIRONMENT="staging", SECRET_KEY="short-but-staging", APP_ENCRYPTION_KEY="also-short")
    assert values["IS_DEPLOYED"]
    assert not values["IS_PRODUCTION"]


def test_a_valid_production_configuration_secures_cookies_and_https(load):
    values = load(**PRODUCTION)
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["ALLOWED_HOSTS"] == ["infra.example.com"]


def test_a_postgresql_control_database_uses_a_pool_in_web_processes(load, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    url = "postgresql://infra:pw@db.internal:5432/infra_control"
    database = load(ENVIRONMENT="testing", ADMIN_DATABASE_URL=url, DB_POOL_MIN_SIZE="3", DB_POOL_MAX_SIZE="7")[
        "DATABASES"
    ]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["NAME"]) == ("db.internal", "infra_control")
    assert database["OPTIONS"]["pool"] == {"min_size": 3, "max_size": 7}
    assert database["CONN_MAX_AGE"] == 0
    # By default none is held at rest: a sync worker opens one at its first request (test_db_pool.py).
    default = load(ENVIRONMENT="testing", ADMIN_DATABASE_URL=url)["DATABASES"]["default"]
    assert default["OPTIONS"]["pool"] == {"min_size": 0, "max_size": 10}


def test_qcluster_workers_keep_a_checked_connection_instead_of_a_pool_shared_across_the_fork(load, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "qcluster"])
    database = load(ENVIRONMENT="testing", ADMIN_DATABASE_URL="postgresql://infra:pw@db.internal/infra_control")[
        "DATABASES"
    ]["default"]
    assert "pool" not in database.get("OPTIONS", {})
    assert database["CONN_MAX_AGE"] == 60
    assert database["CONN_HEALTH_CHECKS"] is True


def test_a_redis_broker_also_holds_the_shared_cache(load):
    values = load(ENVIRONMENT="testing", Q_BROKER_URL="redis://cache.internal:6379/2")
    assert values["Q_CLUSTER"]["redis"] == "redis://cache.internal:6379/2"
    assert "orm" not in values["Q_CLUSTER"]
    assert values["CACHES"]["default"] == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://cache.internal:6379/2",
    }
    assert values["Q_CLUSTER"]["cache"] == "process"  # cluster statistics stay off the shared cache


def test_without_redis_the_queue_and_cache_live_in_the_control_database(load):
    values = load(ENVIRONMENT="testing")
    assert values["Q_CLUSTER"]["orm"] == "default"
    assert values["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
