"""API shapes of executions, target runs, plans and migration sets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, cast

from django.conf import settings as django_settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.renderers import JSONRenderer

from connections import selectors as registry
from connections import validators
from connections.serializers import TenantSerializer
from migrations_runner.engine import flyway
from migrations_runner.exceptions import InvalidOptions, InvalidSelection
from migrations_runner.models import (
    FingerprintScan,
    MigrationExecution,
    MigrationSchedule,
    OnFailure,
    Scope,
    TargetRun,
)
from migrations_runner.options import (
    BATCH_SIZE_MAX,
    BATCH_SIZE_MIN,
    LOCK_TIMEOUT_MAX_S,
    LOCK_TIMEOUT_MIN_S,
    OPTION_NAMES,
    STATEMENT_TIMEOUT_MAX_S,
    STATEMENT_TIMEOUT_MIN_S,
    ExecutionOptions,
)
from migrations_runner.selection import FILTER_NAMES, MAX_FILTER_VALUES, TargetSelection, too_many
from migrations_runner.selectors.executions import (
    NOT_RUNNING,
    RenderedExecution,
    execution_progress,
    execution_waves,
)
from migrations_runner.selectors.plans import TargetPlan


class RedactedMixin(serializers.Field):
    """A stored error, shown without hosts, ports and user names to callers without databases:read.

    The view hands its request in the serializer's context; without one (no caller to trust) it is redacted too.
    """

    def to_representation(self, value):
        shown = super().to_representation(value)
        if not shown:  # no error: nothing to redact, and no read of the registry
            return shown
        # The root serializer's context dict, shared by every field: one read of the registry per response.
        context = cast(dict[str, Any], self.context)
        if "error_redactor" not in context:
            request = context.get("request")
            context["error_redactor"] = registry.error_redactor(user=getattr(request, "user", None))
        return context["error_redactor"](shown)


def unredacted_context() -> dict[str, Any]:
    """A serializer context that shows stored errors as they are: for the command line, whose user reads the
    registry on the server anyway."""
    return {"error_redactor": lambda value: value}


class RedactedCharField(RedactedMixin, serializers.CharField):
    pass


class RedactedJSONField(RedactedMixin, serializers.JSONField):
    pass


class FilterListField(serializers.ListField):
    """A filter's values, refused by their number (``MAX_FILTER_VALUES``) before each is validated."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.filter_name = name
        super().__init__(max_length=MAX_FILTER_VALUES[name], required=False, default=list, **kwargs)

    def to_internal_value(self, data: Any) -> list:
        if isinstance(data, list) and len(data) > MAX_FILTER_VALUES[self.filter_name]:
            raise serializers.ValidationError(too_many(self.filter_name, len(data)))
        return super().to_internal_value(data)


# The fields whose representation of a model's value is that value (``PlannedRepresentation``).
_STORED_AS_SHOWN = {
    kind.to_representation
    for kind in (
        serializers.CharField,
        serializers.IntegerField,
        serializers.BooleanField,
        serializers.ChoiceField,
        serializers.JSONField,
    )
}


# Each ``PlannedRepresentation`` class's fields as DRF builds them, never bound: (name, field, whether a shallow
# copy of it is a field of its own).
_PROTOTYPES: dict[type, list[tuple[str, serializers.Field, bool]]] = {}


