"""What a lane's claims skip: the servers marked unreachable, read from the shared cache once per lane and then at
most once per ``MARKS_RECHECK_S`` (not per claim), and at once after the lane changed the marks itself."""

import time

import pytest
from django.core.cache import cache

from migrations_runner.models import TargetRun
from migrations_runner.services.runner import reachability
from migrations_runner.services.runner.reachability import (
    UNREACHABLE_KEY,
    lane_marks_forget,
    server_mark_unreachable,
    servers_to_skip,
)

pytestmark = pytest.mark.django_db


def _mark(*servers: str) -> None:
    """Another process marks ``servers`` in the shared cache."""
    cache.set(UNREACHABLE_KEY, {s: {"since": time.time(), "error": "connection refused"} for s in servers})


def test_a_lane_reads_the_marks_when_it_starts_and_not_at_every_claim(monkeypatch):
    monkeypatch.setattr(reachability, "MARKS_RECHECK_S", 3600.0)
    _mark("db-a:5432")
    lane_marks_forget()  # a lane starts
    assert servers_to_skip() == ["db-a:5432"]

    _mark("db-a:5432", "db-b:5432")  # by another lane, elsewhere
    assert servers_to_skip() == ["db-a:5432"]  # not read again within the window

    lane_marks_forget()
    assert sorted(servers_to_skip()) == ["db-a:5432", "db-b:5432"]


def test_the_lane_that_marks_a_server_skips_it_at_its_next_claim(monkeypatch, registered):
    monkeypatch.setattr(reachability, "MARKS_RECHECK_S", 3600.0)
    cache.delete(UNREACHABLE_KEY)
    lane_marks_forget()
    assert servers_to_skip() == []
    run = TargetRun(server="db-c:5432", connection=registered["listed-eu"], error={"message": "refused"})

    server_mark_unreachable(run=run)

    assert servers_to_skip() == ["db-c:5432"]


def test_marks_are_read_again_once_the_window_has_passed(monkeypatch):
    monkeypatch.setattr(reachability, "MARKS_RECHECK_S", 0.0)
    _mark("db-a:5432")
    lane_marks_forget()
    assert servers_to_skip() == ["db-a:5432"]
    cache.delete(UNREACHABLE_KEY)
    assert servers_to_skip() == []
