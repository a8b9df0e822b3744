"""The benchmarks' embedded server keeps its files on a file system in memory when there is one with room, and the
results files say where they were."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from bench import support
from infra_site.embedded_postgres import filesystem_of

pytestmark = pytest.mark.postgres

SHM = Path("/dev/shm")


@pytest.mark.skipif(not SHM.is_dir() or filesystem_of(SHM) != "tmpfs", reason="no tmpfs at /dev/shm here")
def test_the_server_files_go_to_memory_when_there_is_room_and_the_results_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(support, "server_files", {})
    monkeypatch.setattr(support, "MEMORY_FILES_MIN_FREE", 1)
    with support.bench_server() as server:
        assert server.data_dir.parent == SHM
        with psycopg.connect(**server.conninfo()) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        support.write_results(tmp_path / "r.json", {"rows": []})
    assert not server.data_dir.exists()
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["server_files"] == {"parent": str(SHM), "filesystem": "tmpfs"}


def test_without_room_in_memory_the_server_files_go_to_the_temporary_directory(tmp_path, monkeypatch):
    temporary = Path(tempfile.mkdtemp(prefix="t-"))  # short: the server's socket path must fit in 107 bytes
    monkeypatch.setattr(support, "server_files", {})
    monkeypatch.setattr(support, "MEMORY_FILES_MIN_FREE", shutil.disk_usage("/").total * 1000)  # never that much
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    try:
        with support.bench_server() as server:
            assert server.data_dir.parent == temporary
            assert support.server_files == {"parent": str(temporary), "filesystem": filesystem_of(temporary)}
        support.write_results(tmp_path / "r.json", {"rows": []})
    finally:
        temporary.rmdir()
    assert json.loads((tmp_path / "r.json").read_text())["server_files"]["parent"] == str(temporary)
