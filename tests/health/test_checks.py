"""System checks of the health app: ids, hints, app_configs, and the network check only under --deploy."""

from __future__ import annotations

import time

from django.apps import apps
from django.core import checks as django_checks

from health import checks
from tests.support.qcluster import RedisServer
from tests.support.tools import require_tool

ALL_CHECKS = (
    checks.check_broker,
    checks.check_migrations_dir,
    checks.check_oidc_complete,
    checks.check_sqlite_processes,
    checks.check_multiprocess_dir,
    checks.check_metrics_token,
)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_a_missing_migrations_dir_is_an_error_and_one_without_sets_a_warning(settings, tmp_path):
    settings.MIGRATIONS_DIR = tmp_path / "missing"
    (error,) = checks.check_migrations_dir()
    assert error.id == "health.E002"
    assert error.level == django_checks.ERROR
    assert "MIGRATIONS_DIR" in error.hint
    settings.MIGRATIONS_DIR = tmp_path
    assert ids(checks.check_migrations_dir()) == ["health.W001"]
    (tmp_path / "tenant").mkdir()
    assert checks.check_migrations_dir() == []


def test_half_configured_oidc_names_what_is_missing(settings):
    settings.KEYCLOAK_URL, settings.KEYCLOAK_CLIENT_ID, settings.KEYCLOAK_CLIENT_SECRET = "https://sso", "infra", ""
    (warning,) = checks.check_oidc_complete()
    assert warning.id == "health.W002"
    assert "KEYCLOAK_CLIENT_SECRET" in warning.msg
    assert "KEYCLOAK_CLIENT_SECRET" in warning.hint
    settings.KEYCLOAK_CLIENT_SECRET = "secret"
    assert checks.check_oidc_complete() == []
    settings.KEYCLOAK_URL = settings.KEYCLOAK_CLIENT_ID = settings.KEYCLOAK_CLIENT_SECRET = ""
    assert checks.check_oidc_complete() == []


def test_sqlite_warns_about_many_processes_and_about_a_redis_broker(settings):
    assert settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    settings.WORKERS, settings.Q_WORKERS = 2, 4
    assert checks.check_sqlite_processes() == []
    settings.WORKERS, settings.Q_WORKERS = 4, 8
    (warning,) = checks.check_sqlite_processes()
    assert warning.id == "health.W003"
    assert "12 processes" in warning.msg
    assert "database is locked" in warning.hint
    settings.WORKERS, settings.Q_WORKERS = 1, 1
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": "redis://127.0.0.1:6379/0"}
    assert ids(checks.check_sqlite_processes()) == ["health.W004"]


def test_the_multiprocess_dir_must_be_a_directory(settings, tmp_path):
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path / "nowhere")
    assert ids(checks.check_multiprocess_dir()) == ["health.E003"]
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    assert checks.check_multiprocess_dir() == []


def test_a_deployment_without_metrics_token_is_warned(settings):
    settings.IS_DEPLOYED, settings.ENVIRONMENT, settings.METRICS_TOKEN = True, "production", ""
    (warning,) = checks.check_metrics_token()
    assert warning.id == "health.W005"
    assert "403" in warning.msg
    settings.METRICS_TOKEN = "token"
    assert checks.check_metrics_token() == []


def test_an_unreachable_redis_broker_is_an_error_found_quickly(settings, closed_port):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": f"redis://127.0.0.1:{closed_port}/0"}
    started = time.monotonic()
    (error,) = checks.check_broker()
    assert time.monotonic() - started < 3
    assert error.id == "health.E001"
    assert "Q_BROKER_URL" in error.hint


def test_a_reachable_redis_broker_passes(settings):
    require_tool("redis-server")
    redis = RedisServer().start()
    try:
        settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": redis.url}
        assert checks.check_broker() == []
    finally:
        redis.stop()


def test_every_check_honours_app_configs(settings, tmp_path, closed_port):
    settings.MIGRATIONS_DIR = tmp_path / "missing"
    settings.KEYCLOAK_URL, settings.KEYCLOAK_CLIENT_ID, settings.KEYCLOAK_CLIENT_SECRET = "https://sso", "", ""
    settings.WORKERS, settings.Q_WORKERS = 10, 10
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path / "nowhere")
    settings.IS_DEPLOYED, settings.METRICS_TOKEN = True, ""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": f"redis://127.0.0.1:{closed_port}/0"}
    others = [apps.get_app_config("connections")]
    for check in ALL_CHECKS:
        assert check(app_configs=others) == [], check.__name__
        assert check(app_configs=[apps.get_app_config("health")]) != [], check.__name__


def test_only_deployment_checks_touch_the_network():
    registered = django_checks.registry.registry
    ordinary = registered.get_checks(include_deployment_checks=False)
    deployment = registered.get_checks(include_deployment_checks=True)
    assert checks.check_broker not in ordinary
    assert checks.check_broker in deployment
    assert checks.check_metrics_token not in ordinary
    for check in (checks.check_migrations_dir, checks.check_oidc_complete, checks.check_sqlite_processes):
        assert check in ordinary
