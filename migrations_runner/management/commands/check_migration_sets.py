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
        findings = _findings(sets)
        blocking = [f for f in findings if f["severity"] == "error" and not f["ignored"]]
        if settings.MIGRATION_LINT == "block":
            problems += [f"{f['database_type']}/{f['script']}: line {f['line']}: lint {f['rule']}" for f in blocking]
        if json:
            self.stdout.write(_json_report(sets, problems, warnings, findings))
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
            for f in findings:
                what = f"ignored ({f['ignored']})" if f["ignored"] else f["severity"]
                self.stdout.write(
                    f"lint {what}: {f['database_type']}/{f['script']} line {f['line']}: {f['rule']}: {f['message']}\n"
                    f"    {f['statement'][:160]}\n    fix: {f['fix']}"
                )
        if problems:
            raise CommandError(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
        if not json:
            self.stdout.write("All migration sets are valid.")


def _findings(sets: dict) -> list[dict]:
    """The lint findings of every forward script, repeatable and callback (off: none)."""
    if settings.MIGRATION_LINT == "off":
        return []
    return [
        {"database_type": kind, "script": script.filename, **finding.as_dict()}
        for kind, mset in sets.items()
        for script in [*mset.versions, *mset.repeatables, *mset.callbacks]
        for finding in script.findings
    ]


def _json_report(sets: dict, problems: list[str], warnings: list[str], findings: list[dict]) -> str:
    return json.dumps(
        {
            "valid": not problems,
            "problems": problems,
            "warnings": warnings,
            "lint_policy": settings.MIGRATION_LINT,
            "lint": findings,
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
