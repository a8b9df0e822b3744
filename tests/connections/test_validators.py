"""Validators of names, hosts and identifiers, and the system check of CONNECTION_ALLOWED_HOSTS."""

import pytest
from django.core.exceptions import ValidationError

from connections.checks import check_connection_allowed_hosts
from connections.validators import validate_identifier, validate_schema_name


@pytest.mark.parametrize("value", ["public", "tenant_acme", "_x", "a1", "users", "s" * 63])
def test_plain_identifiers_are_accepted(value):
    validate_identifier(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("a$b", "invalid_identifier"),
        ("tenant$", "invalid_identifier"),
        ("x\n", "invalid_identifier"),
        ("1abc", "invalid_identifier"),
        ("Upper", "invalid_identifier"),
        ("select", "reserved_word"),
        ("user", "reserved_word"),
        ("table", "reserved_word"),
        ("current_user", "reserved_word"),
        ("s" * 64, "identifier_too_long"),
    ],
)
def test_identifiers_that_need_quoting_are_refused(value, code):
    with pytest.raises(ValidationError) as refused:
        validate_identifier(value)
    assert refused.value.code == code


def test_schema_names_refuse_reserved_words_and_system_schemas():
    for value in ("select", "pg_temp", "information_schema"):
        with pytest.raises(ValidationError):
            validate_schema_name(value)


def test_the_system_check_reports_unusable_allowed_host_entries(settings):
    settings.CONNECTION_ALLOWED_HOSTS = ["db.example.com", "10.0.0.0/33"]
    errors = check_connection_allowed_hosts()
    assert [error.id for error in errors] == ["connections.E001"]
    assert "10.0.0.0/33" in errors[0].msg
    settings.CONNECTION_ALLOWED_HOSTS = ["*.example.com", "10.0.0.0/8", "/run/pg"]
    assert check_connection_allowed_hosts() == []
