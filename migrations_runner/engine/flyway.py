"""Flyway's schema history: its checksum, reading ``flyway_schema_history``, adopting it, and baselines.

Flyway's checksum of a SQL migration (``ChecksumCalculator``) is a CRC32 over the script read with Java's
``BufferedReader.readLine()``: lines split on ``\\n``, ``\\r\\n`` or ``\\r`` with the terminators dropped, a
UTF-8 byte order mark stripped from the first line, each line's UTF-8 bytes fed to the CRC, and the result
stored as a signed 32-bit integer. It is taken over the file as written, before placeholders are replaced.

**Adopting** a schema that Flyway migrated imports into ``infra_schema_history`` what Flyway applied, so the
engine's next run applies only the rest:

- the latest successful row of each versioned migration becomes a ``SQL`` row, when Flyway's checksum equals
  the CRC32 of the same version's script in our set; it carries our checksum (so the engine's drift check
  passes) and ``installed_by`` ``flyway-adopt``;
- the latest successful row of each repeatable becomes a ``REPEATABLE`` row when its checksum matches; a
  repeatable changed since is left out, so the next run re-applies it, as Flyway would;
- a Flyway baseline (``BASELINE``, or a ``*_BASELINE`` migration) becomes our ``BASELINE`` row;
- failed rows (``success`` false) are reported and not imported: their version stays pending;
- a version Flyway's repair marked deleted (``DELETE``) or an undo reverted (``UNDO_*``) counts as not applied,
  and Flyway's record of creating the schema (``SCHEMA``) is skipped.

A version whose checksum differs (**drift**) or that our set lacks makes the whole target **refused**: nothing is
imported, since importing the rest would leave the drifted version pending and the next run would apply it a
second time. ``accept_drift`` imports drifted versions anyway (the operator vouches that the schema holds what
our script makes) and leaves the unknown versions out.

Each target is adopted in one transaction holding the engine's migration lock for the schema (the
transaction-level form of ``apply._lock``'s advisory lock: the two exclude each other), so it cannot interleave
with a run; what is already in our history is not imported again.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg
from psycopg import sql

from migrations_runner.engine import history
from migrations_runner.engine.apply import LOCK_NAMESPACE, pending_of
from migrations_runner.engine.sets import MigrationSet, PlaceholderValueError, Script, Version

TABLE = "flyway_schema_history"
LEGACY_TABLE = "schema_version"  # Flyway's table before version 5
ADOPTED_BY = "flyway-adopt"
BASELINE_SCRIPT = "<< Baseline >>"
_BOM = "\ufeff"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VERSION = re.compile(r"\d{1,18}(?:[._]\d{1,18}){0,15}")
_FLYWAY_BASELINE_TYPES = {"BASELINE", "SQL_BASELINE", "JDBC_BASELINE"}


def _lines(text: str) -> Iterator[str]:
    """The lines ``BufferedReader.readLine()`` returns: terminators dropped, no empty line after a last one."""
    position = 0
    for match in _LINE_BREAK.finditer(text):
        yield text[position : match.start()]
        position = match.end()
    if position < len(text):
        yield text[position:]


def checksum(text: str) -> int:
    """Return Flyway's checksum of a SQL script's text (a signed 32-bit CRC32, see the module docstring)."""
    crc = 0
    for number, line in enumerate(_lines(text)):
        if number == 0 and line.startswith(_BOM):
            line = line[1:]
        # Java's String.getBytes(UTF_8) writes '?' for an unpaired surrogate; so does errors="replace".
        crc = zlib.crc32(line.encode("utf-8", errors="replace"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass(frozen=True)
class FlywayRow:
    """One row of ``flyway_schema_history``, as Flyway writes it."""

    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    installed_by: str
    installed_on: datetime | None
    execution_time: int
    success: bool


def _flyway_table(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def history_exists(conn: psycopg.Connection, schema: str, table: str = TABLE) -> bool:
    """Tell whether ``schema`` holds a Flyway history table."""
    row = conn.execute(
        """
        SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
        """,
        [schema, table],
    ).fetchone()
    return row is not None


def read_history(conn: psycopg.Connection, schema: str, table: str = TABLE) -> list[FlywayRow]:
    """Return the rows of ``schema``'s Flyway history table in ``installed_rank`` order."""
    query = sql.SQL(
        "SELECT installed_rank, version, description, type, script, checksum, installed_by, installed_on, "
        "execution_time, success FROM {} ORDER BY installed_rank"
    ).format(_flyway_table(schema, table))
    return [FlywayRow(*row) for row in conn.execute(query)]


