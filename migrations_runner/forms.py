"""Admin forms of the migrations app: the execution options (shared with the schedule form) and the Run
migrations form (scope, filters, options)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelectMultiple
from django.forms.utils import pretty_name

from connections import selectors as registry
from connections.models import Tenant
from migrations_runner.exceptions import InvalidOptions, InvalidSelection
from migrations_runner.models import OnFailure, Scope, TargetRun
from migrations_runner.options import BATCH_SIZE_MAX, BATCH_SIZE_MIN, OPTION_NAMES, ExecutionOptions
from migrations_runner.selection import TargetSelection

_MAX_ID = 2**63 - 1  # the largest id the control database stores


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _is_id(value: object) -> bool:
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= _MAX_ID


class TenantIdsField(forms.ModelMultipleChoiceField):
    """Tenants by id, as the autocomplete sends them.

    Any other value (a slug typed into the address, a forged post) is a form error before it reaches a query,
    and is left out when the form is shown again: the autocomplete widget looks its values up by id.
    """

    def clean(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            wrong = [str(v) for v in value if not _is_id(v)]
            if wrong:
                raise forms.ValidationError(
                    "Choose tenants from the list; not a tenant id: %(values)s.",
                    code="invalid_pk_value",
                    params={"values": ", ".join(repr(v) for v in wrong[:5])},
                )
        return super().clean(value)

    def prepare_value(self, value: Any) -> Any:
        prepared = super().prepare_value(value)
        if isinstance(prepared, list):
            return [v for v in prepared if _is_id(v)]
        return prepared


class ExecutionOptionsForm(forms.Form):
    """The options of a run as form fields; ``ExecutionOptions`` checks their bounds and its refusals become the
    fields' errors. Mixed into the Run migrations form and the schedule form."""

    dry_run = forms.BooleanField(required=False, help_text="Record the plan per target and change nothing.")
    on_failure = forms.ChoiceField(choices=OnFailure.choices, initial=OnFailure.CONTINUE)
    batch_size = forms.IntegerField(
        required=False, help_text=f"Targets in flight at once, {BATCH_SIZE_MIN} to {BATCH_SIZE_MAX}."
    )
    statement_timeout_s = forms.IntegerField(required=False, label="Statement timeout (s)")
    lock_timeout_s = forms.FloatField(required=False, label="Lock timeout (s)")
    out_of_order = forms.BooleanField(
        required=False,
        label="Allow out of order",
        help_text="Apply pending versions below a target's highest applied version (a late hotfix); else such a "
        "target is refused.",
    )
    waves = forms.CharField(
        required=False,
        max_length=200,
        label="Canary waves",
        help_text="Wave sizes or percentages of the tenants with work, e.g. 1, 10, 50%; the rest make a last wave. "
        "Empty: no waves.",
    )
    canary = forms.CharField(
        required=False,
        max_length=2000,
        label="Canary tenants",
        help_text="Tenant slugs for the first wave, comma-separated; default: the smallest schemas.",
    )
    failure_budget = forms.CharField(
        required=False, max_length=8, help_text="Failures a wave may have before the run halts: 0 (default), 2 or 5%."
    )
    wave_pause = forms.IntegerField(required=False, label="Soak between waves (s)")
    wave_approval = forms.BooleanField(required=False, help_text="Wait for a person's Continue before each next wave.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["statement_timeout_s"].help_text = f"Default {settings.MIGRATION_TIMEOUT} s."
        self.fields["lock_timeout_s"].help_text = f"Default {settings.MIGRATION_LOCK_TIMEOUT} s."

    @staticmethod
    def initial_options(options: ExecutionOptions) -> dict[str, Any]:
        """The fields' initial values for ``options`` (a stored schedule's)."""
        values = options.as_dict()
        values["waves"] = ", ".join(values["waves"])
        values["canary"] = ", ".join(values["canary"])
        return values

    def options_from(self, data: dict[str, Any]) -> ExecutionOptions | None:
        """The options of the cleaned ``data``; None, with the refusals on their fields, when they are invalid."""
        if any(name in self.errors for name in OPTION_NAMES):
            return None
        values: dict[str, Any] = {name: data.get(name) for name in OPTION_NAMES}
        values.update(
            dry_run=bool(values["dry_run"]),
            out_of_order=bool(values["out_of_order"]),
            wave_approval=bool(values["wave_approval"]),
            waves=_csv(values["waves"] or ""),
            canary=_csv(values["canary"] or ""),
            failure_budget=values["failure_budget"] or None,
        )
        names = {name: str(self.fields[name].label or pretty_name(name)) for name in OPTION_NAMES}
        try:
            return ExecutionOptions.parse(**values, names=names)
        except InvalidOptions as exc:
            for field, problems in exc.details.items():
                self.add_error(field if field in self.fields else None, problems)
            return None


class RunForm(ExecutionOptionsForm):
    """What to migrate and how: the same parameters as the API's execute endpoint and ``run_migrations``."""

    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.ALL)
    regions = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    connections = forms.MultipleChoiceField(required=False, widget=forms.SelectMultiple(attrs={"size": 6}))
    tenants = TenantIdsField(
        queryset=Tenant.objects.none(),
        required=False,
        help_text="Type to search tenants by slug or name.",
    )

    field_order = ["scope", "regions", "connections", "tenants"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        live = registry.connection_list()
        regions, connections = self.fields["regions"], self.fields["connections"]
        assert isinstance(regions, forms.MultipleChoiceField)
        assert isinstance(connections, forms.MultipleChoiceField)
        regions.choices = [
            (r, r) for r in live.exclude(region="").order_by("region").values_list("region", flat=True).distinct()
        ]
        connections.choices = [(n, n) for n in live.order_by("name").values_list("name", flat=True)]
        tenants = self.fields["tenants"]
        assert isinstance(tenants, forms.ModelMultipleChoiceField)
        # The admin's autocomplete (select2), through a relation to Tenant that the autocomplete view can resolve.
        tenants.widget = AutocompleteSelectMultiple(TargetRun._meta.get_field("tenant"), admin.site)
        tenants.queryset = registry.tenant_list()  # also hands the widget its choices
        self.fields["batch_size"].initial = settings.MIGRATION_BATCH_SIZE
        self.fields["batch_size"].required = True

    @classmethod
    def initial_from_query(cls, query) -> dict[str, Any]:
        """Initial values from a pre-filled link (``?scope=tenant&tenants=acme&regions=eu-west``)."""
        initial: dict[str, Any] = {}
        if query.get("scope") in Scope.values:
            initial["scope"] = query["scope"]
        for name in ("regions", "connections"):
            if query.getlist(name):
                initial[name] = query.getlist(name)
        if query.getlist("tenants"):
            initial["tenants"] = list(
                Tenant.objects.filter(slug__in=query.getlist("tenants")).values_list("pk", flat=True)
            )
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            try:
                self._selection = TargetSelection(
                    scope=data["scope"],
                    regions=data["regions"],
                    connections=data["connections"],
                    tenants=[tenant.slug for tenant in data["tenants"]],
                )
            except InvalidSelection as exc:
                for field, problems in (exc.details or {}).items():
                    self.add_error(field if field in self.fields else None, problems)
            options = self.options_from(data)
            if options is not None:
                self._options = options
        return data

    def selection(self) -> TargetSelection:
        """The target selection of a valid form."""
        return self._selection

    def options(self) -> ExecutionOptions:
        """The execution options of a valid form."""
        return self._options
