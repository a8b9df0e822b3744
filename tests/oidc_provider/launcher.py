"""Start and drive the test OpenID Connect provider (``server.mjs``, oidc-provider laid out like Keycloak)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import requests

HERE = Path(__file__).resolve().parent
REALM = "infra"
OTHER_REALM = "other"
APP_CLIENT_ID = "infra-app"
APP_CLIENT_SECRET = "infra-app-secret"
# A redirect URI of the app client that nothing serves: the helpers read the code from the redirect itself.
DIRECT_REDIRECT_URI = "http://127.0.0.1:9/direct-callback"
READY_TIMEOUT = 30.0


def app_client(*redirect_uris: str, post_logout_redirect_uris: tuple[str, ...] = ()) -> dict[str, Any]:
    """The app's confidential client; Keycloak's default audience (``account``, with the app as ``azp``)."""
    return {
        "client_id": APP_CLIENT_ID,
        "client_secret": APP_CLIENT_SECRET,
        "redirect_uris": [DIRECT_REDIRECT_URI, *redirect_uris],
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "audience": "account",
    }


def service_account(
    client_id: str, *, client_roles: list[str], audience: str = APP_CLIENT_ID, ttl: int | None = None
) -> dict[str, Any]:
    """A client-credentials client whose service account holds ``client_roles`` of the app client."""
    client: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": f"{client_id}-secret",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "audience": audience,
        "serviceAccount": {"clientRoles": client_roles},
    }
    if ttl is not None:
        client["accessTokenTTL"] = ttl
    return client


@dataclass
class OidcProvider:
    """A running provider process and helpers that speak to it like a client, a user and a test would."""

    process: subprocess.Popen
    port: int
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        """The base URL, i.e. what ``KEYCLOAK_URL`` is set to."""
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, realm: str = REALM) -> str:
        return f"{self.url}/realms/{realm}"

    def endpoint(self, name: str, realm: str = REALM) -> str:
        return f"{self.issuer(realm)}/protocol/openid-connect/{name}"

    def put_user(
        self,
        username: str,
        password: str,
        *,
        realm_roles: tuple[str, ...] = (),
        client_roles: tuple[str, ...] = (),
        email: str | None = None,
    ) -> None:
        """Add or replace a user (same ``sub`` as before), with realm roles and roles of the app client."""
        user = {"username": username, "password": password, "realmRoles": realm_roles, "clientRoles": client_roles}
        self._post("/__test__/users", {**user, "email": email} if email else user)

    def put_client(self, client: dict[str, Any]) -> None:
        """Add or replace a client (takes effect for new requests)."""
        self._post("/__test__/clients", client)

    def rotate_keys(self) -> str:
        """Make the provider sign with a new key (the old one stays published); return the new key id."""
        return self._post("/__test__/rotate", {})["kid"]

    def requests_to(self, path_suffix: str = "") -> int:
        """Count the requests that reached a realm on paths ending with ``path_suffix`` (all paths by default)."""
        counts = self.http.get(f"{self.url}/__test__/stats", timeout=10).json()["requests"]
        return sum(count for path, count in counts.items() if path.endswith(path_suffix))

    def client_credentials(self, client_id: str, *, realm: str = REALM) -> str:
        """Return an access token of a service account (client credentials grant)."""
        response = self.http.post(
            self.endpoint("token", realm),
            data={"grant_type": "client_credentials"},
            auth=(client_id, f"{client_id}-secret"),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def revoke(self, token: str, client_id: str, *, realm: str = REALM) -> None:
        """Revoke an access token at the provider, as the client it was issued to (RFC 7009)."""
        response = self.http.post(
            self.endpoint("revoke", realm),
            data={"token": token, "token_type_hint": "access_token"},
            auth=(client_id, f"{client_id}-secret"),
            timeout=10,
        )
        response.raise_for_status()

    def user_tokens(self, username: str, password: str) -> dict[str, Any]:
        """Sign ``username`` in through the login form (authorization code flow) and return the token response."""
        browser = requests.Session()
        query = urlencode(
            {
                "client_id": APP_CLIENT_ID,
                "redirect_uri": DIRECT_REDIRECT_URI,
                "response_type": "code",
                "scope": "openid email profile",
                "state": "direct",
                "nonce": "direct",
            }
        )
        page = browser.get(f"{self.endpoint('auth')}?{query}", timeout=10)
        answer = submit_login_form(browser, page, username, password, stop_at=DIRECT_REDIRECT_URI)
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
        response = self.http.post(
            self.endpoint("token"),
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": DIRECT_REDIRECT_URI},
            auth=(APP_CLIENT_ID, APP_CLIENT_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.url}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()


def form_action(page: requests.Response, form_id: str) -> str:
    """Return the absolute action URL of the form with id ``form_id`` in an HTML page."""
    match = re.search(rf'<form[^>]*id="{re.escape(form_id)}"[^>]*action="([^"]+)"', page.text)
    if not match:
        raise AssertionError(f"no form #{form_id} at {page.url}: {page.text[:500]}")
    return urljoin(page.url, unescape(match.group(1)))


def hidden_inputs(page: requests.Response) -> dict[str, str]:
    """Return the hidden inputs of an HTML page (name to value)."""
    found = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text)
    return {name: unescape(value) for name, value in found}


def submit_login_form(
    browser: requests.Session, page: requests.Response, username: str, password: str, *, stop_at: str
) -> requests.Response:
    """Fill the provider's login form and follow redirects until one points at ``stop_at``; return that one."""
    answer = browser.post(
        form_action(page, "kc-form-login"), data={"username": username, "password": password}, allow_redirects=False
    )
    return follow_until(browser, answer, stop_at)


def follow_until(browser: requests.Session, answer: requests.Response, stop_at: str) -> requests.Response:
    """Follow redirects from ``answer`` until one points at ``stop_at`` (returned, not followed)."""
    for _ in range(10):
        location = answer.headers.get("location")
        if not location:
            raise AssertionError(f"expected a redirect to {stop_at}, got {answer.status_code} at {answer.url}")
        if urljoin(answer.url, location).startswith(stop_at):
            return answer
        answer = browser.get(urljoin(answer.url, location), allow_redirects=False, timeout=10)
    raise AssertionError(f"too many redirects before reaching {stop_at}")


@contextmanager
def running_provider(clients: list[dict[str, Any]], users: list[dict[str, Any]]) -> Iterator[OidcProvider]:
    """Run the provider on a free port of 127.0.0.1 until the block ends (terminated, then killed)."""
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"oidc-provider is not installed: run `npm ci --no-audit --no-fund` in {HERE}")
    config = {
        "port": 0,
        "realms": [REALM, OTHER_REALM],
        "appClientId": APP_CLIENT_ID,
        "resource": "urn:infra-control-plane:api",
        "clients": clients,
        "users": users,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="oidc-provider-") as config_file:
        json.dump(config, config_file)
        config_file.flush()
        process = subprocess.Popen(
            ["node", str(HERE / "server.mjs"), config_file.name],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            provider = OidcProvider(process=process, port=_wait_ready(process))
            yield provider
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen) -> int:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT)
    if not lines or not lines[0].strip():
        _stop(process)
        raise RuntimeError(f"the test OIDC provider did not start: {process.stderr.read()[-2000:]}")
    # Drain stderr so a chatty provider never blocks on a full pipe.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return int(json.loads(lines[0])["port"])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
