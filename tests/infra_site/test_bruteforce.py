"""Password guessing is locked out (django-axes), and rate limits and lockouts are shared by every process."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from axes.models import AccessAttempt, AccessFailureLog
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher
from django.db.models import F
from rest_framework.test import APIClient

from infra_site import roles
from infra_site.auth.lockout import UNKNOWN_USERNAME, is_not_password_login
from tests.support.tools import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ME = "/api/v1/auth/me/"
LIMIT = settings.LOGIN_FAILURE_LIMIT


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def api_get(username: str, password: str, address: str = "127.0.0.1"):
    return APIClient().get(ME, HTTP_AUTHORIZATION=basic(username, password), REMOTE_ADDR=address)


def assert_locked_out_json(response) -> None:
    assert response.status_code == 429, response.content[:300]
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "login_locked_out"
    retry_after = body["details"]["retry_after_seconds"]
    assert 0 < retry_after <= settings.LOGIN_LOCKOUT_MINUTES * 60
    assert response["Retry-After"] == str(retry_after)


@pytest.fixture
def operator(make_user):
    return make_user(roles.MIGRATIONS_READ, username="operator", password="right-password")


@pytest.mark.django_db
def test_after_the_failure_limit_the_right_basic_password_is_refused_with_429(operator):
    statuses = [api_get("operator", f"guess-{n}").status_code for n in range(LIMIT)]
    assert statuses == [401] * (LIMIT - 1) + [429]
    assert_locked_out_json(api_get("operator", "right-password"))
    # The refused attempt was no password check: it is not counted.
    assert AccessAttempt.objects.get(username="operator").failures_since_start == LIMIT


@pytest.mark.django_db
def test_below_the_failure_limit_the_right_basic_password_still_works(operator):
    for n in range(LIMIT - 1):
        assert api_get("operator", f"guess-{n}").status_code == 401
    assert api_get("operator", "right-password").status_code == 200


@pytest.mark.django_db
def test_the_lockout_is_per_user_and_address(operator, make_user):
    make_user(roles.MIGRATIONS_READ, username="colleague", password="colleague-password")
    for n in range(LIMIT):
        api_get("operator", f"guess-{n}", address="192.0.2.10")
    assert_locked_out_json(api_get("operator", "right-password", address="192.0.2.10"))
    assert api_get("operator", "right-password", address="192.0.2.20").status_code == 200
    assert api_get("colleague", "colleague-password", address="192.0.2.10").status_code == 200


@pytest.mark.django_db
def test_failed_basic_logins_with_an_unparsable_body_are_counted_too(operator):
    # Were the failure left unrecorded when the body cannot be parsed, wrong (401) and right (200) passwords
    # would still be told apart on a GET, with no limit.
    api = APIClient()
    for n in range(LIMIT):
        api.generic("GET", ME, "{not json", content_type="application/json", HTTP_AUTHORIZATION=basic("operator", n))
    assert_locked_out_json(api_get("operator", "right-password"))


class CountingHasher(MD5PasswordHasher):
    """The tests' hasher, counting the passwords it hashes: each is what a guess costs the server."""

    hashed = 0

    def encode(self, password, salt):
        CountingHasher.hashed += 1
        return super().encode(password, salt)


@pytest.fixture
def counting_hasher(settings) -> type[CountingHasher]:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.hashed = 0
    return CountingHasher


@pytest.mark.django_db
def test_a_stream_of_unknown_usernames_is_refused_before_hashing_and_stored_under_one_name(operator, counting_hasher):
    statuses = [api_get(f"nobody-{uuid.uuid4().hex}", "guess", address="198.51.100.7").status_code for _ in range(30)]
    assert statuses == [401] * (LIMIT - 1) + [429] * (30 - LIMIT + 1)
    assert_locked_out_json(api_get(f"nobody-{uuid.uuid4().hex}", "guess", address="198.51.100.7"))
    # The address is locked, not only the unknown names: a 401 here would tell that "operator" is an account.
    assert_locked_out_json(api_get("operator", "guess", address="198.51.100.7"))
    assert counting_hasher.hashed == LIMIT
    assert list(AccessAttempt.objects.values_list("username", "failures_since_start")) == [(UNKNOWN_USERNAME, LIMIT)]
    assert AccessFailureLog.objects.count() == LIMIT
    assert api_get("operator", "right-password", address="198.51.100.8").status_code == 200


@pytest.mark.django_db
def test_an_address_trying_many_usernames_is_locked_out_before_hashing(settings, operator, make_user, client):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 6
    for n in range(3):
        make_user(roles.MIGRATIONS_READ, username=f"member-{n}", password="member-password")
    # Two failures per user: below the limit of each user, at the limit of the address.
    statuses = [api_get(f"member-{n % 3}", "wrong", address="198.51.100.8").status_code for n in range(6)]
    assert statuses == [401] * 6
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.hashed = 0
    refused = api_get("operator", "right-password", address="198.51.100.8")
    assert_locked_out_json(refused)
    assert refused.json()["details"]["failure_limit"] == 6
    assert admin_login(client, "member-0", "member-password", address="198.51.100.8").status_code == 429
    assert CountingHasher.hashed == 0
    assert AccessAttempt.objects.filter(username="operator").count() == 0
    assert api_get("operator", "right-password", address="198.51.100.9").status_code == 200


