"""How ``manage.py`` ends a command's process (``infra_site.process_exit``): the command's status, its whole
output, the exit handlers, closed database connections; the usual exit when other threads still run. And what a
command's process loads when it starts: not the API framework.

Each test runs a small child process (the module alone, no Django unless it asks for it), since the point is
how a process ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.tools import coverage_env

ROOT = Path(__file__).resolve().parents[2]


def child(body: str, **kwargs) -> subprocess.Popen:
    """A child Python running ``body`` (a command ``command``) through ``process_exit.run``."""
    script = "from infra_site.process_exit import run\n" + textwrap.dedent(body) + "\nrun(command)\n"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **coverage_env(), **kwargs.pop("env", {})}
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


def django_env(tmp_path: Path) -> dict[str, str]:
    """A child's settings for ``django.setup()`` on a control database of its own."""
    return {
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENVIRONMENT": "testing",
        "ENV_FILE": os.devnull,
        "LOG_LEVEL": "WARNING",
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
    }


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out.decode(), err.decode()


def test_the_whole_output_is_written_and_the_exit_handlers_run_before_the_process_ends(tmp_path):
    marker = tmp_path / "handler-ran"
    code, out, err = finished(
        child(
            f"""
            import atexit, logging, sys
            from pathlib import Path
            def command():
                atexit.register(Path({str(marker)!r}).write_text, "ran")
                logging.basicConfig(stream=sys.stderr)
                logging.getLogger("x").warning("logged")
                for n in range(200_000):  # 2.3 MB to a pipe, block-buffered
                    print(f"line {{n:07d}}")
            """
        )
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 200_000
    assert lines[-1] == "line 0199999"
    assert "logged" in err
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    ("stop", "status", "stderr"),
    [("sys.exit(3)", 3, ""), ("sys.exit(None)", 0, ""), ("sys.exit('refused: no such set')", 1, "refused")],
)
def test_the_status_is_the_one_sys_exit_gives(stop, status, stderr):
    code, out, err = finished(child(f"import sys\ndef command():\n    print('before')\n    {stop}\n"))
    assert (code, out) == (status, "before\n")
    assert stderr in err


def test_an_exception_is_printed_and_gives_status_1():
    code, _, err = finished(child("def command():\n    raise RuntimeError('boom')\n"))
    assert code == 1
    assert "RuntimeError: boom" in err


def test_output_that_cannot_be_written_gives_status_120_as_python_would():
    process = child(
        "import sys\ndef command():\n    sys.stdin.readline()\n    print('x' * 100)\n",
        stdin=subprocess.PIPE,
    )
    process.stdout.close()  # nobody reads the output any more
    process.stdin.write(b"go\n")
    process.stdin.close()
    assert process.wait(timeout=60) == 120
    process.stderr.close()


def test_a_command_that_leaves_a_thread_running_exits_after_it():
    # The thread prints once the test answers the command's last line: an exit that did not wait for it would
    # have ended the process before the answer came.
    process = child(
        """
        import sys, threading
        def late():
            sys.stdin.readline()
            print("thread done", flush=True)
        def command():
            threading.Thread(target=late).start()
            print("command returned", flush=True)
        """,
        stdin=subprocess.PIPE,
    )
    assert process.stdout.readline() == b"command returned\n"
    process.stdin.write(b"go\n")
    process.stdin.close()
    process.stdin = None  # closed: communicate() must not flush it
    code, out, err = finished(process)
    assert (code, out) == (0, "thread done\n"), err


def test_the_database_connections_are_closed_before_the_exit_handlers_run(tmp_path):
    code, out, err = finished(
        child(
            """
            import atexit, django
            def command():
                django.setup()
                from django.db import connection
                connection.ensure_connection()
                atexit.register(lambda: print("open" if connection.connection is not None else "closed"))
            """,
            env=django_env(tmp_path),
        )
    )
    assert (code, out) == (0, "closed\n"), err


def test_a_command_starts_without_the_api_framework(tmp_path):
    # What only the API needs (its serializers, its schema generator and their imports) is loaded with the URLs,
    # not by a command: 0.2 s of every command's start on this machine.
    code, out, err = finished(
        child(
            """
            import sys
            def command():
                import django
                django.setup()
                from migrations_runner.management.commands import run_migrations  # noqa: F401
                from django.core import checks
                checks.run_checks(tags=["migrations"])
                loaded = ("rest_framework.serializers", "drf_spectacular.plumbing", "requests", "yaml")
                print(sorted(name for name in loaded if name in sys.modules))
                import infra_site.urls  # noqa: F401
                print("rest_framework.serializers" in sys.modules, "drf_spectacular.plumbing" in sys.modules)
            """,
            env=django_env(tmp_path),
        )
    )
    assert (code, out.splitlines()) == (0, ["[]", "True True"]), err
