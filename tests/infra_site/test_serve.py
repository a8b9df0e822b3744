"""``manage.py serve`` (what ``make run`` runs): the web server with a task worker beside it, stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request

import psutil
import pytest

from tests.support.qcluster import ROOT, control_env
from tests.support.tools import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_serve_starts_a_task_worker_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=control_env(HOME=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def login_page() -> int | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
                    return response.status
            except OSError:
                return None

        assert wait_until(login_page, timeout=60, interval=0.2, message="the web server did not come up") == 200
        # gunicorn's control socket would be $HOME/.gunicorn/gunicorn.ctl, one per account: none is made.
        assert not (tmp_path / ".gunicorn").exists()
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("qcluster" in " ".join(child.cmdline()) for child in children), "no task worker was started"
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=40)

        def survivors() -> list[psutil.Process]:
            running = []
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                        running.append(child)
            return running

        wait_until(
            lambda: not survivors(), timeout=10, message=lambda: f"left behind: {[c.cmdline() for c in survivors()]}"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