@pytest.mark.django_db
def test_attempts_during_a_lockout_do_not_prolong_it(operator):
    for n in range(LIMIT):
        api_get("operator", f"guess-{n}", address="192.0.2.10")
    locked_at = AccessAttempt.objects.get(username="operator").attempt_time
    for n in range(3):
        assert_locked_out_json(api_get("operator", f"more-{n}", address="192.0.2.10"))
    attempt = AccessAttempt.objects.get(username="operator")
    assert (attempt.attempt_time, attempt.failures_since_start) == (locked_at, LIMIT)
    # LOGIN_LOCKOUT_MINUTES after the last counted failure the lockout is over, whatever was tried meanwhile.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES))
    assert api_get("operator", "right-password", address="192.0.2.10").status_code == 200


def admin_login(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_the_admin_login_is_locked_after_the_failure_limit(client, operator):
    statuses = [admin_login(client, "operator", f"guess-{n}").status_code for n in range(LIMIT)]
    assert statuses == [200] * (LIMIT - 1) + [429]
    refused = admin_login(client, "operator", "right-password")
    assert refused.status_code == 429
    assert "Too many failed logins for operator" in refused.content.decode()
    assert "Infrastructure control plane" in refused.content.decode()
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_lockouts_show_in_the_admin_for_infrastructure_admins_who_can_unlock(client, operator, make_user):
    for n in range(LIMIT):
        admin_login(client, "operator", f"guess-{n}")
    attempt = AccessAttempt.objects.get(username="operator")
    assert AccessFailureLog.objects.filter(username="operator").count() == LIMIT

    client.force_login(make_user(roles.DATABASES_MANAGE))
    assert client.get("/admin/axes/accessattempt/").status_code == 403

    client.force_login(make_user(roles.INFRASTRUCTURE_ADMIN))
    assert "Access attempts" in client.get("/admin/").content.decode()
    listing = client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert "operator" in listing.content.decode()
    assert "Locked Out" in listing.content.decode()
    assert client.get("/admin/axes/accessfailurelog/").status_code == 200
    assert client.get("/admin/axes/accessattempt/add/").status_code == 403
    deleted = client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    client.logout()
    assert admin_login(client, "operator", "right-password").status_code == 302


def test_keycloak_logins_carry_no_password_and_are_not_watched():
    assert is_not_password_login(None, {"nonce": "n", "code_verifier": "********************"})
    assert not is_not_password_login(None, {"username": "operator", "password": "********************"})
    assert not is_not_password_login(None, {"username": "operator", "password": ""})


# --- Several processes: two servers on one control database ---------------------------------------------------

SETUP = """
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    for name in ("throttled", "guessed"):
        user = User.objects.create_user(name, password=name + "-password")
        user.groups.add(Group.objects.get(name="migrations:read"))
"""


class Server:
    """One gunicorn server (one worker process) as its own process group, on a port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "infra_site.wsgi:application",
                    f"--bind=127.0.0.1:{self.port}",
                    "--workers=1",
                    # gunicorn's default control socket is one per account: two servers would share it.
                    "--no-control-socket",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log = log

    def wait_ready(self) -> None:

        def answering() -> bool:
            assert self.process.poll() is None, f"server exited:\n{self.log.read_text()[-3000:]}"
            try:
                requests.get(self.url + ME, timeout=5)
            except requests.ConnectionError:
                return False
            return True

        wait_until(answering, timeout=60, message=lambda: f"server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGINT (gunicorn's quick shutdown) to the process group, then SIGKILL if it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory) -> Iterator[list[Server]]:
    """Two server processes sharing a fresh SQLite control database, with a rate limit of 10 per minute."""
    directory = tmp_path_factory.mktemp("two-servers")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENV_FILE": os.devnull,
        "ENVIRONMENT": "testing",
        "ADMIN_DATABASE_URL": f"sqlite:///{directory / 'control.sqlite3'}",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_RPM": "10",
        "LOG_LEVEL": "WARNING",
    }
    setup = subprocess.run(
        [sys.executable, "-c", "import django\ndjango.setup()\n" + textwrap.dedent(SETUP)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert setup.returncode == 0, setup.stderr
    servers = [Server(env, directory / f"server-{n}.log") for n in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_the_rate_limit_is_counted_across_processes(two_servers):
    auth = ("throttled", "throttled-password")
    statuses = [requests.get(two_servers[n % 2].url + ME, auth=auth, timeout=10).status_code for n in range(12)]
    # Each process alone would allow 10: with per-process counts the first 429 would come at request 21.
    assert statuses == [200] * 10 + [429, 429]
    refused = requests.get(two_servers[0].url + ME, auth=auth, timeout=10)
    assert refused.json()["error"] == "rate_limited"


def test_a_rotating_x_forwarded_for_does_not_escape_the_rate_limit(two_servers):
    statuses = [
        requests.get(
            two_servers[n % 2].url + "/health/services/control_database",
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
            timeout=10,
        ).status_code
        for n in range(12)
    ]
    assert statuses == [200] * 10 + [429, 429]


def test_a_lockout_earned_on_one_process_holds_on_the_other(two_servers):
    statuses = [
        requests.get(two_servers[n % 2].url + ME, auth=("guessed", f"guess-{n}"), timeout=10).status_code
        for n in range(LIMIT)
    ]
    assert statuses == [401] * (LIMIT - 1) + [429]
    for server in two_servers:
        refused = requests.get(server.url + ME, auth=("guessed", "guessed-password"), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"] == "login_locked_out"
