"""Admin forms of the registry. The password is write-only: it is never rendered back."""

from __future__ import annotations

from typing import Any

from django import forms

from connections import services
from connections.exceptions import ConnectionNameTaken, ConnectionTestFailed
from connections.models import DatabaseConnection, Tenant
from connections.probe import ProbeResult
from infra_site.errors import ApplicationError, ValidationFailed

# The model fields the form edits (the admin's fieldsets add display-only names to ``Meta.fields``).
CONNECTION_FIELDS = list(services.EDITABLE_FIELDS)


class DatabaseConnectionForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the stored password; changing host, port, database, user "
        "or TLS mode needs it entered again.",
    )
    verify = forms.BooleanField(
        required=False,
        initial=True,
        label="Test before saving",
        help_text="Connect and run SELECT version() before saving a new connection or changed connection details.",
    )

    class Meta:
        model = DatabaseConnection
        fields = CONNECTION_FIELDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Never put the stored password into the form's initial data (and so never into HTML).
        self.initial.pop("password", None)
        self.probe_result: ProbeResult | None = None

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        try:
            services.connection_check_name(name=name, exclude_id=self.instance.pk)
        except ConnectionNameTaken as exc:
            raise forms.ValidationError(exc.message, code="name_taken") from exc
        return name

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() returns cleaned_data
        cleaned = self.cleaned_data
        if self.errors:
            return cleaned
        if self.instance._state.adding:
            if not cleaned.get("password") and cleaned.get("verify"):
                self.add_error("password", "A password is required to test a new connection.")
            return cleaned
        try:
            services.connection_check_password(connection=self._stored(), changes=self._values())
        except ValidationFailed as exc:
            self.add_error("password", exc.details["password"])
        return cleaned

    def _post_clean(self) -> None:
        # The model's rules (allowed host, auth methods against TLS, default schema) run in the base
        # _post_clean; the pre-save test comes after them, so it never connects where they forbid.
        super()._post_clean()  # type: ignore[misc]  # django-stubs leave out the private hook _post_clean
        if not self.errors and self.cleaned_data.get("verify"):
            self._test()

    def _stored(self) -> DatabaseConnection:
        return DatabaseConnection.all_objects.get(pk=self.instance.pk)

    def _values(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in CONNECTION_FIELDS}

    def _test(self) -> None:
        """Run the connectivity check the service would run on save, and keep its result for it."""
        if self.instance._state.adding:
            candidate = DatabaseConnection(**self._values())
        else:
            try:
                candidate, changed = services.connection_candidate(connection=self._stored(), changes=self._values())
            except ApplicationError as exc:
                self.add_error(None, exc.message)
                return
            if not any(name in services.DETAIL_FIELDS for name in changed):
                return
        try:
            self.probe_result = services.connection_verify(connection=candidate)
        except ConnectionTestFailed as exc:
            self.add_error(None, f"{exc.message} ({exc.result.error})")


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["slug", "name", "connection", "schema_name", "status"]
