"""Property-based fuzzing of migration-set file names and contents: the loader never crashes, an invalid set is
refused with a message naming the file, and nothing from an invalid set is ever applied."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrations_runner import services
from migrations_runner.engine.sets import load_set
from migrations_runner.exceptions import InvalidMigrationSets
from migrations_runner.models import MigrationExecution, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

SHIPPED = Path(__file__).resolve().parents[2] / "migration_sets"

prefixes = st.sampled_from(["V", "U", "R", "v", "X", ""])
versions = st.one_of(
    st.sampled_from(["1", "2", "01", "1_1", "1.1", "10", "", "a", "1__", "1..2"]),
    st.from_regex(r"[0-9][0-9._]{0,5}", fullmatch=True),
)
descriptions = st.one_of(st.sampled_from(["__init", "_x", "__a b", "__", "__ü", "__a/b"]), st.text(max_size=12))
suffixes = st.sampled_from([".sql", ".SQL", ".txt", ""])
names = st.builds(lambda p, v, d, s: f"{p}{v}{d}{s}", prefixes, versions, descriptions, suffixes).filter(
    lambda name: name and "/" not in name and "\x00" not in name and name not in (".", "..")
)
contents = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "CREATE TABLE t (id int);",
            "SELECT '${schema}';",
            "SELECT '${nope}';",
            "-- infra:transactional=false\nCREATE INDEX CONCURRENTLY i ON t (id);",
            "$$ unterminated",
        ]
    ),
)
files = st.dictionaries(names, contents, min_size=1, max_size=6)


def write(folder: Path, scripts: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        try:
            (folder / name).write_text(text, encoding="utf-8", errors="surrogateescape")
        except (OSError, UnicodeEncodeError):
            continue


@settings(max_examples=300, deadline=None, derandomize=True)
@given(files)
def test_the_loader_never_crashes_and_names_the_file_of_every_problem(scripts):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tenant"
        write(folder, scripts)
        mset = load_set(folder, "tenant")
        present = {path.name for path in folder.iterdir()}
        for problem in mset.problems:
            assert any(problem.startswith(name) or name in problem for name in present), problem


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files)
def test_nothing_from_an_invalid_set_is_ever_applied(small_fleet, django_settings_for_sets, scripts):
    root = Path(tempfile.mkdtemp(prefix="fuzz-sets-"))
    try:
        shutil.copytree(SHIPPED, root, dirs_exist_ok=True)
        shutil.rmtree(root / "tenant")
        write(root / "tenant", scripts)
        if not load_set(root / "tenant", "tenant").problems:
            return  # a valid set: nothing to prove here
        django_settings_for_sets.MIGRATIONS_DIR = root
        before = MigrationExecution.objects.count()
        with pytest.raises(InvalidMigrationSets) as refused:
            services.execution_start(
                selection=TargetSelection(scope="tenant"),
                options=ExecutionOptions(),
                actor="fuzz",
                origin=Origin.API,
                wait=True,
            )
        assert "tenant/" in refused.value.message or refused.value.details
        assert MigrationExecution.objects.count() == before
        with small_fleet.connect("shared-us") as conn:
            created = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant_%'").fetchone()[0]
        assert created == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def django_settings_for_sets(settings):
    return settings