# --- planning an adoption (pure: rows, our history and the set in, a plan out) ----------------------------------


@dataclass(frozen=True)
class Finding:
    """A Flyway row that adoption does not import as it stands, and why."""

    installed_rank: int
    type: str
    version: str | None
    script: str
    reason: str
    flyway_checksum: int | None = None
    set_checksum: int | None = None  # Flyway's checksum of our set's script, where there is one

    def as_dict(self) -> dict:
        return {
            "installed_rank": self.installed_rank,
            "type": self.type,
            "version": self.version,
            "script": self.script,
            "reason": self.reason,
            "flyway_checksum": self.flyway_checksum,
            "set_checksum": self.set_checksum,
        }


@dataclass(frozen=True)
class Import:
    """A row to write into ``infra_schema_history``."""

    kind: str  # SQL | REPEATABLE | BASELINE
    version: Version | None
    script: str
    description: str  # ours (Flyway's for a baseline)
    checksum: str  # ours (SHA-256), empty for a baseline
    execution_time_ms: int
    source: FlywayRow
    drift_accepted: bool = False

    def require_version(self) -> Version:
        """The version of a SQL or BASELINE import; ``ValueError`` for a repeatable one, which has none."""
        if self.version is None:
            raise ValueError(f"{self.script} is a repeatable import: it has no version")
        return self.version

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": str(self.version) if self.version is not None else None,
            "script": self.script,
            "installed_rank": self.source.installed_rank,
            "drift_accepted": self.drift_accepted,
        }


@dataclass
class AdoptionPlan:
    """What adopting one schema's Flyway history does, before (or without) doing it."""

    flyway_version: Version | None = None
    imports: list[Import] = field(default_factory=list)
    already_recorded: list[str] = field(default_factory=list)
    drift: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)  # versions Flyway applied that the set lacks
    failed: list[Finding] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refused: bool = False
    pending: list[str] = field(default_factory=list)  # what the next run applies once the plan is written


def _finding(row: FlywayRow, reason: str, set_checksum: int | None = None) -> Finding:
    return Finding(row.installed_rank, row.type, row.version, row.script, reason, row.checksum, set_checksum)


@dataclass
class _Applied:
    """What a Flyway history says is applied: the latest successful row per version and per repeatable."""

    versioned: dict[Version, FlywayRow] = field(default_factory=dict)
    repeatable: dict[str, FlywayRow] = field(default_factory=dict)  # script path (as Flyway wrote it) -> row
    baseline: FlywayRow | None = None

    @property
    def baseline_version(self) -> Version | None:
        # _read_rows keeps as the baseline only a row whose version it could parse.
        if self.baseline is None or self.baseline.version is None:
            return None
        return Version.parse(self.baseline.version)


def _read_rows(rows: list[FlywayRow], plan: AdoptionPlan) -> _Applied:
    """Replay the history in rank order; failed and unusable rows go to ``plan``."""
    applied = _Applied()
    rows = sorted(rows, key=lambda r: r.installed_rank)
    for row in rows:
        if not row.success:
            later = any(
                r.success
                and r.installed_rank > row.installed_rank
                and (r.version, r.script) == (row.version, row.script)
                for r in rows
            )
            plan.failed.append(
                _finding(row, "failed; applied successfully later" if later else "failed; the version stays pending")
            )
        elif row.type == "SCHEMA":
            plan.skipped.append(_finding(row, "Flyway's record of creating the schema"))
        elif row.version is None and row.type not in _FLYWAY_BASELINE_TYPES:
            if row.type == "DELETE":
                applied.repeatable.pop(row.script, None)
            else:
                applied.repeatable[row.script] = row
        else:
            try:
                version = Version.parse(row.version or "")
            except ValueError:
                plan.skipped.append(_finding(row, "the version cannot be read"))
                continue
            if row.type in _FLYWAY_BASELINE_TYPES:
                baseline = applied.baseline_version
                if baseline is None or version >= baseline:
                    applied.baseline = row
            elif row.type == "DELETE" or row.type.startswith("UNDO_"):
                applied.versioned.pop(version, None)  # marked deleted by Flyway's repair, or reverted by an undo
            else:
                applied.versioned[version] = row
    return applied


