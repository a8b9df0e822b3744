"""A schema's own name taken out of its definitions: the scan by hand used for plain names (every tenant schema)
does exactly what the two regular expressions do, on any text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from migrations_runner.engine.fingerprint import SCHEMA_PLACEHOLDER, _normaliser


def _by_patterns(schema: str, text: str) -> str:
    """The normalisation as regular expressions: the reference."""
    quoted = '"' + schema.replace('"', '""') + '"'
    qualified = re.compile(rf'(?<![\w$"])(?:{re.escape(quoted)}|{re.escape(schema)})\.(?=[\w"$])')
    bare = re.compile(rf"(?<![\w$]){re.escape(schema)}(?![\w$])")
    return bare.sub(lambda _: SCHEMA_PLACEHOLDER, qualified.sub("", text))


schemas = st.one_of(
    st.sampled_from(["tenant_acme", "t", "aa", "aba", "s$1", "ténant_é", "x_9"]),
    st.from_regex(r"[a-z_$é0-9]{1,4}", fullmatch=True),
)


@st.composite
def texts_naming(draw, schema_strategy=schemas):
    schema = draw(schema_strategy)
    pieces = st.one_of(
        st.sampled_from([schema, f'"{schema}"', f"{schema}.", f'"{schema}".', schema[:-1], schema[1:], '"', "."]),
        st.sampled_from(["$", "_", " ", "x", "é", "9", "(", "'", "\n", '""', "..", "\u0660", "·"]),
    )
    return schema, "".join(draw(st.lists(pieces, max_size=14)))


@settings(max_examples=1000, deadline=None)
@given(texts_naming())
def test_a_plain_name_is_taken_out_exactly_as_the_regular_expressions_take_it(case):
    schema, text = case
    assert _normaliser(schema)(text) == _by_patterns(schema, text)


def test_the_usual_definitions_of_a_tenant_lose_the_qualifier_and_name_the_placeholder():
    normalise = _normaliser("tenant_acme")
    assert normalise("nextval('tenant_acme.users_id_seq'::regclass)") == "nextval('users_id_seq'::regclass)"
    assert normalise('SELECT * FROM "tenant_acme"."Users" u') == 'SELECT * FROM "Users" u'
    assert normalise("SET search_path TO 'tenant_acme'") == "SET search_path TO '${schema}'"
    assert normalise("tenant_acme_x.y, xtenant_acme.y, tenant_acme.") == "tenant_acme_x.y, xtenant_acme.y, ${schema}."
    assert normalise("no mention") == "no mention"


def test_a_name_with_other_characters_goes_through_the_regular_expressions():
    schema = 'we"ird-name'
    text = 'SELECT "we""ird-name".t, we"ird-name, x.we"ird-name.y'
    assert _normaliser(schema)(text) == _by_patterns(schema, text)
    assert _normaliser(schema)(text) == "SELECT t, ${schema}, x.y"
