import dataclasses

import pytest

from connections.probe import ADDRESS_HIDDEN, ConnectionParams, ProbeCause, classify, probe, redact, redact_address

pytestmark = pytest.mark.postgres


def test_probe_reports_version_and_time_for_good_credentials(pg):
    result = probe(ConnectionParams(pg.host, pg.port, pg.dbname, pg.user, pg.password, "disable", 3))
    assert result.ok
    assert result.server_version.startswith("PostgreSQL 16")
    assert result.response_time_ms > 0


def test_probe_accepts_a_unix_socket_directory_as_host_when_it_is_listed(pg_server, pg):
    with pg_server.connect() as conn:
        socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
    # The test server trusts local connections: it asks for no authentication at all.
    params = ConnectionParams(
        socket_dir, pg.port, pg.dbname, pg.user, pg.password, "disable", 3, "scram-sha-256,none", (socket_dir,)
    )
    result = probe(params)
    assert result.ok, result.error
    unlisted = probe(dataclasses.replace(params, allowed_hosts=()))
    assert unlisted.cause == ProbeCause.HOST_NOT_ALLOWED


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ('failed: FATAL:  password authentication failed for user "x"', ProbeCause.AUTHENTICATION),
        ('failed: FATAL:  database "nope" does not exist', ProbeCause.DATABASE_MISSING),
        ("failed to resolve host 'x.invalid': [Errno -2] Name or service not known", ProbeCause.DNS),
        ("failed: Connection refused", ProbeCause.REFUSED),
        ("connection timeout expired", ProbeCause.TIMEOUT),
        ("failed: SSL error: certificate verify failed", ProbeCause.TLS),
        ("failed: received invalid response to SSL negotiation: H", ProbeCause.NOT_POSTGRES),
        ("failed: expected authentication request from server, but received H", ProbeCause.NOT_POSTGRES),
        (
            'failed: authentication method requirement "scram-sha-256" failed: server requested a cleartext password',
            ProbeCause.AUTHENTICATION,
        ),
        ("something else entirely", ProbeCause.ERROR),
    ],
)
def test_classify_tells_causes_apart(message, cause):
    assert classify(message) == cause


def test_redact_removes_secrets_and_dsn_passwords():
    text = "postgresql://bob:hunter2@db/x password=hunter2 and hunter2 again"
    cleaned = redact(text, "hunter2")
    assert "hunter2" not in cleaned
    assert "postgresql://bob:" in cleaned


@pytest.mark.parametrize(
    ("message", "hidden"),
    [
        (
            'connection to server at "db.internal" (10.0.0.5), port 6543 failed: FATAL:  password authentication '
            'failed for user "app_owner"',
            ["db.internal", "10.0.0.5", "6543", "app_owner"],
        ),
        ('connection to server on socket "/run/pg/.s.PGSQL.5432" failed', ["/run/pg", "5432"]),
        ('could not translate host name "db.internal" to address', ["db.internal"]),
        ('no pg_hba.conf entry for host "10.1.2.3", user "bob", database "x"', ["10.1.2.3", "bob"]),
        ("[Errno 111] Connect call failed ('127.0.0.1', 5432)", ["127.0.0.1", "5432"]),
        ("lost db.internal:6543 while app_owner applied V3", ["db.internal", "6543", "app_owner"]),
    ],
)
def test_redact_address_hides_hosts_ports_and_users(message, hidden):
    cleaned = redact_address(message, "db.internal", "6543", "app_owner")
    assert not [value for value in hidden if value in cleaned]
    assert ADDRESS_HIDDEN in cleaned


def test_redact_address_keeps_words_that_only_contain_a_known_value():
    assert redact_address('relation "app_ownership" does not exist', "app_owner") == (
        'relation "app_ownership" does not exist'
    )


def test_the_test_server_checks_passwords_over_tcp(pg):
    result = probe(ConnectionParams(pg.host, pg.port, pg.dbname, pg.user, "", "disable", 3))
    assert not result.ok
    assert result.cause == ProbeCause.AUTHENTICATION
