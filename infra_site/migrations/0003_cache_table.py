from django.conf import settings
from django.core.cache.backends.db import DatabaseCache
from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    # What createcachetable does, so that `migrate` alone makes the shared cache work (no-op for Redis).
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


def drop_cache_tables(apps, schema_editor):
    for cache in settings.CACHES.values():
        if cache["BACKEND"] == f"{DatabaseCache.__module__}.{DatabaseCache.__name__}":
            schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(cache['LOCATION'])}")


class Migration(migrations.Migration):
    """The table of the shared cache (settings.CACHES) when it lives in the control database."""

    dependencies = [("infra_site", "0002_oidc_identity")]

    operations = [migrations.RunPython(create_cache_tables, drop_cache_tables)]
