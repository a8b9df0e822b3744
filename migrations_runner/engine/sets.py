"""Migration sets: a folder of Flyway-named SQL files per database type, scanned and validated as Flyway reads a
location, all problems at once.

**Files.** The folder is scanned recursively; scripts are ordered by version whatever subfolder holds them, and
a script is known by its path relative to the set folder (what history rows, plans and errors show).
``V<version>__<description>.sql`` is a forward script, ``U<version>__<description>.sql`` its undo,
``R__<description>.sql`` a repeatable script (re-applied after the versioned ones whenever its checksum
changes). Versions are dotted integers (``_`` separates parts as in Flyway, leading zeros do not count) ordered
numerically. SQL callbacks (``beforeMigrate``, ``beforeEachMigrate``, ``afterEachMigrate``, ``afterMigrate``,
``afterMigrateError``, each optionally ``__<description>``) run per target at those moments and are never
recorded as versions. ``<script>.sql.conf`` beside a script sets ``executeInTransaction``, ``encoding`` and
``placeholderReplacement`` for it. A ``flyway.conf`` or ``flyway.toml`` at the top of the set folder gives
user placeholders (``placeholders.<name>``), ``placeholderPrefix``, ``placeholderSuffix``,
``placeholderReplacement``, ``outOfOrder`` and ``table`` (Flyway's history table, for adoption).

**Problems and warnings.** What would make a run wrong is a problem (a run refuses the set): a malformed script
name, a duplicate version (naming both paths), an undo without its forward script, an unknown placeholder, a
script PostgreSQL's parser does not accept, an unknown key of a ``.sql.conf``, an entry the loader cannot read.
What the set holds but nothing runs (other files, unsupported callbacks, configuration keys with no meaning
here) is a warning. Nothing is passed over without one or the other.

**Placeholders** are ``${name}`` (prefix and suffix configurable): ours (``schema``, ``tenant_slug``, ``region``,
``database_type``), Flyway's built-ins (``flyway:defaultSchema``, ``flyway:user``, ``flyway:database``,
``flyway:timestamp``, ``flyway:filename``, ``flyway:table``, ``flyway:environment``) and the user placeholders
of the configuration (which win over ours). Values that come from the registry are spliced into SQL text as
they are, so they must match a safe pattern (see ``Script.render``).

**Checksums** (SHA-256 of the text with line endings normalised): a versioned script's is taken on its text as
written; a repeatable's after placeholder replacement, as Flyway does, so a repeatable whose values change for
a target (a ``${flyway:timestamp}`` comment makes it run on every run) is re-applied there.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migrations_runner.engine import sqltext
from migrations_runner.engine.lint import Finding, lint_statements

DATABASE_TYPES = ("admin", "shared", "analytics", "tenant")
PLACEHOLDERS = ("schema", "tenant_slug", "region", "database_type")
FLYWAY_PLACEHOLDERS = (
    "flyway:defaultSchema",
    "flyway:user",
    "flyway:database",
    "flyway:timestamp",
    "flyway:filename",
    "flyway:table",
    "flyway:environment",
)
HISTORY_TABLE = "infra_schema_history"
CALLBACK_EVENTS = ("beforeMigrate", "beforeEachMigrate", "afterEachMigrate", "afterMigrate", "afterMigrateError")
# Flyway's other callback events: about commands we do not have (clean, info, repair...) or per statement.
_OTHER_CALLBACKS = [
    "beforeEachMigrateStatement",
    "afterEachMigrateStatement",
    "afterEachMigrateStatementError",
    "afterEachMigrateError",
    "afterMigrateApplied",
    "afterVersioned",
    "beforeRepeatables",
    "beforeClean",
    "afterClean",
    "afterCleanError",
    "beforeInfo",
    "afterInfo",
    "afterInfoError",
    "beforeValidate",
    "afterValidate",
    "afterValidateError",
    "beforeBaseline",
    "afterBaseline",
    "afterBaselineError",
    "beforeRepair",
    "afterRepair",
    "afterRepairError",
    "beforeUndo",
    "beforeEachUndo",
    "beforeEachUndoStatement",
    "afterEachUndoStatement",
    "afterEachUndoStatementError",
    "afterEachUndo",
    "afterEachUndoError",
    "afterUndo",
    "afterUndoError",
    "createSchema",
    "beforeConnect",
    "afterConnect",
]
SCRIPT_CONF_KEYS = ("executeInTransaction", "encoding", "placeholderReplacement")
CONFIG_FILES = ("flyway.conf", "flyway.toml")

_VERSIONED = re.compile(r"^(?P<prefix>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<description>[^/\\]+)\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<description>[^/\\]+)\.sql$")
_CALLBACK = re.compile(r"^(?P<event>[A-Za-z]+)(?:__(?P<description>[^/\\]+))?\.sql$")
# A name that means to be a migration (a prefix, then a version or '__') but does not follow the pattern.
_MIGRATION_LIKE = re.compile(r"^[VUR](?:\d|_)", re.IGNORECASE)
_NAME = r"[A-Za-z0-9_:.-]+"
# A registry value with a quote, '$', ';', whitespace or a backslash could end the string, identifier or dollar
# quote the script put it in, and turn the rest of the value into SQL.
_SAFE_VALUE = re.compile(r"[a-z0-9_-]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]*")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# Which rule each value we supply follows; user placeholders from the configuration are the set's own text.
_VALUE_RULES = {
    "schema": _SAFE_VALUE,
    "tenant_slug": _SAFE_VALUE,
    "region": _SAFE_VALUE,
    "database_type": _SAFE_VALUE,
    "flyway:defaultSchema": _SAFE_VALUE,
    "flyway:user": _SAFE_NAME,
    "flyway:database": _SAFE_NAME,
    "flyway:filename": _SAFE_NAME,
    "flyway:table": _SAFE_VALUE,
    "flyway:environment": _SAFE_VALUE,
    "flyway:timestamp": _TIMESTAMP,
}


class PlaceholderValueError(ValueError):
    """A placeholder value that cannot be substituted into SQL text safely; nothing was rendered."""


class SetValidationError(Exception):
    """A migration set has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in migration sets: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Version:
    """A dotted numeric version; ``Version.parse("1_01") == Version.parse("1.1")``."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        return _parse_version(text)

    # All four written out (not derived by functools.total_ordering): fleets compare millions of versions.
    def __lt__(self, other: Version) -> bool:
        return self.parts < other.parts

    def __le__(self, other: Version) -> bool:
        return self.parts <= other.parts

    def __gt__(self, other: Version) -> bool:
        return self.parts > other.parts

    def __ge__(self, other: Version) -> bool:
        return self.parts >= other.parts

    def __str__(self) -> str:
        return self._text

    @functools.cached_property
    def _text(self) -> str:
        """Written once per version: a lane writes each script's version several times a target, and parsed
        versions are shared (``_parse_version``)."""
        return ".".join(str(part) for part in self.parts)


@functools.lru_cache(maxsize=4096)
def _parse_version(text: str) -> Version:
    """Parse a version string (cached: fleet-wide history reads parse the same few versions many times)."""
    if not re.fullmatch(r"\d+(?:[._]\d+)*", text):
        raise ValueError(f"{text!r} is not a version (digits separated by '.' or '_')")
    parts = [int(part) for part in re.split(r"[._]", text)]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return Version(tuple(parts))


def normalise(content: str) -> str:
    return content.replace("\r\n", "\n").replace("\r", "\n")


def checksum_of(content: str) -> str:
    """SHA-256 (hex) of the content with line endings normalised."""
    return hashlib.sha256(normalise(content).encode()).hexdigest()


def placeholder_context(
    *,
    schema: str,
    tenant_slug: str = "",
    region: str = "",
    database_type: str = "",
    user: str = "",
    database: str = "",
    timestamp: str = "",
    environment: str = "",
) -> dict[str, str]:
    """The placeholder values of one target: ours and Flyway's built-ins (``timestamp`` as
    ``YYYY-MM-DD HH:MM:SS``, the run's time; ``flyway:filename`` is each script's own)."""
    return {
        "schema": schema,
        "tenant_slug": tenant_slug,
        "region": region,
        "database_type": database_type,
        "flyway:defaultSchema": schema,
        "flyway:user": user,
        "flyway:database": database,
        "flyway:timestamp": timestamp,
        "flyway:table": HISTORY_TABLE,
        "flyway:environment": environment,
    }


@dataclass(frozen=True)
class Placeholders:
    """A set's placeholder configuration: the syntax, whether to replace at all, and the user values."""

    prefix: str = "${"
    suffix: str = "}"
    replacement: bool = True
    values: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.prefix) + f"({_NAME})" + re.escape(self.suffix))

    def known(self, name: str) -> bool:
        return name in PLACEHOLDERS or name in FLYWAY_PLACEHOLDERS or name in self.values

    def sample(self, name: str) -> str:
        """A stand-in value for parsing a script before any target is known: the configured one, else a word."""
        if name in self.values:
            return self.values[name]
        return "ph_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


