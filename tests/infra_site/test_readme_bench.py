"""The README's benchmark figures are generated from the results files (``make bench-table``): the README says
what the committed results say, each benchmark's figures name the run they come from, and any drift fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import readme_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_figures_are_those_of_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    assert readme_table.rewrite(readme, readme_table.render()) == readme, (
        "README.md's benchmark figures differ from bench/results/*.json: run `make bench-table`"
    )


def test_each_committed_result_is_named_with_its_date_beside_its_figures():
    generated = readme_table.render()
    committed = sorted(readme_table.RESULTS_DIR.glob("*.json"))
    assert committed, "no committed results in bench/results/"
    bullets = generated.split("\n- ")
    for path in committed:
        data = json.loads(path.read_text())
        bullet = next(b for b in bullets if b.startswith(f"`python bench/{path.stem}.py`"))
        assert f"Run: `bench/results/{path.name}`, measured {data['measured_at']}" in bullet
        assert data["code"]["commit"][:10] in bullet


@pytest.fixture
def results(tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(readme_table.RESULTS_DIR, copy)
    return copy


@pytest.fixture
def readme(tmp_path) -> Path:
    path = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", path)
    return path


def test_a_changed_figure_fails_the_check_until_the_table_is_regenerated(results, readme, capsys):
    path = results / "api_latency.json"
    data = json.loads(path.read_text())
    endpoint = next(iter(data["endpoints"]))
    data["endpoints"][endpoint]["client"]["p95_ms"] = 12345.6
    path.write_text(json.dumps(data))
    args = ["--results", str(results), "--readme", str(readme)]
    assert readme_table.main([*args, "--check"]) == 1
    assert "12,345.6 ms" not in readme.read_text()
    assert readme_table.main(args) == 0
    assert f"| {endpoint} | " in readme.read_text()
    assert "12,345.6 ms" in readme.read_text()
    assert readme_table.main([*args, "--check"]) == 0
    assert "differ from the results files" in capsys.readouterr().out


def test_a_benchmark_without_results_says_so_and_an_unknown_results_file_is_an_error(results):
    (results / "api_latency.json").unlink()
    assert "No committed run: it writes `bench/results/api_latency.json`" in readme_table.render(results)
    (results / "mystery.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"mystery\.json"):
        readme_table.render(results)


def rendered(path: Path, data: dict) -> str:
    """The README tables after writing ``data`` to the results file ``path`` (in a copy of the results)."""
    path.write_text(json.dumps(data))
    return readme_table.render(path.parent)


def test_rounds_compared_side_by_side_show_their_median_and_each_round(results):
    path = results / "fleet_migrate.json"
    data = json.loads(path.read_text())
    queued = data["queued"][0]
    queued.update(ratio_vs_raw_pool4=1.21, ratio_vs_raw_pool4_rounds=[1.34, 1.1, 1.21])
    queued.update(machine_cpu_ms_per_target=61.02, raw_pool4_machine_cpu_ms_per_target=51.25, raw_pool4_s=32.87)
    for row in data["in_process"]:  # runs of the earlier format first, whatever is committed
        row.pop("psql_around_lanes1_s", None)
        row.pop("ratio_lanes1_best_vs_best", None)
    for row in data["queued"]:
        for key in ("ratio_best_vs_best", "overhead_best_vs_best_ms_per_target"):
            row.pop(key, None)
    in_process = data["in_process"][0]
    in_process.update(ratio_lanes1_vs_psql=1.07, ratio_lanes1_vs_psql_rounds=[1.65, 0.96, 1.07])
    in_process.update(ratio_lanes4_vs_psql=0.51, ratio_lanes4_vs_psql_rounds=[0.53, 0.36, 0.51])
    text = rendered(path, data)
    assert "32.87 s around it (median \N{MULTIPLICATION SIGN}1.21; \N{MULTIPLICATION SIGN}1.34, " in text
    assert "machine CPU 61.02 ms/target, raw pool 51.25" in text
    assert "(median \N{MULTIPLICATION SIGN}1.07; \N{MULTIPLICATION SIGN}1.65, \N{MULTIPLICATION SIGN}0.96, " in text
    assert "| median \N{MULTIPLICATION SIGN}0.51; \N{MULTIPLICATION SIGN}0.53, " in text
    assert "Each in-process round is compared with the psql run next to it; each queued round runs between" in text
    # A 1-lane run between two psql runs says so.
    in_process["psql_around_lanes1_s"] = [[33.2, 41.0], [42.5, 40.1], [55.6, 50.3]]
    text = rendered(path, data)
    assert (
        "Each in-process 1-lane run is compared with the mean of the two psql runs around it, each 4-lane run with "
        "the psql run beside it; each queued round runs between"
    ) in text
    assert "psql run next to it" not in text
    in_process.pop("psql_around_lanes1_s")
    # The fastest run against the fastest run around one, when the results have it.
    assert "best against best" not in "\n".join(readme_table.fleet_migrate(data))
    queued.update(ratio_best_vs_best=1.12, overhead_best_vs_best_ms_per_target=3.75)
    in_process["ratio_lanes1_best_vs_best"] = 1.04
    text = rendered(path, data)
    assert "\N{MULTIPLICATION SIGN}1.21; best against best \N{MULTIPLICATION SIGN}1.12, 3.75 ms/target)" in text
    assert "\N{MULTIPLICATION SIGN}1.07; best against best \N{MULTIPLICATION SIGN}1.04)" in text
    assert "Best against best: the fastest of a variant's runs against the fastest of the runs around them" in text
    for key in ("ratio_best_vs_best", "overhead_best_vs_best_ms_per_target"):
        queued.pop(key)
    in_process.pop("ratio_lanes1_best_vs_best")

    for key in ("ratio_vs_raw_pool4_rounds", "machine_cpu_ms_per_target"):
        queued.pop(key)
    for row in data["queued"]:
        row.pop("ratio_vs_raw_pool4_rounds", None)
    for row in data["in_process"]:
        for key in ("ratio_lanes1_vs_psql_rounds", "ratio_lanes4_vs_psql_rounds"):
            row.pop(key, None)
    rendered(path, data)  # still renders
    text = "\n".join(readme_table.fleet_migrate(data))  # this benchmark's section alone
    for shown_only_for_rounds in ("around it", "median", "compared with"):
        assert shown_only_for_rounds not in text
    assert "32.87 s (\N{MULTIPLICATION SIGN}1.21) |" in text


def test_a_queued_variant_without_fingerprints_after_runs_says_so(results):
    path = results / "fleet_migrate.json"
    data = json.loads(path.read_text())
    for row in data["queued"]:  # results of the earlier format first: every variant read its fingerprints
        row.pop("fingerprints_after_run", None)
    text = "\n".join(readme_table.fleet_migrate(data))
    assert "fingerprint read" not in text.lower()
    twin = {**data["queued"][0], "fingerprints_after_run": False, "queued_s": 7.77}
    data["queued"].append(twin)
    text = rendered(path, data)
    rows = [line for line in text.splitlines() if "no fingerprint read after each run" in line]
    assert len(rows) == 1
    assert "| 7.77 s (" in rows[0]
    assert "No fingerprint read after each run: `MIGRATION_FINGERPRINT_AFTER_RUN` off" in text


def test_results_of_lanes_that_join_scripts_say_so_beside_the_baselines_one_round_trip_a_transaction(results):
    path = results / "fleet_migrate.json"
    data = json.loads(path.read_text())
    data.pop("join_scripts_ms", None)  # results of the earlier format: a round trip a script on every side
    assert "Round trips:" not in rendered(path, data)
    data["join_scripts_ms"] = 250
    assert (
        "the lanes send a target's consecutive transactional versions in one round trip once they have seen them "
        "run on the database (`MIGRATION_JOIN_SCRIPTS_MS`, 250 ms)"
    ) in rendered(path, data)


def test_control_plane_runs_between_raw_pool_runs_show_their_median_and_each_round(results):
    path = results / "control_plane.json"
    data = json.loads(path.read_text())
    row = data["rows"][0]
    row.update(queued_s=11.49, raw_pool_s=7.25, raw_pool_around_s=[6.9, 7.6], ratio_queued_vs_raw_pool=1.58)
    row["ratio_queued_vs_raw_pool_rounds"] = [1.74, 1.58, 1.31]
    row.pop("ratio_best_vs_best", None)  # a run without it first
    text = rendered(path, data)
    assert (
        "| 11.49 s | 7.25 s around it | median \N{MULTIPLICATION SIGN}1.58; \N{MULTIPLICATION SIGN}1.74, "
        "\N{MULTIPLICATION SIGN}1.58, \N{MULTIPLICATION SIGN}1.31 |"
    ) in text
    assert "Each queued run ran between two raw pool runs and is compared with their mean" in text

    row["ratio_best_vs_best"] = 1.29
    text = rendered(path, data)
    assert "\N{MULTIPLICATION SIGN}1.31; best against best \N{MULTIPLICATION SIGN}1.29 |" in text
    assert "Best against best: the fastest queued run against the fastest raw pool run" in text

    for each in data["rows"]:
        for key in ("raw_pool_around_s", "ratio_queued_vs_raw_pool_rounds", "ratio_best_vs_best"):
            each.pop(key, None)
    rendered(path, data)  # still renders
    text = "\n".join(readme_table.control_plane(data))  # this benchmark's section alone
    assert "| 11.49 s | 7.25 s | \N{MULTIPLICATION SIGN}1.58 |" in text
    assert "around it" not in text
    assert "Each queued run ran between" not in text
    assert "best against best" not in text.lower()


def test_the_run_line_says_where_the_servers_files_were_when_the_results_say_it(results):
    path = results / "control_plane.json"
    data = json.loads(path.read_text())
    data.pop("server_files", None)
    assert "PostgreSQL's files on" not in readme_table.provenance("control_plane", data)
    data["server_files"] = {"parent": "/dev/shm", "filesystem": "tmpfs"}
    text = rendered(path, data)
    assert f"commit {data['code']['commit'][:10]}; PostgreSQL's files on tmpfs (`/dev/shm`)." in text


def test_the_control_plane_shows_where_a_targets_cpu_went_when_its_results_have_it(results):
    path = results / "control_plane.json"
    data = json.loads(path.read_text())
    for row in data["rows"]:  # a run of the earlier format first, whatever is committed
        row.pop("cpu_ms_per_target", None)
    assert "Where a target's CPU went" not in rendered(path, data)
    data["rows"][0]["cpu_ms_per_target"] = {
        "queued": {
            "cluster": 0.71,
            "control_backends": 0.38,
            "tenant_backends": 1.04,
            "server_other": 0.05,
            "total": 2.13,
        },
        "raw_pool": {"client": 0.21, "backends": 0.98, "total": 1.19},
    }
    text = rendered(path, data)
    assert "Where a target's CPU went" in text
    assert f"| {data['rows'][0]['lanes']} | 0.71 | 0.38 | 1.04 | 2.13 | 0.21 | 0.98 | 1.19 |" in text


def test_a_queued_fleet_run_shows_where_a_targets_cpu_went_when_its_results_have_it(results):
    path = results / "fleet_migrate.json"
    data = json.loads(path.read_text())
    queued = data["queued"][0]
    queued.update(broker="orm-postgresql", ratio_vs_raw_pool4=1.21, ratio_vs_raw_pool4_rounds=[1.34, 1.1, 1.21])
    queued.update(machine_cpu_ms_per_target=15.14, raw_pool4_machine_cpu_ms_per_target=11.48)
    for row in data["queued"]:  # a run of the earlier format first, whatever is committed
        row.pop("cpu_ms_per_target", None)
    assert "cluster 2.62, control database" not in rendered(path, data)
    queued["cpu_ms_per_target"] = {
        "queued": {"cluster": 2.62, "control_backends": 0.75, "tenant_backends": 11.4, "total": 14.77},
        "raw_pool": {"client": 1.2, "backends": 9.8, "total": 11.0},
    }
    text = rendered(path, data)
    assert (
        "machine CPU 15.14 ms/target, raw pool 11.48: cluster 2.62, control database 0.75, tenant database 11.4; "
        "raw pool client 1.2, its backends 9.8"
    ) in text
    queued["broker"] = "orm-sqlite"  # its control database is a file the cluster writes: no backend of its own
    text = rendered(path, data)
    assert "cluster 2.62, control database on SQLite, in the cluster's, tenant database 11.4" in text


def auth_results(*, bearer: tuple[float, float], session: tuple[float, float], extra_ms: float) -> dict:
    """An auth_overhead results file: each credential's (median, best) requests a second, a bearer token's extra
    time per request (median of the paired rounds)."""
    return {
        "endpoint": "GET /api/v1/migrations/",
        "rounds": 10,
        "requests_per_round": 300,
        "modes": {
            "bearer": {"median_rps": bearer[0], "best_rps": bearer[1]},
            "session": {"median_rps": session[0], "best_rps": session[1]},
        },
        "bearer_extra_ms_per_request": {"paired_rounds_median": extra_ms, "best": extra_ms},
        "provider_calls_during_timed_requests": 0,
        "measured_at": "2026-12-05 21:00 UTC",
        "code": {"commit": "0123456789abcdef", "changed_files": 0},
    }


def test_a_bearer_tokens_extra_time_within_the_rounds_spread_is_said_to_be_none_measurable(results):
    path = results / "auth_overhead.json"
    # The rounds of one credential differ by 1000/380 - 1000/400 = 0.13 ms: 0.02 ms is within that.
    text = rendered(path, auth_results(bearer=(380.0, 400.0), session=(381.0, 395.0), extra_ms=0.02))
    assert "bearer tokens 380 requests/s, sessions 381 (medians; best rounds 400 and 395)" in text
    assert "0.02 ms (none measurable: the rounds of one credential differ by more, 0.13 ms)" in text
    assert "0 calls to the identity provider during the timed requests (its keys are cached)" in text
    # Rounds that agree within 0.01 ms: a 0.5 ms difference is a measured one.
    data = auth_results(bearer=(299.0, 300.0), session=(340.0, 341.0), extra_ms=0.5)
    data["provider_calls_during_timed_requests"] = 3
    text = rendered(path, data)
    assert "0.5 ms (measured, 0.01 ms); 3 calls to the identity provider during the timed requests." in text
