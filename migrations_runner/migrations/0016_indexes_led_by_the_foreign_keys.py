"""Drop the single-column indexes of three foreign keys that other indexes lead with: ``TargetRun.execution``
(``target_run_claim``, ``target_run_page``, ``target_run_unique``), ``TargetRun.connection`` (``target_run_latest``)
and ``SchemaFingerprint.connection`` (``schema_fingerprint_target``). A target run's row is written three times
(reserved, started, recorded), each time into every index of the table: two fewer.

Only the indexes go (``DROP INDEX``): Django's ``AlterField`` would also drop and add back the foreign keys, which
re-checks every row of the table under a lock that stops the lanes' writes."""

from django.db import migrations, models

# (model, column)
UNINDEXED = [
    ("targetrun", "execution_id"),
    ("targetrun", "connection_id"),
    ("schemafingerprint", "connection_id"),
]


def _single_column_indexes(schema_editor, table: str, column: str) -> list[str]:
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, c in constraints.items()
        if c["index"] and not c["unique"] and not c["primary_key"] and c["columns"] == [column]
    ]


def drop_indexes(apps, schema_editor) -> None:
    for model_name, column in UNINDEXED:
        table = apps.get_model("migrations_runner", model_name)._meta.db_table
        for name in _single_column_indexes(schema_editor, table, column):
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def create_indexes(apps, schema_editor) -> None:
    for model_name, column in UNINDEXED:
        table = apps.get_model("migrations_runner", model_name)._meta.db_table
        name = schema_editor.quote_name(f"{table}_{column}_idx")
        schema_editor.execute(
            f"CREATE INDEX {name} ON {schema_editor.quote_name(table)} ({schema_editor.quote_name(column)})"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("connections", "0002_auth_methods_and_allowed_hosts"),
        ("migrations_runner", "0015_reserved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
            state_operations=[
                migrations.AlterField(
                    model_name="schemafingerprint",
                    name="connection",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="connections.databaseconnection",
                    ),
                ),
                migrations.AlterField(
                    model_name="targetrun",
                    name="connection",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.PROTECT,
                        related_name="+",
                        to="connections.databaseconnection",
                    ),
                ),
                migrations.AlterField(
                    model_name="targetrun",
                    name="execution",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="targets",
                        to="migrations_runner.migrationexecution",
                    ),
                ),
            ],
        ),
    ]
