"""Numbered, transactional migrations: old stores upgraded, newer refused, failures harmless."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from erab.clock import JST
from erab.store import MIGRATIONS, MeterReading, Migration, SqliteStore, StoreError
from erab.store import migrations as migrations_module

T0 = datetime(2026, 8, 1, 12, 0, tzinfo=JST)

# The schema erab wrote before numbered migrations (schema version 1 in store_meta).
OLD_SCHEMA = """
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE meters (meter_key INTEGER PRIMARY KEY, meter_id TEXT NOT NULL UNIQUE, wrap_kwh REAL);
CREATE TABLE meter_readings (slot_end INTEGER NOT NULL, meter_key INTEGER NOT NULL
    REFERENCES meters (meter_key), import_kwh REAL, export_kwh REAL, read_at INTEGER NOT NULL,
    source TEXT NOT NULL, PRIMARY KEY (slot_end, meter_key)) WITHOUT ROWID;
CREATE TABLE meter_actions (action_id INTEGER PRIMARY KEY AUTOINCREMENT, meter_id TEXT NOT NULL,
    action TEXT NOT NULL, params TEXT NOT NULL, requested_at INTEGER NOT NULL,
    result TEXT NOT NULL, detail TEXT NOT NULL, actor TEXT NOT NULL);
CREATE INDEX meter_actions_by_meter ON meter_actions (meter_id, action_id);
INSERT INTO store_meta VALUES ('schema_version', '1');
INSERT INTO meters VALUES (1, 'M1', NULL);
INSERT INTO meter_readings VALUES (1785553200, 1, 10.5, 0.0, 1785553500, 'collect');
"""


def old_store(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    return path


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_a_new_store_records_every_migration_step(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.sqlite")
    assert store.schema_version == len(MIGRATIONS) == 4
    assert store.migrations_applied == [1, 2, 3, 4]
    store.close()
    db = sqlite3.connect(tmp_path / "new.sqlite")
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [1, 2, 3, 4]
    assert db.execute("SELECT value FROM store_meta WHERE key='schema_version'").fetchone() == (
        "4",
    )


def test_an_old_store_is_upgraded_on_open_and_keeps_its_readings(tmp_path: Path) -> None:
    path = old_store(tmp_path / "old.sqlite")
    store = SqliteStore(path)
    assert store.migrations_applied == [2, 3, 4]
    assert store.schema_version == 4
    [reading] = store.readings()
    assert (reading.meter_id, reading.import_kwh) == ("M1", 10.5)
    store.upsert_readings([MeterReading("M2", T0, 1.0, 0.0, T0)])
    assert store.count_readings() == 2
    store.close()
    assert {"sites", "gateways", "resources", "telemetry", "uplink_seen"} <= tables(path)


def test_reopening_an_up_to_date_store_applies_nothing(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.sqlite").close()
    again = SqliteStore(tmp_path / "s.sqlite")
    assert again.migrations_applied == []


def test_a_store_from_a_newer_erab_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (9, 'from the future', 0)")
    db.commit()
    db.close()
    before = dump(path)
    with pytest.raises(StoreError, match=r"future\.sqlite has schema version 9, newer than this "
                       r"erab \(4\): upgrade erab"):
        SqliteStore(path)
    assert dump(path) == before


def test_a_failing_migration_leaves_the_store_exactly_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = old_store(tmp_path / "old.sqlite")
    before = dump(path)
    broken = Migration(5, "a broken step", "CREATE TABLE half_done (x INTEGER);\nSELECT nope FROM;")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(StoreError, match=r"migration 5 \(a broken step\) failed: .*stays at "
                       r"version 1"):
        SqliteStore(path)
    assert dump(path) == before  # steps 2 to 4 succeeded, but were rolled back with 5
    assert "half_done" not in tables(path) and "schema_migrations" not in tables(path)
    monkeypatch.undo()
    assert SqliteStore(path).schema_version == 4  # fixed erab: the upgrade goes through


def test_migrations_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        migrations_module.check_sequence([MIGRATIONS[0], MIGRATIONS[2]])


def test_a_process_that_loses_the_race_to_migrate_applies_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two processes open a new store at once: both see steps to do, one migrates first;
    # the other, once it holds the lock, finds nothing left (seen as an IndexError)
    path = tmp_path / "store.sqlite"
    SqliteStore(path).close()  # the winner
    db = sqlite3.connect(path, isolation_level=None)
    real = migrations_module.pending
    calls = iter([MIGRATIONS[-1:], None])

    def stale_then_real(conn: sqlite3.Connection, steps: object) -> object:
        first = next(calls)
        return first if first is not None else real(conn, steps)  # type: ignore[arg-type]

    monkeypatch.setattr(migrations_module, "pending", stale_then_real)
    assert migrations_module.migrate(db, MIGRATIONS, 0) == []
    assert not db.in_transaction
    db.close()
