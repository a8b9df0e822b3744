"""Start-up configuration: validation of ENVIRONMENT, production refusals, the zero-config SQLite database."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_OK = {
    "ENVIRONMENT": "production",
    "DEBUG": "false",
    "SECRET_KEY": "a-real-secret-key-for-production-0123456789",
    "APP_ENCRYPTION_KEY": "a-real-encryption-key-0123456789",
    "ALLOWED_HOSTS": "infra.example.com",
    "KEYCLOAK_URL": "https://sso.example.com",
    "KEYCLOAK_CLIENT_ID": "infra",
    "KEYCLOAK_CLIENT_SECRET": "client-secret",
}


def run_django(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` after django.setup() in a clean process with only ``env`` configured."""
    environment = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
        "ENV_FILE": os.devnull,
        **env,
    }
    script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_zero_configuration_starts_in_development(tmp_path):
    result = run_django("from django.conf import settings; print(settings.ENVIRONMENT, settings.DEBUG)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["development", "True"]


def test_an_unknown_environment_stops_start_up_naming_the_variable(tmp_path):
    result = run_django("", tmp_path, ENVIRONMENT="prod")
    assert result.returncode != 0
    assert "ENVIRONMENT must be one of development, staging, production, testing" in result.stderr


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"DEBUG": "true"}, "DEBUG"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "dev-insecure-secret-key-do-not-use-in-production"}, "SECRET_KEY"),
        ({"APP_ENCRYPTION_KEY": ""}, "APP_ENCRYPTION_KEY"),
        ({"APP_ENCRYPTION_KEY": "dev-insecure-encryption-key-do-not-use-in-production"}, "APP_ENCRYPTION_KEY"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
        ({"KEYCLOAK_URL": ""}, "LOCAL_LOGIN_ENABLED"),
    ],
)
def test_production_misconfiguration_refuses_to_start(tmp_path, override, named):
    env = {**PRODUCTION_OK, **override}
    result = run_django("", tmp_path, **{k: v for k, v in env.items() if v != ""})
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert named in result.stderr


def test_production_without_oidc_starts_when_local_login_is_disabled(tmp_path):
    env = {**PRODUCTION_OK, "LOCAL_LOGIN_ENABLED": "false"}
    del env["KEYCLOAK_URL"]
    result = run_django("print('ok')", tmp_path, **env)
    assert result.returncode == 0, result.stderr


def test_production_hides_the_api_docs(tmp_path):
    code = """
        from django.urls import resolve, Resolver404
        try:
            resolve('/api/v1/docs/')
            print('visible')
        except Resolver404:
            print('hidden')
    """
    assert run_django(code, tmp_path, **PRODUCTION_OK).stdout.strip() == "hidden"
    assert run_django(code, tmp_path).stdout.strip() == "visible"


def test_embedded_sqlite_uses_wal_and_a_busy_timeout(tmp_path):
    code = """
        from django.db import connection
        with connection.cursor() as cursor:
            cursor.execute('PRAGMA journal_mode')
            mode = cursor.fetchone()[0]
            cursor.execute('PRAGMA busy_timeout')
            print(mode, cursor.fetchone()[0])
    """
    result = run_django(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "30000"]


WRITER = """
    import sys
    from django.contrib.auth.models import Group
    from django.db import transaction
    for index in range(60):
        with transaction.atomic():
            # Read, then write: the pattern that fails with "database is locked" under deferred transactions.
            count = Group.objects.count()
            Group.objects.create(name=f"w{sys.argv[1]}-{index}-{count}")
    print("done")
"""


def test_concurrent_writers_on_the_embedded_sqlite_do_not_fail_with_database_locked(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "auth", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    script = "import django\ndjango.setup()\n" + textwrap.dedent(WRITER)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outcomes = [writer.communicate(timeout=180) for writer in writers]
    for (out, err), writer in zip(outcomes, writers, strict=True):
        assert writer.returncode == 0, err[-2000:]
        assert out.strip() == "done"


def test_env_example_documents_every_variable_the_settings_read():
    import re

    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "infra_site" / "settings.py").read_text()))
    documented = set(re.findall(r"^(?:# )?([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))
    assert read == documented


def test_env_file_is_honoured(tmp_path):
    code = "from django.conf import settings; print(settings.MIGRATION_BATCH_SIZE, settings.RATE_LIMIT_RPM)"
    env_file = tmp_path / "settings.env"
    env_file.write_text("MIGRATION_BATCH_SIZE=7\nRATE_LIMIT_RPM=99\n")
    result = run_django(code, tmp_path, RATE_LIMIT_RPM="42", ENV_FILE=str(env_file))
    assert result.stdout.split() == ["7", "42"]
