"""A fingerprint scan started from the API runs on a real qcluster worker, not in the request."""

from __future__ import annotations

import pytest

from infra_site import roles
from migrations_runner.models import FingerprintScan, ScanState, SchemaFingerprint
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_worker_runs_the_scan_and_its_progress_is_readable(small_fleet, queue_settings, clusters, api_as):
    started = api_as(roles.MIGRATIONS_EXECUTE).post("/api/v1/migrations/fingerprints/scan/", {}, format="json")
    assert started.status_code == 202, started.content
    assert started.json()["state"] == ScanState.RUNNING
    assert not SchemaFingerprint.objects.exists()
    clusters(workers=1)
    scan = wait_until(
        lambda: FingerprintScan.objects.filter(pk=started.json()["id"]).exclude(state=ScanState.RUNNING).first(),
        timeout=60,
        interval=0.2,
        message="the scan did not finish",
    )
    assert (scan.state, scan.done, scan.total, scan.scanned) == (ScanState.COMPLETED, 10, 10, 10)
    assert SchemaFingerprint.objects.count() == 10
    shown = api_as(roles.MIGRATIONS_READ).get("/api/v1/migrations/fingerprints/scan/").json()
    assert (shown["id"], shown["state"], shown["done"]) == (str(scan.pk), "completed", 10)
