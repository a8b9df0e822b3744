"""The engine takes a schema's migration lock and reads its history in one round trip, and stays correct when
the lock is held or the history does not exist yet (engine only: psycopg against the test server, no ORM)."""

import threading

import psycopg
import pytest

from migrations_runner.engine import history
from migrations_runner.engine.apply import LOCK_NAMESPACE, ApplyOptions, ConnectionSource, TargetSpec, apply_target
from migrations_runner.engine.sets import load_set, placeholder_context
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres


class CountingCursor(psycopg.Cursor):
    """A cursor that notes each statement it sends and whether it went in a pipeline (one round trip for all)."""

    def execute(self, query, params=None, **kwargs):
        text = query.as_string(self.connection) if isinstance(query, psycopg.sql.Composable) else str(query)
        self.connection.sent.append((text, self.connection._pipeline is not None))
        return super().execute(query, params, **kwargs)


def round_trips(sent: list[tuple[str, bool]]) -> int:
    """Statements sent alone count one each; consecutive pipelined statements count one together."""
    trips, in_pipeline = 0, False
    for _text, pipelined in sent:
        if not (pipelined and in_pipeline):
            trips += 1
        in_pipeline = pipelined
    return trips


def counting_source(pg, *, as_role: tuple[str, str] | None = None) -> tuple[ConnectionSource, list[tuple[str, bool]]]:
    """A connection source whose statements are noted (as ``as_role``, a user and password, when given)."""
    sent: list[tuple[str, bool]] = []
    user, password = as_role or (pg.user, pg.password)

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(
            host=pg.host,
            port=pg.port,
            user=user,
            password=password,
            dbname=pg.dbname,
            cursor_factory=CountingCursor,
        )
        conn.sent = sent
        return conn

    return ConnectionSource(connect), sent


@pytest.fixture
def tenant_set(tmp_path):
    folder = tmp_path / "tenant"
    folder.mkdir()
    (folder / "V1__t.sql").write_text("CREATE TABLE t (x int);\n")
    return folder


def spec(schema: str) -> TargetSpec:
    return TargetSpec(schema=schema, create_schema=True, context=placeholder_context(schema=schema), label=schema)


def recorded_by_another_run(conn: psycopg.Connection, schema: str, script) -> None:
    """The history row another run writes for the version ``script`` it applied to ``schema``."""
    conn.execute(
        history.insert_row(
            schema=schema,
            version=str(script.version),
            description=script.description,
            kind="SQL",
            script=script.filename,
            checksum=script.checksum,
            installed_by="other",
            execution_id=None,
            execution_time_ms=1,
        )
    )


def advisory_locks(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND a.datname = current_database() AND l.pid <> pg_backend_pid()"
    ).fetchone()[0]


def test_an_up_to_date_target_costs_two_round_trips_lock_and_history_in_one(pg, tenant_set):
    mset = load_set(tenant_set, "tenant")
    source, sent = counting_source(pg)
    first = apply_target(source, spec("tenant_a"), mset, ApplyOptions(installed_by="t"))
    assert first.status == "succeeded"
    assert first.to_version == "1"
    sent.clear()

    again = apply_target(source, spec("tenant_a"), mset, ApplyOptions(installed_by="t"))

    assert again.status == "succeeded"
    assert again.applied == []
    texts = [text for text, _ in sent]
    assert round_trips(sent) == 2, sent  # the try-lock and the history read in one pipeline, then the unlock
    assert "pg_try_advisory_lock" in texts[0]
    assert "infra_schema_history" in texts[1]
    assert "pg_advisory_unlock" in texts[2]
    assert not any("pg_advisory_lock(" in text for text in texts)
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0
    source.close()


def test_a_schema_without_history_is_created_and_its_lock_is_not_left_held(pg, tenant_set):
    mset = load_set(tenant_set, "tenant")
    source, _sent = counting_source(pg)

    outcome = apply_target(source, spec("tenant_new"), mset, ApplyOptions(installed_by="t"))

    assert outcome.status == "succeeded"
    assert [a.version for a in outcome.applied] == ["1"]
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0  # the failed batch's lock was released, the run's own too
        assert history.read_states(observer, ["tenant_new"])["tenant_new"].current is not None
    source.close()


