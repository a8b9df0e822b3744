"""What the tests need from the machine: command-line tools, coverage's settings for child processes, and a free
port of 127.0.0.1 for a server a test starts."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

# Chromium's switches for a headless browser in a container, without background traffic.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def coverage_env() -> dict[str, str]:
    """Coverage's settings for child processes (when the suite is measured), for a child's clean environment, so
    the code only a child runs (``demo``, ``serve``, settings refusing to start) is measured. Queue workers and
    gunicorn are left unmeasured: tracing would slow the timing-bound tests that run them."""
    return {key: value for key, value in os.environ.items() if key.startswith("COVERAGE_")}


def require_tool(name: str) -> str:
    """Return the path of the command-line tool ``name``; skip the test without it, or fail it when ``CI=true``.

    ``make test`` installs the tools (Debian packages) when missing and run as root; elsewhere the tests that
    need one are skipped, with this one reason in the summary. Under CI nothing may be skipped for a missing tool.
    """
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (`make test` installs it with apt-get when run as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: a missing tool fails the tests that need it", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