class PlannedRepresentation(serializers.Serializer):
    """Shows rows (model instances, or dicts of ``values()`` named by the fields' sources) from a plan of its
    fields made once per serializer: a field whose representation is the stored value itself (strings, numbers,
    booleans, choices, JSON) is read and shown as it is, a time goes through its field with the current time zone
    looked up once, the rest go through their field as DRF does. The output is DRF's own, at a fraction of the cost
    for a list of many rows.

    Its fields are built once per class (``get_fields``): these serializers only show."""

    _plan: list[tuple[str, str, serializers.Field, bool, bool]] | None = None

    def get_fields(self) -> dict[str, serializers.Field]:
        """DRF's fields, built from the model once per class instead of once per serializer (a model serializer
        builds each field from the model's: about a third of a status request's CPU); each serializer binds copies
        of its own, since a bound field keeps its parent (whose context decides what an error shows), name and
        source. A field holding another (a list's child) is copied as DRF copies declared fields, in depth."""
        prototypes = _PROTOTYPES.get(type(self))
        if prototypes is None:
            prototypes = _PROTOTYPES[type(self)] = [
                (name, field, not any(isinstance(value, serializers.Field) for value in vars(field).values()))
                for name, field in super().get_fields().items()
            ]
        return {name: copy.copy(field) if shallow else copy.deepcopy(field) for name, field, shallow in prototypes}

    def _representation_plan(self) -> list[tuple[str, str, serializers.Field, bool, bool]]:
        """Per field: its name, its source (``__``-joined), the field, whether its value is shown as stored, and
        whether an instance's value is its attribute (a column of the model, or a value shown as stored by a
        plain source) rather than what ``field.get_attribute`` finds (a relation's key, a method's result)."""
        if self._plan is None:
            zone = timezone.get_current_timezone() if django_settings.USE_TZ else None
            model = getattr(getattr(self, "Meta", None), "model", None)
            columns = {f.name for f in model._meta.concrete_fields if not f.is_relation} if model else set()
            plan = []
            for field in self._readable_fields:
                if zone is not None and isinstance(field, serializers.DateTimeField) and "timezone" not in vars(field):
                    field.timezone = zone  # what DRF's enforce_timezone() would look up for each value
                # Not a subclass that shows its value otherwise (a redacted error).
                as_stored = type(field).to_representation in _STORED_AS_SHOWN
                key = "__".join(field.source_attrs)
                attribute = bool(key) and "__" not in key and (as_stored or key in columns)
                plan.append((str(field.field_name), key, field, as_stored, attribute))
            self._plan = plan
        return self._plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        plan = self._representation_plan()
        shown: dict[str, Any] = {}
        if isinstance(instance, dict):
            for name, key, field, as_stored, _ in plan:
                value = instance[key]
                shown[name] = value if value is None or as_stored else field.to_representation(value)
            return shown
        for name, key, field, as_stored, attribute in plan:
            if attribute:
                value = getattr(instance, key)
            else:
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
                check = value.pk if isinstance(value, PKOnlyObject) else value
                if check is None:
                    shown[name] = None
                    continue
            shown[name] = value if value is None or as_stored else field.to_representation(value)
        return shown


class ResultSerializer(serializers.Serializer):
    """A selector's frozen result, field by field as it holds it: the JSON renderer encodes its dates and ids, and
    the declared fields document the shape."""

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # The declared fields, not ``self.fields``: no copy of them per instance (a list shows one per execution).
        return {name: getattr(instance, name) for name in self._declared_fields}


class FiltersSerializer(serializers.Serializer):
    """What narrows a scope: regions, connections and tenants."""

    regions = FilterListField(
        "regions", child=serializers.CharField(max_length=32, validators=[validators.validate_region])
    )
    connections = FilterListField(
        "connections", child=serializers.CharField(max_length=63, validators=[validators.validate_connection_name])
    )
    tenants = FilterListField(
        "tenants", child=serializers.CharField(max_length=48, validators=[validators.validate_tenant_slug])
    )


def _selection(scope: str, filters: dict) -> TargetSelection:
    try:
        return TargetSelection(scope=scope, **{name: filters.get(name) or () for name in FILTER_NAMES})
    except InvalidSelection as exc:
        raise serializers.ValidationError(exc.details) from exc


class ScopeSerializer(FiltersSerializer):
    """What to migrate: a scope narrowed by regions, connections and tenants (``selection`` once valid)."""

    scope = serializers.ChoiceField(choices=Scope.choices, default=Scope.ALL)

    def validate(self, attrs: dict) -> dict:
        attrs = dict(attrs)
        scope = attrs.pop("scope")
        attrs["selection"] = _selection(scope, {name: attrs.pop(name, ()) for name in FILTER_NAMES})
        return attrs


def _options(values: dict[str, Any]) -> ExecutionOptions:
    try:
        return ExecutionOptions.parse(**values)
    except InvalidOptions as exc:
        raise serializers.ValidationError(exc.details) from exc


