from django.db import migrations, models

MOVED = ("dry_run", "on_failure", "batch_size", "out_of_order")
# ExecutionOptions().as_dict() when this migration was written: the options schedules could not set before.
NEW_DEFAULTS: dict[str, object] = {
    "statement_timeout_s": None,
    "lock_timeout_s": None,
    "waves": [],
    "failure_budget": None,
    "wave_pause": 0,
    "wave_approval": False,
    "canary": [],
}


def options_from_columns(apps, schema_editor):
    """Each schedule's four option columns become its ``options`` (the keys of ExecutionOptions.as_dict)."""
    MigrationSchedule = apps.get_model("migrations_runner", "MigrationSchedule")
    for schedule in MigrationSchedule.objects.all():
        schedule.options = {**{name: getattr(schedule, name) for name in MOVED}, **NEW_DEFAULTS}
        schedule.save(update_fields=["options"])


def columns_from_options(apps, schema_editor):
    MigrationSchedule = apps.get_model("migrations_runner", "MigrationSchedule")
    for schedule in MigrationSchedule.objects.all():
        for name in MOVED:
            if schedule.options.get(name) is not None:
                setattr(schedule, name, schedule.options[name])
        schedule.save(update_fields=list(MOVED))


class Migration(migrations.Migration):

    dependencies = [
        ("migrations_runner", "0012_target_run_pages"),
    ]

    operations = [
        migrations.AddField(
            model_name="migrationschedule",
            name="options",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="The options of each firing's execution (ExecutionOptions.as_dict).",
            ),
        ),
        migrations.RunPython(options_from_columns, columns_from_options),
        migrations.RemoveField(model_name="migrationschedule", name="dry_run"),
        migrations.RemoveField(model_name="migrationschedule", name="on_failure"),
        migrations.RemoveField(model_name="migrationschedule", name="batch_size"),
        migrations.RemoveField(model_name="migrationschedule", name="out_of_order"),
    ]
