# Schema fingerprints: the catalog objects of each distinct schema shape, and each target's latest fingerprint.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connections', '0002_auth_methods_and_allowed_hosts'),
        ('migrations_runner', '0005_drop_batch_id'),
    ]

    operations = [
        migrations.CreateModel(
            name='SchemaShape',
            fields=[
                ('fingerprint', models.CharField(help_text='SHA-256 of the definitions.', max_length=64, primary_key=True, serialize=False)),
                ('definitions', models.JSONField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name='SchemaFingerprint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('schema_name', models.CharField(max_length=63)),
                ('database_type', models.CharField(help_text='The set the target gets.', max_length=16)),
                ('version', models.CharField(blank=True, default='', help_text='Its set version when taken.', max_length=64)),
                ('taken_at', models.DateTimeField()),
                ('connection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.databaseconnection')),
                ('execution', models.ForeignKey(blank=True, help_text='The execution whose run recorded it; empty when a scan did.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='migrations_runner.migrationexecution')),
                ('tenant', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='connections.tenant')),
                ('shape', models.ForeignKey(db_column='fingerprint', on_delete=django.db.models.deletion.PROTECT, related_name='targets', to='migrations_runner.schemashape')),
            ],
            options={
                'indexes': [models.Index(fields=['database_type', 'version', 'shape'], name='schema_fingerprint_group')],
                'constraints': [models.UniqueConstraint(fields=('connection', 'schema_name'), name='schema_fingerprint_target')],
            },
        ),
    ]
