"""Verified HTTP Basic credentials are remembered for BASIC_AUTH_CACHE_SECONDS, per process and client address;
what they stand for changing in this process forgets them at once."""

from __future__ import annotations

import base64

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from infra_site import roles
from infra_site.auth import basic_cache

ME = "/api/v1/auth/me/"
EXECUTIONS = "/api/v1/migrations/"
PASSWORD = "remembered-password"


def get(path: str, username: str = "reader", password: str = PASSWORD, address: str = "127.0.0.1"):
    header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return APIClient().get(path, HTTP_AUTHORIZATION=header, REMOTE_ADDR=address)


def login_queries(path: str = ME, **kwargs) -> list[str]:
    """The SQL of one request that reads users, groups, login attempts or the shared cache's counters."""
    with CaptureQueriesContext(connection) as captured:
        response = get(path, **kwargs)
    assert response.status_code == 200, response.content[:300]
    return [
        query["sql"]
        for query in captured.captured_queries
        if any(table in query["sql"] for table in ("auth_user", "auth_group", "axes_", "infra_cache"))
    ]


@pytest.fixture
def reader(make_user):
    return make_user(roles.MIGRATIONS_READ, username="reader", password=PASSWORD)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(basic_cache.time, "monotonic", fake)
    return fake


@pytest.mark.django_db
def test_a_verified_login_is_let_in_again_without_reading_users_attempts_or_counters(reader):
    assert login_queries()  # the first request checks everything
    assert login_queries(EXECUTIONS) == []  # roles come from what was verified: the permission check reads nothing
    me = get(ME).json()
    assert me["username"] == "reader"
    assert roles.MIGRATIONS_READ in me["roles"]


@pytest.mark.django_db
def test_the_same_login_from_another_address_is_checked_in_full(reader):
    login_queries(address="192.0.2.1")
    assert login_queries(address="192.0.2.2")


@pytest.mark.django_db
def test_a_wrong_password_is_never_remembered_and_is_counted_each_time(reader):
    assert get(ME).status_code == 200
    for attempt in (1, 2):
        assert get(ME, password="wrong-password").status_code == 401
        assert AccessAttempt.objects.get(username="reader").failures_since_start == attempt


@pytest.mark.django_db
def test_after_a_verified_login_the_failure_limit_still_locks_the_right_password_out(reader):
    assert get(ME).status_code == 200
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        get(ME, password=f"guess-{n}")
    refused = get(ME)
    assert refused.status_code == 429
    assert refused.json()["error"] == "login_locked_out"


@pytest.mark.django_db
def test_a_password_change_refuses_the_old_password_at_once(reader):
    assert get(ME).status_code == 200
    reader.set_password("the-new-password")
    reader.save()
    assert get(ME).status_code == 401
    assert get(ME, password="the-new-password").status_code == 200


@pytest.mark.django_db
def test_a_deactivated_user_is_refused_at_once(reader):
    assert get(ME).status_code == 200
    reader.is_active = False
    reader.save()
    assert get(ME).status_code == 401


@pytest.mark.django_db
def test_a_role_taken_away_or_a_group_renamed_is_refused_at_once(reader):
    assert get(EXECUTIONS).status_code == 200
    reader.groups.clear()
    assert get(EXECUTIONS).status_code == 403
    reader.groups.add(Group.objects.get(name=roles.MIGRATIONS_READ))
    assert get(EXECUTIONS).status_code == 200
    Group.objects.filter(name=roles.MIGRATIONS_READ).get().save(update_fields=["name"])  # any save forgets
    assert login_queries(EXECUTIONS)


@pytest.mark.django_db
def test_a_login_is_remembered_for_the_configured_seconds(reader, clock, settings):
    settings.BASIC_AUTH_CACHE_SECONDS = 30
    login_queries()
    clock.now += 29.9
    assert login_queries() == []
    clock.now += 0.2
    assert login_queries()  # expired: checked in full, and remembered again from now
    assert login_queries() == []


@pytest.mark.django_db
def test_zero_seconds_checks_every_request_in_full(reader, settings):
    settings.BASIC_AUTH_CACHE_SECONDS = 0
    for _ in range(3):
        assert login_queries()


@pytest.mark.django_db
def test_local_logins_turned_off_refuse_a_remembered_login(reader, settings):
    assert get(ME).status_code == 200
    settings.LOCAL_LOGIN_ENABLED = False
    assert get(ME).status_code == 401


@pytest.mark.django_db
def test_what_is_remembered_holds_no_password_and_is_bounded(reader, monkeypatch):
    assert get(ME).status_code == 200
    kept = list(basic_cache._entries.items())
    assert len(kept) == 1
    digest, (_, user) = kept[0]
    assert PASSWORD.encode() not in digest
    assert PASSWORD not in repr(vars(user))
    monkeypatch.setattr(basic_cache, "MAX_ENTRIES", 3)
    for n in range(5):
        get(ME, address=f"192.0.2.{n}")
    assert len(basic_cache._entries) == 3


@pytest.mark.django_db
def test_a_remembered_user_is_a_copy_each_request_may_change(reader):
    assert get(ME).status_code == 200
    first = basic_cache.get("127.0.0.1", "reader", PASSWORD)
    assert first is not None
    first.username = "changed-by-a-view"
    second = basic_cache.get("127.0.0.1", "reader", PASSWORD)
    assert second is not None
    assert second.username == "reader"