class ExecutionOptionsFields(serializers.Serializer):
    """The options of a run, named as ``ExecutionOptions.as_dict`` names them; their bounds are checked by
    ``ExecutionOptions`` and reported per field."""

    dry_run = serializers.BooleanField(default=False, help_text="Record the plan per target and change nothing.")
    on_failure = serializers.ChoiceField(choices=OnFailure.choices, default=OnFailure.CONTINUE)
    batch_size = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"Targets in flight at once, {BATCH_SIZE_MIN} to {BATCH_SIZE_MAX}; default MIGRATION_BATCH_SIZE.",
    )
    statement_timeout_s = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"Seconds a statement may run, {STATEMENT_TIMEOUT_MIN_S} to {STATEMENT_TIMEOUT_MAX_S}; default "
        "MIGRATION_TIMEOUT.",
    )
    lock_timeout_s = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text=f"Seconds a statement may wait for a table lock, {LOCK_TIMEOUT_MIN_S:g} to {LOCK_TIMEOUT_MAX_S:g}; "
        "default MIGRATION_LOCK_TIMEOUT.",
    )
    out_of_order = serializers.BooleanField(
        default=False,
        help_text="Apply pending versions below a target's highest applied version (a late hotfix); else such a "
        "target is refused.",
    )
    waves = serializers.ListField(
        child=serializers.CharField(max_length=8),
        required=False,
        help_text='Canary waves over the tenant targets with work: sizes ([1, 10, 100]) or percentages (["1%", '
        '"10%"]); the rest make a last wave.',
    )
    failure_budget = serializers.CharField(
        max_length=8,
        required=False,
        allow_null=True,
        help_text="Failures a wave may have before the execution halts: 0, 2 or 5%.",
    )
    wave_pause = serializers.IntegerField(required=False, allow_null=True, help_text="Soak seconds between two waves.")
    wave_approval = serializers.BooleanField(
        default=False, help_text="Wait for a person's Continue (awaiting_approval) before each next wave."
    )
    canary = serializers.ListField(
        child=serializers.CharField(max_length=48),
        required=False,
        help_text="Tenants that make the first wave (default: the smallest schemas).",
    )


class PlanRequestSerializer(ExecutionOptionsFields, ScopeSerializer):
    """What to run and how: a ``selection`` and its ``options`` once valid (a plan uses ``out_of_order``)."""

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        attrs["options"] = _options({name: attrs.pop(name) for name in OPTION_NAMES if name in attrs})
        return attrs


class ExecuteSerializer(PlanRequestSerializer):
    """What to run and how; the same body plans it (``migrations/dynamic/plan/``)."""


class RollbackSerializer(serializers.Serializer):
    execution_id = serializers.UUIDField()


class ExecutionProgressSerializer(ResultSerializer):
    """Where an execution stands."""

    total = serializers.IntegerField()
    completed = serializers.IntegerField(help_text="Targets that succeeded.")
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    running = serializers.IntegerField()
    pending = serializers.IntegerField()
    current_targets = serializers.ListField(child=serializers.CharField(), help_text="At most 20 running targets.")
    completion_percentage = serializers.FloatField()
    estimated_completion = serializers.DateTimeField(allow_null=True)
    no_worker = serializers.BooleanField(help_text="It has work that no worker has taken up.")
    state = serializers.ChoiceField(
        choices=["finished", "awaiting_approval", "soaking", "waiting_for_worker", "running"]
    )


# Shows each execution's progress (a ResultSerializer keeps no state: one for all).
_PROGRESS = ExecutionProgressSerializer()