@dataclass(frozen=True)
class Script:
    """One SQL file of a set: a versioned, undo or repeatable script, or a callback."""

    kind: str  # "versioned" | "undo" | "repeatable" | "callback"
    filename: str  # the path relative to the set folder, with '/'
    description: str
    content: str
    checksum: str
    transactional: bool
    version: Version | None = None
    event: str = ""  # a callback's event
    placeholders: Placeholders = field(default_factory=Placeholders, compare=False, repr=False)
    replace_placeholders: bool = True
    findings: tuple[Finding, ...] = field(default=(), compare=False, repr=False)  # lint, for forward scripts

    @property
    def name(self) -> str:
        """The file name without its folder."""
        return self.filename.rsplit("/", 1)[-1]

    def require_version(self) -> Version:
        """The version of a versioned or undo script; ``ValueError`` for a repeatable one, which has none."""
        if self.version is None:
            raise ValueError(f"{self.filename} is a repeatable script: it has no version")
        return self.version

    @property
    def uses_placeholders(self) -> bool:
        return self.replace_placeholders and bool(self.placeholders.pattern.search(self.content))

    def render(self, context: Mapping[str, str]) -> str:
        """Return the SQL with placeholders substituted (unknown ones were refused at load time).

        Raises ``PlaceholderValueError`` when a value we supply is outside its safe pattern (``[a-z0-9_-]`` for
        the registry's names, an empty ``schema`` refused), whatever the registry's validators accepted.
        """
        if not self.replace_placeholders:
            return self.content
        values = {**context, "flyway:filename": self.name, **self.placeholders.values}
        used = set(self.placeholders.pattern.findall(self.content))
        for name in sorted(used & set(_VALUE_RULES)):
            if name in self.placeholders.values or name not in values:
                continue
            value = values[name]
            empty_schema = name in ("schema", "flyway:defaultSchema") and not value
            if not isinstance(value, str) or not _VALUE_RULES[name].fullmatch(value) or empty_schema:
                raise PlaceholderValueError(
                    f"{self.filename}: the value of ${{{name}}} ({str(value)[:64]!r}) cannot be put into SQL text: "
                    "only lowercase letters, digits, '_' and '-' are allowed."
                )
        return self.placeholders.pattern.sub(lambda m: values.get(m.group(1), m.group(0)), self.content)

    def checksum_for(self, context: Mapping[str, str] | None) -> str:
        """The checksum recorded for this script on a target: a repeatable's after placeholder replacement (as
        Flyway does), any other's on the text as written."""
        if self.kind != "repeatable" or context is None or not self.uses_placeholders:
            return self.checksum
        try:
            return checksum_of(self.render(context))
        except PlaceholderValueError:
            return self.checksum


