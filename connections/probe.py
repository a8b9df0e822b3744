"""Connectivity check of one database: connect, ``SELECT version()``, time it, classify failures.

Plain Python (no Django) so the engine and the health checks can use it too.
Failure causes are distinguishable so operators know what to fix:
``dns``, ``refused``, ``timeout``, ``authentication``, ``database_missing``,
``tls``, ``unreachable`` and ``error``. Messages never contain the password.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import psycopg

APPLICATION_NAME = "infra-control-plane"


class ProbeCause:
    DNS = "dns"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    AUTHENTICATION = "authentication"
    DATABASE_MISSING = "database_missing"
    TLS = "tls"
    UNREACHABLE = "unreachable"
    ERROR = "error"


CAUSE_DESCRIPTIONS = {
    ProbeCause.DNS: "the host name does not resolve",
    ProbeCause.REFUSED: "the server refused the connection (nothing listening on that port?)",
    ProbeCause.TIMEOUT: "the server did not answer within the connect timeout",
    ProbeCause.AUTHENTICATION: "authentication failed (user name or password rejected)",
    ProbeCause.DATABASE_MISSING: "the database does not exist on that server",
    ProbeCause.TLS: "the TLS/SSL negotiation failed",
    ProbeCause.UNREACHABLE: "the host cannot be reached",
    ProbeCause.ERROR: "the connection failed",
}

# Ordered: the first pattern that matches libpq's message gives the cause.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (ProbeCause.DNS, re.compile(r"could not translate host name|Name or service not known|nodename nor servname")),
    (
        ProbeCause.AUTHENTICATION,
        re.compile(
            r"password authentication failed|authentication failed|no password "
            r"supplied|role \".*\" does not exist|no pg_hba\.conf entry"
        ),
    ),
    (ProbeCause.DATABASE_MISSING, re.compile(r"database \".*\" does not exist")),
    (ProbeCause.TLS, re.compile(r"SSL|TLS|certificate", re.IGNORECASE)),
    (ProbeCause.TIMEOUT, re.compile(r"timeout expired|timed out|connection timeout", re.IGNORECASE)),
    (ProbeCause.REFUSED, re.compile(r"Connection refused|No such file or directory")),
    (ProbeCause.UNREACHABLE, re.compile(r"No route to host|Network is unreachable|Host is unreachable")),
]


@dataclass(frozen=True)
class ConnectionParams:
    """Everything needed to open a connection; ``repr`` hides the password."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    connect_timeout: int = 5

    def kwargs(self, **extra: object) -> dict[str, object]:
        """Return psycopg ``connect()`` keyword arguments."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": APPLICATION_NAME,
            **extra,
        }


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    response_time_ms: float | None = None
    server_version: str = ""
    cause: str = ""
    error: str = ""

    @property
    def description(self) -> str:
        return CAUSE_DESCRIPTIONS.get(self.cause, "")


def redact(message: str, *secrets: str) -> str:
    """Remove secrets and DSN passwords from a message."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "********")
    message = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1********", message, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1********@", message)


def classify(message: str) -> str:
    """Return the cause of a libpq connection error message."""
    for cause, pattern in _PATTERNS:
        if pattern.search(message):
            return cause
    return ProbeCause.ERROR


def probe(params: ConnectionParams) -> ProbeResult:
    """Connect, read the server version and time it; never raise for connection failures."""
    started = time.perf_counter()
    try:
        with psycopg.connect(**params.kwargs(autocommit=True)) as conn:
            row = conn.execute("SELECT version()").fetchone()
    except psycopg.Error as exc:
        message = redact(str(exc).strip(), params.password)
        return ProbeResult(ok=False, cause=classify(message), error=message)
    except OSError as exc:  # raised by DNS or socket set-up outside libpq in some configurations
        message = redact(str(exc), params.password)
        return ProbeResult(ok=False, cause=classify(message), error=message)
    elapsed = (time.perf_counter() - started) * 1000
    return ProbeResult(ok=True, response_time_ms=round(elapsed, 2), server_version=row[0] if row else "")
