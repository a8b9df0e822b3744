"""Admin forms of the registry. The password is write-only: it is never rendered back."""

from __future__ import annotations

from django import forms

from connections import services
from connections.exceptions import ConnectionTestFailed
from connections.models import DatabaseConnection, Tenant
from connections.probe import ProbeResult

# The model fields the form edits (the admin's fieldsets add display-only names to ``Meta.fields``).
CONNECTION_FIELDS = [
    "name",
    "database_type",
    "region",
    "host",
    "port",
    "database_name",
    "username",
    "password",
    "ssl_mode",
    "connect_timeout",
    "default_schema",
    "is_active",
]


class DatabaseConnectionForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the stored password.",
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

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        if self.instance._state.adding and not cleaned.get("password") and cleaned.get("verify"):
            self.add_error("password", "A password is required to test a new connection.")
            return cleaned
        if not cleaned.get("verify"):
            return cleaned
        changed = [name for name in services.DETAIL_FIELDS if name in self.changed_data and name != "password"]
        if cleaned.get("password"):
            changed.append("password")
        if not self.instance._state.adding and not changed:
            return cleaned
        candidate = DatabaseConnection(**{name: cleaned.get(name) for name in CONNECTION_FIELDS})
        if not cleaned.get("password") and not self.instance._state.adding:
            candidate.password = DatabaseConnection.all_objects.get(pk=self.instance.pk).password
        try:
            self.probe_result = services.connection_verify(connection=candidate)
        except ConnectionTestFailed as exc:
            raise forms.ValidationError(f"{exc.message} ({exc.result.error})", code=exc.code) from exc
        return cleaned


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["slug", "name", "connection", "schema_name", "status"]