@dataclass
class MigrationSet:
    """The scripts of one database type."""

    database_type: str
    directory: Path
    versions: list[Script] = field(default_factory=list)
    undo: dict[Version, Script] = field(default_factory=dict)
    repeatables: list[Script] = field(default_factory=list)
    callbacks: list[Script] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    placeholders: Placeholders = field(default_factory=Placeholders)
    out_of_order: bool = False  # the set's configuration allows applying versions below the applied ones
    flyway_table: str = ""  # Flyway's history table named by the set's configuration

    @property
    def latest(self) -> Version | None:
        return self.versions[-1].version if self.versions else None

    def by_version(self) -> dict[Version, Script]:
        return {script.require_version(): script for script in self.versions}

    def callbacks_for(self, event: str) -> list[Script]:
        return [script for script in self.callbacks if script.event == event]

    def snapshot(self) -> dict:
        """A JSON-able record of what the set held (stored on executions)."""
        return {
            "database_type": self.database_type,
            "versions": [
                {
                    "version": str(s.version),
                    "description": s.description,
                    "script": s.filename,
                    "checksum": s.checksum,
                    "transactional": s.transactional,
                    "undo": s.version in self.undo,
                }
                for s in self.versions
            ],
            "repeatables": [{"script": s.filename, "checksum": s.checksum} for s in self.repeatables],
            "callbacks": [{"script": s.filename, "event": s.event, "checksum": s.checksum} for s in self.callbacks],
        }


