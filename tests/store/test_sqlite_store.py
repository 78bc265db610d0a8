"""SQLite store: idempotent upserts keyed (meter_id, slot_end), retention, actions, safety."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from erab.clock import JST
from erab.store import (
    MeterAction,
    MeterInfo,
    MeterReading,
    SqliteStore,
    StoreError,
    StoreNotFound,
    open_store,
)

T0 = datetime(2026, 8, 1, 12, 0, tzinfo=JST)
READ = T0 + timedelta(minutes=5)


def reading(meter: str, minutes: int, imp: float | None, exp: float | None = 0.0) -> MeterReading:
    return MeterReading(meter, T0 + timedelta(minutes=minutes), imp, exp, READ)


@pytest.fixture
def store() -> SqliteStore:
    return SqliteStore(":memory:")


def test_upserting_the_same_rows_twice_keeps_one_copy(store: SqliteStore) -> None:
    rows = [reading("M1", 0, 10.0), reading("M1", 30, 10.5), reading("M2", 0, 3.0)]
    store.upsert_readings(rows)
    store.upsert_readings(rows)
    assert store.count_readings() == 3
    assert [r.import_kwh for r in store.readings()] == [10.0, 10.5, 3.0]


def test_a_later_value_replaces_the_earlier_one(store: SqliteStore) -> None:
    store.upsert_readings([reading("M1", 0, 10.0)])
    store.upsert_readings([reading("M1", 0, 11.0)])
    assert [r.import_kwh for r in store.readings()] == [11.0]


def test_no_value_never_overwrites_a_known_one(store: SqliteStore) -> None:
    store.upsert_readings([reading("M1", 0, 10.0, 2.0)])
    store.upsert_readings([reading("M1", 0, None, None)])
    [r] = store.readings()
    assert (r.import_kwh, r.export_kwh) == (10.0, 2.0)


def test_readings_come_back_in_jst_within_the_window(store: SqliteStore) -> None:
    store.upsert_readings([reading("M1", m, float(m)) for m in (0, 30, 60, 90)])
    got = store.readings(["M1"], T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))
    assert [r.slot_end for r in got] == [T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    assert got[0].slot_end.utcoffset() == timedelta(hours=9)


def test_bulk_point_skips_meters_without_any_value(store: SqliteStore) -> None:
    n = store.upsert_point(
        ["A", "B", "C"], T0, np.array([1.0, np.nan, 3.0]), np.array([0.5, np.nan, np.nan]), READ
    )
    assert n == 2
    got = {r.meter_id: (r.import_kwh, r.export_kwh) for r in store.readings()}
    assert got == {"A": (1.0, 0.5), "C": (3.0, None)}


def test_bulk_point_rejects_misaligned_arrays(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="2 meter ids"):
        store.upsert_point(["A", "B"], T0, np.zeros(3), np.zeros(3), READ)


def test_missing_lists_slots_without_a_complete_reading(store: SqliteStore) -> None:
    store.upsert_readings([reading("A", 0, 1.0), reading("A", 30, 1.0, None)])
    ends = [T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    gaps = store.missing(["A", "B"], ends)
    assert gaps == {"A": ends[1:], "B": ends}


def test_retention_deletes_only_older_slots(store: SqliteStore) -> None:
    store.upsert_readings([reading("A", -60 * 24 * d, 1.0) for d in range(50)])
    deleted = store.delete_readings_before(T0 - timedelta(days=45))
    assert deleted == 4
    assert min(r.slot_end for r in store.readings()) == T0 - timedelta(days=45)


def test_actions_are_recorded_with_their_parameters(store: SqliteStore) -> None:
    first = store.record_action(MeterAction("A", "configure", T0, "ok", {"breaker_a": 30}))
    store.record_action(MeterAction("B", "disconnect", T0, "failed", detail="no answer"))
    assert first == 1
    assert [(a.action, a.params, a.result) for a in store.actions("A")] == [
        ("configure", {"breaker_a": 30}, "ok")
    ]
    assert [a.detail for a in store.actions()] == ["", "no answer"]


def test_meters_register_with_their_wrap(store: SqliteStore) -> None:
    store.register_meters([MeterInfo("A", 100000.0), MeterInfo("B")])
    assert store.meters() == [MeterInfo("A", 100000.0), MeterInfo("B", None)]


def test_naive_times_are_refused_with_a_clear_error(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.upsert_readings([MeterReading("A", datetime(2026, 8, 1), 1.0, 0.0, READ)])


def test_a_failing_batch_stores_nothing(store: SqliteStore) -> None:
    store.upsert_readings([reading("A", 0, 1.0)])
    bad = [reading("A", 30, 2.0), MeterReading(object(), T0, 1.0, 1.0, READ)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meter ids must be non-empty strings"):
        store.upsert_readings(bad)
    assert [r.slot_end for r in store.readings()] == [T0]


def test_a_file_store_keeps_data_across_reopening_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "erab.sqlite"
    first = open_store(f"sqlite:///{path}")
    first.upsert_readings([reading("A", 0, 1.0)])
    first.set_setting("fleet", "10")
    first.close()
    again = open_store(str(path))
    assert again.count_readings() == 1 and again.get_setting("fleet") == "10"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_unsupported_store_urls_say_what_to_use() -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("postgresql://db/erab")
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://x")


def test_a_file_that_is_not_a_database_is_a_store_error_and_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "junk.sqlite"
    junk = b"this is not sqlite" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match=r"junk\.sqlite: it is not an SQLite database"):
        SqliteStore(path)
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.sqlite"]


def _filled(path: Path, meters: int = 200, slots: int = 48) -> None:
    store = SqliteStore(path)
    ids = [f"M{i:04d}" for i in range(meters)]
    for k in range(slots):
        values = np.arange(meters, dtype=np.float64) + k
        store.upsert_point(ids, T0 + timedelta(minutes=30 * k), values, values, READ)
    store.close()
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()


def test_a_truncated_store_is_one_store_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.sqlite"
    _filled(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match=r"cut\.sqlite: the file is damaged or truncated"):
        store = SqliteStore(path)
        store.readings()
        store.missing(["M0001"], [T0])


def test_a_store_not_to_be_created_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "home" / "erab.sqlite"
    with pytest.raises(StoreNotFound, match="does not exist"):
        open_store(f"sqlite:///{path}", create=False)
    assert list(tmp_path.iterdir()) == []


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO store_meta VALUES ('holder', 'x')")
    locked.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


def test_a_writer_waits_for_another_process_holding_the_store(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    SqliteStore(path).close()
    locked = threading.Event()
    # longer than sqlite3's default 5 s wait, after which it gives up "database is locked"
    holder = threading.Thread(target=_hold_write_lock, args=(path, 6.0, locked))
    holder.start()
    locked.wait(5)
    store = SqliteStore(path)
    start = time.monotonic()
    store.upsert_readings([reading("M1", 0, 1.0)])
    waited = time.monotonic() - start
    holder.join()
    assert waited > 4.0 and store.count_readings() == 1
    assert store.get_setting("holder") == "x"


def test_a_lock_that_never_ends_is_one_store_error_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erab.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.1)
    path = tmp_path / "shared.sqlite"
    SqliteStore(path).close()
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, 3.0, locked))
    holder.start()
    locked.wait(5)
    store = SqliteStore(path)
    with pytest.raises(StoreError, match=r"shared\.sqlite: another process kept it locked"):
        store.upsert_readings([reading("M1", 0, 1.0)])
    holder.join()
    assert store.count_readings() == 0


def test_meters_first_seen_in_a_failed_batch_are_usable_afterwards(store: SqliteStore) -> None:
    naive = MeterReading("NEW", datetime(2026, 8, 1), 1.0, 1.0, READ)  # fails after keying
    with pytest.raises(ValueError, match="timezone-aware"):
        store.upsert_readings([reading("NEW", 0, 1.0), naive])
    store.upsert_readings([reading("NEW", 0, 5.0)])
    assert [(r.meter_id, r.import_kwh) for r in store.readings()] == [("NEW", 5.0)]