def test_history_committed_while_waiting_for_the_lock_is_seen_and_not_applied_again(pg, tenant_set):
    """Another run holds the schema's lock and records V1 before releasing it: the history read together with
    the failed try is discarded, so V1 is not run a second time."""
    mset = load_set(tenant_set, "tenant")
    source, _sent = counting_source(pg)
    assert apply_target(source, spec("tenant_b"), mset, ApplyOptions(installed_by="t")).status == "succeeded"
    (tenant_set / "V2__u.sql").write_text("CREATE TABLE u (x int);\n")
    mset = load_set(tenant_set, "tenant")

    holder = pg.connect()
    holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, "tenant_b"])
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            outcome=apply_target(source, spec("tenant_b"), mset, ApplyOptions(installed_by="t", lock_wait_s=30))
        )
    )
    worker.start()
    with pg.connect() as observer:
        wait_until(
            lambda: (
                observer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s",
                    [pg.dbname],
                ).fetchone()[0]
                == 1
            ),
            timeout=10,
        )
    # The other run applies V2 and records it, then lets go.
    holder.execute("CREATE TABLE tenant_b.u (x int)")
    recorded_by_another_run(holder, "tenant_b", mset.versions[-1])
    holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, "tenant_b"])
    holder.close()
    worker.join(timeout=30)

    outcome = result["outcome"]
    assert outcome.status == "succeeded", outcome.error
    assert outcome.applied == []  # V2 was seen in the history read after the lock
    assert outcome.to_version == "2"
    source.close()


def test_a_new_schema_is_created_in_the_round_trip_of_its_first_script(pg, tenant_set):
    """The try-lock and the history read (one pipeline), then the schema, its history table, the script and the
    unlock in one round trip: the schema committed before the script's transaction."""
    (tenant_set / "V2__fails.sql").write_text("SELECT 1 / 0;\n")
    source, sent = counting_source(pg)

    outcome = apply_target(source, spec("tenant_e"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))

    assert outcome.status == "failed"
    assert (outcome.error.kind, outcome.error.version, outcome.error.sqlstate) == ("sql", "2", "22012")
    texts = [text for text, _ in sent]
    created = next(i for i, text in enumerate(texts) if "CREATE SCHEMA IF NOT EXISTS" in text)
    locked = next(i for i, text in enumerate(texts) if "pg_try_advisory_lock" in text)  # after the connection's set-up
    assert round_trips(sent[locked : created + 1]) == 2, texts  # the lock and the history read, then this
    assert texts[created].index("COMMIT") < texts[created].index("CREATE TABLE t ")  # before V1's transaction
    assert "INSERT INTO" in texts[created]  # V1's history row in the same round trip
    assert not any("CREATE SCHEMA" in text for text in texts[created + 1 :])
    with pg.connect() as observer:
        rows = observer.execute("SELECT version FROM tenant_e.infra_schema_history").fetchall()
        assert rows == [("1",)]  # V1 and the schema stayed; V2 rolled back
    source.close()


def test_a_schema_the_plan_found_without_history_is_locked_created_and_migrated_in_one_round_trip(pg, tenant_set):
    """The lock, the check that no history table appeared meanwhile, the creation, the script and the unlock: one
    round trip, and no read of a table that is not there (which the server would log as an error)."""
    source, sent = counting_source(pg)
    new = TargetSpec(**{**spec("tenant_f").__dict__, "expect_history": False})

    outcome = apply_target(source, new, load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))

    assert (outcome.status, outcome.to_version) == ("succeeded", "1")
    texts = [text for text, _ in sent]
    first = next(i for i, text in enumerate(texts) if "pg_try_advisory_lock" in text)  # after the session's set-up
    assert round_trips(sent[first:]) == 1, texts
    text = texts[first]
    assert text.index("pg_try_advisory_lock") < text.index("to_regclass") < text.index("CREATE SCHEMA")
    assert text.index("CREATE TABLE t") < text.index("pg_advisory_unlock")
    assert not any(text.startswith("SELECT version, type, script") for text in texts)
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0
        assert history.read_states(observer, ["tenant_f"])["tenant_f"].current is not None
    source.close()


