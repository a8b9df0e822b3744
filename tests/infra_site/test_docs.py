"""The README says only what exists: every setting it names is read by the settings, every ``make`` target it
names is in the Makefile, and its configuration table lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SETTINGS = (ROOT / "infra_site" / "settings.py").read_text()
# Settings that are not environment variables of ours but appear in code spans (libraries' and the shell's).
NOT_OURS = {"DJANGO_SETTINGS_MODULE", "TEST_POSTGRES_URL", "CI", "PATH", "HOME", "LOGIN_URL"}
# Words in code spans that are SQL, log levels or file names, not settings.
NOT_SETTINGS = {"CLUSTER", "DELETE", "INFO", "UPDATE", "VACUUM", "V1_1"}


def read_variables() -> set[str]:
    return set(re.findall(r'env\.\w+\(\s*"([A-Z_][A-Z0-9_]+)"', SETTINGS))


def test_every_setting_the_readme_names_is_read_by_the_settings():
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})(?:=[^`]*)?`", README))
    named -= NOT_OURS | NOT_SETTINGS
    unknown = sorted(name for name in named if name not in read_variables())
    assert not unknown, f"the README names settings that nothing reads: {unknown}"


def test_every_make_target_the_readme_names_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    named = set(re.findall(r"make ([a-z][a-z-]*)", README))
    assert named, "the README names no make target"
    assert named <= targets, f"missing make targets: {sorted(named - targets)}"


def test_the_configuration_table_lists_every_setting():
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    missing = sorted(read_variables() - table)
    assert not missing, f"settings missing from the README's configuration table: {missing}"