def _checksum_problem(row: FlywayRow, script: Script, expected: int) -> str:
    if row.type != "SQL":
        return f"Flyway applied version {row.version} as a {row.type} migration; the set has {script.filename}"
    if row.checksum is None:
        return f"Flyway recorded no checksum for {row.script}"
    if row.checksum != expected:
        return (
            f"{script.filename} was changed after Flyway applied {row.script}: Flyway's checksum {row.checksum}, "
            f"the set's script {expected}"
        )
    return ""


def _plan_versions(applied: _Applied, state: history.SchemaState, mset: MigrationSet, plan: AdoptionPlan) -> None:
    baseline, baseline_row = applied.baseline_version, applied.baseline
    if baseline is not None and baseline_row is not None:
        if state.below_baseline(baseline):
            plan.already_recorded.append(str(baseline))
        else:
            plan.imports.append(
                Import("BASELINE", baseline, BASELINE_SCRIPT, baseline_row.description, "", 0, baseline_row)
            )
    scripts = mset.by_version()
    for version, row in sorted(applied.versioned.items()):
        if version in state.applied or state.below_baseline(version) or (baseline and version <= baseline):
            plan.already_recorded.append(str(version))
            continue
        script = scripts.get(version)
        if script is None:
            plan.missing.append(_finding(row, f"version {version} is not in the {mset.database_type} set"))
            continue
        expected = checksum(script.content)
        problem = _checksum_problem(row, script, expected)
        if problem:
            plan.drift.append(_finding(row, problem, expected))
        plan.imports.append(
            Import(
                "SQL",
                version,
                script.filename,
                script.description,
                script.checksum,
                row.execution_time,
                row,
                bool(problem),
            )
        )


def _repeatable_of(path: str, mset: MigrationSet) -> Script | None:
    """Our repeatable for the script Flyway recorded: by its path in the set, else by a unique file name (Flyway
    records the path relative to the location that held it, which may be a subfolder of our set folder)."""
    by_path = {s.filename: s for s in mset.repeatables}
    if path in by_path:
        return by_path[path]
    named = [s for s in mset.repeatables if s.name == path.rsplit("/", 1)[-1]]
    return named[0] if len(named) == 1 else None


def flyway_checksum_of(script: Script, context: Mapping[str, str] | None) -> int:
    """What Flyway records for ``script`` on a target: a repeatable's checksum is taken after placeholder
    replacement (with the target's values), any other's on the text as written."""
    if script.kind == "repeatable" and context is not None and script.uses_placeholders:
        try:
            return checksum(script.render(context))
        except PlaceholderValueError:
            pass
    return checksum(script.content)


def _plan_repeatables(
    applied: _Applied,
    state: history.SchemaState,
    mset: MigrationSet,
    plan: AdoptionPlan,
    context: Mapping[str, str] | None,
) -> None:
    for path, row in sorted(applied.repeatable.items()):
        script = _repeatable_of(path, mset)
        if script is None:
            plan.skipped.append(_finding(row, f"repeatable not in the {mset.database_type} set"))
            continue
        ours = script.checksum_for(context)
        expected = flyway_checksum_of(script, context)
        if state.repeatables.get(script.filename) == ours:
            plan.already_recorded.append(script.filename)
        elif row.checksum != expected:
            reason = "changed since Flyway applied it (or its placeholder values differ): the next run re-applies it"
            plan.skipped.append(_finding(row, reason, expected))
        else:
            plan.imports.append(
                Import("REPEATABLE", None, script.filename, script.description, ours, row.execution_time, row)
            )


def _state_after(state: history.SchemaState, imports: list[Import]) -> history.SchemaState:
    after = replace(state, applied=dict(state.applied), repeatables=dict(state.repeatables))
    for item in imports:
        if item.kind == "REPEATABLE":
            after.repeatables[item.script] = item.checksum
            continue
        version = item.require_version()
        if item.kind == "SQL":
            after.applied[version] = item.checksum
        elif after.baseline is None or version > after.baseline:
            after.baseline = version
    return after


