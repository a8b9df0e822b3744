"""The health app's django-q2 task, called in this process as a worker would call it."""

from __future__ import annotations

import pytest

from connections import services as registry
from health import tasks
from health.models import CheckRun, ConnectionSnapshot

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_check_connections_probes_the_active_connections_and_reports_the_count(pg, closed_port):
    registry.connection_create(actor="t", **pg.connection_values(name="up"))
    registry.connection_create(actor="t", verify=False, **pg.connection_values(name="down", port=closed_port))
    registry.connection_create(actor="t", verify=False, **pg.connection_values(name="idle", is_active=False))
    assert tasks.check_connections() == "2 checked, 1 unhealthy"
    run = CheckRun.objects.get()
    assert (run.connections_checked, run.connections_unhealthy) == (2, 1)
    healthy = dict(ConnectionSnapshot.objects.values_list("connection__name", "is_healthy"))
    assert healthy == {"up": True, "down": False}


def test_check_connections_with_no_connection_records_an_empty_run(db):
    assert tasks.check_connections() == "0 checked, 0 unhealthy"
    assert CheckRun.objects.get().connections_checked == 0
    assert not ConnectionSnapshot.objects.exists()
