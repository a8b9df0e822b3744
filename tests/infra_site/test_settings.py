"""Start-up configuration: validation of ENVIRONMENT, production refusals, the zero-config SQLite database."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.tools import coverage_env

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_OK = {
    "ENVIRONMENT": "production",
    "DEBUG": "false",
    "SECRET_KEY": "a-real-secret-key-for-production-0123456789",
    "APP_ENCRYPTION_KEY": "a-real-encryption-key-0123456789",
    "ALLOWED_HOSTS": "infra.example.com",
    "CONNECTION_ALLOWED_HOSTS": "db.example.com",
    "KEYCLOAK_URL": "https://sso.example.com",
    "KEYCLOAK_CLIENT_ID": "infra",
    "KEYCLOAK_CLIENT_SECRET": "client-secret",
}


def run_django(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` after django.setup() in a clean process with only ``env`` configured."""
    environment = {
        "PATH": os.environ["PATH"],
        **coverage_env(),
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


@pytest.mark.parametrize("name", ["SECRET_KEY", "APP_ENCRYPTION_KEY"])
def test_production_refuses_a_key_shorter_than_32_characters(tmp_path, name):
    result = run_django("", tmp_path, **{**PRODUCTION_OK, name: "k" * 31})
    assert result.returncode != 0
    assert f"{name} must be at least 32 characters long in production" in result.stderr
    assert run_django("", tmp_path, **{**PRODUCTION_OK, name: "k" * 32}).returncode == 0


def test_production_refuses_any_host_in_allowed_hosts(tmp_path):
    result = run_django("", tmp_path, **{**PRODUCTION_OK, "ALLOWED_HOSTS": "infra.example.com,*"})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must name the hosts explicitly in production, not '*'" in result.stderr


STAGING_OK = {"ENVIRONMENT": "staging", "SECRET_KEY": "staging-secret", "APP_ENCRYPTION_KEY": "staging-key"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", None),
        ("SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production"),
        ("APP_ENCRYPTION_KEY", None),
        ("APP_ENCRYPTION_KEY", "dev-insecure-encryption-key-do-not-use-in-production"),
    ],
)
def test_staging_refuses_the_development_keys(tmp_path, name, value):
    env = {**STAGING_OK, name: value}
    result = run_django("", tmp_path, **{k: v for k, v in env.items() if v is not None})
    assert result.returncode != 0
    assert f"Refusing to start in staging: {name} must be set to a secret value, not the development key" in (
        result.stderr
    )
    assert run_django("print('ok')", tmp_path, **STAGING_OK).stdout.strip() == "ok"


def test_testing_and_development_start_with_the_development_keys(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY == settings.DEV_SECRET_KEY)"
    for environment in ("testing", "development"):
        result = run_django(code, tmp_path, ENVIRONMENT=environment)
        assert result.stdout.strip() == "True", result.stderr


HTTPS_SETTINGS = """
    from django.conf import settings
    print(settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
          settings.SECURE_HSTS_PRELOAD)
"""


def test_production_redirects_to_https_and_sends_hsts_by_default(tmp_path):
    result = run_django(HTTPS_SETTINGS, tmp_path, **PRODUCTION_OK)
    assert result.stdout.split() == ["True", "31536000", "True", "False"], result.stderr
    assert run_django(HTTPS_SETTINGS, tmp_path).stdout.split() == ["False", "0", "False", "False"]


def test_https_redirect_and_hsts_are_set_by_the_environment(tmp_path):
    env = {
        **PRODUCTION_OK,
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "600",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "false",
        "SECURE_HSTS_PRELOAD": "true",
    }
    assert run_django(HTTPS_SETTINGS, tmp_path, **env).stdout.split() == ["False", "600", "False", "True"]


