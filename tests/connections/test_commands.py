import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import BinaryField, ExpressionWrapper, F

from connections import services
from connections.models import DatabaseConnection
from infra_site import crypto

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

OLD_KEY = "old-encryption-key-for-rotation-tests"
NEW_KEY = "new-encryption-key-for-rotation-tests"


def run(*args, stdin=None, **options):
    """Run a command; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        options["stdin"] = stdin
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def run_failing(*args, **options):
    """Run a command that must fail; return (stdout, stderr, the CommandError)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue(), failure.value


def add_args(pg, name="db-main", port=None):
    return [
        "add_connection",
        f"--name={name}",
        "--type=shared",
        "--region=us-east",
        f"--host={pg.host}",
        f"--port={port or pg.port}",
        f"--database={pg.dbname}",
        f"--username={pg.user}",
        "--ssl-mode=disable",
        "--connect-timeout=3",
    ]


def create(pg, name, *, verify=False, **overrides):
    return services.connection_create(actor="test", verify=verify, **pg.connection_values(name=name, **overrides))


def tokens():
    """Return {name: the stored ciphertext} for every row, soft-deleted ones included."""
    rows = DatabaseConnection.all_objects.annotate(
        token=ExpressionWrapper(F("password"), output_field=BinaryField())
    ).values_list("name", "token")
    return {name: bytes(token) for name, token in rows}


def under(token, key):
    try:
        crypto.decrypt_with(token, key)
    except crypto.DecryptionError:
        return False
    return True


# add_connection


def test_add_connection_with_password_env_stores_a_tested_connection(pg, monkeypatch):
    monkeypatch.setenv("DB_MAIN_PASSWORD", pg.password)

    out, err = run(*add_args(pg), "--password-env=DB_MAIN_PASSWORD")

    connection = DatabaseConnection.objects.get(name="db-main")
    assert connection.server_version.startswith("PostgreSQL")
    assert connection.response_time_ms > 0
    assert connection.created_by.startswith("cli:")
    assert connection.password == pg.password
    assert "db-main" in out
    assert str(connection.id) in out
    assert connection.server_version in out
    assert pg.password not in out + err


def test_add_connection_with_a_wrong_password_names_the_cause_and_stores_nothing(pg, monkeypatch):
    monkeypatch.setenv("DB_MAIN_PASSWORD", "not-the-password")

    out, err, error = run_failing(*add_args(pg), "--password-env=DB_MAIN_PASSWORD")

    assert "authentication" in str(error)
    assert not DatabaseConnection.all_objects.exists()
    assert "not-the-password" not in out + err + str(error)


def test_add_connection_takes_the_auth_methods_and_refuses_weak_ones_without_verify_full(pg, monkeypatch):
    monkeypatch.setenv("DB_MAIN_PASSWORD", pg.password)

    _out, _err, error = run_failing(*add_args(pg), "--password-env=DB_MAIN_PASSWORD", "--auth-methods=password")
    assert "auth_methods" in str(error)
    assert not DatabaseConnection.all_objects.exists()

    run(*add_args(pg), "--password-env=DB_MAIN_PASSWORD", "--auth-methods=scram-sha-256,none")
    assert DatabaseConnection.objects.get(name="db-main").auth_methods == "scram-sha-256,none"


def test_add_connection_reads_the_password_from_stdin(pg):
    out, err = run(*add_args(pg), "--password-stdin", stdin=io.StringIO(pg.password + "\n"))

    assert DatabaseConnection.objects.get(name="db-main").password == pg.password
    assert pg.password not in out + err