def test_a_new_schema_whose_lock_is_held_waits_for_it_and_reads_what_the_holder_recorded(pg, tenant_set):
    """Another run holds the new schema's lock and creates its history with V1 meanwhile: the first round trip
    stops at its lock, runs nothing, and the target then waits for the lock and reads the history: V1 is not run
    again, V2 is."""
    mset = load_set(tenant_set, "tenant")
    holder = psycopg.connect(  # as the role the engine connects with, so that it owns what it creates
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.dbname, autocommit=True
    )
    holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, "tenant_h"])
    (tenant_set / "V2__u.sql").write_text("CREATE TABLE u (x int);\n")
    new = TargetSpec(**{**spec("tenant_h").__dict__, "expect_history": False})
    source, _sent = counting_source(pg)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            outcome=apply_target(source, new, load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))
        )
    )
    worker.start()
    try:
        with pg.connect() as observer:
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s"
            wait_until(lambda: observer.execute(waiting, [pg.dbname]).fetchone()[0] == 1, timeout=10)
        with pg.connect() as observer:  # the first round trip stopped at the lock: nothing was created
            assert observer.execute("SELECT to_regnamespace('tenant_h')").fetchone()[0] is None
        # The holder creates the history with V1, then lets go of the lock.
        holder.execute("CREATE SCHEMA tenant_h")
        holder.execute(psycopg.sql.SQL(history.CREATE_TABLE).format(table=history.table("tenant_h")).as_string(holder))
        holder.execute("CREATE TABLE tenant_h.t (x int)")
        recorded_by_another_run(holder, "tenant_h", mset.versions[0])
        holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, "tenant_h"])
        worker.join(timeout=30)
    finally:
        holder.close()
        worker.join(timeout=30)
    outcome = result["outcome"]
    assert (outcome.status, [a.version for a in outcome.applied], outcome.to_version) == ("succeeded", ["2"], "2")
    with pg.connect() as observer:
        assert observer.execute("SELECT count(*) FROM tenant_h.infra_schema_history").fetchone()[0] == 2
        assert advisory_locks(observer) == 0
    source.close()


def test_a_wrong_guess_of_no_history_still_reads_it(pg, tenant_set):
    source, sent = counting_source(pg)
    assert apply_target(source, spec("tenant_g"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))
    sent.clear()
    guessed = TargetSpec(**{**spec("tenant_g").__dict__, "expect_history": False})

    again = apply_target(source, guessed, load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))

    assert (again.status, again.applied, again.to_version) == ("succeeded", [], "1")  # V1 is not applied twice
    with pg.connect() as observer:
        assert observer.execute("SELECT count(*) FROM tenant_g.infra_schema_history").fetchone()[0] == 1
        assert advisory_locks(observer) == 0
    source.close()