class ExecutionSerializer(PlannedRepresentation, serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    error = RedactedCharField(read_only=True)
    error_message = RedactedCharField(source="error", read_only=True, help_text="The seed's name for `error`.")

    class Meta:
        model = MigrationExecution
        fields = [
            "id",
            "kind",
            "purpose",
            "scope",
            "filters",
            "dry_run",
            "status",
            "on_failure",
            "batch_size",
            "executed_by",
            "origin",
            "parent",
            "cancel_requested",
            "error",
            "error_message",
            "created_at",
            "started_at",
            "completed_at",
            "failure_budget",
            "wave_pause_s",
            "wave_approval",
            "waiting",
            "progress",
        ]
        read_only_fields = fields

    @extend_schema_field(ExecutionProgressSerializer)
    def get_progress(self, execution: MigrationExecution) -> dict[str, Any]:
        # A list view hands the running targets of the whole page in the context (one query per page).
        running = self.context.get("running")
        progress = execution_progress(
            execution=execution, running_targets=None if running is None else running.get(execution.pk, NOT_RUNNING)
        )
        return _PROGRESS.to_representation(progress)


def with_progress(execution: RenderedExecution) -> str:
    """An execution the control database rendered but for its progress (``selectors.executions_rendered``),
    with its progress as ``ExecutionSerializer`` shows it (its last field)."""
    progress = JSONRenderer().render(_PROGRESS.to_representation(execution.progress)).decode()
    return f'{execution.text[:-1]}, "progress" : {progress}}}'


def json_texts(
    rows: list, rendered: Callable[[Any], str | None], serializer: type[serializers.Serializer], context: Mapping
) -> list[str]:
    """Each row's JSON, in order: the text ``rendered`` gives of it (the control database's), else what
    ``serializer`` shows of it (a run or an execution with an error, which it redacts per caller), encoded."""
    texts = [rendered(row) for row in rows]
    others = [row for row, text in zip(rows, texts, strict=True) if text is None]
    shown = iter(serializer(others, many=True, context=context).data if others else ())
    renderer = JSONRenderer()
    return [renderer.render(next(shown)).decode() if text is None else text for text in texts]


class WaveProgressSerializer(ResultSerializer):
    wave = serializers.IntegerField()
    size = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    running = serializers.IntegerField()
    pending = serializers.IntegerField()
    state = serializers.ChoiceField(
        choices=["pending", "soaking", "awaiting_approval", "running", "done", "halted", "skipped"]
    )
    opened_at = serializers.DateTimeField(allow_null=True)
    soak_until = serializers.DateTimeField(allow_null=True)
    approved_by = serializers.CharField(allow_null=True)


class ExecutionDetailSerializer(ExecutionSerializer):
    waves = serializers.SerializerMethodField(help_text="Per canary wave: size, counts and state; [] without waves.")

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "waves", "metadata"]
        read_only_fields = fields

    @extend_schema_field(WaveProgressSerializer(many=True))
    def get_waves(self, execution: MigrationExecution) -> list[dict[str, Any]]:
        return list(WaveProgressSerializer(execution_waves(execution=execution), many=True).data)


class TargetRunSerializer(PlannedRepresentation, serializers.ModelSerializer):
    """A target run, from a model instance or from a row of ``selectors.execution_target_rows`` (a page of 100
    rows is shown without building a model instance)."""

    connection = serializers.CharField(source="connection.name")
    tenant = serializers.CharField(
        source="tenant.slug", default=None, allow_null=True, help_text="Null for a target that is not a tenant's."
    )
    error = RedactedJSONField(read_only=True, allow_null=True)

    class Meta:
        model = TargetRun
        fields = [
            "id",
            "connection",
            "tenant",
            "schema_name",
            "database_type",
            "region",
            "phase",
            "status",
            "from_version",
            "to_version",
            "pending_versions",
            "applied_versions",
            "attempts",
            "lock_waits",
            "waiting",
            "retry_at",
            "error",
            "skip_reason",
            "worker",
            "started_at",
            "completed_at",
            "duration_ms",
        ]
        read_only_fields = fields


class ScheduleSerializer(ExecutionOptionsFields, serializers.ModelSerializer):
    """A schedule: its selection, timing and the options of the executions it starts (stored in ``options``)."""

    filters = FiltersSerializer(required=False, help_text="regions, connections and tenants that narrow the scope.")

    class Meta:
        model = MigrationSchedule
        fields = [
            "id",
            "name",
            "scope",
            "filters",
            *OPTION_NAMES,
            "cron_expression",
            "run_at",
            "enabled",
            "last_execution",
            "last_fired_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_execution", "last_fired_at", "created_by", "created_at", "updated_at"]
        validators: list[Callable[..., None]] = []

    def get_fields(self) -> dict[str, serializers.Field]:
        """The option fields read and write the schedule's ``options``."""
        fields = super().get_fields()
        for name in OPTION_NAMES:
            fields[name].source = f"options.{name}"
        return fields

    def validate(self, attrs: dict) -> dict:
        """Scope and filters become one ``selection`` and the options one ``options``; a partial update keeps the
        stored values it does not send."""
        attrs = dict(attrs)
        if "scope" in attrs or "filters" in attrs:
            stored = self.instance.selection if self.instance else TargetSelection()
            scope = attrs.pop("scope", stored.scope)
            filters = dict(attrs.pop("filters")) if "filters" in attrs else stored.as_filters()
            attrs["selection"] = _selection(scope, filters)
        if "options" in attrs:
            stored_options = self.instance.options if self.instance else {}
            attrs["options"] = _options({**stored_options, **attrs["options"]})
        return attrs


class ProvisionSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=48, validators=[validators.validate_tenant_slug])
    name = serializers.CharField(max_length=200)
    connection = serializers.CharField(max_length=63, validators=[validators.validate_connection_name])
    schema_name = serializers.CharField(max_length=255, required=False, validators=[validators.validate_schema_name])


class TargetPlanSerializer(serializers.Serializer):
    """What a run would do on one target; of a target whose history could not be read, only ``UNREAD_FIELDS``."""

    UNREAD_FIELDS = ("target", "error", "current_version", "pending", "drift")

    target = serializers.CharField()
    connection = serializers.CharField(required=False)
    schema = serializers.CharField(required=False)
    database_type = serializers.CharField(required=False)
    region = serializers.CharField(required=False, allow_blank=True)
    tenant = serializers.CharField(required=False, allow_null=True)
    current_version = serializers.CharField(allow_null=True)
    latest_version = serializers.CharField(required=False, allow_null=True)
    pending = serializers.ListField(child=serializers.CharField())
    drift = serializers.ListField(child=serializers.CharField())
    out_of_order = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Pending versions below the highest applied one."
    )
    refusal = serializers.CharField(
        required=False, allow_blank=True, help_text="Why a run would refuse the target ('' when it would not)."
    )
    callbacks = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="The set's callbacks a run would run, as event: script.",
    )
    schema_exists = serializers.BooleanField(required=False)
    error = RedactedCharField(required=False, help_text="Why the target's history could not be read.")

    def to_representation(self, instance: TargetPlan) -> dict[str, Any]:
        if instance.error is not None:
            shown = {name: getattr(instance, name) for name in self.UNREAD_FIELDS}
            return {**shown, "error": self.fields["error"].to_representation(instance.error)}
        return {name: getattr(instance, name) for name in self._declared_fields if name != "error"}


class LintFindingSerializer(serializers.Serializer):
    """A locking or compatibility hazard of a script the run would apply."""

    database_type = serializers.CharField()
    script = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    rule = serializers.CharField(help_text="Stable rule id, e.g. index-not-concurrent.")
    severity = serializers.ChoiceField(choices=["error", "warning"])
    message = serializers.CharField()
    fix = serializers.CharField()
    line = serializers.IntegerField()
    statement = serializers.CharField()
    ignored = serializers.CharField(allow_blank=True, help_text="The reason of a lint ignore comment ('' if none).")


class PlanSerializer(serializers.Serializer):
    targets = TargetPlanSerializer(many=True)
    count = serializers.IntegerField()
    lint = LintFindingSerializer(many=True, required=False)
    lint_blocked = serializers.BooleanField(
        required=False, help_text="MIGRATION_LINT is block and an error is among the findings: a run is refused."
    )


class FleetStatusSerializer(PlanSerializer):
    behind = serializers.IntegerField()
    drifted = serializers.IntegerField()
    unreachable = serializers.IntegerField()


class SetVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    description = serializers.CharField()
    script = serializers.CharField()
    checksum = serializers.CharField()
    undo = serializers.BooleanField()
    transactional = serializers.BooleanField()


class MigrationSetSerializer(serializers.Serializer):
    database_type = serializers.CharField()
    versions = SetVersionSerializer(many=True)
    repeatables = serializers.ListField(child=serializers.DictField())
    latest = serializers.CharField(allow_null=True)
    problems = serializers.ListField(child=serializers.CharField())


class SetsSerializer(serializers.Serializer):
    sets = MigrationSetSerializer(many=True)


class MigrationsHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    timestamp = serializers.DateTimeField()
    sets = serializers.DictField(child=serializers.DictField(), help_text="Per database type: versions, latest.")
    problems = serializers.ListField(child=serializers.CharField())
    executions_in_progress = serializers.IntegerField()
    executions_stuck = serializers.IntegerField()


class ProvisionResultSerializer(serializers.Serializer):
    tenant = TenantSerializer(help_text="The tenant, as in /api/v1/tenants/{slug}/.")
    execution = ExecutionSerializer()


class AdoptSerializer(ScopeSerializer):
    """Which targets to adopt from Flyway, and how."""

    dry_run = serializers.BooleanField(default=False, help_text="Report what would be imported; change nothing.")
    table = serializers.RegexField(
        r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$",
        required=False,
        allow_blank=True,
        help_text="Flyway's history table (default: the set's configuration, else flyway_schema_history or, from "
        "Flyway before 5, schema_version).",
    )
    accept_drift = serializers.BooleanField(
        default=False,
        help_text="Import versions whose script changed since Flyway applied it, instead of refusing the target "
        "(versions not in the set are still left out).",
    )


class BaselineSerializer(serializers.Serializer):
    """The one target to baseline (a tenant, or a connection's default schema) and the version it is at."""

    tenant = serializers.CharField(max_length=48, required=False, validators=[validators.validate_tenant_slug])
    connection = serializers.CharField(max_length=63, required=False, validators=[validators.validate_connection_name])
    version = serializers.CharField(max_length=50, help_text="Digits separated by '.' or '_', above 0 (5, 1.1).")
    dry_run = serializers.BooleanField(default=False, help_text="Check and report; change nothing.")
    force = serializers.BooleanField(
        default=False, help_text="Baseline even over versions the target's history shows undone (needs a reason)."
    )
    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why a forced baseline is right; recorded.",
    )

    def validate_version(self, value: str) -> str:
        try:
            return str(flyway.baseline_version(value))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("tenant")) == bool(attrs.get("connection")):
            message = "Name either a tenant or a connection."
            raise serializers.ValidationError({"tenant": [message], "connection": [message]})
        return attrs


class FlywayFindingSerializer(serializers.Serializer):
    """A row of flyway_schema_history that adoption did not import as it stands, and why."""

    installed_rank = serializers.IntegerField()
    type = serializers.CharField(help_text="Flyway's type: SQL, BASELINE, SCHEMA, JDBC, ...")
    version = serializers.CharField(allow_null=True, help_text="Null for a repeatable.")
    script = serializers.CharField(allow_blank=True)
    reason = serializers.CharField()
    flyway_checksum = serializers.IntegerField(allow_null=True, help_text="The checksum Flyway recorded.")
    set_checksum = serializers.IntegerField(
        allow_null=True, help_text="Flyway's checksum (CRC32) of the set's script, where the set has one."
    )


class AdoptedRowSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="The row written into infra_schema_history: SQL, REPEATABLE or BASELINE.")
    version = serializers.CharField(allow_null=True)
    script = serializers.CharField()
    installed_rank = serializers.IntegerField(help_text="The Flyway row it comes from.")
    drift_accepted = serializers.BooleanField()


class TargetAdoptionSerializer(serializers.Serializer):
    target = serializers.CharField()
    connection = serializers.CharField()
    schema = serializers.CharField()
    database_type = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    status = serializers.CharField(help_text="adopted, up_to_date, refused, no_flyway_history or error.")
    message = serializers.CharField()
    flyway_version = serializers.CharField(allow_null=True, help_text="The highest version Flyway applied.")
    imported = AdoptedRowSerializer(many=True, help_text="Written (in a dry run: to be written).")
    already_recorded = serializers.ListField(child=serializers.CharField())
    drift = FlywayFindingSerializer(many=True)
    missing_from_set = FlywayFindingSerializer(many=True)
    failed_rows = FlywayFindingSerializer(many=True)
    skipped = FlywayFindingSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    pending_after = serializers.ListField(child=serializers.CharField(), help_text="What the next run applies.")


class AdoptionReportSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    accept_drift = serializers.BooleanField()
    count = serializers.IntegerField()
    adopted = serializers.IntegerField()
    refused = serializers.IntegerField()
    unreadable = serializers.IntegerField(help_text="Targets whose history could not be read.")
    drifted = serializers.IntegerField(help_text="Targets with drift or versions missing from the set.")
    targets = TargetAdoptionSerializer(many=True)


class TargetBaselineSerializer(serializers.Serializer):
    target = serializers.CharField()
    connection = serializers.CharField()
    schema = serializers.CharField()
    database_type = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    status = serializers.CharField(help_text="baselined, refused (a run changed the target meanwhile) or error.")
    message = serializers.CharField()
    version = serializers.CharField()
    from_version = serializers.CharField(allow_null=True)
    pending_after = serializers.ListField(child=serializers.CharField(), help_text="What the next run applies.")
    warnings = serializers.ListField(child=serializers.CharField())


class BaselineReportSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    version = serializers.CharField()
    count = serializers.IntegerField()
    targets = TargetBaselineSerializer(many=True)


# --- schema fingerprints ------------------------------------------------------------------------------------------


class FingerprintDiffSerializer(serializers.Serializer):
    change = serializers.ChoiceField(choices=["added", "missing", "changed"])
    kind = serializers.CharField(help_text="table, column, constraint, index, trigger, view, sequence, function, ...")
    name = serializers.CharField(help_text="e.g. tasks.priority")
    detail = serializers.CharField(allow_blank=True, help_text="What an added object is, or how a changed one differs.")
    text = serializers.CharField(help_text="The entry in words: 'column tasks.priority added (integer, nullable)'.")


class FingerprintCountSerializer(serializers.Serializer):
    fingerprint = serializers.CharField()
    targets = serializers.IntegerField()


class FingerprintGroupSerializer(serializers.Serializer):
    database_type = serializers.CharField(help_text="The set the targets get.")
    version = serializers.CharField(allow_blank=True, help_text="Their set version ('' for none applied).")
    majority = serializers.CharField(help_text="The most common fingerprint of the group.")
    targets = serializers.IntegerField()
    outliers = serializers.IntegerField()
    tied = serializers.BooleanField(help_text="Another fingerprint is as common as the majority.")
    fingerprints = FingerprintCountSerializer(many=True)


class TargetFingerprintSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    target = serializers.CharField()
    connection = serializers.CharField()
    schema = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    database_type = serializers.CharField()
    region = serializers.CharField(allow_blank=True)
    version = serializers.CharField(allow_blank=True)
    fingerprint = serializers.CharField()
    majority = serializers.CharField()
    majority_targets = serializers.IntegerField()
    tied = serializers.BooleanField()
    state = serializers.ChoiceField(choices=["match", "outlier"])
    taken_at = serializers.DateTimeField()
    execution = serializers.UUIDField(allow_null=True, help_text="The execution whose run recorded it; null: a scan.")
    diff = FingerprintDiffSerializer(many=True, help_text="How the schema differs from the majority.")


class FingerprintReportSerializer(serializers.Serializer):
    targets = serializers.IntegerField(help_text="Selected targets with a recorded fingerprint.")
    outlier_count = serializers.IntegerField()
    groups = FingerprintGroupSerializer(many=True, help_text="Every (set, version) of the fleet.")
    outliers = TargetFingerprintSerializer(many=True, help_text="The selected targets that differ from the majority.")


class UnreachableDatabaseSerializer(serializers.Serializer):
    connection = serializers.CharField()
    targets = serializers.IntegerField()
    error = RedactedCharField()


class FingerprintScanSerializer(serializers.ModelSerializer):
    """A fingerprint scan and its progress: ``done`` of ``total`` targets read so far."""

    unreachable = UnreachableDatabaseSerializer(many=True, read_only=True, help_text="Databases it could not read.")
    error = RedactedCharField(read_only=True, help_text="Why a failed scan ended.")

    class Meta:
        model = FingerprintScan
        fields = [
            "id",
            "scope",
            "filters",
            "state",
            "total",
            "done",
            "scanned",
            "unreachable",
            "error",
            "started_by",
            "started_at",
            "active_at",
            "finished_at",
        ]
        read_only_fields = fields
