"""Settings of the control plane, read once from the environment (and ``.env``).

Every variable is documented in ``.env.example``. Development and testing work
with no configuration at all; staging and production refuse to start when a
secret is missing or left at its development default, and production also when
a secret is short or a safeguard is off, naming the variable.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from infra_site.version import __version__

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
# The SQLite control database, the demo fleet's data and password: for this account only, created so and
# tightened when an older start left it readable (infra_site.apps keeps SQLite's files at 0600). Search (x) bits
# stay: run as root, the demo's embedded PostgreSQL runs as its own system user and must reach var/demo-pg/.
VAR_DIR.mkdir(mode=0o700, exist_ok=True)
if VAR_DIR.stat().st_uid == os.getuid():
    VAR_DIR.chmod(VAR_DIR.stat().st_mode & 0o7711)

env = environ.Env()
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

ENVIRONMENTS = ("development", "staging", "production", "testing")
DEV_SECRET_KEY = "dev-insecure-secret-key-do-not-use-in-production"  # noqa: S105
DEV_ENCRYPTION_KEY = "dev-insecure-encryption-key-do-not-use-in-production"

ENVIRONMENT = env.str("ENVIRONMENT", default="development")
if ENVIRONMENT not in ENVIRONMENTS:
    raise ImproperlyConfigured(f"ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}; got {ENVIRONMENT!r}.")
IS_PRODUCTION = ENVIRONMENT == "production"
# Staging and production are deployments: neither starts with the development keys.
IS_DEPLOYED = ENVIRONMENT in ("staging", "production")
# Shortest SECRET_KEY and APP_ENCRYPTION_KEY production accepts.
MIN_SECRET_LENGTH = 32

DEBUG = env.bool("DEBUG", default=ENVIRONMENT == "development")
# Error reports hide passwords with DEBUG on too (Django's default filter stands aside under DEBUG).
DEFAULT_EXCEPTION_REPORTER_FILTER = "infra_site.errors.SecretSafeReporterFilter"
SECRET_KEY = env.str("SECRET_KEY", default="" if IS_DEPLOYED else DEV_SECRET_KEY)
APP_ENCRYPTION_KEY = env.str("APP_ENCRYPTION_KEY", default="" if IS_DEPLOYED else DEV_ENCRYPTION_KEY)
# Keys that older rows may still be encrypted with, during a key rotation (comma-separated).
APP_ENCRYPTION_KEY_PREVIOUS = env.list("APP_ENCRYPTION_KEY_PREVIOUS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if IS_PRODUCTION else ["*"])
# Database hosts the registry may connect to: names, *.domain wildcards, IPs, CIDR ranges, socket
# directories (see connections/hosts.py). Empty: any TCP host (development, testing); required in production.
CONNECTION_ALLOWED_HOSTS = env.list("CONNECTION_ALLOWED_HOSTS", default=[])

# `manage.py demo` (`make demo`): where its embedded PostgreSQL keeps its data, port and the fleet's password.
DEMO_DATA_DIR = Path(env.str("DEMO_DATA_DIR", default=str(VAR_DIR / "demo-pg")))

HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8000)
WORKERS = env.int("WORKERS", default=2)

# --- Authentication: OpenID Connect (Keycloak) ---
KEYCLOAK_URL = env.str("KEYCLOAK_URL", default="").rstrip("/")
KEYCLOAK_ADMIN_REALM = env.str("KEYCLOAK_ADMIN_REALM", default="master")
KEYCLOAK_CLIENT_ID = env.str("KEYCLOAK_CLIENT_ID", default="")
KEYCLOAK_CLIENT_SECRET = env.str("KEYCLOAK_CLIENT_SECRET", default="")
OIDC_CONFIGURED = bool(KEYCLOAK_URL and KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET)
# The provider's endpoints are not settings: infra_site.auth.provider reads them at first use from the discovery
# document of the issuer KEYCLOAK_URL/realms/<KEYCLOAK_ADMIN_REALM> (Keycloak's
# /protocol/openid-connect/{auth,token,userinfo,certs,logout}), so nothing touches the network at import time.
# mozilla-django-oidc's default (HS256) cannot verify Keycloak's tokens; ours accept RS256 only, whatever this says.
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of the provider logout
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=5.0)
# Clock skew tolerated on exp, nbf and iat of tokens (seconds).
OIDC_CLOCK_LEEWAY = env.int("OIDC_CLOCK_LEEWAY", default=30)
# The JWKS is refetched when a token names an unknown key id, at most once per this many seconds,
# and in any case once it is older than OIDC_JWKS_MAX_AGE (so a key the provider withdrew stops working).
OIDC_JWKS_REFRESH_INTERVAL = env.float("OIDC_JWKS_REFRESH_INTERVAL", default=10.0)
OIDC_JWKS_MAX_AGE = env.int("OIDC_JWKS_MAX_AGE", default=3600)
# Token introspection (RFC 7662), so a token revoked at the provider stops working before it expires: unset (the
# default), bearer tokens are validated locally only; a number of seconds, each token is also checked at the
# provider's introspection endpoint and the answer cached that long (0: every request asks).
_introspection_cache = env.str("OIDC_INTROSPECTION_CACHE_SECONDS", default="").strip()
OIDC_INTROSPECTION_CACHE_SECONDS: int | None = int(_introspection_cache) if _introspection_cache else None
if OIDC_INTROSPECTION_CACHE_SECONDS is not None and OIDC_INTROSPECTION_CACHE_SECONDS < 0:
    raise ImproperlyConfigured("OIDC_INTROSPECTION_CACHE_SECONDS must be 0 or more seconds, or unset (off).")
# The introspection endpoint; empty: the one the realm's discovery document announces.
OIDC_INTROSPECTION_ENDPOINT = env.str("OIDC_INTROSPECTION_ENDPOINT", default="")
OIDC_OP_LOGOUT_URL_METHOD = "infra_site.auth.views.provider_logout_url"
LOGIN_REDIRECT_URL = "admin:index"
LOGIN_REDIRECT_URL_FAILURE = "/admin/login/?oidc_error=1"
LOGOUT_REDIRECT_URL = "admin:login"
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out user and address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "infra_site.auth.backends.KeycloakBackend",
    "infra_site.auth.backends.LocalPasswordBackend",
]
LOCAL_LOGIN_ENABLED = env.bool("LOCAL_LOGIN_ENABLED", default=True)
# HTTP Basic: a username and password verified from a client address are let in again from it for this many
# seconds without the lockout checks, the password hash and the user's queries (infra_site.auth.basic_cache).
# Wrong passwords are never remembered. A password, deactivation or role change made in another process reaches
# a worker's remembered logins within this time (in the same process at once). 0 checks every request in full.
BASIC_AUTH_CACHE_SECONDS = env.int("BASIC_AUTH_CACHE_SECONDS", default=30)
if BASIC_AUTH_CACHE_SECONDS < 0:
    raise ImproperlyConfigured("BASIC_AUTH_CACHE_SECONDS must be 0 or more seconds.")

# Password guessing (admin form, HTTP Basic), both limits checked before any password is hashed (see
# infra_site.auth.lockout): django-axes counts failed password logins per user and client address in the control
# database, shared by every worker process. LOGIN_FAILURE_LIMIT failures lock that user out from that address (the
# right password too; from other addresses the user still logs in) for LOGIN_LOCKOUT_MINUTES after the last
# counted failure; refused attempts are not counted. An address reaching LOGIN_ADDRESS_FAILURE_LIMIT failures,
# whatever the usernames (or LOGIN_FAILURE_LIMIT with usernames no account has), is refused for the rest of a
# LOGIN_LOCKOUT_MINUTES window that its first failure opened (counters in the shared cache). The API answers
# 429, the admin shows a lockout page. Operators unlock a user in the admin (Access attempts).
LOGIN_LOCKOUT_ENABLED = env.bool("LOGIN_LOCKOUT_ENABLED", default=True)
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=20)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_ADDRESS_FAILURE_LIMIT < 1 or LOGIN_LOCKOUT_MINUTES < 1:
    raise ImproperlyConfigured(
        "LOGIN_FAILURE_LIMIT, LOGIN_ADDRESS_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1."
    )
AXES_ENABLED = LOGIN_LOCKOUT_ENABLED
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "infra_site.auth.lockout.LockoutHandler"
# A stream of invented usernames is counted and stored under one name, not a row per name.
AXES_USERNAME_CALLABLE = "infra_site.auth.lockout.lockout_username"
# A refused attempt neither counts nor restarts the lockout: it ends LOGIN_LOCKOUT_MINUTES after the last failure.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "infra_site.client_address.client_address"
# Keycloak logins carry no password: they are neither counted nor refused.
AXES_WHITELIST_CALLABLE = "infra_site.auth.lockout.is_not_password_login"
AXES_LOCKOUT_CALLABLE = "infra_site.auth.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# infra_site.admin registers axes' models for infrastructure:admin holders (axes' own admin needs model permissions).
AXES_ENABLE_ADMIN = False

# Migrations.
MIGRATION_TIMEOUT = env.int("MIGRATION_TIMEOUT", default=300)
MIGRATION_BATCH_SIZE = env.int("MIGRATION_BATCH_SIZE", default=10)
MIGRATION_RETRY_ATTEMPTS = env.int("MIGRATION_RETRY_ATTEMPTS", default=3)
MIGRATIONS_DIR = Path(env.str("MIGRATIONS_DIR", default=str(BASE_DIR / "migration_sets")))
# Which database types wait for which (a JSON object of type -> list of types); a cycle fails the system checks.
MIGRATION_DEPENDENCIES = env.json(
    "MIGRATION_DEPENDENCIES", default={"shared": ["admin"], "analytics": ["admin"], "tenant": ["shared"]}
)
# Lint of the scripts a run applies: off, warn (findings shown in plans) or block (a run with an error refuses).
MIGRATION_LINT = env.str("MIGRATION_LINT", default="block" if IS_DEPLOYED else "warn")
if MIGRATION_LINT not in ("off", "warn", "block"):
    raise ImproperlyConfigured(f"MIGRATION_LINT must be off, warn or block; got {MIGRATION_LINT!r}.")
# User placeholders of every set (a JSON object of name -> value), over those of a set's flyway.conf/flyway.toml.
MIGRATION_PLACEHOLDERS = env.json("MIGRATION_PLACEHOLDERS", default={})
if not isinstance(MIGRATION_PLACEHOLDERS, dict) or not all(
    isinstance(k, str) and isinstance(v, str) for k, v in MIGRATION_PLACEHOLDERS.items()
):
    raise ImproperlyConfigured('MIGRATION_PLACEHOLDERS must be a JSON object of strings, e.g. {"app_role": "app"}.')
# lock_timeout of migration statements, and how long to wait for another run's lock on a target (seconds).
MIGRATION_LOCK_TIMEOUT = env.float("MIGRATION_LOCK_TIMEOUT", default=1.0)
# A script whose table lock stayed held past MIGRATION_LOCK_TIMEOUT is retried after a backoff, up to this many
# lock waits or this many seconds in all; then the target fails with lock_timeout.
MIGRATION_LOCK_RETRIES = env.int("MIGRATION_LOCK_RETRIES", default=60)
MIGRATION_LOCK_RETRY_FOR = env.float("MIGRATION_LOCK_RETRY_FOR", default=900.0)
MIGRATION_LOCK_WAIT = env.float("MIGRATION_LOCK_WAIT", default=60.0)
# At most this many targets of one database server run at once, across all workers and executions.
MIGRATION_MAX_PER_DATABASE = env.int("MIGRATION_MAX_PER_DATABASE", default=4)
# A lane renews the lease of the target it works on every heartbeat; a lease not renewed for
# MIGRATION_LEASE_SECONDS means its worker is lost (the recovery schedule looks every 10 s, as often as
# django-q2's scheduler wakes, about every 30 s).
MIGRATION_HEARTBEAT_SECONDS = env.float("MIGRATION_HEARTBEAT_SECONDS", default=3.0)
MIGRATION_LEASE_SECONDS = env.float("MIGRATION_LEASE_SECONDS", default=15.0)
# A queued lane hands its work to a successor task after this many seconds, so no task outlives the
# queue's timeout, and lanes that a busy cluster fetched ahead of time move to idle clusters.
MIGRATION_LANE_SECONDS = env.float("MIGRATION_LANE_SECONDS", default=10.0)
# An execution whose work no worker has taken up for this many seconds reports that it waits for a worker.
MIGRATION_WORKER_WAIT = env.float("MIGRATION_WORKER_WAIT", default=120.0)
# How long a lane keeps trying to reach an unreachable control database (to record a target it applied).
MIGRATION_CONTROL_DB_WAIT = env.float("MIGRATION_CONTROL_DB_WAIT", default=120.0)
# A PostgreSQL control database: lanes send their per-target statements (claim ahead, record and start) as
# prepared statements of their connection, planned once instead of at every target. false: behind a pooler that
# does not keep prepared statements (PgBouncer's transaction mode before 1.21, or without max_prepared_statements).
MIGRATION_CONTROL_PREPARED = env.bool("MIGRATION_CONTROL_PREPARED", default=True)
# How long the targets of an unreachable database server wait (not claimed, not failed) for it to answer again.
MIGRATION_FLEET_DB_WAIT = env.float("MIGRATION_FLEET_DB_WAIT", default=30.0)
# Record each target's schema fingerprint after a successful run (one catalog query on the lane's connection).
MIGRATION_FINGERPRINT_AFTER_RUN = env.bool("MIGRATION_FINGERPRINT_AFTER_RUN", default=True)
# A target's consecutive transactional scripts that took this many milliseconds in all when they last ran on its
# database go in one round trip (each still in its own transaction with its history row); a cancel waits about
# that long at most. 0: one round trip a script.
MIGRATION_JOIN_SCRIPTS_MS = env.int("MIGRATION_JOIN_SCRIPTS_MS", default=250)
if MIGRATION_JOIN_SCRIPTS_MS < 0:
    raise ImproperlyConfigured(
        f"MIGRATION_JOIN_SCRIPTS_MS must be 0 (a round trip a script) or more; got {MIGRATION_JOIN_SCRIPTS_MS}."
    )
# While its targets take less than this many seconds, a lane claims its next target ahead and records an outcome
# while it applies the next target (its control-database work beside the target work); 0: never.
MIGRATION_CLAIM_AHEAD_BELOW_S = env.float("MIGRATION_CLAIM_AHEAD_BELOW_S", default=1.0)
if MIGRATION_CLAIM_AHEAD_BELOW_S < 0:
    raise ImproperlyConfigured(
        f"MIGRATION_CLAIM_AHEAD_BELOW_S must be 0 (never claim ahead) or more; got {MIGRATION_CLAIM_AHEAD_BELOW_S}."
    )

# HTTP edge.
CORS_ALLOWED_ORIGINS_RAW = env.list("CORS_ALLOW_ORIGINS", default=[])
CORS_ALLOW_CREDENTIALS = env.bool("CORS_ALLOW_CREDENTIALS", default=True)
if "*" in CORS_ALLOWED_ORIGINS_RAW and CORS_ALLOW_CREDENTIALS:
    raise ImproperlyConfigured(
        "CORS_ALLOW_ORIGINS=* together with CORS_ALLOW_CREDENTIALS=true would let any web site make requests "
        "with the user's cookies: list the origins in CORS_ALLOW_ORIGINS, or set CORS_ALLOW_CREDENTIALS=false."
    )
# Reverse proxies in front of the app that append the address of their peer to X-Forwarded-For. 0: the header
# is ignored and the client is the peer (a client could write any address there). Rate limits and login
# lockouts count by this address (infra_site.client_address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more.")
# Per client, per minute, counted in the shared cache (CACHES) so every worker process sees the same count.
RATE_LIMIT_ENABLED = env.bool("RATE_LIMIT_ENABLED", default=True)
RATE_LIMIT_RPM = env.int("RATE_LIMIT_RPM", default=60)


# Health and metrics (the health app). /health/detailed bounds every check by HEALTH_CHECK_TIMEOUT seconds;
# a queue worker probes every active connection each HEALTH_CHECK_INTERVAL seconds (django-q2's scheduler
# wakes about every 30 s) and keeps the snapshots HEALTH_SNAPSHOT_RETENTION_DAYS days.
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)
HEALTH_CHECK_INTERVAL = env.int("HEALTH_CHECK_INTERVAL", default=60)
HEALTH_SNAPSHOT_RETENTION_DAYS = env.int("HEALTH_SNAPSHOT_RETENTION_DAYS", default=7)
# Connections are probed during a request only for an authenticated caller, at most once per this many seconds
# each; anonymous callers (and the others meanwhile) get the periodic check's stored results.
HEALTH_LIVE_PROBE_INTERVAL = env.int("HEALTH_LIVE_PROBE_INTERVAL", default=10)
if HEALTH_CHECK_TIMEOUT <= 0 or HEALTH_CHECK_INTERVAL < 1 or HEALTH_SNAPSHOT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured(
        "HEALTH_CHECK_TIMEOUT must be positive, HEALTH_CHECK_INTERVAL and HEALTH_SNAPSHOT_RETENTION_DAYS at least 1."
    )
if HEALTH_LIVE_PROBE_INTERVAL < 0:
    raise ImproperlyConfigured("HEALTH_LIVE_PROBE_INTERVAL must be 0 or more.")
# Bearer token Prometheus sends to /metrics. Unset: /metrics is open in development and testing, 403 elsewhere.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# prometheus-client reads it from the environment itself (this line documents it and feeds the system check):
# set, the per-process HTTP metrics of every web worker are shared through files in this directory.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")


def _deployment_problems() -> list[str]:
    """Return why staging or production must not start with this configuration (empty when it may)."""
    problems = []
    for name, value, development_value in (
        ("SECRET_KEY", SECRET_KEY, DEV_SECRET_KEY),
        ("APP_ENCRYPTION_KEY", APP_ENCRYPTION_KEY, DEV_ENCRYPTION_KEY),
    ):
        if not value or value == development_value:
            problems.append(f"{name} must be set to a secret value, not the development key.")
        elif IS_PRODUCTION and len(value) < MIN_SECRET_LENGTH:
            problems.append(f"{name} must be at least {MIN_SECRET_LENGTH} characters long in production.")
    if not IS_PRODUCTION:
        return problems
    if DEBUG:
        problems.append("DEBUG must be off in production.")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must list the host names this service answers to in production.")
    elif "*" in ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the hosts explicitly in production, not '*'.")
    if not CONNECTION_ALLOWED_HOSTS:
        problems.append("CONNECTION_ALLOWED_HOSTS must list the database hosts the registry may connect to.")
    if not OIDC_CONFIGURED and LOCAL_LOGIN_ENABLED:
        problems.append(
            "KEYCLOAK_URL, KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET must be set in production, "
            "or LOCAL_LOGIN_ENABLED set to false."
        )
    return problems


if IS_DEPLOYED and (_problems := _deployment_problems()):
    raise ImproperlyConfigured(f"Refusing to start in {ENVIRONMENT}: " + " ".join(_problems))
if not APP_ENCRYPTION_KEY:
    raise ImproperlyConfigured("APP_ENCRYPTION_KEY must not be empty.")

INSTALLED_APPS = [
    "infra_site.apps.InfraAdminConfig",
    "infra_site",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_q",
    "mozilla_django_oidc",
    "axes",
    "connections",
    "migrations_runner",
    "health",
    "console",
]

MIDDLEWARE = [
    # First: counts every response, the ones other middleware answer (redirects, 413, 429) included.
    "health.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before (outside) every middleware that reads or writes a body: compresses what they leave.
    "infra_site.middleware.ApiGzipMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "infra_site.middleware.ApiBodyLimitMiddleware",
    "infra_site.middleware.ApiTrailingSlashMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused for a lockout into the lockout page (or JSON error on /api/).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "infra_site.urls"
WSGI_APPLICATION = "infra_site.wsgi.application"
ASGI_APPLICATION = "infra_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The control database: PostgreSQL from ADMIN_DATABASE_URL, else SQLite under var/.
ADMIN_DATABASE_URL = env.str("ADMIN_DATABASE_URL", default="")
# A web process's pool of connections to a PostgreSQL control database. A sync worker (``manage.py serve``,
# gunicorn) serves one request at a time and needs one connection: with none held at rest, the pool opens it at
# the first request and gives the same one back to every request after. Connections held at rest are handed out
# in turn (first in, first out), and a worker alternating between two or three made 1 page request in 20 wait
# 10 to 80 ms more for its statement's result (server p95 18-20 ms against 5.5 ms with one); a minimum of 1 is
# opened in the background at start, and the first request, finding it not ready, opens another. Idle for 10
# minutes, a connection above the minimum is closed and opened again when needed.
DB_POOL_MIN_SIZE = env.int("DB_POOL_MIN_SIZE", default=0)
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=10)
if DB_POOL_MIN_SIZE < 0 or max(DB_POOL_MIN_SIZE, 1) > DB_POOL_MAX_SIZE:
    raise ImproperlyConfigured(
        "DB_POOL_MIN_SIZE must be at least 0 and DB_POOL_MAX_SIZE at least 1 and at least DB_POOL_MIN_SIZE; got "
        f"{DB_POOL_MIN_SIZE} and {DB_POOL_MAX_SIZE}."
    )
# This process is a task cluster (``manage.py qcluster``): django-q2 forks its workers from it.
TASK_CLUSTER_PROCESS = sys.argv[1:2] == ["qcluster"]
_control_db = env.db_url_config(ADMIN_DATABASE_URL or f"sqlite:///{VAR_DIR / 'control.sqlite3'}")
if _control_db["ENGINE"] == "django.db.backends.postgresql":
    if TASK_CLUSTER_PROCESS:
        # django-q2 forks its workers after the cluster has used the database: a pool created before
        # the fork would be shared by several processes. Workers keep one checked connection each.
        _control_db["CONN_MAX_AGE"] = 60
        _control_db["CONN_HEALTH_CHECKS"] = True
    else:
        _control_db.setdefault("OPTIONS", {})["pool"] = {"min_size": DB_POOL_MIN_SIZE, "max_size": DB_POOL_MAX_SIZE}
        _control_db["CONN_MAX_AGE"] = 0
elif _control_db["ENGINE"] == "django.db.backends.sqlite3":
    _control_db["OPTIONS"] = {
        # WAL lets readers and one writer work at once; IMMEDIATE transactions take the
        # write lock up front, so concurrent writers wait (busy timeout) instead of
        # failing with "database is locked" when a read lock cannot be upgraded.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # Tests use a file, not memory: worker threads and processes must share the control database.
    _control_db["TEST"] = {"NAME": str(VAR_DIR / f"test-control-{os.getpid()}.sqlite3")}
DATABASES = {"default": _control_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if ENVIRONMENT == "testing":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["infra_site.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "admin:login"

if IS_PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only: redirect http:// to https:// and send HSTS (seconds; 0 sends none). On by default in production.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=IS_PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if IS_PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=IS_PRODUCTION)
# Allows submitting the domain to the browsers' HSTS preload list: a decision for the whole domain, so off by default.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

CORS_ALLOW_ALL_ORIGINS = CORS_ALLOWED_ORIGINS_RAW == ["*"]
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else CORS_ALLOWED_ORIGINS_RAW
CORS_URLS_REGEX = r"^/(api|health)/.*$"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Bearer first: its WWW-Authenticate header turns missing credentials into 401, not 403.
        "infra_site.auth.authentication.KeycloakBearerAuthentication",
        # Local accounts (break-glass); refused by the backends when LOCAL_LOGIN_ENABLED is false.
        "infra_site.auth.authentication.LockoutBasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "infra_site.pagination.LimitOffsetPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "infra_site.errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "infra_site.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": (
        ["infra_site.throttling.AnonRateThrottle", "infra_site.throttling.UserRateThrottle"]
        if RATE_LIMIT_ENABLED
        else []
    ),
    # For DRF's own throttles, should a view use one: unset, DRF would count by the whole X-Forwarded-For.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_THROTTLE_RATES": {"anon": f"{RATE_LIMIT_RPM}/min", "user": f"{RATE_LIMIT_RPM}/min"},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# The OpenAPI schema and Swagger UI; hidden by default outside development and testing.
API_DOCS_ENABLED = env.bool("API_DOCS_ENABLED", default=ENVIRONMENT in ("development", "testing"))
SPECTACULAR_SETTINGS = {
    "TITLE": "Infrastructure control plane API",
    "DESCRIPTION": "Connection registry and fleet-wide PostgreSQL migrations.",
    "VERSION": __version__,
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "infra_site.schema.add_error_responses",
    ],
    # Status choices of different models share the name "status": give each its own component name.
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStatusEnum": "migrations_runner.models.ExecutionStatus",
        "TargetStatusEnum": "migrations_runner.models.TargetStatus",
        "TenantStatusEnum": "connections.models.TenantStatus",
    },
    # `check --deploy` generates the schema to report its flaws; they matter only where the docs are served.
    "ENABLE_DJANGO_DEPLOY_CHECK": API_DOCS_ENABLED,
}

# Background tasks: django-q2 on the ORM broker unless Q_BROKER_URL names Redis.
# "queue" runs executions on qcluster workers; "inline" runs them in the submitting process (tests, one-offs).
MIGRATION_EXECUTOR = env.str("MIGRATION_EXECUTOR", default="queue")
if MIGRATION_EXECUTOR not in ("queue", "inline"):
    raise ImproperlyConfigured(f"MIGRATION_EXECUTOR must be 'queue' or 'inline'; got {MIGRATION_EXECUTOR!r}.")
Q_BROKER_URL = env.str("Q_BROKER_URL", default="")
Q_WORKERS = env.int("Q_WORKERS", default=4)
Q_CLUSTER = {
    "name": "infra",
    "workers": Q_WORKERS,
    # Take only what the workers can start now, so every cluster sharing the broker gets work.
    "bulk": 1,
    "queue_limit": Q_WORKERS,
    "poll": 0.1,
    # A task runs one target: several scripts, each statement bounded by MIGRATION_TIMEOUT.
    "timeout": MIGRATION_TIMEOUT * 4 + 60,
    "retry": MIGRATION_TIMEOUT * 4 + 120,
    # Target runs are the record of the work: don't also store every successful task.
    "save_limit": -1,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "label": "Task queue",
}
if Q_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
    Q_CLUSTER["redis"] = Q_BROKER_URL
else:
    Q_CLUSTER["orm"] = "default"

# The cache shared by every process (DRF's rate-limit counters): Redis when the broker is Redis, else a table of
# the control database (created by the migration infra_site 0003; `manage.py createcachetable` after a switch).
if "redis" in Q_CLUSTER:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": Q_BROKER_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "infra_cache",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
# django-q2 rewrites its cluster statistics every half second: they stay in the process, off the control database.
CACHES["process"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
Q_CLUSTER["cache"] = "process"

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"logfmt": {"()": "infra_site.logging.LogfmtFormatter"}},
    "filters": {"client_errors_without_traceback": {"()": "infra_site.logging.ClientErrorsWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "logfmt"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"filters": ["client_errors_without_traceback"]},
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
    },
}
