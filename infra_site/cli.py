"""What the management commands share: the actor, error translation, JSON output and a progress bar."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import CommandError
from django.core.serializers.json import DjangoJSONEncoder

from infra_site.errors import ApplicationError


def cli_actor() -> str:
    """Return the actor recorded for changes made from the command line: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:  # no login name in the environment nor in the password database (some containers)
        return "cli:unknown"


def _detail(value: Any) -> str:
    return ", ".join(str(item) for item in value) if isinstance(value, list | tuple) else str(value)


@contextmanager
def application_errors() -> Iterator[None]:
    """Turn an ``ApplicationError`` raised inside the block into a ``CommandError`` (message plus details)."""
    try:
        yield
    except ApplicationError as exc:
        lines = [f"  {key}: {_detail(value)}" for key, value in exc.details.items() if value not in ("", None)]
        raise CommandError("\n".join([exc.message, *lines])) from exc


_ONE_LINE = DjangoJSONEncoder(separators=(", ", ": "))  # no indent: the C encoder writes it


def to_json(data: Any) -> str:
    """Return ``data`` as indented JSON (UUIDs, datetimes and decimals included).

    A list of objects at the top level of an object (an execution's target runs) has one object per line: as
    readable as indented objects for a long list, easy to ``grep``, and written by the C encoder (indenting is
    pure Python: about 0.1 s for an execution of 10,000 runs, against 0.04 s so)."""
    if not isinstance(data, dict):
        return json.dumps(data, indent=2, cls=DjangoJSONEncoder)
    members = []
    for key, value in data.items():
        name = json.dumps(str(key))
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            items = ",\n".join("    " + _ONE_LINE.encode(item) for item in value)
            members.append(f"  {name}: [\n{items}\n  ]")
        else:
            # Strings hold no raw newline in JSON: every newline is indentation, shifted one level.
            members.append(f"  {name}: " + json.dumps(value, indent=2, cls=DjangoJSONEncoder).replace("\n", "\n  "))
    return "{\n" + ",\n".join(members) + "\n}" if members else "{}"


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines otherwise."""

    def __init__(self, stream, total: int, *, tty: bool, width: int = 30) -> None:
        self.stream, self.total, self.tty, self.width, self.done = stream, total, tty, width, 0

    def advance(self, label: str, status: str) -> None:
        self.done += 1
        if self.tty:
            filled = int(self.width * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {status:<9} {label[:50]:<50}", ending="")
            self.stream.flush()
        else:
            self.stream.write(f"{self.done}/{self.total} {status} {label}")

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("")