def test_add_connection_prompts_for_the_password_on_a_terminal(pg, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("getpass.getpass", lambda prompt: pg.password)

    run(*add_args(pg), stdin=Terminal())

    assert DatabaseConnection.objects.get(name="db-main").password == pg.password


def test_add_connection_without_a_password_source_and_no_terminal_fails(pg):
    _out, _err, error = run_failing(*add_args(pg), stdin=io.StringIO(""))

    assert "--password-env" in str(error)
    assert not DatabaseConnection.all_objects.exists()


def test_add_connection_warns_that_password_on_the_command_line_is_visible(pg):
    out, err = run(*add_args(pg), f"--password={pg.password}")

    assert "process list" in err
    assert DatabaseConnection.objects.filter(name="db-main").exists()
    assert pg.password not in out + err


def test_add_connection_json_has_the_connection_and_no_password(pg, monkeypatch):
    monkeypatch.setenv("DB_MAIN_PASSWORD", pg.password)

    out, _err = run(*add_args(pg), "--password-env=DB_MAIN_PASSWORD", "--json")

    data = json.loads(out)
    assert data["name"] == "db-main"
    assert data["server_version"].startswith("PostgreSQL")
    assert "password" not in data
    assert pg.password not in out


def test_add_connection_no_verify_registers_an_unreachable_database_untested(pg, closed_port, monkeypatch):
    monkeypatch.setenv("DB_MAIN_PASSWORD", pg.password)

    out, _err = run(*add_args(pg, port=closed_port), "--password-env=DB_MAIN_PASSWORD", "--no-verify")

    connection = DatabaseConnection.objects.get(name="db-main")
    assert connection.is_healthy is None
    assert "without testing" in out


# list_connections


def test_list_connections_leaves_out_soft_deleted_ones(pg):
    create(pg, "db-kept")
    gone = create(pg, "db-gone")
    services.connection_delete(connection=gone, actor="test")

    table, _err = run("list_connections")
    listed = json.loads(run("list_connections", "--json")[0])

    assert "db-kept" in table
    assert "db-gone" not in table
    assert [item["name"] for item in listed] == ["db-kept"]
    assert DatabaseConnection.all_objects.filter(name="db-gone", deleted_at__isnull=False).exists()


def test_list_connections_json_has_no_password(pg):
    create(pg, "db-one", verify=True)

    out, _err = run("list_connections", "--json")

    [item] = json.loads(out)
    assert "password" not in item
    assert item["is_healthy"] is True
    assert pg.password not in out


def test_list_connections_table_shows_address_and_health(pg):
    create(pg, "db-one", verify=True)

    out, _err = run("list_connections")

    assert f"{pg.host}:{pg.port}/{pg.dbname}" in out
    assert " ok " in out


def test_list_connections_filters_by_type_region_and_active(pg):
    create(pg, "db-east")
    create(pg, "db-west", region="eu-west")
    create(pg, "db-analytics", database_type="analytics", is_active=False)

    def names(*args):
        return {item["name"] for item in json.loads(run("list_connections", "--json", *args)[0])}

    assert names("--region=eu-west") == {"db-west"}
    assert names("--type=analytics") == {"db-analytics"}
    assert names("--inactive") == {"db-analytics"}
    assert names("--active") == {"db-east", "db-west"}


# test_connections


def test_test_connections_exits_0_when_all_are_healthy(pg):
    create(pg, "db-one")
    create(pg, "db-two")

    out, _err = run("test_connections")

    assert "2 healthy, 0 unhealthy" in out
    assert DatabaseConnection.objects.filter(is_healthy=True).count() == 2


def test_test_connections_exits_1_when_one_is_unhealthy(pg, closed_port):
    create(pg, "db-one")
    create(pg, "db-down", port=closed_port)

    out, _err, error = run_failing("test_connections")

    assert error.returncode == 1
    assert "db-down" in str(error)
    assert "FAILED  db-down  refused" in out
    assert DatabaseConnection.objects.get(name="db-down").is_healthy is False


def test_test_connections_json_parses_even_when_one_fails(pg, closed_port):
    create(pg, "db-one")
    create(pg, "db-down", port=closed_port)

    out, _err, error = run_failing("test_connections", "--json")

    results = {item["name"]: item for item in json.loads(out)}
    assert error.returncode == 1
    assert results["db-one"]["ok"] is True
    assert results["db-one"]["server_version"].startswith("PostgreSQL")
    assert results["db-down"] == {
        "name": "db-down",
        "ok": False,
        "cause": "refused",
        "error": results["db-down"]["error"],
        "response_time_ms": None,
        "server_version": "",
    }


def test_test_connections_skips_inactive_ones_and_tests_only_the_named(pg, closed_port):
    create(pg, "db-one")
    create(pg, "db-off", port=closed_port, is_active=False)
    create(pg, "db-down", port=closed_port)

    out, _err = run("test_connections", "--name=db-one", "--json")
    assert [item["name"] for item in json.loads(out)] == ["db-one"]

    _out, _err, error = run_failing("test_connections")
    assert "db-down" in str(error)
    assert "db-off" not in str(error)


def test_test_connections_with_an_unknown_name_fails():
    _out, _err, error = run_failing("test_connections", "--name=nope")

    assert "nope" in str(error)


def test_test_connections_with_no_connections_says_so_and_succeeds():
    out, _err = run("test_connections")
    assert "No connections" in out
    assert json.loads(run("test_connections", "--json")[0]) == []


# rotate_encryption_key


@pytest.fixture
def fleet(pg, settings):
    """Four connections encrypted under OLD_KEY (one soft-deleted, one verified); returns their passwords."""
    settings.APP_ENCRYPTION_KEY = OLD_KEY
    settings.APP_ENCRYPTION_KEY_PREVIOUS = []
    create(pg, "db-verified", verify=True)
    passwords = {"db-verified": pg.password}
    for index in range(3):
        name = f"db-{index}"
        passwords[name] = f"pw-{index}-original"
        create(pg, name, password=passwords[name])
    services.connection_delete(connection=DatabaseConnection.objects.get(name="db-2"), actor="test")
    settings.APP_ENCRYPTION_KEY = NEW_KEY
    settings.APP_ENCRYPTION_KEY_PREVIOUS = [OLD_KEY]
    return passwords


def stored_passwords(settings):
    """Read every password back with only the current key configured."""
    settings.APP_ENCRYPTION_KEY_PREVIOUS = []
    return {connection.name: connection.password for connection in DatabaseConnection.all_objects.all()}


def test_rotate_encryption_key_re_encrypts_every_row_with_the_new_key(fleet, settings):
    out, _err = run("rotate_encryption_key")

    assert "4 password(s): 4 rotated, 0 already current, 0 failed" in out
    assert all(under(token, NEW_KEY) for token in tokens().values())
    assert stored_passwords(settings) == fleet
    assert OLD_KEY not in out
    assert NEW_KEY not in out


def test_rotate_encryption_key_takes_old_keys_from_env_and_file(fleet, settings, monkeypatch, tmp_path):
    settings.APP_ENCRYPTION_KEY_PREVIOUS = []
    monkeypatch.setenv("OLD_KEY", OLD_KEY)
    key_file = tmp_path / "keys"
    key_file.write_text("another-old-key\n\n")

    run("rotate_encryption_key", "--old-key-env=OLD_KEY", f"--old-key-file={key_file}")

    assert all(under(token, NEW_KEY) for token in tokens().values())
    assert stored_passwords(settings) == fleet


def test_rotate_encryption_key_without_the_old_key_fails_and_changes_nothing(fleet, settings):
    settings.APP_ENCRYPTION_KEY_PREVIOUS = []
    before = tokens()

    _out, err, error = run_failing("rotate_encryption_key")

    assert "db-verified" in str(error)
    assert "No old key" in err
    assert tokens() == before


def test_rotate_encryption_key_dry_run_changes_nothing(fleet):
    before = tokens()

    out, _err = run("rotate_encryption_key", "--dry-run")

    assert "Dry run: 4 password(s): 4 would be rotated" in out
    assert tokens() == before


def test_rotate_encryption_key_prints_progress_per_row_on_a_terminal(fleet, monkeypatch):
    monkeypatch.setattr("django.core.management.base.OutputWrapper.isatty", lambda self: True)

    out, _err = run("rotate_encryption_key")

    assert "db-verified: rotated" in out
    assert "[4/4] " in out


def test_interrupted_rotation_leaves_rows_readable_and_a_second_run_finishes(fleet, settings, monkeypatch):
    encrypt = crypto.encrypt_text
    calls = []

    def encrypt_then_crash(plaintext, *, key=None):
        calls.append(plaintext)
        if len(calls) > 2:
            raise RuntimeError("interrupted")
        return encrypt(plaintext, key=key)

    monkeypatch.setattr(crypto, "encrypt_text", encrypt_then_crash)
    with pytest.raises(RuntimeError):
        run("rotate_encryption_key")
    monkeypatch.setattr(crypto, "encrypt_text", encrypt)

    midway = tokens().values()
    assert sum(under(token, NEW_KEY) for token in midway) == 2
    assert sum(under(token, OLD_KEY) for token in midway) == 2
    assert {c.name: c.password for c in DatabaseConnection.all_objects.all()} == fleet  # old + new keys

    out, _err = run("rotate_encryption_key")

    assert "2 rotated, 2 already current" in out
    assert all(under(token, NEW_KEY) for token in tokens().values())
    assert stored_passwords(settings) == fleet


def test_rotate_encryption_key_names_an_undecryptable_row_and_rotates_the_others(fleet, pg, settings):
    settings.APP_ENCRYPTION_KEY = "a-key-nobody-kept"
    create(pg, "db-lost")
    settings.APP_ENCRYPTION_KEY = NEW_KEY

    out, _err, error = run_failing("rotate_encryption_key")

    assert "db-lost" in str(error)
    assert "4 rotated, 0 already current, 1 failed" in out
    rotated = {name: token for name, token in tokens().items() if name != "db-lost"}
    assert all(under(token, NEW_KEY) for token in rotated.values())
    settings.APP_ENCRYPTION_KEY_PREVIOUS = []
    assert {c.name: c.password for c in DatabaseConnection.all_objects.exclude(name="db-lost")} == fleet


def test_rotate_encryption_key_dry_run_names_an_undecryptable_row_and_writes_nothing(fleet, pg, settings):
    settings.APP_ENCRYPTION_KEY = "a-key-nobody-kept"
    create(pg, "db-lost")
    settings.APP_ENCRYPTION_KEY = NEW_KEY
    before = tokens()

    out, _err, error = run_failing("rotate_encryption_key", "--dry-run")

    assert "db-lost" in str(error)
    assert "4 would be rotated, 0 already current, 1 failed" in out
    assert tokens() == before
