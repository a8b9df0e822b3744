"""Validate the migration sets (for CI): every problem with its file, exit status 1 on any."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from migrations_runner.engine.sets import load_sets


class Command(BaseCommand):
    help = "Validate the migration sets under MIGRATIONS_DIR (or --dir); exit status 1 on any problem."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", type=Path, default=None, help="Folder holding the sets (default MIGRATIONS_DIR).")

    def handle(self, *args: Any, dir: Path | None, **options: Any) -> None:
        root = dir or settings.MIGRATIONS_DIR
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder.")
        problems = []
        for kind, mset in load_sets(root).items():
            undo = sum(1 for s in mset.versions if s.version in mset.undo)
            non_tx = sum(1 for s in mset.versions if not s.transactional)
            self.stdout.write(
                f"{kind:<10} {len(mset.versions):>3} version(s), latest {mset.latest or '-'}, {undo} with undo, "
                f"{len(mset.repeatables)} repeatable, {non_tx} non-transactional"
            )
            problems += [f"{kind}/{problem}" for problem in mset.problems]
        if problems:
            raise CommandError(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
        self.stdout.write("All migration sets are valid.")
