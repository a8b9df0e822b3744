"""SQL text read by PostgreSQL's own parser (libpg_query through ``pglast``): statements, their lines, and the
statements PostgreSQL refuses inside a transaction block.

A script is parsed whole. Each statement keeps the comments written above it (so a directive or a note stays
with its statement) and its closing semicolon; ``Statement.node`` is the server's parse tree of it. What the
parser cannot read is a ``SqlSyntaxError`` with the line and column of the offending token; psql meta-commands
(``\\set``, ``\\i``...) and ``COPY ... FROM stdin`` / ``TO stdout`` (whose data only psql streams) are refused
with a sentence saying so, since the server never sees them as statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pglast import ast, parser

_COPY_REFUSAL = (
    "{} needs psql to stream the data, and scripts are not run by psql: use INSERT, or COPY from a file on the "
    "database server"
)
DIRECTIVE = re.compile(r"^\s*--\s*infra:transactional\s*=\s*(true|false)\s*$", re.IGNORECASE)


class SqlSyntaxError(ValueError):
    """A script PostgreSQL's parser does not accept (or that needs psql); ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.reason = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (leading comments and closing semicolon included), where it starts,
    and the parse tree."""

    text: str
    line: int  # of its first token
    column: int
    node: ast.Node

    @property
    def kind(self) -> str:
        """The parse tree's node name, e.g. ``IndexStmt``."""
        return type(self.node).__name__

    @property
    def non_transactional(self) -> str:
        """Why PostgreSQL refuses this statement inside a transaction block ('' when it does not)."""
        return non_transactional_reason(self.node)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _copy_stream(node: ast.Node | None) -> str:
    if isinstance(node, ast.CopyStmt) and not node.filename and not node.is_program:
        return "COPY ... FROM stdin" if node.is_from else "COPY ... TO stdout"
    return ""


def _refusal(text: str, offset: int) -> tuple[str, int]:
    """A clearer reason than the parser's, and where it applies, for syntax only psql understands found at
    ``offset`` ('' when there is none)."""
    line_start = text.rfind("\n", 0, offset) + 1
    if text[line_start:].lstrip().startswith("\\"):
        command = text[line_start:].lstrip().split(None, 1)[0]
        reason = f"psql meta-command {command} is not SQL: the server never sees it (scripts are sent as they are)"
        return reason, offset
    try:
        earlier = parser.parse_sql(text[:line_start])
    except parser.ParseError:
        return "", offset
    if earlier and _copy_stream(earlier[-1].stmt):
        return _COPY_REFUSAL.format(_copy_stream(earlier[-1].stmt)), earlier[-1].stmt_location or 0
    return "", offset


@lru_cache(maxsize=512)
def parse_script(text: str) -> tuple[Statement, ...]:
    """Parse a whole script into its statements; raise ``SqlSyntaxError`` when the parser does not accept it."""
    try:
        raw = parser.parse_sql(text)
    except parser.ParseError as exc:
        message, offset = exc.args[0], exc.args[1] if len(exc.args) > 1 else 0
        reason, offset = _refusal(text, offset)
        raise SqlSyntaxError(reason or message, *_position(text, offset)) from None
    statements = []
    previous_end = 0
    for item in raw or ():
        start = item.stmt_location or 0
        end = start + item.stmt_len if item.stmt_len else len(text)
        semicolon = end + len(text[end:]) - len(text[end:].lstrip())
        if text.startswith(";", semicolon):
            end = semicolon + 1
        chunk = text[previous_end:end]
        leading = len(chunk) - len(chunk.lstrip())
        line, column = _position(text, start)
        stream = _copy_stream(item.stmt)
        if stream:
            raise SqlSyntaxError(_COPY_REFUSAL.format(stream), line, column)
        assert item.stmt is not None  # a parsed statement always has its tree
        statements.append(Statement(chunk[leading:].rstrip(), line, column, item.stmt))
        previous_end = end
    return tuple(statements)


def split_statements(script: str) -> list[str]:
    """The statements of a script as text, in order (see ``parse_script``)."""
    return [statement.text for statement in parse_script(script)]


def non_transactional_reason(node: ast.Node) -> str:
    """Why PostgreSQL refuses a statement inside a transaction block, as a short phrase ('' when it does not)."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and any(
        isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
    ):
        return "REINDEX CONCURRENTLY"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    if isinstance(node, ast.ClusterStmt) and node.relation is None:
        return "CLUSTER of every table"
    if isinstance(node, ast.AlterTableStmt) and any(
        isinstance(cmd, ast.AlterTableCmd) and isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent
        for cmd in node.cmds or ()
    ):
        return "DETACH PARTITION CONCURRENTLY"
    names = {
        ast.CreatedbStmt: "CREATE DATABASE",
        ast.DropdbStmt: "DROP DATABASE",
        ast.AlterSystemStmt: "ALTER SYSTEM",
        ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
        ast.DropTableSpaceStmt: "DROP TABLESPACE",
    }
    return names.get(type(node), "")


def directive(script: str) -> bool | None:
    """The ``-- infra:transactional=true|false`` directive on a script's first line, or None."""
    found = DIRECTIVE.match(script.split("\n", 1)[0])
    return None if found is None else found.group(1).lower() == "true"


def is_transactional(script: str) -> bool:
    """Tell whether a script can run inside one transaction (the first-line directive overrides the parser)."""
    forced = directive(script)
    if forced is not None:
        return forced
    return not any(statement.non_transactional for statement in parse_script(script))


def created_concurrent_indexes(script: str, schema: str) -> list[str]:
    """The names of the indexes ``script`` builds with ``CREATE INDEX CONCURRENTLY`` in ``schema`` (an index lives
    in its table's schema; an unqualified table counts as ``schema``'s); unnamed builds are not listed."""
    names = []
    for statement in parse_script(script):
        node = statement.node
        if not isinstance(node, ast.IndexStmt) or not node.concurrent or not node.idxname:
            continue
        if node.relation is None or node.relation.schemaname in (None, schema):
            names.append(node.idxname)
    return list(dict.fromkeys(names))
