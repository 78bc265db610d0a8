"""The PostgreSQL store on its own: URLs and connection failures as one line, migrations
(concurrent, newer, failing), partitions made on demand and dropped by retention, and the
store's ingest against a raw COPY of the same rows."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erab.clock import JST
from erab.store import (
    MIGRATIONS,
    MeterReading,
    Migration,
    StoreError,
    StoreNotFound,
    open_store,
    pg_schema,
)
from erab.store import migrations as migrations_module
from erab.store.pg_common import binary_copy
from erab.store.postgres import PostgresStore
from tests.pg import PgCluster, free_port

T0 = datetime(2026, 8, 1, 12, 0, tzinfo=JST)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


# --- URLs and connections -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://erab@127.0.0.1:54x/db", "the port is not a number"),
        ("postgresql://erab:pw@127.0.0.1:5432", "names no database"),
        ("postgresql://erab:pw@127.0.0.1:5432/", "names no database"),
    ],
)
def test_a_malformed_url_is_one_line_naming_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as err:
        open_store(url)
    assert "\n" not in str(err.value) and "pw" not in str(err.value)


def test_a_wrong_password_is_named_and_the_password_is_not(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url("postgres", password="not-the-s3cret")
    with pytest.raises(StoreError, match="password authentication failed for user erab") as err:
        open_store(url)
    text = str(err.value)
    assert "not-the-s3cret" not in text and "\n" not in text
    assert text.startswith(f"PostgreSQL store erab@127.0.0.1:{pg_cluster.port}/postgres: ")


def test_a_server_that_is_down_is_named_with_its_address() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StoreError, match=rf"no PostgreSQL server answers at 127\.0\.0\.1:{port}"):
        open_store(f"postgresql://erab:pw@127.0.0.1:{port}/erab")


def test_a_database_that_does_not_exist_says_how_to_create_it(pg_cluster: PgCluster) -> None:
    why = r"database nowhere does not exist \(create it: createdb -O erab nowhere\)"
    with pytest.raises(StoreNotFound, match=why):
        open_store(pg_cluster.url("nowhere"))


def test_an_empty_database_not_to_be_created_is_left_empty(pg_url: str) -> None:
    with pytest.raises(StoreNotFound, match="has no erab tables"):
        open_store(pg_url, create=False)
    assert tables(pg_url) == set()


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    for name in [m for m in sys.modules if m.startswith("erab.store.p")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(StoreError, match=r"needs psycopg, .*pip install 'erab\[postgres\]'"):
        open_store("postgresql://erab:pw@127.0.0.1:5432/erab")


# --- migrations ---------------------------------------------------------------------------------


def test_both_dialects_have_the_same_migration_steps() -> None:
    pg = [(m.version, m.name) for m in pg_schema.POSTGRES_MIGRATIONS]
    assert pg == [(m.version, m.name) for m in MIGRATIONS]


def test_a_new_database_gets_every_step_recorded_once(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    assert store.migrations_applied == [1, 2, 3, 4] and store.schema_version == 4
    assert store.get_setting("schema_version") == "4"
    store.close()
    again = PostgresStore(pg_url)
    assert again.migrations_applied == []
    again.close()
    assert {"meter_readings", "telemetry", "uplink_seen", "gateways"} <= tables(pg_url)


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def opener() -> None:
        start.wait()
        try:
            s = PostgresStore(pg_url)
            applied.append(s.migrations_applied)
            s.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [[], [], [1, 2, 3, 4]]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (4,)


def test_a_database_from_a_newer_erab_is_refused_and_left_alone(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9, 'from the future', 0)")
    with pytest.raises(
        StoreError, match=r"has schema version 9, newer than this erab \(4\): upgrade erab"
    ) as err:
        PostgresStore(pg_url)
    assert "\n" not in str(err.value)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (9,)


def test_a_failing_migration_leaves_the_database_as_it_was(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Migration(4, "a broken step", "CREATE TABLE half_done (x INTEGER);\nSELECT nope FROM;")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(
        pg_schema, "POSTGRES_MIGRATIONS", (*pg_schema.POSTGRES_MIGRATIONS, broken)
    )
    with pytest.raises(StoreError, match=r"migration 4 \(a broken step\) failed: .*stays at "
                       r"version 0"):  # fmt: skip
        PostgresStore(pg_url)
    assert tables(pg_url) == set()  # steps 1-3 went through, and were rolled back with 4
    monkeypatch.undo()
    assert PostgresStore(pg_url).schema_version == 4


def test_a_sqlite_step_without_a_postgresql_form_is_refused(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = Migration(4, "only for sqlite", "CREATE TABLE x (y INTEGER);")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, extra))
    with pytest.raises(StoreError, match=r"migration 4 \(only for sqlite\) has no PostgreSQL"):
        PostgresStore(pg_url)
    assert tables(pg_url) == set()


# --- partitions -----------------------------------------------------------------------------------


def test_readings_go_into_a_partition_per_jst_month_made_on_demand(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    assert store.partitions("meter_readings") == []
    # 00:00 JST on 1 September is 15:00 UTC on 31 August: it belongs to September
    sept = datetime(2026, 9, 1, tzinfo=JST)
    store.upsert_readings(
        [MeterReading("A", t, 1.0, 0.0, t) for t in (T0, sept - timedelta(minutes=30), sept)]
    )
    assert store.partitions("meter_readings") == [
        "meter_readings_p202608",
        "meter_readings_p202609",
    ]
    with psycopg.connect(pg_url) as conn:
        per = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM meter_readings GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert per == [("meter_readings_p202608", 2), ("meter_readings_p202609", 1)]
    store.close()


def test_a_stray_timestamp_makes_one_partition_not_every_one_between(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    old = datetime(2001, 1, 1, 12, tzinfo=JST)
    store.upsert_readings([MeterReading("A", t, 1.0, 0.0, t) for t in (old, T0)])
    assert store.partitions("meter_readings") == [
        "meter_readings_p200101",
        "meter_readings_p202608",
    ]
    store.close()


def test_retention_drops_whole_months_and_deletes_the_rest(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    days = [T0 - timedelta(days=d) for d in range(0, 100, 3)]  # back into April
    store.upsert_readings([MeterReading("A", t, 1.0, 0.0, t) for t in days])
    cutoff = datetime(2026, 6, 15, tzinfo=JST)
    expect = sum(1 for t in days if t < cutoff)
    assert store.delete_readings_before(cutoff) == expect
    assert store.partitions("meter_readings") == [
        "meter_readings_p202606",
        "meter_readings_p202607",
        "meter_readings_p202608",
    ]
    lo, _ = store.slot_end_range()
    assert lo is not None and lo >= cutoff
    assert store.count_readings() == len(days) - expect
    # a month dropped and written again: the partition comes back
    store.upsert_readings([MeterReading("A", days[-1], 2.0, 0.0, T0)])
    assert "meter_readings_p202604" in store.partitions("meter_readings")  # days[-1]: 24 April
    store.close()


def test_partitions_can_be_made_ahead_for_both_tables(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    made = store.create_partitions(T0, T0 + timedelta(days=2))
    assert made == [
        "meter_readings_p202608",
        "telemetry_p20260801",
        "telemetry_p20260802",
        "telemetry_p20260803",
    ]
    assert store.partitions("telemetry") == made[1:]
    store.close()


def test_a_partition_dropped_by_another_process_is_made_again(pg_url: str) -> None:
    writer, other = PostgresStore(pg_url), PostgresStore(pg_url)
    writer.upsert_readings([MeterReading("A", T0, 1.0, 0.0, T0)])
    other.delete_readings_before(T0 + timedelta(days=40))  # drops August under the writer
    writer.upsert_readings([MeterReading("A", T0, 2.0, 0.0, T0)])  # its cache says "exists"
    assert [r.import_kwh for r in writer.readings()] == [2.0]
    other.delete_readings_before(T0 + timedelta(days=40))
    # a fleet point is copied into the month's partition by name
    writer.upsert_point(["A", "B"], T0, np.array([3.0, 4.0]), np.array([0.0, 0.0]), T0)
    assert [r.import_kwh for r in writer.readings()] == [3.0, 4.0]
    writer.close()
    other.close()


# --- binary COPY --------------------------------------------------------------------------------


def test_binary_copy_rows_read_back_exactly(pg_url: str) -> None:
    ints = np.array([0, -1, 2**31 - 1], np.int32)
    bigs = np.array([2**40, -(2**62), 7], np.int64)
    floats = np.array([0.1, np.nan, -1e300])
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TEMP TABLE t (a INTEGER, b BIGINT, c DOUBLE PRECISION)")
        with conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(binary_copy([("int4", ints), ("int8", bigs), ("float8", floats)]))
        rows = conn.execute("SELECT a, b, c FROM t").fetchall()
    assert [r[:2] for r in rows] == list(zip(ints.tolist(), bigs.tolist(), strict=True))
    assert rows[0][2] == 0.1 and np.isnan(rows[1][2]) and rows[2][2] == -1e300


def test_telemetry_retention_drops_whole_days(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    made = store.create_partitions(T0 - timedelta(days=3), T0)
    assert [p for p in made if p.startswith("telemetry")] == [
        "telemetry_p20260729",
        "telemetry_p20260730",
        "telemetry_p20260731",
        "telemetry_p20260801",
    ]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for d in range(4):
            at = round((T0 - timedelta(days=d)).timestamp())
            conn.execute("INSERT INTO telemetry VALUES (%s, 1, 1, 1.0, 1, %s, 0)", (at, d))
    assert store.delete_telemetry_before(T0 - timedelta(days=1, hours=1)) == 2
    assert store.partitions("telemetry") == [
        "telemetry_p20260731",
        "telemetry_p20260801",
    ]
    store.close()


def test_a_connection_cut_by_the_server_is_one_line_and_stores_nothing(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    store = PostgresStore(pg_url)
    store.upsert_readings([MeterReading("A", T0, 1.0, 0.0, T0)])
    db = pg_url.rsplit("/", 1)[1]
    pg_cluster.admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    )
    with pytest.raises(StoreError, match=r"^PostgreSQL store erab@127\.0\.0\.1:\d+/\w+: ") as err:
        store.upsert_readings([MeterReading("A", T0 + timedelta(minutes=30), 2.0, 0.0, T0)])
    assert "\n" not in str(err.value)
    store.close()
    again = PostgresStore(pg_url)
    assert again.count_readings() == 1
    again.close()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-(2**31), 2**31 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True, allow_infinity=False),
        ),
        max_size=40,
    ),
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
)
def test_binary_copy_with_nulls_reads_back_as_sent(
    pg_url: str, rows: list[tuple[int, int, float, float]], text: str
) -> None:
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    data = [
        ("int4", cols[0]),
        ("int8", cols[1]),
        ("float8", cols[2]),
        ("float8?", cols[3]),
        ("text", text),
    ]
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TEMP TABLE t (a INTEGER, b BIGINT, c DOUBLE PRECISION, "
                     "d DOUBLE PRECISION, e TEXT)")  # fmt: skip
        with conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(binary_copy(data))
        got = sorted(conn.execute("SELECT a, b, c, d, e FROM t").fetchall(), key=repr)
    want = sorted(
        [(a, b, c, None if np.isnan(d) else d, text) for a, b, c, d in rows], key=repr
    )
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:2] == w[:2] and g[3:] == w[3:]
        assert g[2] == w[2] or (np.isnan(g[2]) and np.isnan(w[2]))


def test_open_store_takes_both_spellings_of_the_scheme(pg_cluster: PgCluster) -> None:
    url = pg_cluster.fresh_database()
    for spelled in (url, url.replace("postgresql://", "postgres://", 1)):
        store = open_store(spelled)
        assert isinstance(store, PostgresStore) and store.schema_version == 4
        store.close()


def test_threads_sharing_one_store_take_turns_on_its_connection(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    errors: list[BaseException] = []

    def user(k: int) -> None:
        try:
            for s in range(10):
                end = T0 + timedelta(minutes=30 * s)
                store.upsert_point([f"M{k}"], end, np.array([float(s)]), np.array([0.0]), end)
                assert len(store.readings([f"M{k}"])) == s + 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and store.count_readings() == 40
    store.close()
