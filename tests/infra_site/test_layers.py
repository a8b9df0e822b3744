"""The layers of the tree hold (``.importlinter``: apps, and faces > services > selectors > models > engine within
each app, no cycle between the modules of a package); imports inside functions count too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_every_layer_contract_is_kept():
    result = lint_imports(ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_contracts_read_the_real_imports(tmp_path):
    """A contract the tree breaks on purpose (services read through selectors) is reported broken."""
    config = tmp_path / "inverted.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    migrations_runner\n\n"
        "[importlinter:contract:inverted]\nname = services may not read selectors\ntype = forbidden\n"
        "source_modules = migrations_runner.services\nforbidden_modules = migrations_runner.selectors\n"
    )
    result = lint_imports(config)
    assert result.returncode == 1
    assert "services may not read selectors BROKEN" in result.stdout
    assert "migrations_runner.services.executions -> migrations_runner.selectors" in result.stdout
