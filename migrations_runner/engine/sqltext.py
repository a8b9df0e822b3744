"""SQL text helpers: statement splitting that respects quotes, comments and dollar quoting."""

from __future__ import annotations

import re

# Statements PostgreSQL refuses inside a transaction block.
_NON_TRANSACTIONAL = re.compile(
    r"""
    \b(?:
        CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY
      | DROP\s+INDEX\s+CONCURRENTLY
      | REINDEX\b[^;]*\bCONCURRENTLY
      | VACUUM\b
      | CREATE\s+DATABASE\b
      | DROP\s+DATABASE\b
      | ALTER\s+SYSTEM\b
      | CREATE\s+TABLESPACE\b
      | DROP\s+TABLESPACE\b
      | ALTER\s+TABLE\b[^;]*\bDETACH\s+PARTITION\b[^;]*\bCONCURRENTLY
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)
DIRECTIVE = re.compile(r"^\s*--\s*infra:transactional\s*=\s*(true|false)\s*$", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(script: str) -> list[str]:
    """Split a script into statements on top-level semicolons; comments stay with their statement."""
    statements: list[str] = []
    start = 0
    i = 0
    n = len(script)
    while i < n:
        ch = script[i]
        if ch == "-" and script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end == -1 else end + 1
        elif ch == "/" and script.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if script.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif script.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch in ("'", '"'):
            i += 1
            while i < n:
                if script[i] == ch:
                    if i + 1 < n and script[i + 1] == ch:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif ch == "$" and (match := _DOLLAR_TAG.match(script, i)) and not (i and script[i - 1].isalnum()):
            tag = match.group(0)
            end = script.find(tag, match.end())
            i = n if end == -1 else end + len(tag)
        elif ch == ";":
            statements.append(script[start : i + 1])
            start = i + 1
            i += 1
        else:
            i += 1
    statements.append(script[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """Tell whether a chunk holds more than whitespace, comments and semicolons."""
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return bool(stripped.strip().strip(";").strip())


def strip_comments(statement: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", statement, flags=re.DOTALL)


def is_transactional(script: str) -> bool:
    """Tell whether a script can run inside one transaction (the first-line directive overrides detection)."""
    first_line = script.split("\n", 1)[0]
    directive = DIRECTIVE.match(first_line)
    if directive:
        return directive.group(1).lower() == "true"
    return not any(_NON_TRANSACTIONAL.search(strip_comments(s)) for s in split_statements(script))
