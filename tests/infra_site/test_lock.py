"""requirements.lock (what ``make`` installs, with hashes) agrees with the pins of requirements*.txt.

When one of these fails, run ``make lock`` after changing requirements.txt or requirements-dev.txt.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def _logical_lines(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file, continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def top_level_pins(path: Path) -> dict[str, Requirement]:
    """The requirements of ``path`` and of the files it includes with ``-r``, by canonical name."""
    pins: dict[str, Requirement] = {}
    for line in _logical_lines(path):
        if line.startswith(("-r ", "--requirement ")):
            pins.update(top_level_pins(path.parent / line.split(maxsplit=1)[1]))
        else:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def locked() -> dict[str, tuple[str, list[str]]]:
    """Each locked package: its version and its hashes."""
    packages = {}
    for line in _logical_lines(LOCK):
        spec, *options = line.split(" --hash=")
        requirement = Requirement(spec.strip())
        (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
        packages[canonicalize_name(requirement.name)] = (version, [o.strip() for o in options])
    return packages


def test_every_requirement_is_pinned_to_one_version():
    pins = top_level_pins(ROOT / "requirements-dev.txt").values()
    loose = [str(r) for r in pins if [s.operator for s in r.specifier] != ["=="]]
    assert not loose, f"pin these with ==: {loose}"


def test_every_pin_of_the_requirements_files_is_in_the_lock_at_the_same_version():
    lock = locked()
    for path in ("requirements.txt", "requirements-dev.txt"):
        for name, requirement in top_level_pins(ROOT / path).items():
            assert name in lock, f"{requirement} ({path}) is not in requirements.lock: run `make lock`"
            (pinned,) = [s.version for s in requirement.specifier]
            assert lock[name][0] == pinned, f"{path} pins {requirement}, the lock {lock[name][0]}: run `make lock`"


def test_every_locked_package_carries_sha256_hashes():
    unhashed = [name for name, (_, hashes) in locked().items() if not hashes]
    assert not unhashed, f"no hash for {unhashed}: run `make lock`"
    assert all(h.startswith("sha256:") for _, hashes in locked().values() for h in hashes)


def locked_extras() -> dict[str, set[str]]:
    """The extras each locked package is locked with (``coverage[toml]==...``)."""
    return {
        canonicalize_name(requirement.name): set(requirement.extras)
        for line in _logical_lines(LOCK)
        for requirement in [Requirement(line.split(" --hash=")[0].strip())]
    }


def test_a_package_that_an_installed_package_asks_for_with_extras_is_locked_with_them():
    # pip's hash-checking mode holds a requirement with extras (pytest-cov's ``coverage[toml]>=...``) to the
    # lock's pin only when the lock names the same extras; otherwise it tries the newest release on the index
    # first and fails on its missing hash as soon as there is a newer one.
    extras = locked_extras()
    missing = []
    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in extras:
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if applies and requirement.extras and name in extras and not requirement.extras <= extras[name]:
                missing.append(f"{dist.metadata['Name']} asks for {requirement}")
    assert not missing, f"locked without the extras asked for: {missing}: run `make lock`"
