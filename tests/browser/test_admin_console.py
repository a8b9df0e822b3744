"""The operator console in a real browser (Debian's chromium, headless, driven by Playwright) on the live server,
with a real qcluster running what the console submits: Run -> plan -> confirm -> live progress -> fleet view, a
failure's SQLSTATE and statement then Retry failed, and Roll back.

Django refuses ORM calls while Playwright's event loop runs, so each test reads the control database before it
opens the browser or after it closed it; in between only the fleet's databases are touched (psycopg).
Screenshots go to ``var/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from playwright.sync_api import Page, sync_playwright
from psycopg import sql

from infra_site import roles
from migrations_runner import services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import create_owned_table
from tests.support.tools import CHROMIUM_FLAGS, require_tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    # The live server runs in a thread and the qcluster in other processes: they must see committed rows.
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(150),
]

SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
PASSWORD = "operator-password-1"
OPERATOR_ROLES = (roles.MIGRATIONS_EXECUTE, roles.MIGRATIONS_READ, roles.DATABASES_READ)
STEP_TIMEOUT_MS = 30_000
FINISH_TIMEOUT_MS = 90_000
FINISHED = '#progress[data-finished="true"]'
ALL_TENANT_VERSIONS = "1, 2, 3, 4, 5, 6, 7, 8, 9"
REPEATABLE = "R__views.sql"


@pytest.fixture
def chromium() -> str:
    """Debian's chromium: without it these tests skip, or fail under CI=true (``require_tool``)."""
    return require_tool("chromium")


def admin_url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def execution_url(name: str, execution_id) -> str:
    return admin_url(f"migrations_runner_migrationexecution_{name}", execution_id)


@contextmanager
def console(chromium: str, base_url: str, username: str) -> Iterator[tuple[Page, list[str]]]:
    """A chromium page logged in through the local login form, and the list of failed responses it saw."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            failures: list[str] = []
            page.on(
                "response",
                lambda r: (
                    failures.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            changelist = admin_url("migrations_runner_migrationexecution_changelist")
            page.goto(f"{base_url}/admin/login/?next={changelist}")
            page.fill("#id_username", username)
            page.fill("#id_password", PASSWORD)
            page.click("#login-form input[type=submit]")
            page.wait_for_url(f"{base_url}{changelist}")
            yield page, failures
        finally:
            browser.close()


def stylesheets_loaded(page: Page) -> list[str]:
    """The stylesheets the page applied (a sheet that failed to load has no rules)."""
    return page.evaluate(
        """() => Array.from(document.styleSheets)
              .filter(s => s.href && s.cssRules.length > 0)
              .map(s => new URL(s.href).pathname)"""
    )


def run_all_tenants(page: Page) -> str:
    """Open Run migrations from the executions list, pick scope tenant, check the plan, confirm; the progress URL."""
    page.click("#run-migrations")
    page.wait_for_selector("#run-form")
    page.select_option("#id_scope", "tenant")
    page.click("#preview-plan")
    page.wait_for_selector("#confirm-form")
    assert page.text_content("#plan-targets").strip() == "6"
    pending = page.eval_on_selector_all(
        "#plan-targets-table tbody tr", "rows => rows.map(r => r.cells[5].innerText.trim())"
    )
    assert pending == [f"{ALL_TENANT_VERSIONS}, {REPEATABLE}"] * 6
    page.click("#confirm-run")
    page.wait_for_url("**/progress/")
    return page.url


def watch_until_finished(page: Page) -> bool:
    """Wait on the progress page until the execution ended, proving the page was not reloaded meanwhile; returns
    whether the first render already showed it finished (then no refresh was needed)."""
    page.wait_for_load_state("load")
    page.evaluate("() => { window.__marker = 1; }")
    navigations: list[str] = []

    def navigated(frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    page.on("framenavigated", navigated)
    finished_at_load = page.get_attribute("#progress", "data-finished") == "true"
    page.wait_for_selector(FINISHED, timeout=FINISH_TIMEOUT_MS)
    page.remove_listener("framenavigated", navigated)
    assert page.evaluate("() => window.__marker") == 1, "the progress page was reloaded"
    assert navigations == []
    return finished_at_load


def fleet_rows(page: Page) -> dict[str, dict[str, str]]:
    """The fleet table's tenant rows by slug: each cell under its column header, and the row's state."""
    rows = page.eval_on_selector_all(
        "#fleet-targets tbody tr[data-state]",
        """(rows) => {
            const headers = Array.from(document.querySelectorAll('#fleet-targets thead th'))
                .map(h => h.textContent.trim());
            return rows.map(r => {
                const row = {state: r.dataset.state};
                Array.from(r.cells).forEach((c, i) => { row[headers[i]] = c.innerText.trim(); });
                return row;
            });
        }""",
    )
    return {row["Tenant"]: row for row in rows if row["Tenant"] != "-"}


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def history_versions(fleet, tenant) -> set[str]:
    """The versions with a ``SQL`` row in the tenant schema's ``infra_schema_history``."""
    with fleet.connect(tenant.connection.name) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.infra_schema_history WHERE type = 'SQL'").format(
                sql.Identifier(tenant.schema_name)
            )
        ).fetchall()
    return {version for (version,) in rows}


