"""The embedded PostgreSQL of `make demo` and the tests: settings, restarts with the same password, failures."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest

from infra_site import embedded_postgres
from infra_site.embedded_postgres import EmbeddedPostgres, filesystem_of, memory_parent, temporary_server, wait_for_port

pytestmark = pytest.mark.postgres


def test_a_temporary_server_applies_its_settings_and_leaves_no_files():
    with temporary_server(statement_timeout="1234") as server:
        data_dir = server.data_dir
        with psycopg.connect(**server.conninfo()) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1234ms"
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
        assert (data_dir / ".password").read_text() == server.password
        assert (data_dir / ".password").stat().st_mode & 0o777 == 0o600
        assert not (data_dir / ".pwfile").exists()  # initdb's password file is gone once used
    assert not data_dir.exists()


def test_a_restarted_server_keeps_its_data_and_its_password():
    first = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-pg-restart-"))).start()
    try:
        with psycopg.connect(**first.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE kept")
        first.stop()
        first.stop()  # stopping a stopped server does nothing
        again = EmbeddedPostgres(first.data_dir, port=first.port).start()
        assert again.password == first.password  # read back from the data directory, not a new one
        with psycopg.connect(**again.conninfo("kept")) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "kept"
    finally:
        first.destroy()
    assert not first.data_dir.exists()


def test_a_server_that_cannot_start_says_why():
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-pg-bad-")), settings={"no_such_setting": "1"})
    try:
        with pytest.raises(RuntimeError, match=r"pg_ctl failed \(1\)") as failed:
            server.start()
        assert 'unrecognized configuration parameter "no_such_setting"' in str(failed.value)
    finally:
        server.destroy()


def test_the_url_quotes_the_user_and_password():
    server = EmbeddedPostgres(Path("/nonexistent"), port=5999, password="p@ss/w:rd")
    assert server.url("app db", user="me@x") == "postgresql://me%40x:p%40ss%2Fw%3Ard@127.0.0.1:5999/app%20db"


def test_wait_for_port_returns_once_listening_and_times_out_otherwise(closed_port):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        wait_for_port("127.0.0.1", listener.getsockname()[1], timeout=2)
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{closed_port} did not accept connections within 0.3s"):
        wait_for_port("127.0.0.1", closed_port, timeout=0.3)


def test_a_temporary_server_keeps_its_files_under_the_parent_it_is_given():
    parent = Path(tempfile.mkdtemp(prefix="p-"))  # short: the server's socket path must fit in 107 bytes
    try:
        with temporary_server(parent=parent) as server:
            assert server.data_dir.parent == parent
            with psycopg.connect(**server.conninfo()) as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert list(parent.iterdir()) == []
    finally:
        parent.rmdir()


def test_the_file_system_of_a_path_is_that_of_its_longest_mount_point():
    assert filesystem_of(Path("/")) != ""
    assert filesystem_of(Path("/proc/self")) == "proc"
    assert filesystem_of(Path("/proc/self/status")) == "proc"


def test_a_directory_in_memory_only_when_it_is_a_tmpfs_with_room(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded_postgres, "MEMORY_DIR", Path("/proc"))  # not a tmpfs
    assert memory_parent(0) is None
    monkeypatch.setattr(embedded_postgres, "MEMORY_DIR", tmp_path / "missing")
    assert memory_parent(0) is None
    shm = Path("/dev/shm")
    if shm.is_dir() and filesystem_of(shm) == "tmpfs":
        monkeypatch.setattr(embedded_postgres, "MEMORY_DIR", shm)
        assert memory_parent(1) == shm
        assert memory_parent(shutil.disk_usage(shm).total + 1) is None  # more than it can ever have free
