"""The log guard of the suite: every log record a test emits is captured and searched for a test password."""

from __future__ import annotations

import logging

from tests.support.postgres import SECRETS


class RecordCollector(logging.Handler):
    """A handler that keeps each record as one line of text: its message, its extra fields and its traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


def leaked_secrets(lines: list[str]) -> int:
    """Count the captured log lines that contain a test password."""
    return sum(1 for line in lines if any(secret in line for secret in SECRETS))
