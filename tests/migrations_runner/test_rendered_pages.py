"""A PostgreSQL control database renders the targets endpoint's rows itself: the pages it answers are, value for
value, what the serializer shows of the same runs (times, text of every kind, JSON, tenants or none), and runs
with an error still go through the serializer, which redacts them per caller.

The suite's own control database is SQLite; this runs a child process on a PostgreSQL control database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.qcluster import ROOT, control_env
from tests.support.tools import coverage_env

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

# What both children start with: a control database, a registered connection whose host and user a reader must
# not see in errors, a reader and a holder of databases:read.
PROLOGUE = textwrap.dedent(
    """
    import json
    from datetime import datetime, timedelta, timezone as tz

    import django
    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.renderers import JSONRenderer
    from rest_framework.test import APIClient, APIRequestFactory

    call_command("migrate", verbosity=0)
    from connections import services as registry
    from connections.models import Tenant
    from migrations_runner import selectors
    from migrations_runner.models import MigrationExecution, TargetRun
    from migrations_runner.serializers import ExecutionSerializer, TargetRunSerializer

    target = registry.connection_create(
        actor="t", verify=False, name="shared-eu", database_type="shared", region="eu-west",
        host="db-7.internal.example", port=6543, database_name="fleet", username="svc_fleet",
        password="not-shown-anywhere", ssl_mode="disable", connect_timeout=5,
    )
    reader = User.objects.create_user("reader", password="reader-password")
    reader.groups.add(Group.objects.get_or_create(name="migrations:read")[0])
    admin = User.objects.create_user("dba", password="dba-password")
    admin.groups.add(
        Group.objects.get_or_create(name="migrations:read")[0], Group.objects.get_or_create(name="databases:read")[0]
    )
    texts = ['quote " backslash \\\\ slash /', "line\\nbreak\\ttab\\r\\x01\\x1f", "é ß 東京 😀", "</script>", ""]
    """
)

CHILD = PROLOGUE + textwrap.dedent(
    """
    tenant = Tenant.objects.create(slug="acme", name="Acme", connection=target)
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    whole = datetime(2026, 3, 4, 5, 6, 7, tzinfo=tz.utc)  # no microseconds: shown without a fraction
    runs = []
    for n in range(60):
        text = texts[n % len(texts)]
        runs.append(TargetRun(
            execution=execution,
            connection=target,
            tenant=tenant if n % 2 else None,
            schema_name=f"tenant_{n:03d}",
            database_type="tenant",
            region="eu-west",
            phase=n % 3,
            status=["succeeded", "failed", "pending", "running", "skipped"][n % 5],
            from_version=str(n),
            to_version=str(n + 1) if n % 4 else "",
            pending_versions=[str(n + 1), "R__views.sql"] if n % 3 else [],
            applied_versions=[
                {"version": str(n), "script": f"V{n}__x.sql", "duration_ms": n, "ratio": 1.5, "big": 2**60,
                 "ok": True, "none": None, "text": text, "nested": {"b": [1, 2.0], "a": "é"}},
            ] if n % 2 else [],
            attempts=n % 4,
            lock_waits=n % 7,
            waiting=text if n % 5 == 1 else "",
            retry_at=whole + timedelta(microseconds=n) if n % 6 == 0 else None,
            error=(
                {"kind": "sql", "message": "could not connect to db-7.internal.example:6543 as svc_fleet"}
                if n % 10 == 7 else None
            ),
            skip_reason=text if n % 5 == 4 else "",
            worker=f"host-{n}:{1000 + n}",
            started_at=(whole - timedelta(days=n, microseconds=n * 1001)) if n % 4 else None,
            completed_at=whole + timedelta(seconds=n) if n % 3 else None,
            duration_ms=n * 10 if n % 2 else None,
        ))
    TargetRun.objects.bulk_create(runs)
    MigrationExecution.objects.filter(pk=execution.pk).update(targets_total=len(runs))  # as planning counts them
    instances = list(selectors.execution_targets_listed(execution=execution))


    def walk(client, url, link="next"):
        pages, sql = [], []
        while url:
            with CaptureQueriesContext(connection) as captured:
                response = client.get(url)
            assert response.status_code == 200, response.content[:500]
            sql += [query["sql"] for query in captured.captured_queries]
            pages.append({"type": response["Content-Type"], "body": json.loads(response.content)})
            url = pages[-1]["body"][link]
        return pages, sql

    def walks(client):  # forward from the first page, back from the last, through the runs of one status
        forward, sql = walk(client, url)
        back, back_sql = walk(client, forward[0]["body"]["last"], "previous")
        succeeded, succeeded_sql = walk(client, url.replace("limit=25", "limit=4&status=succeeded"))
        return forward, sql, {"back": back, "succeeded": succeeded, "queries": [
            len(back_sql) / len(back), len(succeeded_sql) / len(succeeded)
        ]}

    out = {"rendered_here": selectors.rows_rendered_here()}
    url = f"/api/v1/migrations/{execution.pk}/targets/?limit=25"
    for user in (reader, admin):
        client = APIClient()
        client.force_authenticate(user)
        request = APIRequestFactory().get("/")
        request.user = user
        expected = json.loads(JSONRenderer().render(
            TargetRunSerializer(instances, many=True, context={"request": request}).data
        ))
        rendered, sql, other_walks = walks(client)
        last = client.get(rendered[0]["body"]["last"])
        selectors_rendered_here = selectors.rows_rendered_here
        import migrations_runner.api as api_module
        api_module.selectors.rows_rendered_here = lambda: False
        try:
            plain, plain_sql, plain_walks = walks(client)
            plain_last = client.get(plain[0]["body"]["last"])
        finally:
            api_module.selectors.rows_rendered_here = selectors_rendered_here
        by_offset, offset_sql = [], []
        for offset in (0, 25, 50):
            with CaptureQueriesContext(connection) as captured:
                response = client.get(f"{url}&offset={offset}")
            assert response.status_code == 200, response.content[:500]
            by_offset += json.loads(response.content)["results"]
            offset_sql += [query["sql"] for query in captured.captured_queries]
        out[user.username + "_offsets"] = {
            "runs": by_offset, "rendered_sql": sum("r.listed" in q for q in offset_sql)
        }
        out[user.username] = {
            "expected": expected,
            "rendered": [run for page in rendered for run in page["body"]["results"]],
            "plain": [run for page in plain for run in page["body"]["results"]],
            "envelopes": [{k: v for k, v in page["body"].items() if k != "results"} for page in rendered],
            "plain_envelopes": [{k: v for k, v in page["body"].items() if k != "results"} for page in plain],
            "types": sorted({page["type"] for page in rendered + plain}),
            "rendered_sql": sum("r.listed" in q for q in sql),
            "plain_sql": sum("r.listed" in q for q in plain_sql),
            "last": json.loads(last.content),
            "plain_last": json.loads(plain_last.content),
            "walks": other_walks,
            "plain_walks": plain_walks,
        }

    # The stored JSON follows every change of a run, and a page shows its connection's and tenant's names of now.
    TargetRun.objects.filter(execution=execution, phase=1).update(
        status="cancelled", attempts=3, applied_versions=[{"version": "9", "script": "V9__late.sql"}],
        completed_at=whole + timedelta(microseconds=5), error=None,
    )
    run = TargetRun.objects.filter(execution=execution, phase=2).order_by("id").first()
    run.skip_reason, run.waiting = "changed since", "pid 7 holds a lock"
    run.save()
    type(target).objects.filter(pk=target.pk).update(name="shared-eu-renamed")
    Tenant.objects.filter(pk=tenant.pk).update(slug="acme-renamed")
    client = APIClient()
    client.force_authenticate(reader)
    request = APIRequestFactory().get("/")
    request.user = reader
    instances = list(selectors.execution_targets_listed(execution=execution))
    rendered, sql = walk(client, url)
    out["changed"] = {
        "expected": json.loads(JSONRenderer().render(
            TargetRunSerializer(instances, many=True, context={"request": request}).data
        )),
        "rendered": [run for page in rendered for run in page["body"]["results"]],
        "rendered_sql": sum("r.listed" in q for q in sql),
    }
    print(json.dumps(out))
    """
)


def run_child(script: str, control_url: str) -> dict:
    """Run ``script`` on the PostgreSQL control database ``control_url``; what it printed last, where the control
    database renders rows."""
    env = control_env(ADMIN_DATABASE_URL=control_url, **coverage_env())
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["rendered_here"] is True
    return out


def test_pages_rendered_by_postgresql_show_what_the_serializer_shows(pg_control):
    out = run_child(CHILD, pg_control)
    for username in ("reader", "dba"):
        seen = out[username]
        assert seen["rendered_sql"] == 3  # one query of rows a page
        assert seen["plain_sql"] == 0
        assert seen["types"] == ["application/json"]
        assert len(seen["expected"]) == 60
        # In the pages' (phase, id) order, every field equal to the serializer's, and to the pages it renders.
        by_id = {run["id"]: run for run in seen["expected"]}
        assert [run["id"] for run in seen["rendered"]] == [run["id"] for run in seen["plain"]]
        assert seen["rendered"] == [by_id[run["id"]] for run in seen["rendered"]]
        assert seen["plain"] == seen["rendered"]
        assert seen["envelopes"] == seen["plain_envelopes"]
        assert seen["last"] == seen["plain_last"]
        # Back from the last page by ``previous``, and through one status by ``next``: the same pages, links and
        # counts; a page of runs with no error rendered in one query (the serializer's pages read their keys, then
        # their rows), and a page with errors in fewer than the serializer's.
        walks, plain_walks = seen["walks"], seen["plain_walks"]
        assert walks["back"] == plain_walks["back"]
        assert [run["id"] for page in reversed(walks["back"]) for run in page["body"]["results"]] == [
            run["id"] for run in seen["rendered"]
        ]
        succeeded = walks["succeeded"]
        assert succeeded == plain_walks["succeeded"]
        assert {page["body"]["count"] for page in succeeded} == {12}
        assert [run["status"] for page in succeeded for run in page["body"]["results"]] == ["succeeded"] * 12
        assert walks["queries"][1] == 1 < plain_walks["queries"][1]
        assert walks["queries"][0] < plain_walks["queries"][0]
        # Pages by offset are rendered alike, in the same order.
        assert out[username + "_offsets"]["runs"] == seen["rendered"]
        assert out[username + "_offsets"]["rendered_sql"] == 3
    reader, dba = out["reader"]["rendered"], out["dba"]["rendered"]
    errors = [run["error"] for run in reader if run["error"]]
    assert len(errors) == 6
    assert not any("db-7.internal.example" in json.dumps(error) for error in errors)  # redacted for a reader
    assert all("db-7.internal.example" in json.dumps(run["error"]) for run in dba if run["error"])
    times = [run["completed_at"] for run in reader if run["completed_at"]]
    assert "2026-03-04T05:06:08Z" in times  # a whole second: no fraction, as the serializer shows it
    assert any(run["retry_at"] == "2026-03-04T05:06:07.000006Z" for run in reader)
    assert {run["tenant"] for run in reader} == {"acme", None}
    assert "not-shown-anywhere" not in json.dumps(out)
    # After runs changed (by queryset and by model) and the connection and tenant were renamed: still what the
    # serializer shows, read from the stored JSON.
    changed = out["changed"]
    assert changed["rendered_sql"] == 3
    by_id = {run["id"]: run for run in changed["expected"]}
    assert changed["rendered"] == [by_id[run["id"]] for run in changed["rendered"]]
    assert len(changed["rendered"]) == 60
    late = [run for run in changed["rendered"] if run["phase"] == 1]
    assert {run["status"] for run in late} == {"cancelled"}
    assert {run["completed_at"] for run in late} == {"2026-03-04T05:06:07.000005Z"}
    assert all(run["applied_versions"] == [{"version": "9", "script": "V9__late.sql"}] for run in late)
    assert any(run["waiting"] == "pid 7 holds a lock" for run in changed["rendered"])
    assert {run["connection"] for run in changed["rendered"]} == {"shared-eu-renamed"}
    assert {run["tenant"] for run in changed["rendered"]} == {"acme-renamed", None}


LIST_CHILD = PROLOGUE + textwrap.dedent(
    """
    whole = datetime(2026, 3, 4, 5, 6, 7, tzinfo=tz.utc)
    statuses = ["completed", "failed", "cancelled", "rolled_back", "pending", "in_progress"]
    # Totals and outcomes whose percentage rounds on a tie (1 of 16: 6.25), repeats (1 of 3), or has no target.
    counts = [(16, 1, 0), (3, 1, 1), (0, 0, 0), (7, 7, 0), (10000, 3333, 1), (8, 0, 3)]
    executions = []
    for n in range(40):
        total, succeeded, failed = counts[n % len(counts)]
        text = texts[n % len(texts)]
        executions.append(MigrationExecution.objects.create(
            kind=["migrate", "rollback"][n % 2],
            scope=["tenant", "all", "shared"][n % 3],
            filters={"regions": [text or "eu-west"], "tenants": [], "connections": ["shared-eu"]} if n % 2 else {},
            dry_run=n % 3 == 0,
            status=statuses[n % len(statuses)],
            executed_by=f"user {text}",
            parent=executions[0] if n and n % 4 == 0 else None,
            cancel_requested=n % 5 == 0,
            error="could not connect to db-7.internal.example:6543 as svc_fleet" if n % 9 == 4 else "",
            targets_total=total,
            targets_succeeded=succeeded,
            targets_failed=failed,
            targets_skipped=n % 2 if total > succeeded + failed else 0,
            run_duration_ms=45 * succeeded,
            runs_timed=succeeded,
            failure_budget=["0", "2", "5%"][n % 3],
            wave_pause_s=n * 7,
            wave_approval=n % 2 == 0,
            waiting="approval" if n % 6 == 4 else "",
        ))
        MigrationExecution.objects.filter(pk=executions[-1].pk).update(
            created_at=whole + timedelta(minutes=n, microseconds=n if n % 2 else 0),
            started_at=whole + timedelta(seconds=n, microseconds=1001 * n) if n % 3 else None,
            completed_at=whole + timedelta(hours=n) if n % 4 else None,
        )
    running = MigrationExecution.objects.filter(status="in_progress").first()
    TargetRun.objects.create(
        execution=running, connection=target, schema_name="tenant_r", database_type="tenant", status="running",
        started_at=whole,
    )

    from django.utils import timezone
    now = timezone.now()
    timezone.now = lambda: now  # an unfinished execution's ETA is counted from now: the same in every page

    def walk(client, url):
        pages, queries = [], []
        while url:
            with CaptureQueriesContext(connection) as captured:
                response = client.get(url)
            assert response.status_code == 200, response.content[:500]
            queries.append([query["sql"] for query in captured.captured_queries])
            pages.append({"type": response["Content-Type"], "body": json.loads(response.content)})
            url = pages[-1]["body"]["next"]
        return pages, queries

    out = {"rendered_here": selectors.rows_rendered_here()}
    rendered_here = selectors.rows_rendered_here
    for user in (reader, admin):
        client = APIClient()
        client.force_authenticate(user)
        request = APIRequestFactory().get("/")
        request.user = user
        ordered = list(selectors.execution_list().order_by("-created_at"))
        expected = json.loads(JSONRenderer().render(
            ExecutionSerializer(ordered, many=True, context={"request": request}).data
        ))
        seen = {"expected": expected}
        lists = (("all", "/api/v1/migrations/?limit=15"), ("failed", "/api/v1/migrations/?status=failed&limit=3"))
        for name, url in lists:
            rendered, queries = walk(client, url)
            selectors.rows_rendered_here = lambda: False
            try:
                plain, plain_queries = walk(client, url)
            finally:
                selectors.rows_rendered_here = rendered_here
            seen[name] = {
                "rendered": [e for page in rendered for e in page["body"]["results"]],
                "plain": [e for page in plain for e in page["body"]["results"]],
                "envelopes": [{k: v for k, v in page["body"].items() if k != "results"} for page in rendered],
                "plain_envelopes": [{k: v for k, v in page["body"].items() if k != "results"} for page in plain],
                "types": sorted({page["type"] for page in rendered + plain}),
                "rendering": [sum("listed" in q for q in page) for page in queries],
                "counting": [sum("count(" in q.lower() for q in page) for page in queries],
                "plain_counting": [sum("count(" in q.lower() for q in page) for page in plain_queries],
                "queries": [len(page) for page in queries],
                "plain_queries": [len(page) for page in plain_queries],
                "plain_rendering": sum("listed" in q for page in plain_queries for q in page),
            }
        out[user.username] = seen
    print(json.dumps(out))
    """
)


def test_the_executions_list_rendered_by_postgresql_shows_what_the_serializer_shows(pg_control):
    out = run_child(LIST_CHILD, pg_control)
    for username in ("reader", "dba"):
        seen = out[username]
        assert len(seen["expected"]) == 40
        by_id = {execution["id"]: execution for execution in seen["expected"]}
        for name in ("all", "failed"):
            pages = seen[name]
            # Newest first as the serializer's pages, every field equal, envelopes alike.
            assert pages["rendered"] == pages["plain"]
            assert pages["rendered"] == [by_id[e["id"]] for e in pages["rendered"]]
            assert pages["envelopes"] == pages["plain_envelopes"]
            assert pages["types"] == ["application/json"]
            assert all(count == 1 for count in pages["rendering"]), (pages["rendering"], pages["queries"])
            assert pages["plain_rendering"] == 0
        # The whole list's count is read from the rows the triggers keep, whoever shows the executions; a list
        # narrowed by status still counts.
        assert all(count == 0 for count in seen["all"]["counting"] + seen["all"]["plain_counting"])
        assert {envelope["count"] for envelope in seen["all"]["envelopes"]} == {40}
        assert all(count == 1 for count in seen["failed"]["counting"] + seen["failed"]["plain_counting"])
        assert [e["id"] for e in seen["all"]["rendered"]] == [e["id"] for e in seen["expected"]]
        assert {e["status"] for e in seen["failed"]["rendered"]} == {"failed"}
        assert len(seen["failed"]["rendered"]) == 7
        # The keys, and the unfinished and failed ones whole, beside what the serializer's pages read: no query
        # per execution shown.
        for name in ("all", "failed"):
            pairs = zip(seen[name]["queries"], seen[name]["plain_queries"], strict=True)
            assert all(queries <= plain + 2 for queries, plain in pairs), seen[name]
    reader, dba = out["reader"]["all"]["rendered"], out["dba"]["all"]["rendered"]
    errors = [e["error"] for e in reader if e["error"]]
    assert len(errors) == 4
    assert not any("db-7.internal.example" in error for error in errors)  # redacted for a reader
    assert all("db-7.internal.example" in e["error"] for e in dba if e["error"])
    progress = {(e["progress"]["total"], e["progress"]["completed"]): e["progress"] for e in reader}
    assert progress[(16, 1)]["completion_percentage"] == 6.2  # Python's rounding of 6.25, as the serializer's
    assert progress[(0, 0)]["completion_percentage"] == 100.0
    assert any(e["progress"]["current_targets"] == ["shared-eu/tenant_r"] for e in reader)
    assert any(e["progress"]["estimated_completion"] for e in reader)
    assert "2026-03-04T05:06:07Z" in {e["created_at"] for e in reader}  # a whole second: no fraction
    assert "not-shown-anywhere" not in json.dumps(out)


COUNT_CHILD = textwrap.dedent(
    """
    import json
    import os

    import django
    django.setup()
    import psycopg
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    from migrations_runner import selectors
    from migrations_runner.models import MigrationExecution

    table = MigrationExecution._meta.db_table
    columns = [field.column for field in MigrationExecution._meta.concrete_fields if field.column != "id"]
    copy = (  # a copy of n executions with new keys, written by another connection
        f"INSERT INTO {table} (id, {', '.join(columns)}) SELECT gen_random_uuid(), {', '.join(columns)}"
        f" FROM {table} LIMIT %s"
    )

    def both(step):
        seen.append({"step": step, "kept": selectors.executions_count(), "counted": MigrationExecution.objects.count()})

    def kept_rows():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM migrations_runner_execution_count")
            return cursor.fetchone()[0]

    seen = []
    out = {"rendered_here": selectors.rows_rendered_here(), "seen": seen}
    both("empty")
    MigrationExecution.objects.bulk_create(
        [MigrationExecution(scope="tenant", executed_by="t") for _ in range(25)], batch_size=10
    )
    both("25 in 3 statements")
    MigrationExecution.objects.create(scope="all", executed_by="t")
    both("one more")
    MigrationExecution.objects.filter(scope="all").delete()
    both("one deleted")
    try:
        with transaction.atomic():
            MigrationExecution.objects.create(scope="all", executed_by="t")
            both("inside a transaction")
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    both("rolled back")

    # Another transaction writes and holds its rows meanwhile: this one neither waits nor counts them.
    other = psycopg.connect(os.environ["ADMIN_DATABASE_URL"])
    other.execute(copy, [7])
    with transaction.atomic():
        MigrationExecution.objects.bulk_create([MigrationExecution(scope="tenant", executed_by="t") for _ in range(3)])
        MigrationExecution.objects.filter(pk=MigrationExecution.objects.order_by("created_at")[0].pk).delete()
    both("while another transaction holds 7 more")
    other.commit()
    both("after it committed")
    other.execute(copy, [4])
    other.rollback()
    both("after it rolled 4 back")
    other.close()
    out["rows_kept"] = kept_rows()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} CASCADE")
    both("truncated")
    MigrationExecution.objects.create(scope="all", executed_by="t")
    both("one after truncating")
    out["rows_kept_at_end"] = kept_rows()

    # The admin's list of executions reads the kept number too, unless filtered.
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    MigrationExecution.objects.bulk_create(
        [MigrationExecution(scope="tenant", executed_by="t", status="failed") for _ in range(2)]
    )
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="root-password"))
    admin = {}
    for name, url in (("all", ""), ("failed", "?status__exact=failed")):
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/admin/migrations_runner/migrationexecution/" + url)
        assert response.status_code == 200, response.content[:300]
        queries = [query["sql"].lower() for query in captured.captured_queries]
        admin[name] = {
            "shown": response.content.decode(),
            "kept": sum("migrations_runner_execution_count" in q for q in queries),
            "counted": sum("count(" in q and table in q for q in queries),
        }
    out["admin"] = admin
    print(json.dumps(out))
    """
)


def test_the_executions_count_kept_by_postgresql_is_what_counting_says(pg_control):
    out = run_child(COUNT_CHILD, pg_control)
    seen = {step["step"]: step for step in out["seen"]}
    assert all(step["kept"] == step["counted"] for step in out["seen"]), json.dumps(out["seen"])
    steps = ("empty", "25 in 3 statements", "one more", "one deleted")
    assert [seen[name]["kept"] for name in steps] == [0, 25, 26, 25]
    assert seen["inside a transaction"]["kept"] == 26
    assert seen["rolled back"]["kept"] == 25
    assert seen["while another transaction holds 7 more"]["kept"] == 27
    assert seen["after it committed"]["kept"] == 34
    assert seen["after it rolled 4 back"]["kept"] == 34
    assert seen["truncated"]["kept"] == 0
    assert seen["one after truncating"]["kept"] == 1
    # Folded as it goes: a few rows, not one per statement.
    assert out["rows_kept"] <= 2
    assert out["rows_kept_at_end"] <= 2
    admin = out["admin"]
    assert (admin["all"]["kept"], admin["all"]["counted"]) == (1, 0)
    assert "3 migration executions" in admin["all"]["shown"]
    assert (admin["failed"]["kept"], admin["failed"]["counted"]) == (0, 1)
    assert "2 migration executions" in admin["failed"]["shown"]
