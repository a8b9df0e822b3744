"""Pages of an execution's target runs by key (the API's ``cursor`` and the admin detail page): every run exactly
once in (phase, id) order, the last page in one step, bad cursors refused; and the plans of the page and list
queries read an index in order instead of sorting every row."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection as control_db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections import services as registry
from infra_site.keyset import FIRST_PAGE, LAST_PAGE
from migrations_runner import selectors
from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUNS = 257
PHASES = 3


@pytest.fixture
def execution(pg) -> MigrationExecution:
    """An execution of RUNS target runs over PHASES phases, interleaved so that (phase, id) order is not id order,
    a third of them failed; and another execution whose runs must never show."""
    target = registry.connection_create(actor="t", verify=False, **pg.connection_values())
    executions = [MigrationExecution.objects.create(scope="tenant", executed_by="t") for _ in range(2)]
    TargetRun.objects.bulk_create(
        TargetRun(
            execution=executions[i % 2],
            connection=target,
            schema_name=f"tenant_{i:04d}",
            database_type="tenant",
            phase=(i // 2) % PHASES,
            status=TargetStatus.FAILED if i % 3 == 0 else TargetStatus.SUCCEEDED,
        )
        for i in range(2 * RUNS)
    )
    MigrationExecution.objects.update(targets_total=RUNS)  # as planning counts them
    return executions[0]


def in_order(execution: MigrationExecution, **filters) -> list[int]:
    return list(
        TargetRun.objects.filter(execution=execution, **filters).order_by("phase", "id").values_list("id", flat=True)
    )


def targets_url(execution: MigrationExecution) -> str:
    return f"/api/v1/migrations/{execution.pk}/targets/"


def walk(client, url: str, params: dict | None = None, *, link: str = "next") -> list[dict]:
    """Every page from ``url`` following the ``link`` links; the pages' bodies."""
    pages = [client.get(url, params or {}).json()]
    while pages[-1][link]:
        pages.append(client.get(pages[-1][link]).json())
        assert len(pages) < 100, "the links loop"
    return pages


def ids(pages: list[dict]) -> list[int]:
    return [run["id"] for page in pages for run in page["results"]]


def test_the_cursor_walks_every_run_once_in_order_and_back(execution, api_as):
    reader = api_as("migrations:read")
    pages = walk(reader, targets_url(execution), {"limit": 50})
    assert ids(pages) == in_order(execution)
    assert [len(page["results"]) for page in pages] == [50] * 5 + [RUNS - 250]
    assert all(page["count"] == RUNS for page in pages)
    assert pages[0]["previous"] is None
    assert pages[-1]["next"] is None
    assert "cursor=" in pages[0]["next"]
    assert "offset" not in pages[0]["next"]
    backwards = walk(reader, pages[-1]["previous"], link="previous")
    assert ids(list(reversed(backwards))) == in_order(execution)[:250]


def test_the_last_link_is_the_last_page_at_once(execution, api_as):
    reader = api_as("migrations:read")
    first = reader.get(targets_url(execution), {"limit": 50}).json()
    last = reader.get(first["last"]).json()
    assert [run["id"] for run in last["results"]] == in_order(execution)[-50:]
    assert last["next"] is None
    assert last["count"] == RUNS
    before = reader.get(last["previous"]).json()
    assert [run["id"] for run in before["results"]] == in_order(execution)[-100:-50]
    assert parse_qs(urlsplit(first["last"]).query)["limit"] == ["50"]


def test_the_status_filter_pages_by_cursor_too(execution, api_as):
    reader = api_as("migrations:read")
    pages = walk(reader, targets_url(execution), {"limit": 20, "status": "failed"})
    assert ids(pages) == in_order(execution, status=TargetStatus.FAILED)
    assert all(run["status"] == "failed" for page in pages for run in page["results"])


def test_offsets_still_page_as_before(execution, api_as):
    reader = api_as("migrations:read")
    page = reader.get(targets_url(execution), {"limit": 50, "offset": 100}).json()
    assert [run["id"] for run in page["results"]] == in_order(execution)[100:150]
    assert "offset=150" in page["next"]
    assert "offset=50" in page["previous"]
    assert page["count"] == RUNS
    assert page["last"] is None


def encoded(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        encoded("x:0:1"),
        encoded("a:0"),
        encoded("a:-1:5"),
        encoded("a:0:1e3"),
        encoded("a:0:99999999999999999999"),
    ],
)
def test_a_bad_cursor_is_a_400_in_the_error_shape(execution, api_as, cursor):
    response = api_as("migrations:read").get(targets_url(execution), {"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {
        "error": "validation_error",
        "message": "'cursor' is not a cursor of this list: follow the 'next', 'previous' or 'last' links.",
        "details": {"cursor": cursor},
    }


def test_cursor_and_offset_together_are_a_400(execution, api_as):
    response = api_as("migrations:read").get(targets_url(execution), {"cursor": FIRST_PAGE.encode(), "offset": 5})
    assert response.status_code == 400
    assert response.json()["details"] == {"cursor": FIRST_PAGE.encode(), "offset": "5"}


def test_a_page_costs_the_same_queries_whatever_its_size(execution, api_as, client, make_user):
    """Every field a page shows is read with the page (no query per run for a field left out of it)."""
    api = api_as("migrations:read")
    client.force_login(make_user("migrations:read"))
    admin_page = reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk])
    counts = {}
    for limit in (5, 100):
        with CaptureQueriesContext(control_db) as queries:
            assert api.get(targets_url(execution), {"limit": limit}).status_code == 200
        counts[limit] = len(queries.captured_queries)
    assert counts[5] == counts[100] <= 10, counts
    with CaptureQueriesContext(control_db) as queries:
        assert client.get(admin_page).status_code == 200
    assert len(queries.captured_queries) <= 25, [q["sql"][:120] for q in queries.captured_queries]


