"""Flyway trees as the engine reads them: statements as PostgreSQL's own parser splits them, what needs no
transaction, what the parser refuses, and a set's Flyway configuration, placeholders and checksums."""

from __future__ import annotations

import pytest

from migrations_runner.engine.sets import load_set
from migrations_runner.engine.sqltext import SqlSyntaxError, is_transactional, parse_script, split_statements
from tests.support.sets import write_tree

# --- statements, as the parser reads them -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "statements"),
    [
        ("SELECT E'it\\'s; here'; SELECT 2;", ["SELECT E'it\\'s; here';", "SELECT 2;"]),
        ("SELECT E'a\\\\'; SELECT 'b''; c';", ["SELECT E'a\\\\';", "SELECT 'b''; c';"]),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $x$ ; $x$ $fn$; SELECT $$;$$;",
            ["CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $x$ ; $x$ $fn$;", "SELECT $$;$$;"],
        ),
        (
            "/* outer /* inner; */ still; */ SELECT 1; SELECT 2;",
            ["/* outer /* inner; */ still; */ SELECT 1;", "SELECT 2;"],
        ),
        (
            "SELECT U&\"d\\0061t;a\" FROM t; SELECT U&'\\0041;';",
            ['SELECT U&"d\\0061t;a" FROM t;', "SELECT U&'\\0041;';"],
        ),
        ("-- note; here\nSELECT 1 -- tail; too\n;", ["-- note; here\nSELECT 1 -- tail; too\n;"]),
        (
            "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3;",
            ["CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;", "SELECT 3;"],
        ),
    ],
)
def test_statements_are_split_where_postgresql_splits_them(script, statements):
    assert split_statements(script) == statements
    assert all(s.line >= 1 for s in parse_script(script))


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x)", "CREATE INDEX CONCURRENTLY"),
        ("create unique index concurrently if not exists i on t (x)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY) INDEX i", "REINDEX CONCURRENTLY"),
        ("VACUUM ANALYZE t", "VACUUM"),
        ("VACUUM (FULL) t", "VACUUM"),
        ("CLUSTER", "CLUSTER of every table"),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "DETACH PARTITION CONCURRENTLY"),
        ("CREATE DATABASE d", "CREATE DATABASE"),
        ("DROP DATABASE d", "DROP DATABASE"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ("CREATE TABLESPACE s LOCATION '/x'", "CREATE TABLESPACE"),
        ("DROP TABLESPACE s", "DROP TABLESPACE"),
        ("ANALYZE t", ""),
        ("CREATE INDEX i ON t (x)", ""),
        ("CLUSTER t USING i", ""),
        ("REINDEX TABLE t", ""),
        ("SELECT 'CREATE INDEX CONCURRENTLY i ON t (x)'", ""),
        ("-- VACUUM t;\nCREATE TABLE t (x int)", ""),
    ],
)
def test_statements_postgresql_refuses_in_a_transaction_are_found_by_their_parse_tree(statement, reason):
    (parsed,) = parse_script(statement + ";")
    assert parsed.non_transactional == reason
    assert is_transactional(statement + ";") is (reason == "")


def test_the_transactional_directive_still_overrides_the_parser():
    assert is_transactional("-- infra:transactional=true\nCREATE INDEX CONCURRENTLY i ON t (x);") is True
    assert is_transactional("-- infra:transactional=false\nCREATE TABLE t (x int);") is False


