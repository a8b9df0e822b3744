"""The admin login page, a real browser signing in through the provider, and logout of both sessions."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlparse

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import sync_playwright
from rest_framework.test import APIClient

from infra_site import roles
from tests.oidc_provider.launcher import OidcProvider, form_action, hidden_inputs
from tests.support.oidc import keycloak_login, live
from tests.support.tools import CHROMIUM_FLAGS, require_tool


@pytest.mark.django_db
def test_the_login_page_offers_keycloak_and_the_local_form_while_local_login_is_enabled(oidc, client, settings):
    settings.LOCAL_LOGIN_ENABLED = True
    page = client.get("/admin/login/?next=/admin/migrations_runner/").content.decode()
    assert 'href="/oidc/authenticate/?next=/admin/migrations_runner/"' in page
    assert "Log in with Keycloak" in page
    assert 'id="login-form"' in page


@pytest.mark.django_db
def test_the_login_page_says_so_when_no_login_method_is_configured(client, settings):
    settings.KEYCLOAK_URL = ""
    settings.LOCAL_LOGIN_ENABLED = False
    page = client.get("/admin/login/").content.decode()
    assert "No login method is configured" in page
    assert 'id="login-form"' not in page


@pytest.mark.django_db
def test_starting_a_keycloak_login_redirects_to_the_realm_with_pkce(oidc, client):
    answer = client.get("/oidc/authenticate/")
    target = urlparse(answer["Location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == oidc.endpoint("auth")
    assert query["client_id"] == ["infra-app"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["openid email profile"]
    assert {"state", "nonce", "code_challenge", "redirect_uri"} <= set(query)


@pytest.mark.django_db
def test_starting_a_keycloak_login_is_a_404_when_oidc_is_not_configured(client, settings):
    settings.KEYCLOAK_URL = ""
    assert client.get("/oidc/authenticate/").status_code == 404


@live
def test_a_browser_clicks_log_in_with_keycloak_signs_in_and_lands_on_the_admin_index(
    live_oidc: OidcProvider, live_server
):
    chromium = require_tool("chromium")
    live_oidc.put_user("grace", "grace-pw", realm_roles=[roles.MIGRATIONS_READ])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/admin/")
            page.get_by_text("Log in with Keycloak").click()
            page.wait_for_selector("#kc-form-login")
            assert page.url.startswith(live_oidc.issuer())
            page.fill("#username", "grace")
            page.fill("#password", "grace-pw")
            page.click("#kc-login")
            page.wait_for_url(f"{live_server.url}/admin/")
            heading = page.text_content("#content h1")
            user_tools = page.text_content("#user-tools")
        finally:
            browser.close()
    # Django refuses ORM calls while Playwright's event loop runs, so the database is read afterwards.
    assert heading == "Dashboard"
    assert "grace" in user_tools
    assert set(User.objects.get(username="grace").groups.values_list("name", flat=True)) == {roles.MIGRATIONS_READ}


@live
def test_logout_ends_the_django_session_and_the_provider_session(live_oidc: OidcProvider, live_server):
    live_oidc.put_user("hank", "hank-pw", realm_roles=[roles.MIGRATIONS_READ])
    browser, landed = keycloak_login(live_server.url, "hank", "hank-pw")
    logout = browser.post(
        f"{live_server.url}/admin/logout/",
        data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        headers={"Referer": landed.url},
        allow_redirects=False,
        timeout=10,
    )
    target = urlparse(logout.headers["Location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == live_oidc.endpoint("logout")
    assert query["post_logout_redirect_uri"] == [f"{live_server.url}/admin/login/"]
    assert query["id_token_hint"]
    assert browser.get(f"{live_server.url}/admin/", timeout=10).url.startswith(f"{live_server.url}/admin/login/")

    confirm = browser.get(logout.headers["Location"], timeout=10)
    done = browser.post(
        form_action(confirm, "op.logoutForm"), data={**hidden_inputs(confirm), "logout": "yes"}, timeout=10
    )
    assert done.url == f"{live_server.url}/admin/login/"
    # The provider session is gone too: starting a login asks for the password again.
    again = browser.get(urljoin(live_server.url, "/oidc/authenticate/"), timeout=10)
    assert 'id="kc-form-login"' in again.text


@pytest.mark.django_db
def test_logout_of_a_local_account_returns_to_the_login_page(client):
    User.objects.create_superuser("local-admin", password="pw")
    # Through the login form: the lockout backend needs the request, which the test client's login() omits.
    assert client.post("/admin/login/", {"username": "local-admin", "password": "pw"}).status_code == 302
    answer = client.post("/admin/logout/")
    assert answer.status_code == 302
    assert answer["Location"] == "/admin/login/"
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_me_tells_a_service_account_who_it_is_and_its_roles_with_the_hierarchy(oidc: OidcProvider):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {oidc.client_credentials('infra-ci')}")
    me = api.get("/api/v1/auth/me/").json()
    assert me["username"] == "service-account-infra-ci"
    assert me["authentication"] == "bearer"
    assert me["subject"] == "infra-ci"
    assert me["roles"] == [roles.MIGRATIONS_EXECUTE, roles.MIGRATIONS_READ]


@pytest.mark.django_db
def test_me_needs_credentials(client):
    assert client.get("/api/v1/auth/me/").status_code == 401


@pytest.mark.django_db
def test_a_failed_keycloak_callback_returns_to_the_login_page_with_a_message(oidc, client):
    answer = client.get("/oidc/callback/?code=stolen&state=unknown", follow=True)
    assert answer.redirect_chain[-1][0] == "/admin/login/?oidc_error=1"
    assert "Logging in with Keycloak failed" in answer.content.decode()
    assert not answer.context["user"].is_authenticated