def test_a_new_schema_that_cannot_be_created_fails_as_a_creation_not_as_its_first_script(pg, tenant_set):
    database = psycopg.sql.Identifier(pg.dbname)
    with pg.connect() as admin:  # a role that may connect but not create schemas
        admin.execute("DROP ROLE IF EXISTS no_create")
        admin.execute("CREATE ROLE no_create LOGIN PASSWORD 'no-create-pw'")
        admin.execute(psycopg.sql.SQL("GRANT CONNECT ON DATABASE {} TO no_create").format(database))

    source, sent = counting_source(pg, as_role=("no_create", "no-create-pw"))
    try:
        outcome = apply_target(
            source, spec("tenant_no_create"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t")
        )
    finally:
        source.close()
        with pg.connect() as admin:
            admin.execute(psycopg.sql.SQL("REVOKE CONNECT ON DATABASE {} FROM no_create").format(database))
            admin.execute("DROP ROLE no_create")

    assert outcome.status == "failed"
    assert outcome.error.sqlstate == "42501"  # permission denied for database
    assert (outcome.error.version, outcome.error.script) == ("", "")  # not V1's failure: V1 never ran
    assert any("CREATE SCHEMA IF NOT EXISTS" in text for text, _ in sent)


def test_a_script_outside_a_transaction_costs_its_statements_and_two_round_trips(pg, tenant_set):
    """Settings and the check for an interrupted build's leftovers in one round trip; the check for invalid
    indexes, the history row and the settings' reset in another; the session left as it was."""
    source, sent = counting_source(pg)
    first = apply_target(source, spec("tenant_c"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))
    assert first.status == "succeeded"
    (tenant_set / "V2__idx.sql").write_text("CREATE INDEX CONCURRENTLY t_x_idx ON t (x);\n")
    sent.clear()

    outcome = apply_target(source, spec("tenant_c"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))

    assert outcome.status == "succeeded"
    assert [applied.version for applied in outcome.applied] == ["2"]
    texts = [text for text, _ in sent]
    # try-lock + history (one pipeline), settings + leftovers, the script's statement, row + reset, the unlock
    assert round_trips(sent) == 5, texts
    assert "set_config('search_path'" in texts[2]
    assert "indisvalid" in texts[2]
    assert texts[3].startswith("CREATE INDEX CONCURRENTLY")
    assert "WHERE NOT EXISTS" in texts[4]
    assert "RESET search_path" in texts[4]
    conn = source.get()
    assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
    assert "tenant_c" not in conn.execute("SHOW search_path").fetchone()[0]
    with pg.connect() as observer:
        rows = observer.execute("SELECT version FROM tenant_c.infra_schema_history ORDER BY installed_rank").fetchall()
        assert [version for (version,) in rows] == ["1", "2"]
    source.close()


def test_the_last_script_releases_the_lock_in_its_own_round_trip_and_a_failed_one_leaves_it_to_the_engine(
    pg, tenant_set
):
    source, sent = counting_source(pg)
    assert apply_target(
        source, spec("tenant_d"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t")
    ).status == ("succeeded")
    (tenant_set / "V2__more.sql").write_text("CREATE TABLE u (x int);\n")
    sent.clear()

    outcome = apply_target(source, spec("tenant_d"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))

    assert outcome.status == "succeeded"
    texts = [text for text, _ in sent]
    assert round_trips(sent) == 2, texts  # try-lock + history, then the version with its row, COMMIT and unlock
    assert texts[-1].rstrip().endswith(f"pg_advisory_unlock({LOCK_NAMESPACE}, hashtext('tenant_d'))")
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0

    (tenant_set / "V3__broken.sql").write_text("CREATE TABLE u (x int);\n")  # u exists: the script fails
    failed = apply_target(source, spec("tenant_d"), load_set(tenant_set, "tenant"), ApplyOptions(installed_by="t"))
    assert failed.status == "failed"
    assert failed.error.sqlstate == "42P07"
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0  # released by the engine after the script's round trip stopped short
    source.close()


def test_a_target_not_confirmed_after_its_lock_and_history_is_left_as_it_was(pg, tenant_set):
    """``may_write`` is asked once the lock is taken and the history read, before anything is written: a no
    leaves the schema untouched and its lock released; a yes is asked once, and the target is migrated."""
    mset = load_set(tenant_set, "tenant")
    source, sent = counting_source(pg)
    asked: list[bool] = []

    def held_then(answer: bool):
        def may_write() -> bool:
            with pg.connect() as observer:
                asked.append(advisory_locks(observer) == 1)  # asked under the schema's lock
            return answer

        return may_write

    refused = apply_target(source, spec("tenant_u"), mset, ApplyOptions(installed_by="t", may_write=held_then(False)))

    assert refused.status == "unconfirmed"
    assert refused.applied == []
    assert asked == [True]
    assert not any("CREATE" in text for text, _ in sent)  # the lock and history read, then the unlock alone
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0
        assert observer.execute("SELECT to_regnamespace('tenant_u')").fetchone()[0] is None

    asked.clear()
    confirmed = apply_target(source, spec("tenant_u"), mset, ApplyOptions(installed_by="t", may_write=held_then(True)))

    assert confirmed.status == "succeeded"
    assert [a.version for a in confirmed.applied] == ["1"]
    assert asked == [True]
    with pg.connect() as observer:
        assert advisory_locks(observer) == 0
        assert history.read_states(observer, ["tenant_u"])["tenant_u"].current is not None
    source.close()