@pytest.mark.parametrize(
    ("script", "line", "column", "says"),
    [
        ("SELECT 1;\nCOPY t FROM stdin;\n1\t2\n\\.\n", 2, 1, "COPY ... FROM stdin needs psql"),
        ("COPY t FROM STDIN;", 1, 1, "COPY ... FROM stdin needs psql"),
        ("SELECT 1;\nCOPY t TO stdout;", 2, 1, "COPY ... TO stdout needs psql"),
        ("\\set ON_ERROR_STOP on\nSELECT 1;", 1, 1, "psql meta-command \\set is not SQL"),
        ("SELECT 1;\n  \\i other.sql\n", 2, 3, "psql meta-command \\i is not SQL"),
        ("SELECT 1;\n\nCREATE TABEL t (x int);", 3, 8, 'syntax error at or near "TABEL"'),
        ("SELECT 'unterminated;", 1, 8, "unterminated quoted string"),
    ],
)
def test_what_the_parser_cannot_read_is_refused_with_its_line_and_column(script, line, column, says):
    with pytest.raises(SqlSyntaxError) as raised:
        parse_script(script)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert says in raised.value.reason


# --- a set's Flyway configuration -----------------------------------------------------------------------------


def test_a_flyway_toml_configures_placeholders_and_out_of_order(tmp_path):
    folder = tmp_path / "tenant"
    write_tree(
        folder,
        {
            "flyway.toml": (
                '[environments.prod]\nurl = "jdbc:postgresql://x/y"\n\n[flyway]\nplaceholderPrefix = "#["\n'
                'placeholderSuffix = "]"\noutOfOrder = true\ntable = "legacy_history"\n\n[flyway.placeholders]\n'
                'owner = "app_owner"\n'
            ),
            "V1__t.sql": "CREATE TABLE #[flyway:defaultSchema].t (x int); ALTER TABLE t OWNER TO #[owner]; -- ${x}\n",
        },
    )
    mset = load_set(folder, "tenant")
    assert mset.problems == []
    assert mset.warnings == ["flyway.toml: [environments] is not used here (connections come from the registry)"]
    assert (mset.out_of_order, mset.flyway_table) == (True, "legacy_history")
    rendered = mset.versions[0].render({"flyway:defaultSchema": "tenant_a"})
    assert rendered == "CREATE TABLE tenant_a.t (x int); ALTER TABLE t OWNER TO app_owner; -- ${x}\n"


@pytest.mark.parametrize("value", ["x y", "a'b", "Tenant;", ""])
def test_registry_values_in_flyway_placeholders_follow_the_safe_value_rule(tmp_path, value):
    write_tree(tmp_path / "tenant", {"V1__t.sql": "SELECT '${flyway:defaultSchema}';\n"})
    script = load_set(tmp_path / "tenant", "tenant").versions[0]
    with pytest.raises(ValueError, match="flyway:defaultSchema"):
        script.render({"flyway:defaultSchema": value})


def test_a_repeatable_checksum_follows_its_placeholder_values_and_a_versioned_one_does_not(tmp_path):
    write_tree(
        tmp_path / "tenant",
        {"V1__t.sql": "SELECT '${schema}';\n", "R__v.sql": "SELECT '${schema}';\n", "R__w.sql": "SELECT 1;\n"},
    )
    mset = load_set(tmp_path / "tenant", "tenant")
    versioned, (repeatable, plain) = mset.versions[0], mset.repeatables
    a, b = {"schema": "tenant_a"}, {"schema": "tenant_b"}
    assert versioned.checksum_for(a) == versioned.checksum_for(b) == versioned.checksum
    assert repeatable.checksum_for(a) != repeatable.checksum_for(b)
    assert plain.checksum_for(a) == plain.checksum


def test_psql_only_scripts_and_parse_errors_do_not_stop_the_rest_of_the_set_from_being_read(tmp_path):
    write_tree(tmp_path / "tenant", {"V1__ok.sql": "SELECT 1;\n", "V2__psql.sql": "\\connect other\nSELECT 1;\n"})
    mset = load_set(tmp_path / "tenant", "tenant")
    assert [s.filename for s in mset.versions] == ["V1__ok.sql"]
    assert mset.problems == [
        "V2__psql.sql: line 1, column 1: psql meta-command \\connect is not SQL: the server "
        "never sees it (scripts are sent as they are)"
    ]
