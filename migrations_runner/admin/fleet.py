"""The fleet view and the migration sets page: admin pages that belong to no model.

The fleet view reads only the control database (each target's latest target run), never the fleet's databases.
Its "Migrate" buttons open the Run form pre-filled with the selection; nothing runs from here.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from connections import selectors as registry
from connections.models import DatabaseType
from infra_site import roles
from infra_site.admin_site import project_site
from infra_site.errors import NotFound
from migrations_runner import selectors
from migrations_runner.checks import check_dependencies
from migrations_runner.models import Scope
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors import fingerprints

# The most targets "Migrate all behind" names one by one in the Run form's address; above, it passes the filter.
EXPLICIT_SELECTION_LIMIT = 100
STATE_LABELS = {
    "up_to_date": "Up to date",
    "behind": "Behind",
    "drifted": "Drifted",
    "failing": "Failing",
    "unknown": "Never run",
}
ROW_CLASSES = {"behind": "infra-row-warn", "drifted": "infra-row-bad", "failing": "infra-row-bad"}
# The status_badge colour of each state.
BADGES = {
    "up_to_date": "up_to_date",
    "behind": "behind",
    "drifted": "drifted",
    "failing": "failed",
    "unknown": "unknown",
}
# The scope that holds exactly the default-schema targets of these database types.
site = project_site()  # where the fleet's pages are registered

SCOPE_OF_DATABASES = {
    frozenset({DatabaseType.ADMIN}): Scope.ADMIN,
    frozenset({DatabaseType.SHARED}): Scope.REGIONAL,
    frozenset({DatabaseType.ANALYTICS}): Scope.REGIONAL,
    frozenset({DatabaseType.SHARED, DatabaseType.ANALYTICS}): Scope.REGIONAL,
    frozenset({DatabaseType.TENANT}): Scope.TENANT,
}
SCOPE_OF_TYPE_FILTER = {
    "": Scope.ALL,
    DatabaseType.ADMIN: Scope.ADMIN,
    DatabaseType.SHARED: Scope.REGIONAL,
    DatabaseType.ANALYTICS: Scope.REGIONAL,
    DatabaseType.TENANT: Scope.TENANT,
}


def require_role(request: HttpRequest, role: str) -> None:
    if not roles.has_role(request.user, role):
        raise PermissionDenied(f"This needs the role {role}.")


def page_context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


class FleetFilterForm(forms.Form):
    database_type = forms.ChoiceField(required=False, choices=[("", "All types"), *DatabaseType.choices])
    region = forms.ChoiceField(required=False)
    state = forms.ChoiceField(required=False, choices=[("", "All states"), *STATE_LABELS.items()])

    def __init__(self, data, *, regions: list[str]) -> None:
        super().__init__(data)
        region = self.fields["region"]
        assert isinstance(region, forms.ChoiceField)
        region.choices = [("", "All regions"), *((r, r) for r in regions)]

    def values(self) -> dict[str, str]:
        """The valid filters ('' where none or invalid)."""
        self.is_valid()
        return {name: self.cleaned_data.get(name) or "" for name in self.fields}


def _filters(request: HttpRequest) -> tuple[FleetFilterForm, dict[str, str]]:
    form = FleetFilterForm(request.GET, regions=selectors.fleet_regions())
    return form, form.values()


def _fleet_url(**filters: str) -> str:
    query = urlencode({name: value for name, value in filters.items() if value})
    return reverse("admin:migrations_runner_fleet") + (f"?{query}" if query else "")


def fleet_view(request: HttpRequest) -> HttpResponse:
    """Every target by database type and region: version, pending versions, drift, last execution."""
    require_role(request, roles.MIGRATIONS_READ)
    form, filters = _filters(request)
    try:
        page_number = int(request.GET.get("page") or 1)
    except ValueError:
        page_number = 1
    page, counts = selectors.fleet_overview(
        database_type=filters["database_type"] or None,
        region=filters["region"] or None,
        state=filters["state"] or None,
        page=page_number,
    )
    schemas = fingerprints.fingerprint_states(targets=page.targets)
    groups = [
        (
            kind,
            region,
            [
                (
                    target,
                    ROW_CLASSES.get(target.state, ""),
                    BADGES[target.state],
                    STATE_LABELS[target.state],
                    schemas.get((target.connection_name, target.schema_name)),
                )
                for target in targets
            ],
        )
        for (kind, region), targets in itertools.groupby(page.targets, key=lambda t: (t.database_type, t.region))
    ]
    cards = [
        (state, BADGES[state], label, counts[state], _fleet_url(**{**filters, "state": state}))
        for state, label in STATE_LABELS.items()
    ]
    filter_query = urlencode({name: value for name, value in filters.items() if value})
    behind_query = urlencode(
        {"behind": "1", **{name: filters[name] for name in ("database_type", "region") if filters[name]}}
    )
    return render(
        request,
        "admin/migrations_runner/fleet/fleet.html",
        page_context(
            request,
            "Fleet",
            form=form,
            filters=filters,
            page=page,
            groups=groups,
            counts=counts,
            cards=cards,
            state_labels=STATE_LABELS,
            filter_query=filter_query,
            behind_query=behind_query,
            page_numbers=_page_numbers(page.page, page.num_pages),
            can_execute=roles.has_role(request.user, roles.MIGRATIONS_EXECUTE),
        ),
    )


def _page_numbers(current: int, last: int) -> list[int | None]:
    """The page links to show: the first, the last, and two either side of the current one (None: a gap)."""
    shown = sorted({1, last, *range(max(1, current - 2), min(last, current + 2) + 1)})
    numbers: list[int | None] = []
    for number in shown:
        if numbers and number - numbers[-1] > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers


def _selection(tenants: list[str], databases: dict[str, str]) -> TargetSelection | None:
    """The Run form's pre-fill for exactly these tenants (slugs) or these databases' default schemas (name ->
    database type); None when one scope cannot hold them (tenants with databases, or admin with regional)."""
    if tenants and databases:
        return None
    if tenants:
        return TargetSelection(scope=Scope.TENANT, tenants=sorted(tenants))
    scope = SCOPE_OF_DATABASES.get(frozenset(DatabaseType(kind) for kind in databases.values()))
    return TargetSelection(scope=scope, connections=sorted(databases)) if scope else None


def _run_url(selection: TargetSelection) -> str:
    query = urlencode(selection.as_kwargs(), doseq=True)
    return reverse("admin:migrations_runner_migrationexecution_run") + "?" + query


def fleet_migrate_view(request: HttpRequest) -> HttpResponse:
    """Open the Run form pre-filled with the checked targets, or with every target behind in the filter."""
    require_role(request, roles.MIGRATIONS_EXECUTE)
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    _, filters = _filters(request)
    back = _fleet_url(**filters)
    if request.GET.get("behind"):
        behind = selectors.fleet_targets(
            database_type=filters["database_type"] or None,
            region=filters["region"] or None,
            state="behind",
            per_page=EXPLICIT_SELECTION_LIMIT,
        )
        if not behind.total:
            messages.info(request, "No target is behind in this filter.")
            return HttpResponseRedirect(back)
        selection = None
        if behind.total <= EXPLICIT_SELECTION_LIMIT:
            selection = _selection(
                [t.tenant_slug for t in behind.targets if t.tenant_slug],
                {t.connection_name: t.database_type for t in behind.targets if not t.tenant_slug},
            )
        if selection is None:
            selection = _filter_selection(filters)
            messages.info(
                request,
                f"{behind.total} targets are behind: the form holds the whole filter. The plan preview shows what "
                "each target would run; the targets already up to date have nothing to run.",
            )
        return HttpResponseRedirect(_run_url(selection))
    keys = request.GET.getlist("target")
    tenants = [key[2:] for key in keys if key.startswith("t:")]
    names = [key[2:] for key in keys if key.startswith("c:")]
    databases = dict(registry.connection_list(names=names).values_list("name", "database_type")) if names else {}
    if not tenants and not databases:
        messages.warning(request, "Check the targets to migrate first.")
        return HttpResponseRedirect(back)
    selection = _selection(tenants, databases)
    if selection is None:
        messages.error(
            request,
            "A run takes one kind of target: tenants, admin databases, or regional (shared and analytics) "
            "databases. Check one kind at a time.",
        )
        return HttpResponseRedirect(back)
    return HttpResponseRedirect(_run_url(selection))


def _filter_selection(filters: dict[str, str]) -> TargetSelection:
    """The Run form's pre-fill for every target of a fleet filter (database type, region)."""
    kind = filters["database_type"]
    connections: list[str] = []
    if kind in (DatabaseType.SHARED, DatabaseType.ANALYTICS):
        # The regional scope holds both types: name the databases of the one filtered on.
        connections = list(registry.connection_list(is_active=True, database_type=kind).values_list("name", flat=True))
    regions = [filters["region"]] if filters["region"] else []
    return TargetSelection(scope=SCOPE_OF_TYPE_FILTER[kind], regions=regions, connections=connections)


