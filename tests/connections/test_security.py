"""Where a stored password may go: re-entry to move a connection, require_auth, the host allow-list.

A fake server in a thread speaks just enough of the PostgreSQL v3 protocol to ask
for a password (cleartext or md5) and records what the client sends back.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from connections import services
from connections.models import DatabaseConnection
from connections.probe import NOT_POSTGRES_MESSAGE, ConnectionParams, HostNotAllowed, ProbeCause
from infra_site.errors import ValidationFailed
from tests.support.debug import debug_page
from tests.support.postgres import REGISTRY_PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

URL = "/api/v1/databases/"
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
ASK_CLEARTEXT = b"R" + struct.pack("!ii", 8, 3)
ASK_MD5 = b"R" + struct.pack("!ii", 12, 5) + b"s4lt"
HTTP_BANNER = b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.25.3\r\nContent-Type: text/html\r\n\r\n<h1>Bad Request</h1>"


class FakeServer:
    """Listens on 127.0.0.1; each client gets ``reply`` and everything it sends back is recorded.

    ``banner`` servers send ``reply`` at once, like a foreign service; the others first read the
    StartupMessage (declining SSL and GSS encryption with 'N'), as PostgreSQL does.
    """

    def __init__(self, reply: bytes, *, banner: bool = False) -> None:
        self.reply, self.banner = reply, banner
        self.accepted = 0
        self.received: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(2)
                self.received.append(self._session(conn))

    def _session(self, conn: socket.socket) -> bytes:
        data = b""
        try:
            if not self.banner:
                while True:
                    length, code = struct.unpack("!ii", _read_exactly(conn, 8))
                    if code not in (SSL_REQUEST, GSSENC_REQUEST):
                        _read_exactly(conn, length - 8)
                        break
                    conn.sendall(b"N")
            conn.sendall(self.reply)
            while chunk := conn.recv(4096):
                data += chunk
        except OSError:  # the client gave up, or the recording time is over
            pass
        return data

    def close(self) -> None:
        """Stop listening once the current client is recorded."""
        self._stop.set()
        self._thread.join()
        self._listener.close()

    @property
    def password_messages(self) -> list[bytes]:
        """What clients answered with a PasswordMessage ('p'), or that contains the test password."""
        return [data for data in self.received if data.startswith(b"p") or REGISTRY_PASSWORD.encode() in data]


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection")
        data += chunk
    return data


@pytest.fixture
def fake_server() -> Iterator:
    servers: list[FakeServer] = []

    def start(reply: bytes, *, banner: bool = False) -> FakeServer:
        servers.append(FakeServer(reply, banner=banner))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def manager(api_as):
    return api_as("databases:manage")


@pytest.fixture
def stored(pg):
    return services.connection_create(actor="setup", **pg.connection_values(name="primary"))


def moved_to(server: FakeServer, connection: DatabaseConnection) -> DatabaseConnection:
    """Point a stored row at ``server`` behind the services' back, like a row stored before these rules."""
    DatabaseConnection.objects.filter(pk=connection.pk).update(port=server.port)
    return DatabaseConnection.objects.get(pk=connection.pk)


def test_the_fake_server_receives_a_password_when_nothing_stops_the_client(fake_server, pg):
    """The control for the tests below: without require_auth, libpq answers the fake with the password."""
    server = fake_server(ASK_CLEARTEXT)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=server.port, dbname=pg.dbname, user=pg.user, password=pg.password, connect_timeout=3
        )
    server.close()
    assert server.password_messages


# 1 (a): moving a connection needs the password again


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("password", ["", None])
def test_api_pointing_a_connection_elsewhere_without_the_password_is_refused(
    manager, stored, fake_server, verify, password
):
    server = fake_server(ASK_CLEARTEXT)
    payload = {"host": "127.0.0.1", "port": server.port, "verify": verify}
    if password is not None:
        payload["password"] = password
    response = manager.patch(f"{URL}{stored.pk}/", payload, format="json")
    server.close()
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "validation_error"
    assert "password" in body["details"]
    assert server.accepted == 0
    assert server.password_messages == []
    stored.refresh_from_db()
    assert stored.port != server.port


