"""The fleet view and the migration sets page: content, permissions, the Run form pre-fill, and a fixed number of
queries whatever the fleet's size."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from infra_site import roles
from migrations_runner import selectors
from tests.support.fleet import BulkFleet, bulk_fleet, clear_bulk_fleet

pytestmark = pytest.mark.django_db

FLEET = reverse("admin:migrations_runner_fleet")
MIGRATE = reverse("admin:migrations_runner_fleet_migrate")
SETS = reverse("admin:migrations_runner_sets")
RUN = reverse("admin:migrations_runner_migrationexecution_run")


def expected_counts(fleet: BulkFleet) -> dict[str, int]:
    counts = dict.fromkeys(selectors.FLEET_STATES, 0)
    for state in fleet.states.values():
        counts[state] += 1
    counts["up_to_date"] += 3  # admin, shared-us, analytics
    counts["behind"] += 1  # shared-eu
    return counts


def test_fleet_counts_classify_every_target_from_its_latest_run():
    fleet = bulk_fleet(20, history=2)
    counts = selectors.fleet_counts()
    assert counts == {**expected_counts(fleet), "total": 24}


def test_fleet_page_lists_databases_then_tenants_with_version_pending_and_state():
    fleet = bulk_fleet(12)
    page = selectors.fleet_targets(per_page=10)
    assert page.total == 16
    assert page.num_pages == 2
    assert [t.connection_name for t in page.targets[:4]] == ["admin", "shared-eu", "shared-us", "analytics"]
    shared_eu = page.targets[1]
    assert (shared_eu.version, shared_eu.pending, shared_eu.state) == ("6", 1, "behind")
    tenants = page.targets[4:] + selectors.fleet_targets(per_page=10, page=2).targets
    assert [t.tenant_slug for t in tenants] == sorted(
        (t.slug for t in fleet.tenants), key=lambda slug: (fleet.tenants[int(slug[1:])].connection.region, slug)
    )
    by_slug = {t.tenant_slug: t for t in tenants}
    assert {slug: t.state for slug, t in by_slug.items()} == fleet.states
    assert (by_slug["t00001"].version, by_slug["t00001"].pending) == ("5", 4)
    assert (by_slug["t00004"].version, by_slug["t00004"].pending) == (None, None)
    assert by_slug["t00003"].error_message == "sql trouble"


@pytest.mark.parametrize("state", ["up_to_date", "behind", "drifted", "failing", "unknown"])
def test_fleet_state_filter_matches_the_counts(state):
    fleet = bulk_fleet(25)
    page = selectors.fleet_targets(state=state, per_page=100)
    assert {t.state for t in page.targets} <= {state}
    assert page.total == expected_counts(fleet)[state]


def test_fleet_view_shows_counts_highlights_and_no_buttons_to_a_reader(admin_as):
    bulk_fleet(10)
    response = admin_as(roles.MIGRATIONS_READ).get(FLEET)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="count-behind"><strong>3<' in html  # two tenants and shared-eu
    assert 'id="count-drifted"><strong>2<' in html
    assert html.count('class="infra-row-bad"') == 4  # drifted and failing tenants
    assert html.count('class="infra-row-warn"') == 3
    assert "t00003" in html
    assert "sql trouble" in html
    assert 'name="target"' not in html
    assert "Migrate these" not in html
    assert "Migrate all behind" not in html


def test_fleet_view_filters_by_region_and_state(admin_as):
    bulk_fleet(10)
    html = admin_as(roles.MIGRATIONS_READ).get(FLEET, {"region": "us-east", "state": "behind"}).content.decode()
    assert 'data-state="behind"' in html
    for state in ("up_to_date", "drifted", "failing", "unknown"):
        assert f'data-state="{state}"' not in html
    assert "t00001" in html
    assert "t00006" not in html  # t00006 is behind but in eu-west


def test_fleet_view_offers_migrate_buttons_to_an_executor(admin_as):
    bulk_fleet(5)
    html = admin_as(roles.MIGRATIONS_EXECUTE).get(FLEET).content.decode()
    assert 'value="t:t00001"' in html
    assert 'value="c:shared-eu"' in html
    assert "Migrate these" in html
    assert "Migrate all behind in this filter" in html


def test_migrate_these_opens_the_run_form_with_the_checked_tenants(admin_as):
    bulk_fleet(5)
    response = admin_as(roles.MIGRATIONS_EXECUTE).get(MIGRATE, {"target": ["t:t00001", "t:t00003"]})
    assert response.status_code == 302
    url = urlparse(response["Location"])
    assert url.path == RUN
    assert parse_qs(url.query) == {"scope": ["tenant"], "tenants": ["t00001", "t00003"]}


def test_migrate_these_names_regional_databases_with_the_regional_scope(admin_as):
    bulk_fleet(2)
    response = admin_as(roles.MIGRATIONS_EXECUTE).get(MIGRATE, {"target": ["c:shared-eu", "c:analytics"]})
    assert parse_qs(urlparse(response["Location"]).query) == {
        "scope": ["regional"],
        "connections": ["analytics", "shared-eu"],
    }


def test_migrate_these_refuses_tenants_with_databases(admin_as):
    bulk_fleet(2)
    client = admin_as(roles.MIGRATIONS_EXECUTE)
    response = client.get(MIGRATE, {"target": ["c:admin", "t:t00001"]}, follow=True)
    assert response.redirect_chain[0][0] == FLEET
    assert "A run takes one kind of target" in response.content.decode()


def test_migrate_all_behind_names_the_behind_targets_of_the_filter(admin_as):
    bulk_fleet(10)
    response = admin_as(roles.MIGRATIONS_EXECUTE).get(MIGRATE, {"behind": "1", "database_type": "tenant"})
    assert parse_qs(urlparse(response["Location"]).query) == {"scope": ["tenant"], "tenants": ["t00001", "t00006"]}


def test_migrate_all_behind_passes_the_filter_when_the_kinds_mix(admin_as):
    bulk_fleet(10)
    response = admin_as(roles.MIGRATIONS_EXECUTE).get(MIGRATE, {"behind": "1", "region": "eu-west"})
    assert parse_qs(urlparse(response["Location"]).query) == {"scope": ["all"], "regions": ["eu-west"]}


def test_migrate_redirect_needs_the_execute_role(admin_as):
    bulk_fleet(2)
    client = admin_as(roles.MIGRATIONS_READ)
    assert client.get(MIGRATE, {"target": ["t:t00001"]}).status_code == 403
    assert client.post(MIGRATE, {"target": ["t:t00001"]}).status_code == 403


def test_fleet_and_sets_need_migrations_read(admin_as):
    client = admin_as(roles.DATABASES_MANAGE)
    assert client.get(FLEET).status_code == 403
    assert client.get(SETS).status_code == 403


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(db_connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("state", ["", "behind", "unknown"])
def test_fleet_view_queries_do_not_grow_with_the_fleet(admin_as, django_assert_max_num_queries, state):
    client = admin_as(roles.MIGRATIONS_EXECUTE)
    url = f"{FLEET}?state={state}"
    bulk_fleet(10)
    small = _queries(client, url)
    clear_bulk_fleet()
    bulk_fleet(1000, history=2)
    with django_assert_max_num_queries(small):
        response = client.get(url)
    assert response.status_code == 200
    # Session and roles 3, regions 1, databases and their runs 2, tenants counted and grouped 2, the page and
    # its runs 2 (+1 count with a state filter), the admin's permissions 2, the page's schema fingerprints 1 (+1
    # for their groups' majorities once any is recorded: tests/migrations_runner/test_fingerprints.py).
    assert small <= 14


def test_sets_page_lists_versions_checksums_undo_and_repeatables(admin_as, sets_dir):
    response = admin_as(roles.MIGRATIONS_READ).get(SETS)
    assert response.status_code == 200
    html = response.content.decode()
    tenant_set = selectors.sets_load(strict=False)["tenant"]
    script = tenant_set.versions[0]
    assert f'title="{script.checksum}">{script.checksum[:12]}…' in html
    assert "V9__index_due_dates_concurrently.sql" in html
    assert "no: runs outside a transaction" in html  # V9 creates an index concurrently
    assert "U9__index_due_dates_concurrently.sql" in html
    assert "R__views.sql" in html
    assert "problem(s)" not in html


def test_sets_page_shows_problems_in_red(admin_as, sets_dir):
    (sets_dir / "tenant" / "V10_bad name.sql").write_text("select 1;")
    (sets_dir / "admin" / "V2__duplicate.sql").write_text("select 1;")
    html = admin_as(roles.MIGRATIONS_READ).get(SETS).content.decode()
    assert 'id="set-problems-banner"' in html
    assert '<li class="infra-error">V10_bad name.sql: malformed file name' in html
    assert html.count('<li class="infra-error">') == 2


def test_app_list_holds_the_fleet_and_the_sets_for_readers_only(admin_as, make_user, client):
    html = admin_as(roles.MIGRATIONS_READ).get(reverse("admin:app_list", args=["migrations_runner"])).content.decode()
    assert f'href="{FLEET}"' in html
    assert f'href="{SETS}"' in html
    client.force_login(make_user(roles.DATABASES_READ))
    html = client.get(reverse("admin:index")).content.decode()
    assert f'href="{FLEET}"' not in html