@pytest.mark.parametrize("environment", ["development", "production"])
def test_cors_any_origin_with_credentials_refuses_to_start_naming_both_variables(tmp_path, environment):
    env = {**PRODUCTION_OK} if environment == "production" else {}
    result = run_django("", tmp_path, **{**env, "CORS_ALLOW_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"})
    assert result.returncode != 0
    assert "CORS_ALLOW_ORIGINS=* together with CORS_ALLOW_CREDENTIALS=true" in result.stderr
    without_credentials = {**env, "CORS_ALLOW_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "false"}
    assert run_django("print('ok')", tmp_path, **without_credentials).stdout.strip() == "ok"


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
    assert run_django(code, tmp_path, **STAGING_OK).stdout.strip() == "hidden"
    assert run_django(code, tmp_path).stdout.strip() == "visible"
    assert run_django(code, tmp_path, ENVIRONMENT="testing").stdout.strip() == "visible"
    assert run_django(code, tmp_path, **PRODUCTION_OK, API_DOCS_ENABLED="true").stdout.strip() == "visible"
    assert run_django(code, tmp_path, API_DOCS_ENABLED="false").stdout.strip() == "hidden"


def production_example() -> dict[str, str]:
    """The variables of the production example block of .env.example."""
    text = (ROOT / ".env.example").read_text()
    block = re.search(r"^# BEGIN production example\n(.*?)^# END production example$", text, re.M | re.S)
    assert block, ".env.example has no production example block"
    return dict(re.findall(r"^# ([A-Z_]+)=(.*)$", block.group(1), re.M))


def test_check_deploy_is_clean_with_the_production_example_of_env_example(tmp_path):
    example = production_example()
    assert example["ENVIRONMENT"] == "production"
    environment = {
        "PATH": os.environ["PATH"],
        **coverage_env(),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENV_FILE": os.devnull,
        **example,
        # The only value replaced: a scratch database instead of the example's PostgreSQL server.
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "WARNINGS" not in output
    assert "?: (" not in output
    assert "System check identified no issues" in output


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
        **coverage_env(),
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


def test_the_shared_cache_is_the_control_database_or_the_redis_broker(tmp_path):
    code = "from django.conf import settings; print(settings.CACHES['default']['BACKEND'].rsplit('.', 1)[1])"
    assert run_django(code, tmp_path).stdout.strip() == "DatabaseCache"
    redis = run_django(code, tmp_path, Q_BROKER_URL="redis://127.0.0.1:6379/0")
    assert redis.stdout.strip() == "RedisCache", redis.stderr


def test_migrate_creates_the_cache_table(tmp_path):
    code = """
        from django.core.management import call_command
        from django.core.cache import cache
        call_command("migrate", verbosity=0)
        cache.set("probe", 42)
        print(cache.get("probe"))
    """
    result = run_django(code, tmp_path)
    assert result.stdout.strip() == "42", result.stderr


def test_env_file_is_honoured(tmp_path):
    code = "from django.conf import settings; print(settings.MIGRATION_BATCH_SIZE, settings.RATE_LIMIT_RPM)"
    env_file = tmp_path / "settings.env"
    env_file.write_text("MIGRATION_BATCH_SIZE=7\nRATE_LIMIT_RPM=99\n")
    result = run_django(code, tmp_path, RATE_LIMIT_RPM="42", ENV_FILE=str(env_file))
    assert result.stdout.split() == ["7", "42"]


def test_verified_basic_logins_are_remembered_30_seconds_unless_configured(tmp_path):
    code = "from django.conf import settings; print(settings.BASIC_AUTH_CACHE_SECONDS)"
    assert run_django(code, tmp_path).stdout.strip() == "30"
    assert run_django(code, tmp_path, BASIC_AUTH_CACHE_SECONDS="0").stdout.strip() == "0"
    refused = run_django(code, tmp_path, BASIC_AUTH_CACHE_SECONDS="-1")
    assert refused.returncode != 0
    assert "BASIC_AUTH_CACHE_SECONDS must be 0 or more" in refused.stderr


def test_token_introspection_is_off_unless_a_cache_period_is_given(tmp_path):
    code = "from django.conf import settings; print(settings.OIDC_INTROSPECTION_CACHE_SECONDS)"
    assert run_django(code, tmp_path).stdout.strip() == "None"
    assert run_django(code, tmp_path, OIDC_INTROSPECTION_CACHE_SECONDS="30").stdout.strip() == "30"
    refused = run_django(code, tmp_path, OIDC_INTROSPECTION_CACHE_SECONDS="-1")
    assert refused.returncode != 0
    assert "OIDC_INTROSPECTION_CACHE_SECONDS must be 0 or more" in refused.stderr


def test_var_and_the_sqlite_control_database_are_private_to_the_account(tmp_path):
    code = """
        import os, stat
        from django.conf import settings
        from django.db import connection
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE probe (id integer)")
        name = connection.settings_dict["NAME"]
        var = stat.S_IMODE(os.stat(settings.VAR_DIR).st_mode)
        files = [stat.S_IMODE(os.stat(path).st_mode) for path in (name, name + "-wal")]
        print(oct(var & 0o766), " ".join(oct(mode) for mode in files))
    """
    old_umask = os.umask(0o022)
    try:
        result = run_django(code, tmp_path)
    finally:
        os.umask(old_umask)
    # var/ may keep search bits for the demo's database server (run as root); nobody else may read or write it.
    assert result.stdout.split() == ["0o700", "0o600", "0o600"], result.stderr