def test_the_admin_detail_page_walks_by_cursor(execution, client, make_user):
    client.force_login(make_user("migrations:read"))
    detail = reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk])
    seen: list[int] = []
    page = client.get(detail, {"status": "failed"})
    while True:
        assert page.status_code == 200
        seen += [run.pk for run in page.context["page"].runs]
        following = page.context["page"].next
        if following is None:
            break
        assert f"cursor={following.encode()}" in page.content.decode()
        page = client.get(detail, {"status": "failed", "cursor": following.encode()})
    assert seen == in_order(execution, status=TargetStatus.FAILED)
    last = client.get(detail, {"cursor": LAST_PAGE.encode()})
    assert [run.pk for run in last.context["page"].runs] == in_order(execution)[-50:]
    assert f"{RUNS} targets" in last.content.decode()


def test_the_admin_detail_page_sends_a_bad_cursor_back_to_the_first_page(execution, client, make_user):
    client.force_login(make_user("migrations:read"))
    detail = reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk])
    response = client.get(detail, {"status": "failed", "cursor": "nonsense"}, follow=True)
    assert response.redirect_chain == [(f"{detail}?status=failed", 302)]
    assert "is not a cursor of this list" in response.content.decode()


def plan(queryset) -> str:
    """The control database's plan of ``queryset``, with sequential scans priced out on PostgreSQL so that a
    small table shows the plan a large one gets."""
    if control_db.vendor == "postgresql":
        with control_db.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
        try:
            return queryset.explain()
        finally:
            with control_db.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
    return queryset.explain()


def assert_index_order(text: str, index: str) -> None:
    assert index in text, text
    assert "Sort" not in text, text  # PostgreSQL
    assert "TEMP B-TREE" not in text, text  # SQLite


def test_the_page_queries_read_an_index_in_order(execution):
    runs = selectors.execution_targets(execution=execution)
    for queryset in (
        runs.order_by("phase", "id")[:51],
        runs.filter(phase=1, id__gt=0).order_by("phase", "id")[:51],
        runs.filter(phase__gt=1).order_by("phase", "id")[:51],
        runs.order_by("-phase", "-id")[:51],
    ):
        assert_index_order(plan(queryset), "target_run_page")


def test_the_execution_list_reads_an_index_in_order(execution):
    """The API orders by creation time; the admin's changelist adds the id."""
    for queryset in (selectors.execution_list()[:50], selectors.execution_list().order_by("-created_at", "-pk")[:50]):
        assert_index_order(plan(queryset), "execution_newest")


def test_a_page_shows_its_rows_as_the_model_instances_would_show_them(pg, api_as, make_user):
    """The API's pages are built from rows, not model instances: every field the same, the error redacted alike."""
    from rest_framework.test import APIRequestFactory

    from connections.models import Tenant
    from migrations_runner.serializers import TargetRunSerializer

    target = registry.connection_create(actor="t", verify=False, **pg.connection_values())
    tenant = Tenant.objects.create(slug="acme", name="Acme", connection=target)
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    now = timezone.now()
    error = {"kind": "sql", "message": f"could not connect to {target.host}:{target.port} as {target.username}"}
    TargetRun.objects.bulk_create(
        [
            TargetRun(
                execution=execution,
                connection=target,
                tenant=tenant,
                schema_name="tenant_acme",
                database_type="tenant",
                region="us-east",
                status=TargetStatus.FAILED,
                from_version="2",
                to_version="3",
                pending_versions=["3", "4"],
                applied_versions=[{"version": "3", "description": "x", "duration_ms": 5}],
                attempts=2,
                lock_waits=1,
                waiting="waiting for a lock",
                retry_at=now + timedelta(seconds=30),
                error=error,
                worker="host:1",
                started_at=now - timedelta(seconds=2),
                completed_at=now,
                duration_ms=2000,
            ),
            TargetRun(execution=execution, connection=target, schema_name="public", database_type="shared", phase=1),
        ]
    )
    instances = list(selectors.execution_targets_listed(execution=execution))
    rows = list(selectors.execution_target_rows(execution=execution).values(*selectors.LISTED_ROW_FIELDS))
    assert [row["id"] for row in rows] == [run.pk for run in instances]
    for user in (make_user("migrations:read"), make_user("migrations:read", "databases:read")):
        request = APIRequestFactory().get("/")
        request.user = user
        from_instances = TargetRunSerializer(instances, many=True, context={"request": request}).data
        from_rows = TargetRunSerializer(rows, many=True, context={"request": request}).data
        assert json.loads(json.dumps(from_rows)) == json.loads(json.dumps(from_instances))
        assert from_rows[0]["tenant"] == "acme"
        assert from_rows[1]["tenant"] is None
        assert from_rows[0]["retry_at"].endswith("Z")
    reader = api_as("migrations:read")
    shown = reader.get(targets_url(execution)).json()["results"][0]
    assert target.host not in json.dumps(shown["error"])  # redacted for a reader without databases:read
    assert shown["applied_versions"] == [{"version": "3", "description": "x", "duration_ms": 5}]


