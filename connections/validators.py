"""Validators for names, hosts and PostgreSQL identifiers taken from users."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

from connections import hosts

# Used with fullmatch: with match, a final "$" would also accept a trailing newline.
CONNECTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
REGION_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
TENANT_SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
# Unquoted-identifier characters, less '$': PostgreSQL allows it after the first character, but it is
# not standard SQL and a '$' in a name spliced into a script could open or close a dollar quote.
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63
RESERVED_SCHEMAS = frozenset({"information_schema"})
# PostgreSQL's key words listed "reserved" or "reserved (can be function or type)" (docs, appendix
# "SQL Key Words"; pg_get_keywords() catcode R or T): as a bare identifier they are syntax errors.
RESERVED_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate
    collation column concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user default deferrable desc distinct do else end
    except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into
    is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on
    only or order outer overlaps placing primary references returning right select session_user similar some
    symmetric system_user table tablesample then to trailing true union unique user using variadic verbose when
    where window with
    """.split()  # noqa: SIM905 (a hundred words read better as text than as a list literal)
)


def validate_connection_name(value: str) -> None:
    if not CONNECTION_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "Enter a name of 1-63 characters: a lowercase letter, then lowercase letters, digits, '-' or '_'.",
            code="invalid_name",
        )


def validate_region(value: str) -> None:
    if value and not REGION_RE.fullmatch(value):
        raise ValidationError(
            "Enter a region slug such as 'us-east': a lowercase letter, then lowercase letters, digits or '-'.",
            code="invalid_region",
        )


def validate_tenant_slug(value: str) -> None:
    if not TENANT_SLUG_RE.fullmatch(value or ""):
        raise ValidationError(
            "Enter a slug of 1-48 characters: a lowercase letter, then lowercase letters, digits or '_'.",
            code="invalid_slug",
        )


def validate_connection_host(value: str) -> None:
    """A single database host that ``CONNECTION_ALLOWED_HOSTS`` allows (see ``connections.hosts``)."""
    problem = hosts.host_problem(value or "", settings.CONNECTION_ALLOWED_HOSTS)
    if problem:
        raise ValidationError(problem, code="host_not_allowed")


def validate_identifier(value: str) -> None:
    """Check an identifier that works unquoted in SQL.

    Lowercase ASCII letters, digits and '_', not starting with a digit, at most 63 bytes,
    and not one of PostgreSQL's reserved key words.
    """
    if not value:
        raise ValidationError("An identifier cannot be empty.", code="invalid_identifier")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValidationError(
            f"'{value[:20]}...' is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit.",
            code="identifier_too_long",
        )
    if not IDENTIFIER_RE.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not a valid identifier: use lowercase letters, digits and '_', starting with a letter "
            "or '_'.",
            code="invalid_identifier",
        )
    if value in RESERVED_KEYWORDS:
        raise ValidationError(
            f"{value!r} is a reserved word in PostgreSQL and cannot be used as a name.", code="reserved_word"
        )


def validate_schema_name(value: str) -> None:
    """A schema that the product may create and migrate: a valid identifier, not a system schema."""
    validate_identifier(value)
    if value.startswith("pg_") or value in RESERVED_SCHEMAS:
        raise ValidationError(f"{value!r} is a system schema name and cannot be used.", code="reserved_schema")
