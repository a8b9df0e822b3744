"""Migration sets: Flyway-named SQL files per database type, validated all at once.

``V<version>__<description>.sql`` is a forward script, ``U<version>__<description>.sql``
its undo, ``R__<description>.sql`` a repeatable script (re-applied after the
versioned ones whenever its checksum changes). Versions are dotted integers
(``_`` separates parts as in Flyway, leading zeros do not count) ordered
numerically. The checksum is the SHA-256 of the content with line endings
normalised. Placeholders ``${schema}``, ``${tenant_slug}``, ``${region}`` and
``${database_type}`` are substituted per target; their values are spliced into the
SQL text as they are, so only ``[a-z0-9_-]`` is accepted in them (see ``Script.render``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path

from migrations_runner.engine.sqltext import is_transactional

DATABASE_TYPES = ("admin", "shared", "analytics", "tenant")
PLACEHOLDERS = ("schema", "tenant_slug", "region", "database_type")

_VERSIONED = re.compile(r"^(?P<prefix>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<description>[^/\\]+)\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<description>[^/\\]+)\.sql$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A value with a quote, '$', ';', whitespace or a backslash could end the string, identifier or dollar
# quote the script put it in, and turn the rest of the value into SQL.
_SAFE_VALUE = re.compile(r"[a-z0-9_-]*")


class PlaceholderValueError(ValueError):
    """A placeholder value that cannot be substituted into SQL text safely; nothing was rendered."""


class SetValidationError(Exception):
    """A migration set has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in migration sets: " + "; ".join(problems))
        self.problems = problems


@total_ordering
@dataclass(frozen=True)
class Version:
    """A dotted numeric version; ``Version.parse("1_01") == Version.parse("1.1")``."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        return _parse_version(text)

    def __lt__(self, other: Version) -> bool:
        return self.parts < other.parts

    def __str__(self) -> str:
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


@dataclass(frozen=True)
class Script:
    """One SQL file of a set."""

    kind: str  # "versioned" | "undo" | "repeatable"
    filename: str
    description: str
    content: str
    checksum: str
    transactional: bool
    version: Version | None = None

    def require_version(self) -> Version:
        """The version of a versioned or undo script; ``ValueError`` for a repeatable one, which has none."""
        if self.version is None:
            raise ValueError(f"{self.filename} is a repeatable script: it has no version")
        return self.version

    def render(self, context: dict[str, str]) -> str:
        """Return the SQL with placeholders substituted (unknown ones were refused at load time).

        Raises ``PlaceholderValueError`` when a value used by the script is outside ``[a-z0-9_-]`` (or an
        empty ``schema``), whatever the registry's validators accepted when it was stored.
        """
        for name in sorted(set(_PLACEHOLDER.findall(self.content)) & set(context)):
            value = context[name]
            if not isinstance(value, str) or not _SAFE_VALUE.fullmatch(value) or (name == "schema" and not value):
                raise PlaceholderValueError(
                    f"{self.filename}: the value of ${{{name}}} ({str(value)[:64]!r}) cannot be put into SQL text: "
                    "only lowercase letters, digits, '_' and '-' are allowed."
                )
        return _PLACEHOLDER.sub(lambda m: context.get(m.group(1), m.group(0)), self.content)


@dataclass
class MigrationSet:
    """The scripts of one database type."""

    database_type: str
    directory: Path
    versions: list[Script] = field(default_factory=list)
    undo: dict[Version, Script] = field(default_factory=dict)
    repeatables: list[Script] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def latest(self) -> Version | None:
        return self.versions[-1].version if self.versions else None

    def by_version(self) -> dict[Version, Script]:
        return {script.require_version(): script for script in self.versions}

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
        }


def _read(path: Path, problems: list[str]) -> str | None:
    try:
        return normalise(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name}: unreadable ({exc.__class__.__name__}: {exc})")
        return None


def load_set(directory: Path, database_type: str) -> MigrationSet:
    """Load and validate one set; problems are collected on ``MigrationSet.problems``, not raised."""
    result = MigrationSet(database_type=database_type, directory=directory)
    if not directory.is_dir():
        return result
    forward_files: dict[Version, str] = {}
    undo_files: dict[Version, str] = {}
    repeatable_names: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.suffix.lower() != ".sql":
            continue
        name = path.name
        versioned = _VERSIONED.match(name)
        match = versioned or _REPEATABLE.match(name)
        if match is None:
            result.problems.append(
                f"{name}: malformed file name (expected V<version>__<description>.sql, "
                "U<version>__<description>.sql or R__<description>.sql)"
            )
            continue
        content = _read(path, result.problems)
        if content is None:
            continue
        unknown = sorted({m for m in _PLACEHOLDER.findall(content) if m not in PLACEHOLDERS})
        if unknown:
            result.problems.append(
                f"{name}: unknown placeholder(s) {', '.join('${' + u + '}' for u in unknown)} "
                f"(known: {', '.join('${' + p + '}' for p in PLACEHOLDERS)})"
            )
            continue
        description = match.group("description").replace("_", " ")
        script = functools.partial(
            Script,
            filename=name,
            description=description,
            content=content,
            checksum=checksum_of(content),
            transactional=is_transactional(content),
        )
        if versioned is None:
            if description in repeatable_names:
                result.problems.append(f"{name}: duplicate repeatable script {description!r}")
                continue
            repeatable_names.add(description)
            result.repeatables.append(script(kind="repeatable"))
            continue
        version = Version.parse(versioned.group("version"))
        seen = forward_files if versioned.group("prefix") == "V" else undo_files
        if version in seen:
            result.problems.append(f"{name}: duplicate version {version} (also in {seen[version]})")
            continue
        seen[version] = name
        if versioned.group("prefix") == "V":
            result.versions.append(script(kind="versioned", version=version))
        else:
            result.undo[version] = script(kind="undo", version=version)
    for version, name in sorted(undo_files.items()):
        if version not in forward_files:
            result.problems.append(f"{name}: undo script without a forward script V{version}")
            result.undo.pop(version, None)
    result.versions.sort(key=Script.require_version)
    result.repeatables.sort(key=lambda s: s.filename)
    return result


def load_sets(root: Path, *, strict: bool = False) -> dict[str, MigrationSet]:
    """Load the set of every database type under ``root``; with ``strict``, raise on any problem."""
    sets = {database_type: load_set(root / database_type, database_type) for database_type in DATABASE_TYPES}
    if strict:
        problems = [f"{t}/{p}" for t, s in sets.items() for p in s.problems]
        if problems:
            raise SetValidationError(problems)
    return sets