def test_an_operator_runs_the_tenants_and_watches_the_progress_reach_100_percent_without_a_reload(
    chromium, small_fleet, sets_dir, cluster, make_user, live_server
):
    # A slower script, so the first render of the progress page catches the execution running.
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(0.5);\n" + slow.read_text())
    operator = make_user(*OPERATOR_ROLES, password=PASSWORD)
    slugs = {tenant.slug for tenant in small_fleet.tenants}

    with console(chromium, live_server.url, operator.username) as (page, failures):
        assert "/static/migrations_runner/admin.css" in stylesheets_loaded(page)
        assert "/static/admin/css/base.css" in stylesheets_loaded(page)
        progress_url = run_all_tenants(page)
        finished_at_load = watch_until_finished(page)
        percent = page.text_content("#progress-percent").strip()
        succeeded = page.text_content("#count-succeeded").strip()
        failed = page.text_content("#count-failed").strip()
        screenshot(page, "progress.png")

        page.goto(live_server.url + admin_url("migrations_runner_fleet"))
        assert "/static/migrations_runner/admin.css" in stylesheets_loaded(page)
        tenants = fleet_rows(page)
        screenshot(page, "fleet.png")
        assert failures == []

    assert not finished_at_load, "the execution had ended before the progress page first rendered"
    assert (percent, succeeded, failed) == ("100.0%", "6", "0")
    execution = MigrationExecution.objects.get()
    assert progress_url.endswith(execution_url("progress", execution.pk))
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.executed_by == operator.username
    assert set(tenants) == slugs
    assert {slug: (row["Version"], row["Pending"], row["state"]) for slug, row in tenants.items()} == dict.fromkeys(
        slugs, ("9", "0", "up_to_date")
    )


def test_a_failure_shows_its_sqlstate_and_statement_and_retry_failed_runs_only_that_target(
    chromium, small_fleet, cluster, make_user, live_server
):
    victim = small_fleet.tenants[0]
    label = f"shared-us/{victim.schema_name}"
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    operator = make_user(*OPERATOR_ROLES, password=PASSWORD)

    with console(chromium, live_server.url, operator.username) as (page, failures):
        run_all_tenants(page)
        watch_until_finished(page)
        assert page.text_content("#count-failed").strip() == "1"
        page.click("#execution-detail-link")
        failed_row = page.locator("#target-runs tbody tr", has_text=label)
        failure = failed_row.inner_text()
        screenshot(page, "execution-detail.png")

        with small_fleet.connect("shared-us") as conn:
            conn.execute(
                sql.SQL("DROP TABLE {}.projects").format(sql.Identifier(victim.schema_name)),
            )
        page.click("#retry-failed")
        retried = page.inner_text("#retry-targets")
        page.click("#confirm-action")
        page.wait_for_url("**/progress/")
        retry_url = page.url
        watch_until_finished(page)
        retry_counts = (
            page.text_content("#progress-percent").strip(),
            page.text_content("#count-succeeded").strip(),
            page.text_content("#count-failed").strip(),
        )
        assert failures == []

    assert "SQLSTATE 42P07" in failure
    assert "CREATE TABLE projects" in failure  # the failing statement
    assert retried.startswith(label)
    assert retry_counts == ("100.0%", "1", "0")
    first = MigrationExecution.objects.get(parent__isnull=True)
    retry = MigrationExecution.objects.get(parent=first)
    assert retry_url.endswith(execution_url("progress", retry.pk))
    assert [run.label for run in retry.targets.select_related("connection")] == [label]
    assert retry.status == ExecutionStatus.COMPLETED
    assert history_versions(small_fleet, victim) == {str(v) for v in range(1, 10)}


