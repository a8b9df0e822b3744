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
