"""Flyway's checksum, and how the engine reads a ``flyway_schema_history`` to plan an adoption (no database)."""

from __future__ import annotations

import zlib

from migrations_runner.engine import flyway
from migrations_runner.engine.history import SchemaState
from migrations_runner.engine.sets import Script, Version, load_set
from tests.support.sets import SHIPPED_SETS, THIRD_PARTY


def signed(crc: int) -> int:
    """A CRC32 as Java's ``(int) crc32.getValue()`` gives it."""
    return crc - (1 << 32) if crc >= 1 << 31 else crc


# --- Flyway's checksum --------------------------------------------------------------------------------------------


def test_the_checksum_matches_published_values_of_flyways_algorithm():
    # ebean's MChecksumTest pins these for its Flyway-compatible calculator (BufferedReader.readLine, UTF-8 bytes,
    # CRC32 cast to int): files "hello\n" and "helloäüü\n".
    assert flyway.checksum("hello\n") == 907060870
    assert flyway.checksum("helloäüü\n") == 1859426839


def test_the_checksum_ignores_line_terminators_but_not_empty_content():
    expected = signed(zlib.crc32(b"CREATE TABLE t (x int);SELECT 1;"))
    for text in (
        "CREATE TABLE t (x int);\nSELECT 1;",
        "CREATE TABLE t (x int);\r\nSELECT 1;\r\n",
        "CREATE TABLE t (x int);\rSELECT 1;\r",
        "CREATE TABLE t (x int);\n\n\r\n\rSELECT 1;\n",
    ):
        assert flyway.checksum(text) == expected
    assert flyway.checksum("") == 0
    assert flyway.checksum("a b") != flyway.checksum("ab")  # whitespace inside a line counts


def test_a_byte_order_mark_is_stripped_from_the_first_line_only():
    assert flyway.checksum("\ufeffSELECT 1;\n") == flyway.checksum("SELECT 1;\n")
    assert flyway.checksum("--\n\ufeffSELECT 1;") == signed(zlib.crc32("--\ufeffSELECT 1;".encode()))


def test_the_checksum_is_a_signed_32_bit_integer():
    text = next(f"SELECT {n};" for n in range(1000) if zlib.crc32(f"SELECT {n};".encode()) >= 1 << 31)
    assert flyway.checksum(text) == zlib.crc32(text.encode()) - (1 << 32)
    assert -(1 << 31) <= flyway.checksum(text) < 0


def test_the_checksum_of_a_file_with_windows_line_endings_equals_that_of_the_loaded_script():
    raw = (THIRD_PARTY / "V2__create_stock_items.sql").read_bytes()
    assert b"\r\n" in raw
    loaded = next(s for s in load_set(THIRD_PARTY, "inventory").versions if s.filename == "V2__create_stock_items.sql")
    assert flyway.checksum(raw.decode("utf-8")) == flyway.checksum(loaded.content)


# --- planning (no database) ---------------------------------------------------------------------------------------


def _row(rank: int, version: str | None, script: str, *, kind: str = "SQL", checksum=None, success=True):
    return flyway.FlywayRow(rank, version, script, kind, script, checksum, "flyway", None, 5, success)


def _script_row(rank: int, script: Script, **kwargs) -> flyway.FlywayRow:
    version = str(script.version) if script.version else None
    return _row(rank, version, script.filename, checksum=flyway.checksum(script.content), **kwargs)


def test_a_flyway_baseline_deleted_and_undone_versions_are_read_as_flyway_reads_them():
    mset = load_set(SHIPPED_SETS / "tenant", "tenant")
    v = {str(s.version): s for s in mset.versions}
    rows = [
        _row(1, "3", "<< Flyway Baseline >>", kind="BASELINE"),
        _script_row(2, v["4"]),
        _script_row(3, v["5"]),
        _script_row(4, v["6"]),
        _row(5, "6", v["6"].filename, kind="UNDO_SQL"),  # Flyway Teams undid 6
        _row(6, "10", "V10__gone.sql", checksum=1),
        _row(7, "10", "V10__gone.sql", kind="DELETE"),  # Flyway's repair marked the missing 10 deleted
        _script_row(8, mset.repeatables[0]),
        _row(9, None, mset.repeatables[0].filename, kind="DELETE"),
    ]
    plan = flyway.plan_adoption(rows, SchemaState("tenant_x", exists=True), mset)
    assert [(i.kind, str(i.version)) for i in plan.imports] == [("BASELINE", "3"), ("SQL", "4"), ("SQL", "5")]
    assert plan.flyway_version == Version.parse("5")
    assert plan.pending == ["6", "7", "8", "9", "R__views.sql"]
    assert not plan.refused
    assert not plan.drift
    assert not plan.missing

    recorded = SchemaState("tenant_x", exists=True, baseline=Version.parse("3"))
    recorded.applied = {Version.parse(n): v[n].checksum for n in ("4", "5")}
    again = flyway.plan_adoption(rows, recorded, mset)
    assert again.imports == []
    assert sorted(again.already_recorded) == ["3", "4", "5"]


def test_a_version_flyway_applied_that_the_set_lacks_refuses_the_target_unless_drift_is_accepted():
    mset = load_set(SHIPPED_SETS / "tenant", "tenant")
    rows = [_script_row(n, s) for n, s in enumerate(mset.versions[:2], start=1)]
    rows.append(_row(3, "2.5", "V2_5__hotfix.sql", checksum=42))
    refused = flyway.plan_adoption(rows, SchemaState("s", exists=True), mset)
    assert refused.refused
    assert refused.imports == []
    assert [(f.version, f.script) for f in refused.missing] == [("2.5", "V2_5__hotfix.sql")]
    accepted = flyway.plan_adoption(rows, SchemaState("s", exists=True), mset, accept_drift=True)
    assert [str(i.version) for i in accepted.imports] == ["1", "2"]
    assert [f.version for f in accepted.missing] == ["2.5"]
