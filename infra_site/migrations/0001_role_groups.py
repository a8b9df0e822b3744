from django.db import migrations

ROLES = (
    "migrations:read",
    "migrations:execute",
    "migrations:manage",
    "databases:read",
    "databases:manage",
    "infrastructure:admin",
)


def create_role_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for role in ROLES:
        Group.objects.get_or_create(name=role)


def remove_role_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    """The Django groups that stand for the control plane's roles."""

    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_role_groups, remove_role_groups)]