def sets_view(request: HttpRequest) -> HttpResponse:
    """The migration sets on disk: per database type, each version with its checksum, undo and transactionality,
    the repeatable scripts, and the problems ``check_migration_sets`` reports."""
    require_role(request, roles.MIGRATIONS_READ)
    sets: list[dict[str, Any]] = []
    for kind, mset in selectors.sets_load(strict=False).items():
        versions = [
            {
                "version": str(script.version),
                "description": script.description,
                "filename": script.filename,
                "checksum": script.checksum,
                "transactional": script.transactional,
                "undo": mset.undo.get(script.require_version()),
            }
            for script in mset.versions
        ]
        sets.append({"type": kind, "set": mset, "versions": versions})
    dependency_problems = [error.msg for error in check_dependencies()]
    return render(
        request,
        "admin/migrations_runner/sets/sets.html",
        page_context(
            request,
            "Migration sets",
            sets=sets,
            problem_count=sum(len(entry["set"].problems) for entry in sets) + len(dependency_problems),
            dependency_problems=dependency_problems,
        ),
    )


site.register_view(
    "migrations_runner/fleet/",
    fleet_view,
    name="migrations_runner_fleet",
    title="Fleet",
    app_label="migrations_runner",
    role=roles.MIGRATIONS_READ,
)
site.register_view("migrations_runner/fleet/migrate/", fleet_migrate_view, name="migrations_runner_fleet_migrate")
site.register_view(
    "migrations_runner/sets/",
    sets_view,
    name="migrations_runner_sets",
    title="Migration sets",
    app_label="migrations_runner",
    role=roles.MIGRATIONS_READ,
)


