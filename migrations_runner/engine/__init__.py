"""The migration engine: plain Python (no Django), so it can be read and tested on its own.

- ``sets``: loading and validating Flyway-style migration folders.
- ``sqltext``: splitting scripts into statements, detecting non-transactional ones.
- ``targets``: targets, the dependency DAG over database types, phases and skips.
- ``history``: the ``infra_schema_history`` table, read in bulk per database.
- ``apply``: applying (and undoing) versions on one target, under an advisory lock.
"""
