"""Reading PostgreSQL's plans of catalog queries in tests: the scans of a relation in ``EXPLAIN (FORMAT JSON)``."""

from __future__ import annotations

import json
from typing import Any


def plan_root(explained: Any) -> dict:
    """The top plan node of an ``EXPLAIN (FORMAT JSON)`` result's one value (decoded or not)."""
    return (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]


def scans(node: dict, *, alias: str | None = None, relation: str | None = None) -> list[dict]:
    """The nodes under ``node`` (itself included) that read ``relation``, or the relation named ``alias``."""
    found = (
        [node] if (alias and node.get("Alias") == alias) or (relation and node.get("Relation Name") == relation) else []
    )
    for child in node.get("Plans", []):
        found += scans(child, alias=alias, relation=relation)
    return found


def keys_of(scan: dict) -> str:
    """What a scan finds its rows by: its index (or recheck) condition, empty for a full read."""
    return scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