@pytest.mark.parametrize(
    "change",
    [{"host": "localhost"}, {"database_name": "postgres"}, {"username": "postgres"}, {"ssl_mode": "require"}],
)
def test_api_every_field_that_moves_the_password_needs_it_again(manager, stored, change):
    response = manager.patch(f"{URL}{stored.pk}/", {**change, "verify": False}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["details"]


def test_api_pointing_a_connection_elsewhere_with_the_password_is_tested_and_stored(manager, stored, pg):
    response = manager.patch(f"{URL}{stored.pk}/", {"host": "localhost", "password": pg.password}, format="json")
    assert response.status_code == 200, response.json()
    stored.refresh_from_db()
    assert stored.host == "localhost"
    assert stored.is_healthy is True


def test_service_refuses_a_move_without_the_password(stored, fake_server):
    server = fake_server(ASK_CLEARTEXT)
    with pytest.raises(ValidationFailed) as refused:
        services.connection_update(connection=stored, actor="t", port=server.port, password="")
    server.close()
    assert refused.value.status_code == 400
    assert list(refused.value.details) == ["password"]
    assert server.accepted == 0


@pytest.mark.parametrize("verify", ["on", ""])
def test_admin_pointing_a_connection_elsewhere_without_the_password_is_a_form_error(
    client, make_user, stored, pg, fake_server, verify
):
    server = fake_server(ASK_CLEARTEXT)
    client.force_login(make_user("databases:manage"))
    data = pg.connection_values(
        name="primary", port=server.port, password="", verify=verify, is_active="on", default_schema="public"
    )
    data["auth_methods"] = "scram-sha-256"
    response = client.post(reverse("admin:connections_databaseconnection_change", args=[stored.pk]), data)
    server.close()
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "password" in form.errors
    assert "Enter the password again" in form.errors["password"][0]
    assert server.accepted == 0
    stored.refresh_from_db()
    assert stored.port == pg.port


# 1 (b): require_auth on every connection


@pytest.mark.parametrize("reply", [ASK_CLEARTEXT, ASK_MD5], ids=["cleartext", "md5"])
def test_a_check_of_a_stored_connection_sends_no_password_to_a_server_asking_a_weak_method(stored, fake_server, reply):
    server = fake_server(reply)
    result = services.connection_test(connection=moved_to(server, stored))
    server.close()
    assert server.accepted >= 1
    assert server.password_messages == []
    assert result.cause == ProbeCause.AUTHENTICATION
    assert "authentication method this connection does not allow" in result.error
    stored.refresh_from_db()
    assert stored.is_healthy is False
    assert "does not allow" in stored.error


@pytest.mark.parametrize("reply", [ASK_CLEARTEXT, ASK_MD5], ids=["cleartext", "md5"])
def test_engine_connections_send_no_password_to_a_server_asking_a_weak_method(stored, fake_server, reply):
    server = fake_server(reply)
    params = services.connection_params(moved_to(server, stored))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**params.kwargs())
    server.close()
    assert server.accepted >= 1
    assert server.password_messages == []


def test_connection_kwargs_always_carry_require_auth():
    params = ConnectionParams("db.example.com", 5432, "app", "app", "pw")
    assert params.kwargs()["require_auth"] == "scram-sha-256"
    assert params.kwargs(require_auth="password", autocommit=True)["require_auth"] == "scram-sha-256"


def test_every_product_connection_is_opened_from_connection_params():
    """No code path opens a psycopg connection to a registered database without ``ConnectionParams.kwargs()``."""
    root = Path(__file__).resolve().parents[2]
    calls = [
        f"{path.relative_to(root)}: {match.group(0)}"
        for folder in ("connections", "migrations_runner")
        for path in (root / folder).rglob("*.py")
        for match in re.finditer(r"psycopg\.connect\([^\n]*", path.read_text())
        if ".kwargs(" not in match.group(0)
    ]
    assert calls == []


