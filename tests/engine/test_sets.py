"""Loading and validating migration sets (no database)."""

import pytest

from migrations_runner.engine.sets import (
    PlaceholderValueError,
    SetValidationError,
    Version,
    checksum_of,
    load_set,
    load_sets,
)
from migrations_runner.engine.sqltext import is_transactional, split_statements


def write(folder, name, content="SELECT 1;\n", mode="w"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_versions_are_numeric_dotted_and_ignore_leading_zeros():
    ordered = sorted(Version.parse(v) for v in ["10", "2", "1.1", "1", "1_2", "1.10"])
    assert [str(v) for v in ordered] == ["1", "1.1", "1.2", "1.10", "2", "10"]
    assert Version.parse("01") == Version.parse("1")
    assert Version.parse("1_1") == Version.parse("1.1")
    assert Version.parse("1.0") == Version.parse("1")


def test_a_set_loads_in_version_order_with_undo_and_repeatables(tmp_path):
    folder = tmp_path / "tenant"
    write(folder, "V10__ten.sql")
    write(folder, "V2__two.sql")
    write(folder, "V1_1__one_dot_one.sql")
    write(folder, "U2__two.sql")
    write(folder, "R__views.sql")
    write(folder, "README.md", "not a script")
    mset = load_set(folder, "tenant")
    assert mset.problems == []
    assert [str(s.version) for s in mset.versions] == ["1.1", "2", "10"]
    assert mset.versions[0].description == "one dot one"
    assert set(mset.undo) == {Version.parse("2")}
    assert [s.filename for s in mset.repeatables] == ["R__views.sql"]
    assert str(mset.latest) == "10"


def test_every_problem_is_reported_at_once_with_file_names(tmp_path):
    folder = tmp_path / "tenant"
    write(folder, "V1__one.sql")
    write(folder, "V01__again.sql")
    write(folder, "V2-bad-name.sql")
    write(folder, "U7__orphan.sql")
    write(folder, "V3__placeholder.sql", "CREATE TABLE ${schema}.t (x int); -- ${tenant_name}\n")
    write(folder, "V4__binary.sql", b"\xff\xfe\x00bad")
    mset = load_set(folder, "tenant")
    text = "\n".join(mset.problems)
    assert len(mset.problems) == 5, text
    assert "V1__one.sql: duplicate version 1 (also in V01__again.sql)" in text
    assert "V2-bad-name.sql: malformed file name" in text
    assert "U7__orphan.sql: undo script without a forward script V7" in text
    assert "V3__placeholder.sql: unknown placeholder(s) ${tenant_name}" in text
    assert "V4__binary.sql: unreadable" in text
    with pytest.raises(SetValidationError) as raised:
        load_sets(tmp_path, strict=True)
    assert len(raised.value.problems) == 5


def test_checksum_normalises_line_endings():
    assert checksum_of("a\r\nb\r\n") == checksum_of("a\nb\n")
    assert checksum_of("a\nb\n") != checksum_of("a\nc\n")


def test_placeholders_are_substituted(tmp_path):
    folder = tmp_path / "tenant"
    write(folder, "V1__p.sql", "COMMENT ON SCHEMA ${schema} IS '${tenant_slug} in ${region} (${database_type})';")
    script = load_set(folder, "tenant").versions[0]
    rendered = script.render({"schema": "tenant_acme", "tenant_slug": "acme", "region": "eu", "database_type": "t"})
    assert rendered == "COMMENT ON SCHEMA tenant_acme IS 'acme in eu (t)';"


CONTEXT = {"schema": "tenant_acme", "tenant_slug": "acme", "region": "eu-west", "database_type": "tenant"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("schema", "x$$; DROP TABLE users; $$"),
        ("schema", "a$b"),
        ("schema", "x; drop table t"),
        ("schema", 'x"y'),
        ("schema", "Tenant"),
        ("schema", ""),
        ("tenant_slug", "acme' OR '1'='1"),
        ("tenant_slug", "a\\b"),
        ("region", "eu west"),
        ("region", "eu\nwest"),
        ("database_type", "tenant;"),
    ],
)
def test_render_refuses_placeholder_values_that_could_leave_their_quotes(tmp_path, name, value):
    folder = tmp_path / "tenant"
    body = (
        "DO $$ BEGIN PERFORM FROM ${schema}.t WHERE s = '${tenant_slug}' AND r = '${region} ${database_type}'; END $$"
    )
    write(folder, "V1__p.sql", body)
    script = load_set(folder, "tenant").versions[0]
    with pytest.raises(PlaceholderValueError, match=rf"\$\{{{name}\}}"):
        script.render({**CONTEXT, name: value})


def test_render_accepts_an_empty_region_and_values_the_script_does_not_use(tmp_path):
    folder = tmp_path / "tenant"
    write(folder, "V1__p.sql", "SELECT coalesce(nullif('${region}', ''), 'global');")
    script = load_set(folder, "tenant").versions[0]
    assert script.render({**CONTEXT, "region": "", "schema": "unused$"}) == "SELECT coalesce(nullif('', ''), 'global');"


@pytest.mark.parametrize(
    ("script", "transactional"),
    [
        ("CREATE TABLE t (x int);", True),
        ("CREATE INDEX CONCURRENTLY i ON t (x);", False),
        ("create unique index concurrently if not exists i on t (x);", False),
        ("DROP INDEX CONCURRENTLY IF EXISTS i;", False),
        ("REINDEX TABLE CONCURRENTLY t;", False),
        ("VACUUM ANALYZE t;", False),
        ("-- infra:transactional=false\nCREATE TABLE t (x int);", False),
        ("-- infra:transactional=true\nCREATE TABLE t (x int);", True),
        ("-- CREATE INDEX CONCURRENTLY in a comment\nCREATE TABLE t (x int);", True),
    ],
)
def test_non_transactional_scripts_are_detected(script, transactional):
    assert is_transactional(script) is transactional


def test_statements_split_on_top_level_semicolons_only():
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x text DEFAULT 'a;b');
    /* block ; comment */
    CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $body$
    BEGIN NEW.x := 'y'; RETURN NEW; END;
    $body$;
    INSERT INTO "we;ird" VALUES ($$x;y$$);
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].endswith("DEFAULT 'a;b');")
    assert "RETURN NEW; END;" in statements[1]
    assert statements[2].startswith('INSERT INTO "we;ird"')
