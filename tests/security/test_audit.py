"""Hash-chained audit log: intact chains verify; tampering is found and located."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.clock import SimulatedClock
from erab.security import AuditKind, AuditLog, AuditProblem, SqliteAuditStore
from erab.security.audit import GENESIS_HASH


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite"


@pytest.fixture
def log(db_path: Path, fixed_clock: SimulatedClock) -> AuditLog:
    return AuditLog(SqliteAuditStore(db_path), fixed_clock)


@pytest.fixture
def checkpoint_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def fill(log: AuditLog, count: int) -> None:
    kinds = list(AuditKind)
    for i in range(count):
        log.append(kinds[i % len(kinds)], f"actor-{i}", f"subject-{i}", {"n": i})


def tamper(db_path: Path, *statements: str) -> None:
    """What an attacker with write access to the file could do (triggers dropped first)."""
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("DROP TRIGGER audit_records_no_delete")
        for statement in statements:
            db.execute(statement)


def problems(
    log: AuditLog, keys: list[Ed25519PublicKey] | None = None
) -> list[tuple[int, AuditProblem]]:
    return [(f.position, f.problem) for f in log.verify(keys).findings]


def test_records_chain_to_the_one_before(log: AuditLog) -> None:
    first = log.append(AuditKind.LOGIN, "alice", "password", {"outcome": "success"})
    second = log.append(AuditKind.COMMAND, "ra", "gw-1", {"sequence": 1})
    assert first.position == 1 and first.prev_hash == GENESIS_HASH
    assert second.position == 2 and second.prev_hash == first.record_hash
    assert second.record_hash == second.compute_hash()


def test_an_untouched_log_verifies(log: AuditLog) -> None:
    fill(log, 20)
    result = log.verify()
    assert result.intact
    assert result.records_checked == 20
    assert result.head_position == 20


def test_empty_log_verifies(log: AuditLog) -> None:
    assert log.verify().intact


def test_update_and_delete_are_refused_by_the_store(log: AuditLog, db_path: Path) -> None:
    fill(log, 3)
    with sqlite3.connect(db_path) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_records SET actor='mallory' WHERE position=2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_records WHERE position=2")


def test_changed_record_is_reported_at_its_position(log: AuditLog, db_path: Path) -> None:
    fill(log, 10)
    tamper(db_path, "UPDATE audit_records SET actor='mallory' WHERE position=4")
    assert problems(log) == [(4, AuditProblem.CHANGED)]


def test_changed_and_rehashed_record_is_reported_at_its_position(
    log: AuditLog, db_path: Path
) -> None:
    fill(log, 10)
    rec = next(r for r in log.store.records() if r.position == 4)
    forged = type(rec)(**{**rec.__dict__, "actor": "mallory", "record_hash": ""})
    tamper(
        db_path,
        f"UPDATE audit_records SET actor='mallory', record_hash='{forged.compute_hash()}'"
        " WHERE position=4",
    )
    assert problems(log) == [(4, AuditProblem.CHANGED)]


def test_removed_record_is_reported_at_its_position(log: AuditLog, db_path: Path) -> None:
    fill(log, 10)
    tamper(db_path, "DELETE FROM audit_records WHERE position IN (5, 6)")
    result = log.verify()
    assert [(f.position, f.problem) for f in result.findings] == [(5, AuditProblem.REMOVED)]
    assert "5-6" in result.findings[0].detail


def test_reordered_records_are_reported(log: AuditLog, db_path: Path) -> None:
    fill(log, 6)
    columns = "position, recorded_at, kind, actor, subject, details, prev_hash, record_hash"
    # Swap the full contents of the rows stored 3rd and 4th.
    tamper(
        db_path,
        f"CREATE TEMP TABLE r AS SELECT id, {columns} FROM audit_records WHERE id IN (3, 4)",
        *(
            f"UPDATE audit_records SET {col} ="
            f" (SELECT {col} FROM r WHERE r.id = 7 - audit_records.id) WHERE id IN (3, 4)"
            for col in columns.split(", ")
        ),
    )
    assert problems(log) == [(3, AuditProblem.REORDERED)]


def test_removed_tail_is_caught_by_a_checkpoint(
    log: AuditLog, db_path: Path, checkpoint_key: Ed25519PrivateKey
) -> None:
    fill(log, 8)
    log.checkpoint(checkpoint_key)
    tamper(db_path, "DELETE FROM audit_records WHERE position >= 7")
    result = log.verify([checkpoint_key.public_key()])
    assert [(f.position, f.problem) for f in result.findings] == [(7, AuditProblem.TRUNCATED)]
    assert result.findings[0].detail.startswith("records 7-8 removed from the end")


def test_rewritten_chain_is_caught_by_a_checkpoint(
    log: AuditLog,
    db_path: Path,
    fixed_clock: SimulatedClock,
    checkpoint_key: Ed25519PrivateKey,
) -> None:
    fill(log, 5)
    log.checkpoint(checkpoint_key)
    # The attacker replaces the whole file with a self-consistent chain of their own...
    tamper(db_path, "DELETE FROM audit_records")
    forged = AuditLog(SqliteAuditStore(db_path), fixed_clock)
    for i in range(5):
        forged.append(AuditKind.COMMAND, "ra", f"subject-{i}", {"n": i, "forged": True})
    # ...but cannot match the signed head.
    assert problems(forged, [checkpoint_key.public_key()]) == [(5, AuditProblem.CHANGED)]


def test_checkpoint_signed_by_another_key_is_reported(
    log: AuditLog, checkpoint_key: Ed25519PrivateKey
) -> None:
    fill(log, 3)
    log.checkpoint(Ed25519PrivateKey.generate())
    assert problems(log, [checkpoint_key.public_key()]) == [(3, AuditProblem.BAD_CHECKPOINT)]


def test_checkpoint_records_the_head(log: AuditLog, checkpoint_key: Ed25519PrivateKey) -> None:
    fill(log, 4)
    head = log.store.head()
    cp = log.checkpoint(checkpoint_key)
    assert head is not None
    assert (cp.position, cp.head_hash) == (4, head.record_hash)
    assert log.verify([checkpoint_key.public_key()]).intact


def test_two_writers_on_one_file_keep_one_chain(db_path: Path, fixed_clock: SimulatedClock) -> None:
    a = AuditLog(SqliteAuditStore(db_path), fixed_clock)
    b = AuditLog(SqliteAuditStore(db_path), fixed_clock)
    for i in range(10):
        (a if i % 2 else b).append(AuditKind.COMMAND, "ra", f"gw-{i}")
    result = a.verify()
    assert result.intact and result.head_position == 10


def test_details_that_cannot_be_hashed_are_refused_before_storing(log: AuditLog) -> None:
    with pytest.raises(ValueError):
        log.append(AuditKind.COMMAND, "ra", "gw-1", {"power_w": float("nan")})
    assert log.store.head() is None


def test_times_come_from_the_clock(log: AuditLog, fixed_clock: SimulatedClock) -> None:
    fixed_clock.advance(3600)
    record = log.append(AuditKind.SECURITY_EVENT, "ids", "gw-1")
    assert record.recorded_at == fixed_clock.now()


def test_row_damaged_past_parsing_is_reported_not_crashed_on(log: AuditLog, db_path: Path) -> None:
    fill(log, 5)
    tamper(db_path, "UPDATE audit_records SET details='{not json' WHERE position=3")
    result = log.verify()
    assert [(f.position, f.problem) for f in result.findings] == [(3, AuditProblem.CHANGED)]
    assert "cannot be read" in result.findings[0].detail


def test_checkpoint_is_due_only_when_old_and_the_chain_moved(
    log: AuditLog, fixed_clock: SimulatedClock, checkpoint_key: Ed25519PrivateKey
) -> None:
    every = timedelta(hours=1)
    assert log.checkpoint_if_due(checkpoint_key, every) is None  # empty log
    fill(log, 2)
    first = log.checkpoint_if_due(checkpoint_key, every)
    assert first is not None and first.position == 2
    fill(log, 1)
    assert log.checkpoint_if_due(checkpoint_key, every) is None  # too soon
    fixed_clock.advance(3600)
    second = log.checkpoint_if_due(checkpoint_key, every)
    assert second is not None and second.position == 3
    fixed_clock.advance(3600)
    assert log.checkpoint_if_due(checkpoint_key, every) is None  # nothing new to sign


async def test_periodic_checkpoints_follow_the_clock(
    log: AuditLog, fixed_clock: SimulatedClock, checkpoint_key: Ed25519PrivateKey
) -> None:
    fill(log, 1)
    task = asyncio.create_task(log.run_checkpoints(checkpoint_key, timedelta(minutes=10)))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if log.store.checkpoints():
                break
        assert [c.position for c in log.store.checkpoints()] == [1]
        fill(log, 1)
        fixed_clock.advance(600)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(log.store.checkpoints()) == 2:
                break
        assert [c.position for c in log.store.checkpoints()] == [1, 2]
    finally:
        task.cancel()
