"""Ending a management command's process without tearing the interpreter down object by object.

After a command returns, Python frees every module and object one at a time before the process ends: 0.2-0.3 s
for this project's 1,200 modules on a small machine, work the operating system does at once when the process
exits. ``manage.py`` runs its command through ``run`` instead, which ends a command that ran alone (no other
thread left but daemons) like this:

1. the database connections of the main thread are closed (the server sees a client say goodbye, not a
   dropped connection);
2. the exit handlers run, as at any exit: logging's flush, multiprocessing's finalisers, a coverage run's data;
3. the standard streams are flushed: an output that cannot be written (a closed pipe) gives status 120, as
   Python's own exit does;
4. the process exits with the command's status (``SystemExit``'s code, as ``sys.exit`` maps it).

A command that leaves other threads running (a server, a cluster) exits the usual way, which waits for them.
An exception other than ``SystemExit`` propagates unchanged (Python prints it and exits with 1).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

# What Python's exit reports when flushing standard output fails.
FLUSH_FAILED = 120


def run(command: Callable[[], object]) -> NoReturn:
    """Run ``command``, then end the process with its status (see the module's docstring)."""
    try:
        command()
    except SystemExit as stop:
        code = stop.code
    else:
        code = 0
    if _others_running():
        sys.exit(code)
    status = _status(code)
    _close_connections()
    atexit._run_exitfuncs()  # what Python's own exit runs, in the same order
    if not _flushed() and status == 0:
        status = FLUSH_FAILED
    os._exit(status)


def _others_running() -> bool:
    main = threading.main_thread()
    return any(thread is not main and not thread.daemon and thread.is_alive() for thread in threading.enumerate())


def _status(code: object) -> int:
    """The status ``sys.exit(code)`` ends the process with: None is 0, an integer itself, anything else is
    printed to standard error and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _close_connections() -> None:
    if "django.db" not in sys.modules:  # the command failed before Django loaded its databases
        return
    from django.db import connections

    with contextlib.suppress(Exception):  # a connection that cannot even close is dropped with the process
        connections.close_all()


def _flushed() -> bool:
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe, or a stream closed already
            ok = False
    return ok
