"""Logging in: Keycloak's authorization code flow against a real provider, and local passwords (break-glass)."""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from infra_site import roles
from infra_site.models import OidcIdentity
from tests.oidc_provider.launcher import OidcProvider
from tests.support.oidc import keycloak_login, live


def role_groups(user: User) -> set[str]:
    return set(user.groups.filter(name__in=roles.ALL_ROLES).values_list("name", flat=True))


@live
def test_keycloak_login_lands_on_the_admin_with_the_groups_of_the_users_roles(live_oidc: OidcProvider, live_server):
    live_oidc.put_user(
        "dora", "dora-pw", realm_roles=[roles.MIGRATIONS_EXECUTE], client_roles=[roles.DATABASES_READ, "other"]
    )
    _, landed = keycloak_login(live_server.url, "dora", "dora-pw")
    assert landed.status_code == 200
    assert landed.url == f"{live_server.url}/admin/"
    assert ">Dashboard</h1>" in landed.text
    assert 'id="logout-form"' in landed.text
    user = User.objects.get(username="dora")
    assert role_groups(user) == {roles.MIGRATIONS_EXECUTE, roles.DATABASES_READ}
    assert user.is_staff
    assert not user.is_superuser
    assert not user.has_usable_password()
    assert OidcIdentity.objects.get(user=user).issuer == live_oidc.issuer()


@live
def test_a_role_removed_at_the_provider_is_gone_at_the_next_login(live_oidc: OidcProvider, live_server):
    live_oidc.put_user("erik", "erik-pw", realm_roles=[roles.MIGRATIONS_READ, roles.DATABASES_MANAGE])
    keycloak_login(live_server.url, "erik", "erik-pw")
    assert role_groups(User.objects.get(username="erik")) == {roles.MIGRATIONS_READ, roles.DATABASES_MANAGE}

    live_oidc.put_user("erik", "erik-pw", realm_roles=[roles.DATABASES_MANAGE])
    _, landed = keycloak_login(live_server.url, "erik", "erik-pw")
    assert landed.url == f"{live_server.url}/admin/"
    assert role_groups(User.objects.get(username="erik")) == {roles.DATABASES_MANAGE}


@live
def test_a_wrong_password_at_the_provider_logs_nobody_in(live_oidc: OidcProvider, live_server):
    live_oidc.put_user("fred", "fred-pw", realm_roles=[roles.MIGRATIONS_READ])
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/oidc/authenticate/", timeout=10)
    refused = browser.post(page.url, data={"username": "fred", "password": "wrong"}, timeout=10)
    assert "Invalid username or password." in refused.text
    assert browser.get(f"{live_server.url}/admin/", timeout=10).url.startswith(f"{live_server.url}/admin/login/")
    assert not User.objects.filter(username="fred").exists()


@pytest.mark.django_db
def test_with_oidc_unconfigured_in_development_the_local_login_form_works(client, make_user, settings):
    settings.KEYCLOAK_URL = ""
    settings.LOCAL_LOGIN_ENABLED = True
    # Django's admin form admits staff accounts only (createsuperuser makes them so).
    User.objects.filter(pk=make_user(roles.MIGRATIONS_READ, username="local-op", password="local-pw").pk).update(
        is_staff=True
    )
    page = client.get("/admin/login/")
    assert 'id="login-form"' in page.content.decode()
    assert "Log in with Keycloak" not in page.content.decode()
    answer = client.post("/admin/login/?next=/admin/", {"username": "local-op", "password": "local-pw"}, follow=True)
    assert answer.redirect_chain[-1][0] == "/admin/"
    assert answer.status_code == 200
    assert answer.context["user"].username == "local-op"


@pytest.mark.django_db
def test_with_local_login_disabled_the_admin_form_is_gone_and_passwords_are_refused(oidc, client, make_user, settings):
    settings.LOCAL_LOGIN_ENABLED = False
    User.objects.create_superuser("break-glass", password="glass-pw")
    page = client.get("/admin/login/").content.decode()
    assert "Log in with Keycloak" in page
    assert 'id="login-form"' not in page
    client.post("/admin/login/?next=/admin/", {"username": "break-glass", "password": "glass-pw"})
    assert client.get("/admin/").status_code == 302

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Basic YnJlYWstZ2xhc3M6Z2xhc3MtcHc=")  # break-glass:glass-pw
    response = api.get("/api/v1/migrations/")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


@pytest.mark.django_db
def test_with_local_login_enabled_basic_auth_still_works_as_break_glass(oidc, make_user, settings):
    settings.LOCAL_LOGIN_ENABLED = True
    make_user(roles.INFRASTRUCTURE_ADMIN, username="break-glass", password="glass-pw")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Basic YnJlYWstZ2xhc3M6Z2xhc3MtcHc=")
    assert api.get("/api/v1/migrations/").status_code == 200


@pytest.mark.django_db
def test_turning_local_login_off_ends_sessions_opened_with_a_password(client, make_user, settings):
    make_user(roles.MIGRATIONS_READ, username="old-session", password="pw")
    # Through the login form: the lockout backend needs the request, which the test client's login() omits.
    assert client.post("/admin/login/", {"username": "old-session", "password": "pw"}).status_code == 302
    assert client.get("/admin/").status_code == 200
    settings.LOCAL_LOGIN_ENABLED = False
    assert client.get("/admin/").status_code == 302
