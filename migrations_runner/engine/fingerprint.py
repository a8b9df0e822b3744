"""Fingerprints of schemas: a stable hash of the catalog objects a schema holds, and readable diffs between them.

A schema's **objects** map a key (``column:tasks.priority``, ``index:tasks_open_due_date_idx``) to its
canonical definition (a small dict: a column's type, nullability and default; an index's
``pg_get_indexdef``; a view's ``pg_get_viewdef``; a function's ``pg_get_functiondef``; ...). Its
**fingerprint** is the SHA-256 of that map as canonical JSON.

What makes two tenants that were migrated alike hash equal:

- Object identifiers (OIDs) never enter a definition, and the history tables (``IGNORED_TABLES``) with
  their indexes, constraints and sequences are left out.
- The schema's own name is normalised: references qualified with it (``tenant_acme.users``, which
  PostgreSQL writes for objects outside the session's ``search_path``) lose the qualifier, and the name
  left elsewhere (``SET search_path TO 'tenant_acme'`` in a function) becomes ``${schema}``. So identical
  tenants in different schemas, or in ``public`` of a dedicated database, hash equal.
- Objects that belong to an extension are the extension's: they are left out.

The definitions come from PostgreSQL's own deparsers, whose output can differ between major versions, so
targets on servers of different major versions may differ for that reason alone.

One SQL statement reads the objects of many schemas of one database (found through ``pg_depend``'s index on
the schema, so its cost follows the size of those schemas, not of the whole catalog).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg

from migrations_runner.engine import history

FORMAT = 1  # part of every hash: a change of what is read changes every fingerprint alike
SCHEMA_PLACEHOLDER = "${schema}"
# Bookkeeping of the migration tools, not the application's schema: ours, and Flyway's in fleets adopted from it.
IGNORED_TABLES = (history.TABLE, "flyway_schema_history")

# The catalog objects of the schemas named by %(schemas)s: one row per schema that exists, with its objects as
# one JSON document (json, not jsonb: the keys are unique and the hash sorts them, and jsonb costs more to build),
# its keys in order, so schemas holding the same objects get the same text but for their names; as text, decoded
# by ``fingerprint_of_text`` only when needed.
# Relations, functions and types are found through their dependency on the schema (pg_depend's index), indexes,
# constraints and triggers through their table. A sequence's owning column is read by its key in scalar subqueries,
# not joined: joined, a generic plan made while the catalogs' statistics lag behind the fleet's new schemas (lanes
# prepare this query) could merge-join all of pg_attribute for each sequence, measured at 10,000 tenants as 10-14 s
# a batch instead of 20 ms, in every lane at once after an autovacuum analyzed pg_class.
CATALOG_QUERY = """
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY(%(schemas)s::text[])
), members AS (
    SELECT d.refobjid AS nsp, d.classid, d.objid
    FROM pg_depend d
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid IN (SELECT oid FROM ns) AND d.refobjsubid = 0
      AND d.deptype = 'n'
      AND NOT EXISTS (
          SELECT FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e'
      )
), rels AS (
    SELECT m.nsp, c.oid, c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
           c.reloptions, c.relispartition
    FROM members m JOIN pg_class c ON c.oid = m.objid
    WHERE m.classid = 'pg_class'::regclass AND c.relname <> ALL(%(ignored)s::text[])
), tables AS (
    SELECT * FROM rels WHERE relkind IN ('r', 'p', 'f')
), objects AS (
    SELECT t.nsp, 'table:' || t.relname AS key, json_build_object(
        'kind', CASE t.relkind WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
        'unlogged', t.relpersistence = 'u',
        'row_security', CASE WHEN t.relforcerowsecurity THEN 'forced' WHEN t.relrowsecurity THEN 'enabled' END,
        'options', (SELECT string_agg(o, ', ' ORDER BY o) FROM unnest(t.reloptions) o),
        'partition_key', CASE WHEN t.relkind = 'p' THEN pg_get_partkeydef(t.oid) END,
        'partition_of', (
            SELECT p.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
            FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
            WHERE t.relispartition AND i.inhrelid = t.oid
        )
    ) AS value
    FROM tables t
    UNION ALL
    SELECT t.nsp, 'column:' || t.relname || '.' || a.attname, json_build_object(
        'type', format_type(a.atttypid, a.atttypmod),
        'nullable', NOT a.attnotnull,
        'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
        'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
        'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
        'collation', CASE WHEN a.attcollation <> ty.typcollation THEN
            (SELECT co.collname FROM pg_collation co WHERE co.oid = a.attcollation) END
    )
    FROM tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT t.nsp, 'index:' || ic.relname, json_build_object(
        'table', t.relname, 'definition', pg_get_indexdef(i.indexrelid), 'valid', i.indisvalid
    )
    FROM tables t
    JOIN pg_index i ON i.indrelid = t.oid
    JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE NOT EXISTS (  -- the index of a primary key, unique or exclusion constraint is the constraint's
        SELECT FROM pg_constraint k
        WHERE k.conrelid = t.oid AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')
    )
    UNION ALL
    SELECT t.nsp, 'constraint:' || t.relname || '.' || k.conname, json_build_object(
        'type', CASE k.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
                               WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' ELSE k.contype::text END,
        'definition', pg_get_constraintdef(k.oid)
    )
    FROM tables t
    JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype NOT IN ('t', 'n')
    UNION ALL
    SELECT t.nsp, 'trigger:' || t.relname || '.' || g.tgname, json_build_object(
        'definition', pg_get_triggerdef(g.oid),
        'enabled', CASE g.tgenabled WHEN 'O' THEN 'yes' WHEN 'D' THEN 'no' WHEN 'R' THEN 'replica'
                                    WHEN 'A' THEN 'always' END
    )
    FROM tables t
    JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal
    UNION ALL
    SELECT v.nsp, CASE v.relkind WHEN 'm' THEN 'materialized view:' ELSE 'view:' END || v.relname,
           json_build_object(
               'definition', pg_get_viewdef(v.oid),
               'options', (SELECT string_agg(o, ', ' ORDER BY o) FROM unnest(v.reloptions) o)
           )
    FROM rels v WHERE v.relkind IN ('v', 'm')
    UNION ALL
    SELECT s.nsp, 'sequence:' || s.relname, json_build_object(
        'type', format_type(q.seqtypid, NULL), 'start', q.seqstart, 'increment', q.seqincrement,
        'min', q.seqmin, 'max', q.seqmax, 'cache', q.seqcache, 'cycle', q.seqcycle,
        'owned_by', o.owner_table || '.' || o.owner_column
    )
    FROM rels s
    JOIN pg_sequence q ON q.seqrelid = s.oid
    LEFT JOIN LATERAL (
        SELECT od.refobjid AS rel, od.refobjsubid AS attnum
        FROM pg_depend od
        WHERE od.classid = 'pg_class'::regclass AND od.objid = s.oid AND od.refclassid = 'pg_class'::regclass
          AND od.deptype IN ('a', 'i')
        LIMIT 1
    ) od ON true
    LEFT JOIN LATERAL (  -- looked up by key, never joined: see the comment above the query
        SELECT (SELECT oc.relname FROM pg_class oc WHERE oc.oid = od.rel) AS owner_table,
               (SELECT oa.attname FROM pg_attribute oa WHERE oa.attrelid = od.rel AND oa.attnum = od.attnum)
                   AS owner_column
    ) o ON true
    WHERE s.relkind = 'S' AND (o.owner_table IS NULL OR o.owner_table <> ALL(%(ignored)s::text[]))
    UNION ALL
    SELECT m.nsp,
           CASE p.prokind WHEN 'p' THEN 'procedure:' WHEN 'a' THEN 'aggregate:' ELSE 'function:' END
               || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           CASE WHEN p.prokind = 'a'
                THEN json_build_object('returns', pg_get_function_result(p.oid))
                ELSE json_build_object('definition', pg_get_functiondef(p.oid)) END
    FROM members m JOIN pg_proc p ON p.oid = m.objid
    WHERE m.classid = 'pg_proc'::regclass
    UNION ALL
    SELECT m.nsp, 'type:' || ty.typname, CASE ty.typtype
        WHEN 'e' THEN json_build_object('kind', 'enum', 'labels', (
            SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = ty.oid
        ))
        WHEN 'd' THEN json_build_object(
            'kind', 'domain', 'base', format_type(ty.typbasetype, ty.typtypmod), 'nullable', NOT ty.typnotnull,
            'default', ty.typdefault, 'constraints', (
                SELECT json_object_agg(k.conname, pg_get_constraintdef(k.oid))
                FROM pg_constraint k WHERE k.contypid = ty.oid
            )
        )
        WHEN 'c' THEN json_build_object('kind', 'composite', 'attributes', (
            SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
            FROM pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
        ))
        WHEN 'r' THEN json_build_object('kind', 'range', 'subtype', (
            SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = ty.oid
        ))
        ELSE json_build_object('kind', ty.typtype::text) END
    FROM members m JOIN pg_type ty ON ty.oid = m.objid
    WHERE m.classid = 'pg_type'::regclass AND ty.typtype IN ('e', 'd', 'c', 'r')
)
SELECT ns.nspname, coalesce(o.objects, '{}'::json)::text
FROM ns
LEFT JOIN (
    SELECT nsp, json_object_agg(key, value ORDER BY key) AS objects FROM objects GROUP BY nsp
) o ON o.nsp = ns.oid
"""

# How each kind of object is named in a diff, and the order in which diffs list them.
KIND_LABELS = {
    "table": "table",
    "column": "column",
    "constraint": "constraint",
    "index": "index",
    "trigger": "trigger",
    "view": "view",
    "materialized view": "materialized view",
    "sequence": "sequence",
    "function": "function",
    "procedure": "procedure",
    "aggregate": "aggregate",
    "type": "type",
}
_KIND_ORDER = {kind: n for n, kind in enumerate(KIND_LABELS)}
_SHOWN_CHARS = 160  # of a definition in a diff line


Objects = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Fingerprint:
    """A schema's fingerprint and the objects it was computed from (``exists`` False: no such schema)."""

    schema: str
    hash: str
    objects: Objects
    exists: bool = True


