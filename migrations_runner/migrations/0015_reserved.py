"""The index the recovery reads runs claimed ahead by a lane through (pending, reserved, lease ran out)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("connections", "0002_auth_methods_and_allowed_hosts"),
        ("migrations_runner", "0014_listed"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="targetrun",
            index=models.Index(
                condition=models.Q(("status", "pending"), models.Q(("worker", ""), _negated=True)),
                fields=["heartbeat_at"],
                name="target_run_reserved",
            ),
        ),
    ]
