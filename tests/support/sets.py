"""Migration sets on disk for the tests: the shipped ones, and a third-party Flyway folder."""

from __future__ import annotations

import shutil
from pathlib import Path

SHIPPED_SETS = Path(__file__).resolve().parents[2] / "migration_sets"
# A folder written for Flyway, not for this project (one of its scripts has Windows line endings).
THIRD_PARTY = Path(__file__).resolve().parents[1] / "fixtures" / "flyway_thirdparty"

# The table as Flyway creates it on PostgreSQL (its createMetaDataTable.sql).
FLYWAY_DDL = """
CREATE TABLE {table} (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE {table} ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON {table} ("success");
"""


def write_tree(folder: Path, files: dict[str, str], **values: str) -> None:
    """Write ``files`` (relative path -> text) into an emptied ``folder``; ``values`` fill the ``.conf`` files."""
    shutil.rmtree(folder, ignore_errors=True)
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content.format(**values) if relative.endswith(".conf") else content)