def test_a_page_counts_and_keys_its_runs_without_a_join(execution, api_as):
    """Only the page's own rows are read with their connection and tenant: the count and the keys join nothing."""
    with CaptureQueriesContext(control_db) as queries:
        response = api_as("migrations:read").get(targets_url(execution), {"limit": 50, "status": "failed"})
        assert response.status_code == 200
    runs = [q["sql"] for q in queries.captured_queries if '"migrations_runner_targetrun"' in q["sql"]]
    counts = [sql for sql in runs if "COUNT(*)" in sql]
    keys = [sql for sql in runs if 'AS "pk"' in sql]
    assert counts
    assert keys
    assert not any("JOIN" in sql for sql in counts + keys), counts + keys
    assert sum("JOIN" in sql for sql in runs) == 1  # the page's rows


def test_an_offset_page_reads_its_keys_by_offset_then_its_rows(execution, api_as):
    """An old client's ``?offset=`` deep in the list skips index entries: the offset is applied to the keys alone,
    never to the joined rows (which would be sorted in full), and the rows come by key."""
    with CaptureQueriesContext(control_db) as queries:
        page = api_as("migrations:read").get(targets_url(execution), {"limit": 50, "offset": 200}).json()
    assert [run["id"] for run in page["results"]] == in_order(execution)[200:250]
    runs = [q["sql"] for q in queries.captured_queries if '"migrations_runner_targetrun"' in q["sql"]]
    offsets = [sql for sql in runs if "OFFSET" in sql]
    assert len(offsets) == 1
    assert 'AS "pk"' in offsets[0] or offsets[0].startswith('SELECT "migrations_runner_targetrun"."id" FROM')
    assert "JOIN" not in offsets[0]
    assert sum("JOIN" in sql for sql in runs) == 1  # the page's rows, by key


def test_the_whole_list_takes_its_count_from_the_execution_and_a_filtered_one_counts(execution, api_as):
    """Planning makes every run of an execution and counts them: the unfiltered pages, by cursor or offset, show
    that count without a count query; a page filtered by status counts its runs."""
    client = api_as("migrations:read")

    def page_and_counts(params: dict) -> tuple[dict, list[str]]:
        with CaptureQueriesContext(control_db) as queries:
            page = client.get(targets_url(execution), params).json()
        # The execution is read for its key and count only, not its 40 columns and kilobytes of JSON.
        read = [q["sql"] for q in queries.captured_queries if 'FROM "migrations_runner_migrationexecution"' in q["sql"]]
        assert len(read) == 1
        assert '"metadata"' not in read[0]
        assert '"targets_total"' in read[0]
        return page, [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"]]

    for params in ({"limit": 20}, {"limit": 20, "offset": 240}, {"limit": 20, "cursor": LAST_PAGE.encode()}):
        page, counts = page_and_counts(params)
        assert page["count"] == len(in_order(execution)) == RUNS
        assert counts == []
    page, counts = page_and_counts({"limit": 20, "status": "failed"})
    assert page["count"] == len(in_order(execution, status=TargetStatus.FAILED)) < RUNS
    assert len(counts) == 1


def test_the_list_reads_running_targets_only_for_unfinished_executions(execution, api_as):
    """An execution finishes only once none of its runs runs: a page of finished executions reads no runs; an
    unfinished one on the page still shows what runs."""
    client = api_as("migrations:read")
    MigrationExecution.objects.update(status="completed")

    def listed() -> tuple[dict, list[str]]:
        with CaptureQueriesContext(control_db) as queries:
            body = client.get("/api/v1/migrations/", {"limit": 10}).json()
        runs = [q["sql"] for q in queries.captured_queries if '"migrations_runner_targetrun"' in q["sql"]]
        return {e["id"]: e["progress"] for e in body["results"]}, runs

    progress, runs = listed()
    assert len(progress) == 2
    assert runs == []
    assert all(p["current_targets"] == [] and p["running"] == 0 for p in progress.values())
    run = execution.targets.order_by("id").first()
    TargetRun.objects.filter(pk=run.pk).update(status=TargetStatus.RUNNING, heartbeat_at=timezone.now())
    MigrationExecution.objects.filter(pk=execution.pk).update(status="in_progress")
    progress, runs = listed()
    assert len(runs) == 1
    assert progress[str(execution.pk)]["current_targets"] == [f"{run.connection.name}/{run.schema_name}"]