def test_rolling_back_lists_the_undo_scripts_and_returns_the_tenants_to_the_earlier_version(
    chromium, small_fleet, sets_dir, cluster, make_user, live_server, tmp_path
):
    # The fleet at version 5 first (versions 6-9 kept aside), then an execution that applies 6-9.
    aside = tmp_path / "aside"
    aside.mkdir()
    later_scripts = list((sets_dir / "tenant").glob("[VU][6-9]__*.sql"))
    for script in later_scripts:
        script.rename(aside / script.name)
    services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="setup",
        origin=Origin.API,
        wait=True,
    )
    for script in later_scripts:
        (aside / script.name).rename(script)
    later = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="setup",
        origin=Origin.API,
        wait=True,
    )
    assert later.status == ExecutionStatus.COMPLETED
    operator = make_user(*OPERATOR_ROLES, password=PASSWORD)

    with console(chromium, live_server.url, operator.username) as (page, failures):
        page.goto(live_server.url + execution_url("change", later.pk))
        page.click("#roll-back")
        steps = page.eval_on_selector_all(
            "#rollback-steps tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        page.click("#confirm-action")
        page.wait_for_url("**/progress/")
        watch_until_finished(page)
        percent = page.text_content("#progress-percent").strip()
        page.goto(live_server.url + admin_url("migrations_runner_fleet"))
        tenants = fleet_rows(page)
        assert failures == []

    undo_scripts = {
        "9": "U9__index_due_dates_concurrently.sql",
        "8": "U8__add_tasks_estimate_points.sql",
        "7": "U7__invoice_total_trigger.sql",
        "6": "U6__create_invoices.sql",
    }
    assert len(steps) == 6 * 4
    assert {(version, script) for _, version, script in steps} == set(undo_scripts.items())
    assert [version for _, version, _ in steps[:4]] == ["9", "8", "7", "6"]  # newest first
    assert percent == "100.0%"
    rollback = MigrationExecution.objects.get(parent=later)
    assert rollback.status == ExecutionStatus.COMPLETED
    for tenant in small_fleet.tenants:
        assert history_versions(small_fleet, tenant) == {"1", "2", "3", "4", "5"}, tenant.slug
    assert {row["Version"] for row in tenants.values()} == {"5"}


def test_the_plan_preview_shows_the_lint_findings_of_the_scripts_the_run_applies(
    chromium, small_fleet, sets_dir, make_user, live_server, settings
):
    settings.MIGRATION_LINT = "warn"
    (sets_dir / "tenant" / "V10__index_titles.sql").write_text(
        "-- Titles are searched.\nCREATE INDEX tasks_title_idx ON tasks (title);\n"
    )
    operator = make_user(*OPERATOR_ROLES, password=PASSWORD)
    with console(chromium, live_server.url, operator.username) as (page, failures):
        page.click("#run-migrations")
        page.wait_for_selector("#run-form")
        page.select_option("#id_scope", "tenant")
        page.click("#preview-plan")
        page.wait_for_selector("#confirm-form")
        caption = page.text_content("#plan-lint caption").strip()
        rows = page.eval_on_selector_all(
            "#plan-lint tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        confirm_enabled = page.is_enabled("#confirm-run")
        screenshot(page, "plan-lint.png")
        assert failures == []
    assert caption == "Lint of the scripts this run applies"
    assert len(rows) == 1
    script, line, rule, severity, statement, fix = rows[0]
    assert (script, line, rule, severity) == ("tenant/V10__index_titles.sql", "2", "index-not-concurrent", "error")
    assert "CREATE INDEX tasks_title_idx ON tasks (title);" in statement
    assert fix.startswith("Use CREATE INDEX CONCURRENTLY")
    assert confirm_enabled  # under warn the run may go on
