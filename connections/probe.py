"""Connectivity check of one database: connect, ``SELECT version()``, time it, classify failures.

Plain Python (no Django) so the engine and the health checks can use it too.
Failure causes are distinguishable so operators know what to fix:
``dns``, ``refused``, ``timeout``, ``authentication``, ``database_missing``,
``tls``, ``unreachable``, ``not_postgres``, ``host_not_allowed`` and ``error``.
Messages never contain the password, nor bytes a non-PostgreSQL peer sent.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from connections.hosts import host_problem

APPLICATION_NAME = "infra-control-plane"


class ProbeCause:
    DNS = "dns"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    AUTHENTICATION = "authentication"
    DATABASE_MISSING = "database_missing"
    TLS = "tls"
    UNREACHABLE = "unreachable"
    NOT_POSTGRES = "not_postgres"
    HOST_NOT_ALLOWED = "host_not_allowed"
    ERROR = "error"


CAUSE_DESCRIPTIONS = {
    ProbeCause.DNS: "the host name does not resolve",
    ProbeCause.REFUSED: "the server refused the connection (nothing listening on that port?)",
    ProbeCause.TIMEOUT: "the server did not answer within the connect timeout",
    ProbeCause.AUTHENTICATION: (
        "authentication failed (user name or password rejected, or the server asked for an authentication "
        "method the connection does not allow)"
    ),
    ProbeCause.DATABASE_MISSING: "the database does not exist on that server",
    ProbeCause.TLS: "the TLS/SSL negotiation failed",
    ProbeCause.UNREACHABLE: "the host cannot be reached",
    ProbeCause.NOT_POSTGRES: "the server at that address does not speak the PostgreSQL protocol",
    ProbeCause.HOST_NOT_ALLOWED: "the host is not allowed by CONNECTION_ALLOWED_HOSTS",
    ProbeCause.ERROR: "the connection failed",
}

# libpq's messages for a peer that answered in another protocol; some end with the first byte the peer
# sent (a banner's "H" of "HTTP/1.1"), so such failures are stored with a fixed message instead.
_NOT_POSTGRES = re.compile(
    r"received invalid response to (?:SSL|GSSAPI) negotiation"
    r"|expected authentication request from server, but received"
    r"|received invalid protocol negotiation message"
    r"|received unencrypted data after SSL response"
    r"|unexpected message from server during startup"
)
NOT_POSTGRES_MESSAGE = "the server did not answer with the PostgreSQL protocol"
# libpq's refusal under ``require_auth``, e.g. 'authentication method requirement "scram-sha-256" failed:
# server requested a cleartext password'. The text after "failed:" names the method the server wanted.
_AUTH_METHOD_REFUSED = re.compile(r'authentication method requirement "[^"]*" failed: (?P<reason>[^\n]*)')

# Ordered: the first pattern that matches libpq's message gives the cause.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (ProbeCause.NOT_POSTGRES, _NOT_POSTGRES),
    (ProbeCause.DNS, re.compile(r"could not translate host name|Name or service not known|nodename nor servname")),
    (ProbeCause.AUTHENTICATION, _AUTH_METHOD_REFUSED),
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


class HostNotAllowed(psycopg.InterfaceError):
    """The host is outside ``CONNECTION_ALLOWED_HOSTS``: no connection was attempted.

    A ``psycopg.Error`` so that every caller's handling of connection failures covers it;
    not an ``OperationalError``, so the engine does not retry it as a transient failure.
    """


@dataclass(frozen=True)
class ConnectionParams:
    """Everything needed to open a connection; ``repr`` hides the password.

    ``require_auth`` is libpq's list of the authentication methods the client accepts:
    the server cannot talk the client into sending the password in a weaker form.
    ``allowed_hosts`` is the ``CONNECTION_ALLOWED_HOSTS`` policy (see ``connections.hosts``).
    """

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    connect_timeout: int = 5
    require_auth: str = "scram-sha-256"
    allowed_hosts: tuple[str, ...] = ()

    def kwargs(self, **extra: object) -> dict[str, Any]:
        """Return psycopg ``connect()`` keyword arguments; raise ``HostNotAllowed`` for a host outside the policy.

        ``extra`` adds options (``autocommit``); it cannot override the ones set here.
        """
        problem = host_problem(self.host, self.allowed_hosts)
        if problem:
            raise HostNotAllowed(problem)
        return {
            **extra,
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode,
            "require_auth": self.require_auth,
            "connect_timeout": self.connect_timeout,
            "application_name": APPLICATION_NAME,
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


ADDRESS_HIDDEN = "[hidden]"
# Where libpq and the socket layer name a server's address, port or user: 'connection to server at "h" (1.2.3.4),
# port 5432', 'on socket "/tmp/.s.PGSQL.5432"', 'for user "app"', 'role "app"', 'host "h"', "('h', 5432)".
_ADDRESS_MENTIONS = (
    (re.compile(r'(server (?:at|on socket) )"[^"]*"(?: \([^)]*\))?'), rf'\1"{ADDRESS_HIDDEN}"'),
    (re.compile(r'\b((?:host|host name|user|role|hostaddr)\s*=?\s*)"[^"]*"', re.IGNORECASE), rf'\1"{ADDRESS_HIDDEN}"'),
    (re.compile(r"\b(port\s*=?\s*)\d+", re.IGNORECASE), rf"\1{ADDRESS_HIDDEN}"),
    (re.compile(r"\('[^']*', \d+\)"), f"({ADDRESS_HIDDEN})"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), ADDRESS_HIDDEN),
)


def redact_address(message: str, *known: str) -> str:
    """Remove server addresses, ports and user names from an error message: libpq's usual mentions of them, and
    every whole-word occurrence of the ``known`` values (the registered hosts, ports and users)."""
    for pattern, replacement in _ADDRESS_MENTIONS:
        message = pattern.sub(replacement, message)
    for value in sorted({v for v in known if v}, key=len, reverse=True):
        message = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", ADDRESS_HIDDEN, message)
    return message


def classify(message: str) -> str:
    """Return the cause of a libpq connection error message."""
    for cause, pattern in _PATTERNS:
        if pattern.search(message):
            return cause
    return ProbeCause.ERROR


def _failure(message: str, params: ConnectionParams) -> ProbeResult:
    message = redact(message.strip(), params.password)
    cause = classify(message)
    if cause == ProbeCause.NOT_POSTGRES:
        message = NOT_POSTGRES_MESSAGE
    elif refused := _AUTH_METHOD_REFUSED.search(message):
        message = (
            f"the server asked for an authentication method this connection does not allow "
            f"({refused.group('reason').strip()}); allowed: {params.require_auth}"
        )
    return ProbeResult(ok=False, cause=cause, error=message)


def probe(params: ConnectionParams) -> ProbeResult:
    """Connect, read the server version and time it; never raise for connection failures."""
    started = time.perf_counter()
    try:
        with psycopg.connect(**params.kwargs(autocommit=True)) as conn:
            row = conn.execute("SELECT version()").fetchone()
    except HostNotAllowed as exc:
        return ProbeResult(ok=False, cause=ProbeCause.HOST_NOT_ALLOWED, error=str(exc))
    except psycopg.Error as exc:
        return _failure(str(exc), params)
    except OSError as exc:  # raised by DNS or socket set-up outside libpq in some configurations
        return _failure(str(exc), params)
    elapsed = (time.perf_counter() - started) * 1000
    return ProbeResult(ok=True, response_time_ms=round(elapsed, 2), server_version=row[0] if row else "")
