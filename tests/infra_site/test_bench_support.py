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
from tests.support.waiting import wait_until

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


BURN = "SELECT count(*) FROM generate_series(1, 3000000)"  # about a tenth of a second of a backend's CPU


def _backend(conn: psycopg.Connection) -> int:
    pid = conn.info.backend_pid
    if support.process_cpu_s(pid) is None:
        pytest.skip("the server's processes are not on this machine")
    return pid


def test_a_backends_cpu_is_read_from_the_machine_and_a_process_that_is_gone_has_none(pg):
    with pg.connect() as conn:
        pid = _backend(conn)
        before = support.process_cpu_s(pid)
        conn.execute(BURN)
        assert support.process_cpu_s(pid) - before >= 0.02
    assert support.process_cpu_s(2**22 + 7) is None  # above Linux's largest pid


def test_the_server_cpu_counts_a_process_seen_first_from_there_and_a_later_one_its_whole_life(pg):
    cpu = support.ServerCpu()
    with pg.connect() as early:
        early_pid = _backend(early)
        early.execute(BURN)  # spent before the first reading: not counted
        spent_before = support.process_cpu_s(early_pid)
        cpu.read([(early_pid, pg.dbname, "client backend")])
        early.execute(BURN)
        with pg.connect() as late:
            late_pid = late.info.backend_pid
            late.execute(BURN)
            cpu.read([(early_pid, pg.dbname, "client backend"), (late_pid, pg.dbname, "client backend")])
            late_total = support.process_cpu_s(late_pid)
        early_total = support.process_cpu_s(early_pid)
    spent = cpu.by_group()[(pg.dbname, "client backend")]
    assert spent == pytest.approx((early_total - spent_before) + late_total, abs=0.02)
    assert spent < early_total + late_total - 0.02  # the first connection's CPU before the first reading is left out


def test_the_server_cpu_of_a_run_is_split_by_its_databases_and_the_servers_own_processes():
    by_group = {
        ("control_q4", "client backend"): 0.5,
        ("control_q4", "autovacuum worker"): 0.25,
        ("tenants_q4", "client backend"): 2.0,
        ("", "walwriter"): 0.125,
        ("", "checkpointer"): 0.125,
        ("postgres", "client backend"): 9.0,  # another database's: not the run's
    }
    assert support.server_cpu_split(by_group, control="control_q4", tenants="tenants_q4") == {
        "control_backends": 0.75,
        "tenant_backends": 2.0,
        "server_other": 0.25,
    }


def test_the_server_cpu_sampler_reads_the_servers_processes_while_it_runs(pg):
    with pg.connect() as conn:
        _backend(conn)
        server = pg.server  # as the benchmarks read it: a superuser sees every process's kind
        conninfo = {"host": server.host, "port": server.port, "user": server.superuser}
        conninfo.update(password=server.superuser_password, dbname="postgres")
        sampler = support.ServerCpuSampler(conninfo, period_s=0.01).start()
        wait_until(lambda: sampler.cpu._sampled, timeout=10, message="the sampler never read the server")
        conn.execute(BURN)
        spent = sampler.stop()
    assert spent[(pg.dbname, "client backend")] >= 0.02
    assert any(not database for database, _kind in spent)  # the server's own processes (WAL writer...)
