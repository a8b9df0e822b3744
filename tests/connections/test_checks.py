"""The registry's system check of CONNECTION_ALLOWED_HOSTS, and its honouring of ``app_configs``."""

from __future__ import annotations

from django.apps import apps
from django.core import checks

from connections.checks import check_connection_allowed_hosts


def test_each_unusable_entry_is_its_own_error_and_usable_ones_pass(settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["db.example.com", "*.db.internal", "10.0.0.0/8", "*", "db host", "*.-bad-"]
    errors = check_connection_allowed_hosts()
    assert [e.id for e in errors] == ["connections.E001", "connections.E001"]
    assert all(e.level == checks.ERROR for e in errors)
    assert errors[0].msg.startswith("CONNECTION_ALLOWED_HOSTS: 'db host' is not a host name")
    assert errors[1].msg == "CONNECTION_ALLOWED_HOSTS: '*.-bad-' is not a valid wildcard."
    assert "CIDR ranges" in errors[0].hint


def test_the_check_runs_only_when_the_registry_is_among_the_named_apps(settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["db host"]
    assert check_connection_allowed_hosts(app_configs=[apps.get_app_config("health")]) == []
    named = [apps.get_app_config("health"), apps.get_app_config("connections")]
    assert [e.id for e in check_connection_allowed_hosts(app_configs=named)] == ["connections.E001"]
