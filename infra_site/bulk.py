"""Inserting many new rows of one model faster than ``bulk_create``.

``bulk_create`` compiles every value of every row through the SQL compiler (placeholders, casts, per-value
checks): for 10,000 rows of a 27-column model that is seconds of Python. ``bulk_insert`` prepares each value
the way the compiler does (``pre_save`` then ``get_db_prep_save``), once per distinct hashable value of a
column, and sends one parametrised ``INSERT`` per batch with ``executemany``. Table and column names come from
the model's metadata, quoted by the backend; values are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, router
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin

BATCH = 1000


def bulk_insert(objs: Sequence[Model], *, batch_size: int = BATCH) -> None:
    """Insert ``objs`` (new instances of one model), in order.

    Keys the database assigns (auto fields) are not set on the instances: a caller reads them back ordered by
    key (a sequence or rowid hands one session increasing values). Callers insert inside a transaction, so
    that a failure leaves nothing behind.
    """
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    alias = router.db_for_write(model)
    connection = connections[alias]
    # A key the database assigns (an auto field) is left out; any other (a UUID with its default) is inserted.
    fields = [f for f in meta.concrete_fields if not (f.primary_key and isinstance(f, AutoFieldMixin))]
    quote = connection.ops.quote_name
    # Names from the model's metadata, quoted by the backend; every value is a parameter.
    statement = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(quote(f.column or f.name) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    prepared: list[dict[Any, Any]] = [{} for _ in fields]

    def value(index: int, obj: Model) -> Any:
        field = fields[index]
        raw = field.pre_save(obj, True)
        try:
            return prepared[index][raw]
        except KeyError:
            result = prepared[index][raw] = field.get_db_prep_save(raw, connection)
            return result
        except TypeError:  # unhashable (a JSON list or dict): prepared each time
            return field.get_db_prep_save(raw, connection)

    columns = range(len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            batch = objs[start : start + batch_size]
            cursor.executemany(statement, [tuple(value(i, obj) for i in columns) for obj in batch])
