"""Validate the migration sets (for CI): every problem and warning with its file, exit status 1 on any problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from migrations_runner.engine.sets import load_sets


class Command(BaseCommand):
    help = (
        "Validate the migration sets under MIGRATIONS_DIR (or --dir) as a run reads them; list what is not used "
        "(warnings); exit status 1 on any problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", type=Path, default=None, help="Folder holding the sets (default MIGRATIONS_DIR).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON (for CI).")

    def handle(self, *args: Any, dir: Path | None, json: bool = False, **options: Any) -> None:
        root = dir or settings.MIGRATIONS_DIR
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder.")
        sets = load_sets(root, placeholders=settings.MIGRATION_PLACEHOLDERS)
        problems = [f"{kind}/{problem}" for kind, mset in sets.items() for problem in mset.problems]
        warnings = [f"{kind}/{warning}" for kind, mset in sets.items() for warning in mset.warnings]
        if json:
            self.stdout.write(_json_report(sets, problems, warnings))
        else:
            for kind, mset in sets.items():
                undo = sum(1 for s in mset.versions if s.version in mset.undo)
                non_tx = sum(1 for s in mset.versions if not s.transactional)
                self.stdout.write(
                    f"{kind:<10} {len(mset.versions):>3} version(s), latest {mset.latest or '-'}, {undo} with undo, "
                    f"{len(mset.repeatables)} repeatable, {len(mset.callbacks)} callback(s), {non_tx} "
                    "non-transactional"
                )
            for warning in warnings:
                self.stdout.write(f"warning: {warning}")
        if problems:
            raise CommandError(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
        if not json:
            self.stdout.write("All migration sets are valid.")


def _json_report(sets: dict, problems: list[str], warnings: list[str]) -> str:
    return json.dumps(
        {
            "valid": not problems,
            "problems": problems,
            "warnings": warnings,
            "sets": {
                kind: {
                    "versions": len(mset.versions),
                    "latest": str(mset.latest) if mset.latest else None,
                    "repeatables": [s.filename for s in mset.repeatables],
                    "callbacks": [f"{s.event}: {s.filename}" for s in mset.callbacks],
                }
                for kind, mset in sets.items()
            },
        },
        indent=2,
    )