def plan_adoption(
    rows: list[FlywayRow],
    state: history.SchemaState,
    mset: MigrationSet,
    *,
    accept_drift: bool = False,
    context: Mapping[str, str] | None = None,
) -> AdoptionPlan:
    """Decide what of a Flyway history to import into a schema whose own history is ``state`` (pure);
    ``context`` holds the target's placeholder values (for the checksums of repeatables)."""
    plan = AdoptionPlan()
    applied = _read_rows(rows, plan)
    baseline = applied.baseline_version
    versions = [*applied.versioned, *([baseline] if baseline is not None else [])]
    plan.flyway_version = max(versions) if versions else None
    _plan_versions(applied, state, mset, plan)
    _plan_repeatables(applied, state, mset, plan, context)
    if (plan.drift or plan.missing) and not accept_drift and plan.imports:
        plan.refused, plan.imports = True, []
    after = _state_after(state, plan.imports)
    plan.pending = [str(s.version) if s.version else s.filename for s in pending_of(after, mset, context)]
    current = after.current
    gaps = [
        str(version)
        for version in (s.require_version() for s in mset.versions)
        if current and version < current and version not in after.applied and not after.below_baseline(version)
    ]
    if gaps and plan.imports:
        plan.warnings.append(
            f"version(s) {', '.join(gaps)} of the set are below the adopted version {current} and were not applied "
            "by Flyway: out of order, so the next run refuses the target unless out-of-order is allowed"
        )
    return plan


# --- writing: adoption and baselines, one transaction per schema under its migration lock -------------------------


@dataclass
class AdoptionResult:
    """What adopting one schema did (or, in a dry run, would do)."""

    status: str  # adopted | up_to_date | refused | no_flyway_history
    message: str
    plan: AdoptionPlan | None = None


def _lock(conn: psycopg.Connection, schema: str, lock_wait_s: float) -> None:
    """Take the schema's migration lock until the transaction ends, waiting at most ``lock_wait_s``.

    The same key as ``apply._lock``'s session lock: PostgreSQL makes the two forms exclude each other.
    """
    conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(lock_wait_s * 1000)}ms"])
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, schema])


def _summary(plan: AdoptionPlan, dry_run: bool) -> tuple[str, str]:
    flyway_at = f"Flyway was at version {plan.flyway_version}" if plan.flyway_version else "Flyway applied no version"
    if plan.refused:
        return "refused", (
            f"refused: {len(plan.drift)} drifted script(s) and {len(plan.missing)} version(s) not in the set; "
            "nothing imported (accept the drift to import the drifted versions anyway)"
        )
    if not plan.imports:
        return "up_to_date", f"nothing new to import; {flyway_at}"
    counts: dict[str, int] = {}
    for item in plan.imports:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    what = ", ".join(f"{n} {kind.lower()} row(s)" for kind, n in counts.items())
    pending = ", ".join(plan.pending) or "nothing"
    return "adopted", f"{'would import' if dry_run else 'imported'} {what}; {flyway_at}; the next run applies {pending}"


def _adopted_description(item: Import, actor: str) -> str:
    row = item.source
    on = f" on {row.installed_on:%Y-%m-%d}" if row.installed_on else ""
    return f"{item.description} (adopted by {actor} from Flyway rank {row.installed_rank}, {row.installed_by}{on})"


