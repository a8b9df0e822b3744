import dataclasses

import pytest

from connections.probe import ConnectionParams, ProbeCause, classify, probe, redact

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


def test_the_test_server_checks_passwords_over_tcp(pg):
    result = probe(ConnectionParams(pg.host, pg.port, pg.dbname, pg.user, "", "disable", 3))
    assert not result.ok
    assert result.cause == ProbeCause.AUTHENTICATION