def _canonical(objects: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps({"format": FORMAT, "objects": objects}, sort_keys=True, separators=(",", ":"))


def digest(objects: Mapping[str, Mapping[str, Any]]) -> str:
    """Return the SHA-256 (hex) of the canonical JSON of ``objects``."""
    return hashlib.sha256(_canonical(objects).encode()).hexdigest()


def _normaliser(schema: str) -> Callable[[str], str]:
    """A function that takes ``schema``'s own name out of a definition (see the module docstring): a reference
    qualified with the name (``"name".`` or ``name.``, not inside a longer identifier, before an identifier)
    loses the qualifier, then the name standing alone (not inside a longer identifier) becomes ``${schema}``.

    A name of word characters and ``$`` (every tenant schema) is found with ``str.find`` and its neighbours
    checked by hand: a lane fingerprints each schema once, and compiling two patterns per schema cost more
    than the rest of the normalisation. Any other name goes through the equivalent regular expressions."""
    if _PLAIN_NAME.fullmatch(schema):
        return partial(_normalise_plain, schema)
    quoted = '"' + schema.replace('"', '""') + '"'
    patterns: list[re.Pattern[str]] = []  # compiled at the first definition that names the schema, if any does

    def normalise(text: str) -> str:
        if schema not in text:
            return text
        if not patterns:
            patterns.append(re.compile(rf'(?<![\w$"])(?:{re.escape(quoted)}|{re.escape(schema)})\.(?=[\w"$])'))
            patterns.append(re.compile(rf"(?<![\w$]){re.escape(schema)}(?![\w$])"))
        qualified, bare = patterns
        return bare.sub(lambda _: SCHEMA_PLACEHOLDER, qualified.sub("", text))

    return normalise


_PLAIN_NAME = re.compile(r"[\w$]+")


def _identifier_char(char: str) -> bool:
    r"""Whether ``char`` may continue an unquoted identifier: what ``[\w$]`` matches (``\w`` is ``isalnum()``
    or ``_`` for the ``re`` module's Unicode patterns)."""
    return char.isalnum() or char in "_$"


def _free_before(text: str, index: int, quote: bool = False) -> bool:
    """Whether no identifier character (nor a double quote, with ``quote``) comes just before ``index``."""
    return index == 0 or not (_identifier_char(text[index - 1]) or (quote and text[index - 1] == '"'))


def _identifier_at(text: str, index: int, quote: bool = False) -> bool:
    """Whether an identifier character (or a double quote, with ``quote``) is at ``index``."""
    return index < len(text) and (_identifier_char(text[index]) or (quote and text[index] == '"'))


def _normalise_plain(schema: str, text: str) -> str:
    r"""``_normaliser``'s two substitutions for a name of ``[\w$]`` characters, left to right as ``re.sub``."""
    if schema not in text:
        return text
    size = len(schema)
    # 1. Qualifiers: '"name".' or 'name.' after a character that is not [\w$"], before one that is [\w"$].
    kept: list[str] = []
    start = position = 0
    while (found := text.find(schema, position)) >= 0:
        after = found + size
        quoted = found > 0 and text[found - 1] == '"' and text.startswith('".', after)
        if quoted and _free_before(text, found - 1, quote=True) and _identifier_at(text, after + 2, quote=True):
            kept.append(text[start : found - 1])
            start = position = after + 2
        elif (
            text.startswith(".", after)
            and _free_before(text, found, quote=True)
            and _identifier_at(text, after + 1, quote=True)
        ):
            kept.append(text[start:found])
            start = position = after + 1
        else:
            position = found + 1
    text = "".join([*kept, text[start:]]) if kept else text
    # 2. The name standing alone: no [\w$] character just before or just after it.
    kept, start, position = [], 0, 0
    while (found := text.find(schema, position)) >= 0:
        after = found + size
        if _free_before(text, found) and not _identifier_at(text, after):
            kept += [text[start:found], SCHEMA_PLACEHOLDER]
            start = position = after
        else:
            position = found + 1
    return "".join([*kept, text[start:]]) if kept else text


def _normalised(value: Any, normalise: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return normalise(value)
    if isinstance(value, dict):
        return {key: _normalised(item, normalise) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_normalised(item, normalise) for item in value]
    return value


def fingerprint_of(schema: str, raw: Mapping[str, Any], *, exists: bool = True) -> Fingerprint:
    """The fingerprint of ``schema`` from the objects the catalog query returned for it."""
    normalise = _normaliser(schema)
    objects = {key: _normalised(value, normalise) for key, value in raw.items()}
    return Fingerprint(schema=schema, hash=digest(objects), objects=objects, exists=exists)


# --- the same objects in many schemas -----------------------------------------------------------------------------
#
# A fleet's tenants hold the same objects under their own names: the catalog query's JSON text of one schema is
# another's with the other name. The text with the name taken out (its *template*) then gives the same objects
# and hash, kept from the first schema, with no decoding, normalising or hashing (most of a fingerprint's cost).
# That holds when the name is found in the text where the decoded strings hold it, and the result no longer holds
# the name (every occurrence was a qualifier or stood alone; none kept in a longer identifier, a key or a
# number, nor one of two overlapping occurrences, which always keep each other):
# - an ASCII name ([A-Za-z0-9_$]), written in the text as it is;
# - no occurrence overlaps a JSON escape (``\u00E9`` is not ``u00E9``);
# - the normalised objects, as hashed, do not contain the name.
# Any other case is computed in full, and is not kept.

_SHAPES_MAX = 64  # templates kept (each the JSON text of one schema's objects)
_shapes: dict[str, tuple[str, Objects]] = {}
_shapes_lock = threading.Lock()
_ASCII_NAME = re.compile(r"[A-Za-z0-9_$]+")
_JSON_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)", re.DOTALL)
_HOLE = "\x00"  # never in the JSON text of a definition (PostgreSQL text holds no NUL; JSON writes it \u0000)


def _occurrences_clear_of_escapes(text: str, schema: str) -> bool:
    """Whether no occurrence of ``schema`` in the JSON ``text`` overlaps an escape sequence."""
    if "\\" not in text:
        return True
    size, position = len(schema), text.find(schema)
    for escape in _JSON_ESCAPE.finditer(text):
        while position != -1 and position + size <= escape.start():
            position = text.find(schema, position + size)
        if position == -1:
            return True
        if position < escape.end():
            return False
    return True


def _template(schema: str, text: str) -> str | None:
    """``text`` with ``schema`` replaced by a hole, when the text's fingerprint can be kept for the template."""
    if not _ASCII_NAME.fullmatch(schema) or _HOLE in text or not _occurrences_clear_of_escapes(text, schema):
        return None
    return text.replace(schema, _HOLE)


def fingerprint_of_text(schema: str, text: str) -> Fingerprint:
    """The fingerprint of ``schema`` from the catalog query's JSON text of its objects: kept per template, so
    schemas that hold the same objects under their own names are decoded, normalised and hashed once."""
    template = _template(schema, text)
    if template is not None and (kept := _shapes.get(template)) is not None:
        return Fingerprint(schema=schema, hash=kept[0], objects=kept[1])
    found = fingerprint_of(schema, json.loads(text))
    if template is not None and schema not in _canonical(found.objects):
        with _shapes_lock:  # lanes are threads
            if len(_shapes) >= _SHAPES_MAX:
                _shapes.pop(next(iter(_shapes)), None)
            _shapes[template] = (found.hash, found.objects)
    return found


def read_fingerprints(conn: psycopg.Connection, schemas: Iterable[str]) -> dict[str, Fingerprint]:
    """Fingerprint each of ``schemas`` of the database ``conn`` is connected to, in one query; changes nothing.

    A schema that does not exist gets the fingerprint of no objects, with ``exists`` False.
    """
    wanted = list(dict.fromkeys(schemas))
    if not wanted:
        return {}
    # Prepared at once: a lane's connection sends it after every target it migrates, so its plan is reused. The
    # objects come as JSON text, decoded here only when no schema with the same objects was (fingerprint_of_text).
    rows = conn.execute(CATALOG_QUERY, {"schemas": wanted, "ignored": list(IGNORED_TABLES)}, prepare=True).fetchall()
    found = {schema: fingerprint_of_text(schema, text) for schema, text in rows}
    return {schema: found.get(schema) or fingerprint_of(schema, {}, exists=False) for schema in wanted}


# --- diffs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffEntry:
    """One difference of a schema from another: an object ``added``, ``missing`` or ``changed``, and how."""

    change: str  # added | missing | changed
    kind: str  # table, column, index, ... (KIND_LABELS)
    name: str  # tasks.priority
    detail: str  # "integer, nullable" / "type text -> character varying(200)"

    @property
    def text(self) -> str:
        """``column tasks.priority added (integer, nullable)``, ``index tasks_due_idx missing``."""
        head = f"{self.kind} {self.name} {self.change}"
        if not self.detail:
            return head
        return f"{head}: {self.detail}" if self.change == "changed" else f"{head} ({self.detail})"

    def as_dict(self) -> dict[str, str]:
        return {"change": self.change, "kind": self.kind, "name": self.name, "detail": self.detail, "text": self.text}


def _split(key: str) -> tuple[str, str]:
    kind, _, name = key.partition(":")
    return kind, name


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key} {_shown(item)}" for key, item in sorted(value.items()))
    text = " ".join(str(value).split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _column_summary(value: Mapping[str, Any]) -> str:
    parts = [str(value.get("type", "?")), "nullable" if value.get("nullable") else "not null"]
    for name in ("default", "generated", "identity", "collation"):
        if value.get(name) is not None:
            parts.append(f"{name} {_shown(value[name])}")
    return ", ".join(parts)


def _summary(kind: str, name: str, objects: Mapping[str, Mapping[str, Any]]) -> str:
    """What an added object is, in a few words: a table's columns, a column's type and nullability, else the
    definition."""
    value = objects[f"{kind}:{name}"]
    if kind == "table":
        prefix = f"column:{name}."
        columns = [
            f"{key[len(prefix) :]} {objects[key].get('type')}" for key in sorted(objects) if key.startswith(prefix)
        ]
        return ", ".join(columns)
    if kind == "column":
        return _column_summary(value)
    if "definition" in value:
        return _shown(value["definition"])
    return "; ".join(f"{key} {_shown(item)}" for key, item in sorted(value.items()))


def _where_they_differ(before: str, after: str) -> tuple[str, str]:
    """Two long texts shown from a little before their first difference (a function body changed deep inside)."""
    before, after = " ".join(before.split()), " ".join(after.split())
    if len(before) <= _SHOWN_CHARS and len(after) <= _SHOWN_CHARS:
        return before, after
    first = next(
        (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), min(len(before), len(after))
    )
    start = max(0, first - _SHOWN_CHARS // 4)

    def window(text: str) -> str:
        shown = text[start : start + _SHOWN_CHARS]
        return ("…" if start else "") + shown + ("…" if start + _SHOWN_CHARS < len(text) else "")

    return window(before), window(after)


def _change(name: str, before: Any, after: Any) -> str:
    if name == "nullable":
        return f"{'nullable' if before else 'not null'} -> {'nullable' if after else 'not null'}"
    if isinstance(before, str) and isinstance(after, str):
        shown_before, shown_after = _where_they_differ(before, after)
        return f"{name} {shown_before} -> {shown_after}"
    return f"{name} {_shown(before)} -> {_shown(after)}"


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    names = sorted(set(before) | set(after), key=lambda n: (n != "type", n != "definition", n))
    return "; ".join(
        _change(name, before.get(name), after.get(name)) for name in names if before.get(name) != after.get(name)
    )


def _table_of(kind: str, name: str, value: Mapping[str, Any]) -> str | None:
    """The table an object belongs to (columns, constraints, triggers, indexes, owned sequences), else None."""
    if kind in ("column", "constraint", "trigger"):
        return name.partition(".")[0]
    if kind == "index":
        return value.get("table")
    if kind == "sequence" and value.get("owned_by"):
        return str(value["owned_by"]).partition(".")[0]
    return None


def diff(majority: Mapping[str, Mapping[str, Any]], outlier: Mapping[str, Mapping[str, Any]]) -> list[DiffEntry]:
    """How ``outlier``'s objects differ from ``majority``'s: added, missing and changed objects, in kind order.

    The parts of a table that is added or missing as a whole (columns, indexes, ...) are not listed again.
    """
    whole_tables = {_split(key)[1] for key in set(majority) ^ set(outlier) if _split(key)[0] == "table"}
    entries: list[DiffEntry] = []
    for key in set(majority) | set(outlier):
        kind, name = _split(key)
        label = KIND_LABELS.get(kind, kind)
        if key not in majority:
            if _table_of(kind, name, outlier[key]) not in whole_tables:
                entries.append(DiffEntry("added", label, name, _summary(kind, name, outlier)))
        elif key not in outlier:
            if _table_of(kind, name, majority[key]) not in whole_tables:
                entries.append(DiffEntry("missing", label, name, ""))
        elif majority[key] != outlier[key]:
            entries.append(DiffEntry("changed", label, name, _changes(majority[key], outlier[key])))
    entries.sort(key=lambda e: (_KIND_ORDER.get(e.kind, len(_KIND_ORDER)), e.name, e.change))
    return entries