def fleet_schemas_view(request: HttpRequest) -> HttpResponse:
    """The schema fingerprints: per set and version the majority fingerprint, and every outlier with its diff."""
    require_role(request, roles.MIGRATIONS_READ)
    report = fingerprints.fingerprint_report()
    return render(
        request,
        "admin/migrations_runner/fleet/schemas.html",
        page_context(request, "Schema fingerprints", report=report),
    )


def fleet_schema_view(request: HttpRequest, fingerprint_id: int) -> HttpResponse:
    """One target's schema fingerprint against its set version's majority, with the diff when it differs."""
    require_role(request, roles.MIGRATIONS_READ)
    try:
        target = fingerprints.fingerprint_target_get(fingerprint_id=fingerprint_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    return render(
        request,
        "admin/migrations_runner/fleet/schema.html",
        page_context(request, f"Schema of {target.label}", target=target),
    )


site.register_view(
    "migrations_runner/fleet/schemas/",
    fleet_schemas_view,
    name="migrations_runner_fleet_schemas",
    title="Schema fingerprints",
    app_label="migrations_runner",
    role=roles.MIGRATIONS_READ,
)
site.register_view(
    "migrations_runner/fleet/schemas/<int:fingerprint_id>/", fleet_schema_view, name="migrations_runner_fleet_schema"
)