@pytest.mark.parametrize("auth_methods", ["password", "md5", "scram-sha-256,md5"])
def test_password_revealing_auth_methods_need_verify_full(manager, pg, auth_methods):
    values = pg.connection_values(auth_methods=auth_methods, verify=False)
    response = manager.post(URL, {**values, "ssl_mode": "require"}, format="json")
    assert response.status_code == 400
    assert "auth_methods" in response.json()["details"]
    response = manager.post(URL, {**values, "ssl_mode": "verify-full"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["auth_methods"] == auth_methods


def test_auth_methods_are_stored_and_used(manager, pg):
    response = manager.post(URL, pg.connection_values(auth_methods="scram-sha-256,none"), format="json")
    assert response.status_code == 201, response.json()
    stored = DatabaseConnection.objects.get(pk=response.json()["id"])
    assert services.connection_params(stored).kwargs()["require_auth"] == "scram-sha-256,none"


# 6: the host allow-list


@pytest.mark.parametrize(
    "host", ["/var/run/postgresql", "/tmp", "@pgsocket", "127.0.0.1,db.example.com", "", "db .example.com"]
)
def test_socket_directories_and_host_lists_are_refused(manager, pg, host):
    response = manager.post(URL, pg.connection_values(host=host, verify=False), format="json")
    assert response.status_code == 400
    assert "host" in response.json()["details"]
    assert DatabaseConnection.all_objects.count() == 0


def test_a_host_outside_the_allow_list_is_refused(manager, pg, settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["db.example.com", "10.0.0.0/8"]
    response = manager.post(URL, pg.connection_values(), format="json")
    assert response.status_code == 400
    body = response.json()
    assert "host" in body["details"]
    assert "CONNECTION_ALLOWED_HOSTS" in body["message"]
    assert DatabaseConnection.all_objects.count() == 0


def test_a_cidr_range_allows_the_addresses_in_it(manager, pg, settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["db.example.com", "127.0.0.0/8"]
    response = manager.post(URL, pg.connection_values(), format="json")
    assert response.status_code == 201, response.json()


def test_a_wildcard_allows_the_names_under_it(manager, pg, settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["*.db.example.com"]
    response = manager.post(URL, pg.connection_values(host="eu1.db.example.com", verify=False), format="json")
    assert response.status_code == 201, response.json()
    response = manager.post(
        URL, pg.connection_values(name="other", host="db.example.com.evil.test", verify=False), format="json"
    )
    assert response.status_code == 400


def test_a_listed_socket_directory_is_allowed(manager, pg, settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["/var/run/postgresql"]
    response = manager.post(URL, pg.connection_values(host="/var/run/postgresql", verify=False), format="json")
    assert response.status_code == 201, response.json()


def test_updating_to_a_host_outside_the_allow_list_is_refused(manager, stored, pg, settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["127.0.0.1"]
    response = manager.patch(f"{URL}{stored.pk}/", {"host": "localhost", "password": pg.password}, format="json")
    assert response.status_code == 400
    assert "host" in response.json()["details"]


def test_the_add_connection_command_refuses_a_socket_directory(pg, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", pg.password)
    with pytest.raises(CommandError, match="host"):
        call_command(
            "add_connection",
            "--name=sock",
            "--type=analytics",
            "--host=/var/run/postgresql",
            f"--database={pg.dbname}",
            f"--username={pg.user}",
            "--password-env=DB_PASSWORD",
            "--no-verify",
        )


def test_a_stored_row_outside_the_allow_list_is_not_connected_to(stored, fake_server, settings):
    server = fake_server(ASK_CLEARTEXT)
    row = moved_to(server, stored)
    settings.CONNECTION_ALLOWED_HOSTS = ["10.0.0.0/8"]
    result = services.connection_test(connection=row)
    with pytest.raises(HostNotAllowed):
        psycopg.connect(**services.connection_params(row).kwargs())
    server.close()
    assert result.cause == ProbeCause.HOST_NOT_ALLOWED
    assert server.accepted == 0


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
def test_a_non_postgres_peer_gives_an_error_without_its_bytes(manager, pg, fake_server, ssl_mode):
    server = fake_server(HTTP_BANNER, banner=True)
    response = manager.post(URL, pg.connection_values(port=server.port, ssl_mode=ssl_mode), format="json")
    server.close()
    assert response.status_code == 400
    body = response.json()
    assert body["details"]["cause"] == ProbeCause.NOT_POSTGRES
    assert body["details"]["error"] == NOT_POSTGRES_MESSAGE
    text = response.content.decode()
    for fragment in ("HTTP", "Bad Request", "nginx", "received H", ": H"):
        assert fragment not in text


def test_a_stored_error_of_a_non_postgres_peer_has_none_of_its_bytes(stored, fake_server):
    server = fake_server(HTTP_BANNER, banner=True)
    result = services.connection_test(connection=moved_to(server, stored))
    server.close()
    assert result.cause == ProbeCause.NOT_POSTGRES
    stored.refresh_from_db()
    assert stored.error == NOT_POSTGRES_MESSAGE


# 11: testing connections in the admin needs databases:manage


def test_a_reader_cannot_press_test_connection(client, make_user, stored, closed_port):
    DatabaseConnection.objects.filter(pk=stored.pk).update(port=closed_port)
    before = DatabaseConnection.objects.values(*services.HEALTH_FIELDS).get(pk=stored.pk)
    client.force_login(make_user("databases:read"))
    response = client.post(reverse("admin:connections_databaseconnection_test", args=[stored.pk]))
    assert response.status_code == 403
    assert DatabaseConnection.objects.values(*services.HEALTH_FIELDS).get(pk=stored.pk) == before


def test_a_reader_is_not_offered_the_bulk_test_action(client, make_user, stored, closed_port):
    DatabaseConnection.objects.filter(pk=stored.pk).update(port=closed_port)
    before = DatabaseConnection.objects.values(*services.HEALTH_FIELDS).get(pk=stored.pk)
    client.force_login(make_user("databases:read"))
    changelist = reverse("admin:connections_databaseconnection_changelist")
    assert "test_selected" not in client.get(changelist).content.decode()
    response = client.post(changelist, {"action": "test_selected", "_selected_action": [str(stored.pk)]})
    assert response.status_code in (200, 302, 403)
    assert DatabaseConnection.objects.values(*services.HEALTH_FIELDS).get(pk=stored.pk) == before


def test_a_manager_is_offered_the_bulk_test_action(client, make_user, stored):
    client.force_login(make_user("databases:manage"))
    assert "test_selected" in client.get(reverse("admin:connections_databaseconnection_changelist")).content.decode()


def test_the_debug_page_of_the_connection_api_does_not_show_a_password_sent_as_a_form(manager, pg, settings):
    settings.DEBUG = True
    typed = "Typed-" + secrets.token_hex(6)  # made here, so that no source line shown in a report holds it
    response = manager.post(URL, pg.connection_values(name="Not A Name", password=typed), format="multipart")
    assert response.status_code == 400
    page = debug_page(response.wsgi_request)
    assert "a failure while serving the request" in page
    assert typed not in page
