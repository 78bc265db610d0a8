"""SQLite store: the file (WAL, reopening, damage, locks held by other processes).  What both
stores do alike is tested on both in test_store.py."""

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
    with pytest.raises(StoreError, match="unknown store URL scheme 'mysql': use sqlite:///PATH"):
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


