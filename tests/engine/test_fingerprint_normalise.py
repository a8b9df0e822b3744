"""A schema's own name taken out of its definitions: the scan by hand used for plain names (every tenant schema)
does exactly what the two regular expressions do, on any text; a fingerprint kept for schemas with the same
objects under their own names is the one computed in full."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from migrations_runner.engine import fingerprint
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


# --- fingerprints kept per template -------------------------------------------------------------------------------

NAME = "\x01"  # where a drawn structure names its schema

names = st.one_of(
    st.sampled_from(["tenant_acme", "tenant_bolt", "tenant_t", "t", "aa", "aba", "nt_a", "s$1", "ténant_é", "u00e9"]),
    st.from_regex(r"[a-z_$é0-9]{1,5}", fullmatch=True),
)
fragments = st.one_of(
    st.sampled_from([NAME, f'"{NAME}".', f"{NAME}.", f"{NAME}_idx", f"x{NAME}", "tenant_", "acme", "enant_acme"]),
    st.sampled_from(['"', ".", " ", "\\", "\t", "\n", "\\t", "é", "\u00e9", "\x02", "u", "00e9", "1", "$", "'"]),
)
strings = st.lists(fragments, max_size=8).map("".join)
values = st.recursive(
    st.one_of(strings, st.integers(-3, 3), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)),
    max_leaves=8,
)


def _naming(value, name: str):
    if isinstance(value, str):
        return value.replace(NAME, name)
    if isinstance(value, list):
        return [_naming(item, name) for item in value]
    if isinstance(value, dict):
        return {_naming(key, name): _naming(item, name) for key, item in value.items()}
    return value


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(strings, st.dictionaries(strings, values, max_size=3), max_size=4),
    st.lists(names, min_size=2, max_size=5),
    st.booleans(),
)
def test_a_fingerprint_kept_for_a_template_is_the_one_computed_in_full(objects, schemas, ascii_only):
    """The same objects under several schemas' names, as JSON text (escapes included): each schema's fingerprint
    through the kept templates equals the one decoded, normalised and hashed for it alone."""
    fingerprint._shapes.clear()
    for schema in schemas:
        text = json.dumps(_naming(objects, schema), ensure_ascii=ascii_only)
        assert fingerprint.fingerprint_of_text(schema, text) == fingerprint.fingerprint_of(schema, json.loads(text))


def test_schemas_with_the_same_objects_are_decoded_once(monkeypatch):
    fingerprint._shapes.clear()
    decoded = []
    real = fingerprint.fingerprint_of
    monkeypatch.setattr(
        fingerprint, "fingerprint_of", lambda schema, raw, **kw: decoded.append(schema) or real(schema, raw, **kw)
    )
    objects = {
        "table:users": {"kind": "table"},
        "column:users.id": {"default": f"nextval('{NAME}.users_id_seq'::regclass)", "type": "integer"},
        "function:touch()": {"definition": f"CREATE FUNCTION {NAME}.touch()\n SET search_path TO '{NAME}'\n"},
    }
    prints = [
        fingerprint.fingerprint_of_text(schema, json.dumps(_naming(objects, schema)))
        for schema in ("tenant_acme", "tenant_bruce", "tenant_cole")
    ]
    assert decoded == ["tenant_acme"]
    assert len({p.hash for p in prints}) == 1
    assert [p.schema for p in prints] == ["tenant_acme", "tenant_bruce", "tenant_cole"]
    assert prints[2].objects["function:touch()"]["definition"] == (
        f"CREATE FUNCTION touch()\n SET search_path TO '{SCHEMA_PLACEHOLDER}'\n"
    )
    # A schema whose objects keep its name (an index named after it) is computed in full each time.
    named = {"index:x": {"definition": f"CREATE INDEX {NAME}_idx ON t"}}
    for schema in ("tenant_dora", "tenant_emma"):
        fingerprint.fingerprint_of_text(schema, json.dumps(_naming(named, schema)))
    assert decoded == ["tenant_acme", "tenant_dora", "tenant_emma"]


def test_a_name_inside_an_escape_is_not_the_name():
    """A JSON writer may spell a character as an escape that holds a name (``\\u00E9``): the texts of two
    schemas then look alike with their names taken out, but their objects differ."""
    fingerprint._shapes.clear()
    first = fingerprint.fingerprint_of_text("u00E9", '{"column:t.c": {"default": "\\u00E9"}}')
    second = fingerprint.fingerprint_of_text("u00E8", '{"column:t.c": {"default": "\\u00E8"}}')
    assert first.objects == {"column:t.c": {"default": "é"}}
    assert second.objects == {"column:t.c": {"default": "è"}}
    assert first.hash != second.hash