# --- configuration -----------------------------------------------------------------------------------------------


def _truth(value: object) -> bool | None:
    text = str(value).strip().lower()
    return {"true": True, "false": False}.get(text)


def _properties(text: str) -> dict[str, str]:
    """Parse Java properties text (``key=value`` or ``key: value``, ``#``/``!`` comments, ``\\`` continuations)."""
    values: dict[str, str] = {}
    pending = ""
    for raw in normalise(text).split("\n"):
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        found = re.match(r"([^=:\s]+)\s*(?:[=:]\s*|\s+|$)(.*)$", line)
        key, value = found.groups() if found else (line, "")
        values[key.strip()] = value.strip()
    return values


def _flatten(table: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, Mapping) and key != "placeholders":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_CONFIG_KEYS = ("placeholderPrefix", "placeholderSuffix", "placeholderReplacement", "outOfOrder", "table")


def _configure(mset: MigrationSet, path: Path, overrides: Mapping[str, str]) -> None:
    """Read the set's ``flyway.conf`` / ``flyway.toml`` into ``mset`` (keys with no meaning here are warnings)."""
    settings: dict[str, object] = {}
    placeholders: dict[str, str] = {}
    try:
        if path.name.endswith(".toml"):
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            for key in sorted(set(data) - {"flyway"}):
                mset.warnings.append(f"{path.name}: [{key}] is not used here (connections come from the registry)")
            for key, value in _flatten(data.get("flyway", {})).items():
                if key == "placeholders" and isinstance(value, Mapping):
                    placeholders.update({str(k): str(v) for k, v in value.items()})
                else:
                    settings[key] = value
        else:
            for key, value in _properties(path.read_text(encoding="utf-8")).items():
                name = key.removeprefix("flyway.")
                if name.startswith("placeholders."):
                    placeholders[name.removeprefix("placeholders.")] = value
                else:
                    settings[name] = value
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        mset.problems.append(f"{path.name}: unreadable ({exc.__class__.__name__}: {exc})")
        return
    for key, value in settings.items():
        if key.startswith("placeholders."):
            placeholders[key.removeprefix("placeholders.")] = str(value)
        elif key not in _CONFIG_KEYS:
            mset.warnings.append(f"{path.name}: {key} is not used here")
    replacement = _truth(settings.get("placeholderReplacement", True))
    out_of_order = _truth(settings.get("outOfOrder", False))
    for key, flag in (("placeholderReplacement", replacement), ("outOfOrder", out_of_order)):
        if flag is None:
            mset.problems.append(f"{path.name}: {key} must be true or false")
    for name in placeholders:
        if name.startswith("flyway:") or not re.fullmatch(_NAME, name):
            mset.problems.append(f"{path.name}: placeholder name {name!r} is reserved or malformed")
    mset.placeholders = Placeholders(
        prefix=str(settings.get("placeholderPrefix", "${")),
        suffix=str(settings.get("placeholderSuffix", "}")),
        replacement=replacement is not False,
        values={**placeholders, **overrides},
    )
    mset.out_of_order = bool(out_of_order)
    mset.flyway_table = str(settings.get("table", ""))


