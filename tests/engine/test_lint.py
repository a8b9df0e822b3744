"""Lint of the scripts a set holds: each rule on the parse tree, the ignore comment, the shipped sets."""

from __future__ import annotations

import shutil

import pytest

from migrations_runner.engine.lint import RULES, lint_statements
from migrations_runner.engine.sets import load_sets
from migrations_runner.engine.sqltext import parse_script
from tests.support.sets import SHIPPED_SETS


def rules_of(script: str, **kwargs) -> list[str]:
    return [f.rule for f in lint_statements(parse_script(script), **kwargs) if f.counts]


# (rule, a script that triggers it, one that does not: the safe form, or the same on a table the version creates)
CASES = [
    ("index-not-concurrent", "CREATE INDEX i ON t (x);", "CREATE INDEX CONCURRENTLY i ON t (x);"),
    (
        "index-not-concurrent",
        "CREATE UNIQUE INDEX i ON t (x);",
        "CREATE TABLE t (x int); CREATE UNIQUE INDEX i ON t (x);",
    ),
    ("index-not-concurrent", "DROP INDEX i;", "DROP INDEX CONCURRENTLY i;"),
    ("index-not-concurrent", "DROP INDEX i;", "CREATE TABLE t (x int); CREATE INDEX i ON t (x); DROP INDEX i;"),
    (
        "add-column-volatile-default",
        "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE t ADD COLUMN u boolean NOT NULL DEFAULT false;",
    ),
    (
        "add-column-volatile-default",
        "ALTER TABLE t ADD COLUMN id bigserial;",
        "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now();",
    ),
    (
        "add-column-volatile-default",
        "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (x * 2) STORED;",
        "CREATE TABLE t (x int); ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (x * 2) STORED;",
    ),
    ("alter-column-type", "ALTER TABLE t ALTER COLUMN x TYPE bigint;", "ALTER TABLE t ALTER COLUMN x TYPE text;"),
    (
        "alter-column-type",
        "ALTER TABLE t ALTER COLUMN x TYPE varchar(20);",
        "ALTER TABLE t ALTER COLUMN x TYPE varchar;",
    ),
    (
        "set-not-null",
        "ALTER TABLE t ALTER COLUMN x SET NOT NULL;",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (x IS NOT NULL) NOT VALID;",
    ),
    (
        "add-foreign-key",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id);",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT f;",
    ),
    (
        "add-check",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0);",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;",
    ),
    (
        "add-unique-constraint",
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE (x);",
        "CREATE UNIQUE INDEX CONCURRENTLY i ON t (x);\nALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX i;",
    ),
    (
        "add-unique-constraint",
        "ALTER TABLE t ADD PRIMARY KEY (x);",
        "CREATE TABLE t (x int); ALTER TABLE t ADD PRIMARY KEY (x);",
    ),
    ("drop-table", "DROP TABLE t;", "CREATE TABLE t (x int); DROP TABLE t;"),
    ("drop-column", "ALTER TABLE t DROP COLUMN x;", "CREATE TABLE t (x int, y int); ALTER TABLE t DROP COLUMN x;"),
    ("rename-table", "ALTER TABLE t RENAME TO u;", "CREATE TABLE t (x int); ALTER TABLE t RENAME TO u;"),
    ("rename-column", "ALTER TABLE t RENAME COLUMN x TO y;", "ALTER VIEW v RENAME COLUMN x TO y;"),
    ("truncate", "TRUNCATE t;", "CREATE TABLE t (x int); TRUNCATE t;"),
    ("vacuum-full", "VACUUM FULL t;", "VACUUM ANALYZE t;"),
    ("cluster", "CLUSTER t USING i;", "CREATE TABLE t (x int); CLUSTER t USING t_pkey;"),
    ("lock-table", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;", "CREATE TABLE t (x int); LOCK TABLE t;"),
    ("reindex-not-concurrent", "REINDEX TABLE t;", "REINDEX TABLE CONCURRENTLY t;"),
    ("unbounded-update-delete", "UPDATE t SET x = 0;", "UPDATE t SET x = 0 WHERE x IS NULL;"),
    ("unbounded-update-delete", "DELETE FROM t;", "DELETE FROM t WHERE id < 1000;"),
]


@pytest.mark.parametrize(("rule", "hazard", "safe"), CASES, ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)])
def test_each_rule_finds_its_hazard_and_not_the_safe_form(rule, hazard, safe):
    assert rule in rules_of(hazard)
    assert rule not in rules_of(safe)


def test_every_rule_is_exercised_and_has_a_fix():
    exercised = {c[0] for c in CASES} | {"concurrently-in-transaction", "lint-ignore-without-reason"}
    assert exercised == set(RULES)
    assert all(rule.fix.endswith(".") and rule.severity in ("error", "warning") for rule in RULES.values())


def test_a_statement_that_needs_no_transaction_in_a_script_forced_into_one_is_a_finding():
    script = "CREATE INDEX CONCURRENTLY i ON t (x);"
    assert rules_of(script, forced_transaction=True) == ["concurrently-in-transaction"]
    assert rules_of(script) == []


def test_a_finding_names_the_statement_its_line_and_the_fix():
    (finding,) = lint_statements(parse_script("CREATE TABLE a (x int);\n\nCREATE INDEX i\n  ON b (x);\n"))
    assert (finding.rule, finding.severity, finding.line) == ("index-not-concurrent", "error", 3)
    assert finding.statement == "CREATE INDEX i ON b (x);"
    assert "CONCURRENTLY" in finding.fix


def test_an_ignore_comment_with_a_reason_keeps_the_finding_shown_but_not_counted():
    script = (
        "-- lint: ignore set-not-null the table holds 20 rows, read at start-up\nALTER TABLE t ALTER x SET NOT NULL;"
    )
    (finding,) = lint_statements(parse_script(script))
    assert (finding.rule, finding.ignored, finding.counts) == (
        "set-not-null",
        "the table holds 20 rows, read at start-up",
        False,
    )


def test_an_ignore_comment_without_a_reason_is_itself_a_finding_and_ignores_nothing():
    script = "-- lint: ignore drop-column\nALTER TABLE t DROP COLUMN x;"
    assert sorted(rules_of(script)) == ["drop-column", "lint-ignore-without-reason"]


def test_the_shipped_sets_pass_the_block_policy():
    sets = load_sets(SHIPPED_SETS)
    findings = [
        (k, s.filename, f.rule) for k, m in sets.items() for s in [*m.versions, *m.repeatables] for f in s.findings
    ]
    assert [f for f in findings if f] == [], findings


def test_undo_scripts_are_not_linted(tmp_path):
    folder = tmp_path / "tenant"
    folder.mkdir()
    (folder / "V1__t.sql").write_text("CREATE TABLE t (x int);\n")
    (folder / "U1__t.sql").write_text("DROP TABLE t;\n")
    mset = load_sets(tmp_path)["tenant"]
    assert mset.undo[mset.versions[0].version].findings == ()


def test_shipped_set_copies_stay_lint_clean_when_copied(tmp_path):
    shutil.copytree(SHIPPED_SETS, tmp_path / "sets")
    assert all(not s.findings for m in load_sets(tmp_path / "sets").values() for s in m.versions)
