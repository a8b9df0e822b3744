"""Reads of the migration sets on disk, cached per process until a file changes. No database is read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from migrations_runner.engine.sets import MigrationSet, load_sets
from migrations_runner.exceptions import InvalidMigrationSets

_sets_cache: dict[str, tuple[tuple, dict[str, MigrationSet]]] = {}


def _sets_signature(root: Path) -> tuple:
    """Names, sizes and modification times of every file and folder of the sets (subfolders included): a change
    of any reloads them."""
    entries = []
    for directory, folders, files in os.walk(root) if root.is_dir() else ():
        folders.sort()
        for name in sorted(files) + folders:
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:
                entries.append((path, -1, -1))
                continue
            entries.append((path, stat.st_size, stat.st_mtime_ns))
    return (tuple(sorted(settings.MIGRATION_PLACEHOLDERS.items())), *entries)


def sets_read(root: Path) -> dict[str, MigrationSet]:
    """Load the sets under ``root`` with the user placeholders of the settings (no cache)."""
    return load_sets(root, placeholders=settings.MIGRATION_PLACEHOLDERS)


def sets_load(
    *, types: Iterable[str] | None = None, strict: bool = True, check_files: bool = True
) -> dict[str, MigrationSet]:
    """Load the migration sets (cached per process until a file changes); with ``strict``, refuse problems.

    Without ``check_files`` the sets loaded last are used as they are, unless none were (a lane applying
    thousands of targets checks the files every second, not for each)."""
    root = settings.MIGRATIONS_DIR
    cached = _sets_cache.get(str(root))
    if cached is None or check_files:
        signature = _sets_signature(root)
        if cached is None or cached[0] != signature:
            cached = (signature, sets_read(root))
            _sets_cache[str(root)] = cached
    sets = cached[1]
    if strict:
        problems = [f"{t}/{p}" for t in (types or sets) for p in sets[t].problems]
        if problems:
            raise InvalidMigrationSets(
                f"The migration sets have {len(problems)} problem(s); fix them before running.",
                details={"problems": problems},
            )
    return sets
