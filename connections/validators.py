"""Validators for names and PostgreSQL identifiers taken from users."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

CONNECTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
REGION_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
TENANT_SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
# Identifiers we accept are those PostgreSQL would keep as written without quoting.
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_$]*$")
MAX_IDENTIFIER_BYTES = 63
RESERVED_SCHEMAS = frozenset({"information_schema"})


def validate_connection_name(value: str) -> None:
    if not CONNECTION_NAME_RE.match(value or ""):
        raise ValidationError(
            "Enter a name of 1-63 characters: a lowercase letter, then lowercase letters, digits, '-' or '_'.",
            code="invalid_name",
        )


def validate_region(value: str) -> None:
    if value and not REGION_RE.match(value):
        raise ValidationError(
            "Enter a region slug such as 'us-east': a lowercase letter, then lowercase letters, digits or '-'.",
            code="invalid_region",
        )


def validate_tenant_slug(value: str) -> None:
    if not TENANT_SLUG_RE.match(value or ""):
        raise ValidationError(
            "Enter a slug of 1-48 characters: a lowercase letter, then lowercase letters, digits or '_'.",
            code="invalid_slug",
        )


def validate_identifier(value: str) -> None:
    """A PostgreSQL identifier usable unquoted: lowercase, at most 63 bytes."""
    if not value:
        raise ValidationError("An identifier cannot be empty.", code="invalid_identifier")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValidationError(
            f"'{value[:20]}...' is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit.",
            code="identifier_too_long",
        )
    if not IDENTIFIER_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid identifier: use lowercase letters, digits and '_', starting with a letter "
            "or '_'.",
            code="invalid_identifier",
        )


def validate_schema_name(value: str) -> None:
    """A schema that the product may create and migrate: a valid identifier, not a system schema."""
    validate_identifier(value)
    if value.startswith("pg_") or value in RESERVED_SCHEMAS:
        raise ValidationError(f"{value!r} is a system schema name and cannot be used.", code="reserved_schema")