def _script_conf(path: Path, problems: list[str], relative: str) -> dict[str, str]:
    try:
        values = _properties(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{relative}: unreadable ({exc.__class__.__name__}: {exc})")
        return {}
    for key in sorted(set(values) - set(SCRIPT_CONF_KEYS)):
        problems.append(f"{relative}: unknown key {key} (known: {', '.join(SCRIPT_CONF_KEYS)})")
    for key in ("executeInTransaction", "placeholderReplacement"):
        if key in values and _truth(values[key]) is None:
            problems.append(f"{relative}: {key} must be true or false")
    return values


# --- scanning ----------------------------------------------------------------------------------------------------


def _walk(directory: Path, root: Path, problems: list[str]) -> list[tuple[str, Path]]:
    """Every regular file below ``directory`` as (path relative to ``root``, path), sorted; what cannot be read
    as a folder or a file is a problem."""
    found: list[tuple[str, Path]] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        problems.append(f"{directory.relative_to(root).as_posix()}/: cannot be read ({exc.strerror or exc})")
        return found
    for entry in entries:
        path = Path(entry.path)
        relative = path.relative_to(root).as_posix()
        try:
            if entry.is_dir():
                if entry.is_symlink() and path.resolve().is_relative_to(root.resolve()):
                    problems.append(f"{relative}/: a link to a folder of the set itself (a loop or a second copy)")
                elif entry.name.lower().endswith(".sql"):
                    problems.append(f"{relative}/: a folder where a script is expected")
                else:
                    found += _walk(path, root, problems)
            elif entry.is_file():
                found.append((relative, path))
            elif entry.is_symlink():
                problems.append(f"{relative}: a link to nothing (broken link)")
            else:
                problems.append(f"{relative}: neither a file nor a folder")
        except OSError as exc:
            problems.append(f"{relative}: cannot be read ({exc.strerror or exc})")
    return found


def _read(path: Path, relative: str, problems: list[str], encoding: str = "utf-8") -> str | None:
    try:
        return normalise(path.read_text(encoding=encoding or "utf-8"))
    except LookupError:
        problems.append(f"{relative}: unknown encoding {encoding!r}")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{relative}: unreadable ({exc.__class__.__name__}: {exc})")
    return None


def _parse(content: str, placeholders: Placeholders, replace: bool) -> tuple[str, tuple[sqltext.Statement, ...]]:
    """Parse a script with stand-in placeholder values; return (problem or '', its statements)."""
    text = placeholders.pattern.sub(lambda m: placeholders.sample(m.group(1)), content) if replace else content
    try:
        return "", sqltext.parse_script(text)
    except sqltext.SqlSyntaxError as exc:
        return str(exc), ()


def load_set(directory: Path, database_type: str, *, placeholders: Mapping[str, str] | None = None) -> MigrationSet:
    """Load and validate one set; problems and warnings are collected on the set, not raised.

    ``placeholders`` are user placeholder values from the settings, over those of the set's configuration.
    """
    result = MigrationSet(database_type=database_type, directory=directory)
    if not directory.is_dir():
        return result
    files = _walk(directory, directory, result.problems)
    configs = [relative for relative, _ in files if relative in CONFIG_FILES]
    if len(configs) > 1:
        result.problems.append(f"{' and '.join(configs)}: one configuration file per set, not both")
    for relative in configs[:1]:
        _configure(result, directory / relative, placeholders or {})
    if not configs and placeholders:
        result.placeholders = Placeholders(values=dict(placeholders))
    present = {relative for relative, _ in files}
    forward_files: dict[Version, str] = {}
    undo_files: dict[Version, str] = {}
    repeatable_names: dict[str, str] = {}
    for relative, path in files:
        name = path.name
        if relative in CONFIG_FILES:
            continue
        if name.endswith(".sql.conf"):
            if relative.removesuffix(".conf") not in present:
                result.problems.append(f"{relative}: configuration of a script that does not exist")
            continue
        if not name.lower().endswith(".sql"):
            result.warnings.append(f"{relative}: not a SQL script: not used")
            continue
        versioned = _VERSIONED.match(name)
        repeatable = _REPEATABLE.match(name)
        callback = _CALLBACK.match(name) if not (versioned or repeatable) else None
        event = callback.group("event") if callback else ""
        if event in _OTHER_CALLBACKS:
            result.warnings.append(
                f"{relative}: the {event} callback is not run here (events run: {', '.join(CALLBACK_EVENTS)})"
            )
            continue
        if not (versioned or repeatable or event in CALLBACK_EVENTS):
            if _MIGRATION_LIKE.match(name) or callback is None:
                result.problems.append(
                    f"{relative}: malformed file name (expected V<version>__<description>.sql, "
                    "U<version>__<description>.sql, R__<description>.sql or a callback such as afterMigrate.sql)"
                )
            else:
                result.warnings.append(f"{relative}: neither a migration nor a callback: not run")
            continue
        conf = (
            _script_conf(path.with_name(name + ".conf"), result.problems, relative + ".conf")
            if (relative + ".conf" in present)
            else {}
        )
        content = _read(path, relative, result.problems, conf.get("encoding", "utf-8"))
        if content is None:
            continue
        mset_placeholders = result.placeholders
        replace = mset_placeholders.replacement and _truth(conf.get("placeholderReplacement", True)) is not False
        if replace:
            unknown = sorted({m for m in mset_placeholders.pattern.findall(content) if not mset_placeholders.known(m)})
            if unknown:
                shown = ", ".join(mset_placeholders.prefix + u + mset_placeholders.suffix for u in unknown)
                result.problems.append(
                    f"{relative}: unknown placeholder(s) {shown} (known: ours "
                    f"{', '.join('${' + p + '}' for p in PLACEHOLDERS)}, Flyway's ${{flyway:...}} and those of the "
                    "set's configuration)"
                )
                continue
        problem, statements = _parse(content, mset_placeholders, replace)
        if problem:
            result.problems.append(f"{relative}: {problem}")
            continue
        forced = sqltext.directive(content)
        if "executeInTransaction" in conf:
            forced = _truth(conf["executeInTransaction"]) is not False
        transactional = forced if forced is not None else not any(st.non_transactional for st in statements)
        findings = (
            ()
            if name.startswith("U") and versioned
            else tuple(lint_statements(statements, forced_transaction=bool(forced)))
        )
        match = versioned or repeatable or callback
        assert match is not None
        description = (match.group("description") or "").replace("_", " ")
        script = functools.partial(
            Script,
            filename=relative,
            description=description,
            content=content,
            checksum=checksum_of(content),
            transactional=transactional,
            placeholders=mset_placeholders,
            replace_placeholders=replace,
            findings=findings,
        )
        if callback is not None:
            result.callbacks.append(script(kind="callback", event=event, description=description or event))
            continue
        if versioned is None:
            if description in repeatable_names:
                result.problems.append(
                    f"{relative}: duplicate repeatable script {description!r} (also in {repeatable_names[description]})"
                )
                continue
            repeatable_names[description] = relative
            result.repeatables.append(script(kind="repeatable"))
            continue
        version = Version.parse(versioned.group("version"))
        seen = forward_files if versioned.group("prefix") == "V" else undo_files
        if version in seen:
            result.problems.append(f"{relative}: duplicate version {version} (also in {seen[version]})")
            continue
        seen[version] = relative
        if versioned.group("prefix") == "V":
            result.versions.append(script(kind="versioned", version=version))
        else:
            result.undo[version] = script(kind="undo", version=version)
    for version, relative in sorted(undo_files.items()):
        if version not in forward_files:
            result.problems.append(f"{relative}: undo script without a forward script V{version}")
            result.undo.pop(version, None)
    result.versions.sort(key=Script.require_version)
    result.repeatables.sort(key=lambda s: s.filename)
    result.callbacks.sort(key=lambda s: (CALLBACK_EVENTS.index(s.event), s.name, s.filename))
    return result


def load_sets(
    root: Path, *, strict: bool = False, placeholders: Mapping[str, str] | None = None
) -> dict[str, MigrationSet]:
    """Load the set of every database type under ``root``; with ``strict``, raise on any problem."""
    sets = {
        database_type: load_set(root / database_type, database_type, placeholders=placeholders)
        for database_type in DATABASE_TYPES
    }
    if strict:
        problems = [f"{t}/{p}" for t, s in sets.items() for p in s.problems]
        if problems:
            raise SetValidationError(problems)
    return sets
