"""Locking and compatibility hazards of a script, found in PostgreSQL's parse tree of it.

Rolling one script across thousands of schemas multiplies each hazard by thousands: a table rewrite or a full scan
under ``ACCESS EXCLUSIVE`` makes every application query on that table wait, and a dropped or renamed object breaks
the application version still running. Each rule has a stable id, a severity, and a fix in one sentence; a finding
names the statement and its line.

Objects created earlier in the same script are exempt where the hazard needs existing rows or traffic (an index
on a table the same version creates is built on an empty table nobody reads yet).

A statement can carry ``-- lint: ignore <rule-id> <reason>`` in the comments above it: the finding is kept, shown
with the reason, and no longer counts. The reason is required: an ignore without one is itself a finding
(``lint-ignore-without-reason``) and ignores nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from migrations_runner.engine.sqltext import Statement

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    hazard: str
    fix: str


RULES = {
    rule.id: rule
    for rule in (
        Rule(
            "index-not-concurrent",
            ERROR,
            "builds or drops an index without CONCURRENTLY: writes to the table wait until it is done",
            "Use CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY, in a script of its own.",
        ),
        Rule(
            "add-column-volatile-default",
            ERROR,
            "adds a column whose default is volatile (or a serial, identity or stored generated column): the table "
            "is rewritten under ACCESS EXCLUSIVE",
            "Add the column without a default or with a constant one, then backfill it in batches.",
        ),
        Rule(
            "alter-column-type",
            ERROR,
            "changes a column's type: the table and its indexes are rewritten under ACCESS EXCLUSIVE",
            "Add a new column, backfill it in batches and switch the application over (to text or an unbounded "
            "varchar no rewrite happens).",
        ),
        Rule(
            "set-not-null",
            ERROR,
            "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE",
            "Add CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it, then SET NOT NULL (which then skips "
            "the scan).",
        ),
        Rule(
            "add-foreign-key",
            ERROR,
            "adds a foreign key that checks every row while both tables are locked against writes",
            "Add it NOT VALID, then VALIDATE CONSTRAINT in a later statement (that takes a weaker lock).",
        ),
        Rule(
            "add-check",
            ERROR,
            "adds a CHECK constraint that scans the whole table under ACCESS EXCLUSIVE",
            "Add it NOT VALID, then VALIDATE CONSTRAINT in a later statement (that takes a weaker lock).",
        ),
        Rule(
            "add-unique-constraint",
            ERROR,
            "adds a unique or primary key constraint whose index is built under ACCESS EXCLUSIVE",
            "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX.",
        ),
        Rule(
            "drop-table",
            ERROR,
            "drops a table: the application version still running breaks, and the data is gone",
            "Stop using the table in a release first, and drop it in a later one.",
        ),
        Rule(
            "drop-column",
            ERROR,
            "drops a column: the application version still running breaks, and the data is gone",
            "Stop using the column in a release first, and drop it in a later one.",
        ),
        Rule(
            "rename-table",
            ERROR,
            "renames a table: the application version still running breaks",
            "Create the new name (a view or a copy), move the application over, then drop the old name.",
        ),
        Rule(
            "rename-column",
            ERROR,
            "renames a column: the application version still running breaks",
            "Add the new column, write both, move the application over, then drop the old column.",
        ),
        Rule(
            "truncate",
            ERROR,
            "empties a table under ACCESS EXCLUSIVE",
            "Delete in batches, or say why the table holds nothing of value.",
        ),
        Rule(
            "vacuum-full",
            ERROR,
            "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE",
            "Use plain VACUUM, or pg_repack outside the migration.",
        ),
        Rule(
            "cluster",
            ERROR,
            "CLUSTER rewrites the table under ACCESS EXCLUSIVE",
            "Leave physical ordering to maintenance outside the migration.",
        ),
        Rule(
            "lock-table",
            ERROR,
            "takes an explicit table lock that every application query then waits behind",
            "Rely on the locks the statements take, and keep the transaction short.",
        ),
        Rule(
            "reindex-not-concurrent",
            ERROR,
            "REINDEX without CONCURRENTLY blocks writes (and reads using the index) while it runs",
            "Use REINDEX ... CONCURRENTLY, in a script of its own.",
        ),
        Rule(
            "unbounded-update-delete",
            WARNING,
            "updates or deletes every row of a table in one statement, locking them all until the version commits",
            "Add a WHERE clause, or backfill in batches.",
        ),
        Rule(
            "concurrently-in-transaction",
            ERROR,
            "cannot run inside a transaction block, but the script is forced to run in one",
            "Drop the transactional directive (or executeInTransaction=true), or move the statement to a script of "
            "its own.",
        ),
        Rule(
            "lint-ignore-without-reason",
            ERROR,
            "a lint ignore comment without a reason",
            "Write why the hazard is acceptable after the rule id: -- lint: ignore <rule-id> <reason>.",
        ),
    )
}

_IGNORE = re.compile(r"--\s*lint:\s*ignore\s+(?P<rule>[a-z0-9-]+)[ \t]*(?P<reason>[^\n]*)", re.IGNORECASE)
_VOLATILE = {
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "nextval",
    "setseed",
    "txid_current",
}
_SERIAL = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}
# Target types a column can change to without a rewrite, whatever it was (text-like, unbounded).
_NO_REWRITE = {"text", "varchar", "citext"}


@dataclass(frozen=True)
class Finding:
    """One hazard of one statement."""

    rule: str
    severity: str
    message: str
    fix: str
    line: int
    statement: str
    ignored: str = ""  # the reason given in an ignore comment ('' when it counts)

    @property
    def counts(self) -> bool:
        return not self.ignored

    def as_dict(self) -> dict:
        return asdict(self)


def _name(relation: ast.RangeVar | None) -> str:
    return (relation.relname or "") if relation is not None else ""


def _functions(node: object) -> set[str]:
    """The names of the functions an expression calls (last name part, lower case)."""
    found: set[str] = set()
    if isinstance(node, ast.FuncCall) and node.funcname:
        found.add(str(node.funcname[-1].sval).lower())
    if isinstance(node, ast.Node):
        for attribute in node:
            found |= _functions(getattr(node, attribute))
    elif isinstance(node, tuple):
        for item in node:
            found |= _functions(item)
    return found


def _rewrites_on_add(column: ast.ColumnDef) -> bool:
    type_name = str(column.typeName.names[-1].sval).lower() if column.typeName and column.typeName.names else ""
    if type_name in _SERIAL:
        return True
    for constraint in column.constraints or ():
        if not isinstance(constraint, ast.Constraint):
            continue
        if constraint.contype in (ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED):
            return True
        if constraint.contype == ConstrType.CONSTR_DEFAULT and _functions(constraint.raw_expr) & _VOLATILE:
            return True
    return False


def _no_rewrite_type(column: ast.ColumnDef) -> bool:
    type_name = column.typeName
    if type_name is None or not type_name.names:
        return False
    return str(type_name.names[-1].sval).lower() in _NO_REWRITE and not type_name.typmods


def _alter_table(node: ast.AlterTableStmt) -> list[str]:
    rules = []
    for cmd in node.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        definition = cmd.def_
        if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(definition, ast.ColumnDef):
            if _rewrites_on_add(definition):
                rules.append("add-column-volatile-default")
        elif cmd.subtype == AlterTableType.AT_AlterColumnType and isinstance(definition, ast.ColumnDef):
            if not _no_rewrite_type(definition):
                rules.append("alter-column-type")
        elif cmd.subtype == AlterTableType.AT_SetNotNull:
            rules.append("set-not-null")
        elif cmd.subtype == AlterTableType.AT_DropColumn:
            rules.append("drop-column")
        elif cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(definition, ast.Constraint):
            if definition.contype == ConstrType.CONSTR_FOREIGN and not definition.skip_validation:
                rules.append("add-foreign-key")
            elif definition.contype == ConstrType.CONSTR_CHECK and not definition.skip_validation:
                rules.append("add-check")
            elif definition.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not (
                definition.indexname
            ):
                rules.append("add-unique-constraint")
    return rules


def _hazards(node: ast.Node, created: set[str], created_indexes: set[str]) -> list[str]:
    """The rules a statement breaks, given the tables and indexes the script created before it."""
    if isinstance(node, ast.IndexStmt):
        return [] if node.concurrent or _name(node.relation) in created else ["index-not-concurrent"]
    if isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        return [] if _name(node.relation) in created else _alter_table(node)
    if isinstance(node, ast.DropStmt):
        names = {str(obj[-1].sval) for obj in node.objects or () if isinstance(obj, tuple) and obj}
        if node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent and names - created_indexes:
            return ["index-not-concurrent"]
        if node.removeType == ObjectType.OBJECT_TABLE and names - created:
            return ["drop-table"]
        return []
    if isinstance(node, ast.RenameStmt) and _name(node.relation) not in created:
        if node.renameType == ObjectType.OBJECT_TABLE:
            return ["rename-table"]
        if node.renameType == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE:
            return ["rename-column"]
        return []
    if isinstance(node, ast.TruncateStmt):
        return ["truncate"] if {_name(r) for r in node.relations or ()} - created else []
    if isinstance(node, ast.VacuumStmt):
        full = any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ())
        return ["vacuum-full"] if full else []
    if isinstance(node, ast.ClusterStmt):
        return [] if node.relation is not None and _name(node.relation) in created else ["cluster"]
    if isinstance(node, ast.LockStmt):
        return ["lock-table"] if {_name(r) for r in node.relations or ()} - created else []
    if isinstance(node, ast.ReindexStmt):
        concurrent = any(isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ())
        return [] if concurrent or _name(node.relation) in created else ["reindex-not-concurrent"]
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
        return [] if _name(node.relation) in created else ["unbounded-update-delete"]
    return []


def _created(node: ast.Node) -> tuple[str, str]:
    """The table and the index a statement creates ('' for none)."""
    if isinstance(node, ast.CreateStmt):
        return _name(node.relation), ""
    if isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        return _name(node.into.rel), ""
    if isinstance(node, ast.IndexStmt):
        return "", node.idxname or ""
    return "", ""


def _ignores(text: str) -> dict[str, str]:
    """Rule id -> reason of the ignore comments written above a statement's first token."""
    return {m.group("rule").lower(): m.group("reason").strip() for m in _IGNORE.finditer(text)}


def _finding(rule_id: str, statement: Statement, ignored: str = "") -> Finding:
    rule = RULES[rule_id]
    shown = " ".join(statement.text.split())
    return Finding(rule.id, rule.severity, rule.hazard, rule.fix, statement.line, shown[:300], ignored)


def lint_statements(statements: tuple[Statement, ...], *, forced_transaction: bool = False) -> list[Finding]:
    """The findings of a parsed script (``forced_transaction``: it runs in one transaction whatever it holds)."""
    findings: list[Finding] = []
    created: set[str] = set()
    created_indexes: set[str] = set()
    for statement in statements:
        rules = _hazards(statement.node, created, created_indexes)
        if forced_transaction and statement.non_transactional:
            rules.append("concurrently-in-transaction")
        ignores = _ignores(statement.text)
        if any(not reason for reason in ignores.values()):
            findings.append(_finding("lint-ignore-without-reason", statement))
        for rule_id in rules:
            findings.append(_finding(rule_id, statement, ignores.get(rule_id, "")))
        table, index = _created(statement.node)
        created.add(table)
        created_indexes.add(index)
    return findings


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that stop a run under the ``block`` policy: errors not ignored with a reason."""
    return [f for f in findings if f.severity == ERROR and f.counts]