def adopt_schema(
    conn: psycopg.Connection,
    *,
    schema: str,
    mset: MigrationSet,
    actor: str,
    accept_drift: bool = False,
    dry_run: bool = False,
    lock_wait_s: float = 60.0,
    table: str = "",
    context: Mapping[str, str] | None = None,
) -> AdoptionResult:
    """Import ``schema``'s Flyway history into ours in one transaction under its migration lock.

    The history is read from ``table``, else the table the set's configuration names, else
    ``flyway_schema_history`` or, failing that, Flyway's older ``schema_version``. ``conn`` is in autocommit
    mode. A dry run reads without the lock and writes nothing. Raises ``psycopg.Error`` (55P03 when another run
    held the lock past ``lock_wait_s``).
    """
    candidates = [table] if table else [mset.flyway_table] if mset.flyway_table else [TABLE, LEGACY_TABLE]
    with conn.transaction(force_rollback=dry_run):
        if not dry_run:
            _lock(conn, schema, lock_wait_s)
        found = next((name for name in candidates if history_exists(conn, schema, name)), None)
        if found is None:
            return AdoptionResult("no_flyway_history", f"schema {schema} has no {' or '.join(candidates)} table")
        rows = read_history(conn, schema, found)
        state = history.read_states(conn, [schema])[schema]
        plan = plan_adoption(rows, state, mset, accept_drift=accept_drift, context=context)
        if plan.imports and not dry_run:
            history.ensure(conn, schema, create_schema=False)
            for item in plan.imports:
                conn.execute(
                    history.insert_row(
                        schema=schema,
                        version=str(item.version) if item.version is not None else None,
                        description=_adopted_description(item, actor),
                        kind=item.kind,
                        script=item.script,
                        checksum=item.checksum,
                        installed_by=ADOPTED_BY,
                        execution_id=None,
                        execution_time_ms=item.execution_time_ms,
                    )
                )
    status, message = _summary(plan, dry_run)
    return AdoptionResult(status, message, plan)


def baseline_version(text: str) -> Version:
    """Parse the version a baseline names; ``ValueError`` (a sentence) when it is not a version above 0."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise ValueError("A version is digits separated by '.' or '_' (e.g. 5 or 1.1).")
    version = Version.parse(text)
    if version <= Version((0,)):
        raise ValueError("A baseline is above version 0.")
    return version


def baseline_conflict(state: history.SchemaState, version: Version) -> str:
    """Return why ``state`` cannot be baselined at ``version`` ('' when it can)."""
    if not state.exists:
        return f"schema {state.schema} does not exist: there is nothing to baseline"
    if state.baseline is not None and state.baseline >= version:
        return f"already baselined at version {state.baseline}"
    above = sorted(v for v in state.applied if v >= version)
    if above:
        return f"version(s) {', '.join(map(str, above))} at or above {version} are already applied"
    return ""


def baseline_undone(state: history.SchemaState, version: Version) -> list[Version]:
    """The versions a baseline at ``version`` would newly count as applied although the history shows them undone
    (those at or below an earlier baseline were already forced)."""
    return sorted(v for v in state.undone if v <= version and not state.below_baseline(v))


def baseline_description(undone: list[Version], reason: str) -> str:
    """The BASELINE row's description: Flyway's, or with the undone versions it covers and why it was forced."""
    if not undone:
        return "<< Baseline >>"
    return f"<< Baseline >> forced over undone version(s) {', '.join(map(str, undone))}: {reason}"


def baseline_schema(
    conn: psycopg.Connection,
    *,
    schema: str,
    version: Version,
    installed_by: str,
    dry_run: bool = False,
    lock_wait_s: float = 60.0,
    force_reason: str = "",
) -> str:
    """Record that ``schema`` is at ``version`` without running anything; return why it was refused, or ''.

    Versions the history shows undone at or below ``version`` refuse it unless a ``force_reason`` is given, which
    the BASELINE row records. One transaction under the schema's migration lock (a dry run takes no lock and
    writes nothing).
    """
    with conn.transaction(force_rollback=dry_run):
        if not dry_run:
            _lock(conn, schema, lock_wait_s)
        state = history.read_states(conn, [schema])[schema]
        conflict = baseline_conflict(state, version)
        undone = baseline_undone(state, version)
        if not conflict and undone and not force_reason:
            conflict = f"version(s) {', '.join(map(str, undone))} were undone: the schema lacks them"
        if conflict or dry_run:
            return conflict
        history.ensure(conn, schema, create_schema=False)
        conn.execute(
            history.insert_row(
                schema=schema,
                version=str(version),
                description=baseline_description(undone, force_reason),
                kind="BASELINE",
                script=BASELINE_SCRIPT,
                checksum="",
                installed_by=installed_by,
                execution_id=None,
                execution_time_ms=0,
            )
        )
    return ""
