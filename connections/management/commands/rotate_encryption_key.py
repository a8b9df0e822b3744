"""Re-encrypt every stored password with the current APP_ENCRYPTION_KEY."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import services
from connections.models import DatabaseConnection
from infra_site.cli import application_errors


def _keys_from_env(names: list[str]) -> list[str]:
    unset = [name for name in names if not os.environ.get(name)]
    if unset:
        raise CommandError(f"Environment variable(s) not set or empty: {', '.join(unset)}.")
    return [os.environ[name] for name in names]


def _keys_from_files(paths: list[str]) -> list[str]:
    """Return the keys in the files, one per non-empty line."""
    keys = []
    for path in paths:
        try:
            keys += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise CommandError(f"Cannot read the key file {path}: {exc.strerror}.") from exc
    return keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored password with the current APP_ENCRYPTION_KEY. Old keys come from "
        "APP_ENCRYPTION_KEY_PREVIOUS, --old-key-env and --old-key-file. Safe to run again after an interruption."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--old-key-env", metavar="VAR", action="append", default=[], help="Env var holding an old key (repeatable)."
        )
        parser.add_argument(
            "--old-key-file", metavar="PATH", action="append", default=[], help="File of old keys, one a line."
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would change without writing.")

    def handle(
        self, *args: Any, old_key_env: list[str], old_key_file: list[str], dry_run: bool, **options: Any
    ) -> None:
        old_keys = [
            *settings.APP_ENCRYPTION_KEY_PREVIOUS,
            *_keys_from_env(old_key_env),
            *_keys_from_files(old_key_file),
        ]
        if not old_keys:
            self.stderr.write("No old key given: only rows already under the current key can be read.")
        verbose = self.stdout.isatty()
        would = "would be " if dry_run else ""
        labels = {"rotated": f"{would}rotated", "current": "already current", "undecryptable": "FAILED (undecryptable)"}
        progress = services.RotationReport()

        def on_row(row: DatabaseConnection, outcome: str, report: services.RotationReport) -> None:
            nonlocal progress
            progress = report
            if verbose:
                done = report.rotated + report.already_current + len(report.failed)
                self.stdout.write(f"[{done}/{report.total}] {row.name}: {labels[outcome]}")

        try:
            with application_errors():
                report = services.encryption_key_rotate(old_keys=old_keys, dry_run=dry_run, on_row=on_row)
        finally:
            self.stdout.write(
                f"{'Dry run: ' if dry_run else ''}{progress.total} password(s): "
                f"{progress.rotated} {would}rotated, {progress.already_current} already current, "
                f"{len(progress.failed)} failed."
            )
        if report.failed:  # only a dry run returns failures; a real run raises EncryptionKeyError
            raise CommandError(f"These passwords cannot be decrypted with any known key: {', '.join(report.failed)}.")
