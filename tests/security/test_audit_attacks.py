"""Attacks on a deployment's audit log by someone who can write its files: each is caught.

The home is made the way `erab pki init` makes it (checkpoint key, config, a log that
checkpoints itself and keeps audit-head.json); the attacker edits audit.sqlite with sqlite3.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import SimulatedClock
from erab.security import AuditKind, AuditLog, AuditProblem, SecurityConfig, SecurityHome
from erab.security.audit import (
    AuditHead,
    CheckpointPolicy,
    SqliteAuditStore,
    verify_audit_log,
    verify_home_audit,
)
from erab.security.keys import load_ed25519_key, write_ed25519_key

UNGUARD = (
    "DROP TRIGGER audit_records_no_delete; DROP TRIGGER audit_checkpoints_no_delete;"
    " DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_checkpoints_no_update;"
)


@pytest.fixture
def deployment(home: SecurityHome, fixed_clock: SimulatedClock) -> SecurityHome:
    """12 records, checkpointed every 5 records: checkpoints 1 (record 1), 2 (6), 3 (11)."""
    home.save_config(SecurityConfig(checkpoint_every_records=5))
    write_ed25519_key(home.audit_key, Ed25519PrivateKey.generate())
    log = AuditLog.for_home(home, fixed_clock)
    for i in range(12):
        log.append(AuditKind.COMMAND, "ra", f"gw-{i}", {"n": i})
    return home


def attack(home: SecurityHome, script: str) -> None:
    with sqlite3.connect(home.audit_db) as db:
        db.executescript(UNGUARD + script)


def problems(home: SecurityHome) -> set[AuditProblem]:
    return {f.problem for f in verify_home_audit(home).findings}


def test_untouched_deployment_log_verifies(deployment: SecurityHome) -> None:
    result = verify_home_audit(deployment)
    assert result.intact, result.findings
    assert [c.sequence for c in SqliteAuditStore(deployment.audit_db).checkpoints()] == [1, 2, 3]
    assert result.latest_checkpoint is not None and result.latest_checkpoint.position == 11
    assert result.records_after_checkpoint == 1
    assert result.head_checked is not None and result.head_checked.checkpoint.sequence == 3


def test_dropped_tables_are_reported_and_not_recreated(deployment: SecurityHome) -> None:
    with sqlite3.connect(deployment.audit_db) as db:
        db.executescript("DROP TABLE audit_records; DROP TABLE audit_checkpoints;")
    result = verify_home_audit(deployment)
    assert [(f.problem, "gone" in f.detail) for f in result.findings] == [
        (AuditProblem.MISSING, True)
    ]
    with sqlite3.connect(deployment.audit_db) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'audit%'").fetchall()
    assert tables == []  # the verifier recreated nothing


def test_verify_never_creates_a_missing_database(deployment: SecurityHome) -> None:
    deployment.audit_db.unlink()
    assert problems(deployment) == {AuditProblem.MISSING}
    assert not deployment.audit_db.exists()


def test_checkpoints_then_records_deleted_is_caught(deployment: SecurityHome) -> None:
    attack(deployment, "DELETE FROM audit_checkpoints; DELETE FROM audit_records;")
    found = problems(deployment)
    assert {AuditProblem.MISSING, AuditProblem.CHECKPOINT_MISSING} <= found
    assert AuditProblem.TRUNCATED in found  # the head file still covers record 11


def test_consistent_rewrite_of_the_whole_chain_is_caught_by_the_head_file(
    deployment: SecurityHome, fixed_clock: SimulatedClock
) -> None:
    attack(deployment, "DELETE FROM audit_checkpoints; DELETE FROM audit_records;")
    forged = AuditLog(SqliteAuditStore(deployment.audit_db), fixed_clock)  # no key
    for i in range(12):
        forged.append(AuditKind.COMMAND, "ra", f"gw-{i}", {"n": i, "forged": True})
    assert forged.verify().intact  # self-consistent: hashes recomputed, links right
    result = verify_home_audit(deployment)
    assert (0, AuditProblem.CHECKPOINT_MISSING) in {
        (f.position, f.problem) for f in result.findings
    }
    assert (11, AuditProblem.CHANGED) in {(f.position, f.problem) for f in result.findings}


def test_rewrite_with_checkpoints_forged_under_another_key_is_caught_by_the_signature(
    deployment: SecurityHome, fixed_clock: SimulatedClock
) -> None:
    attack(deployment, "DELETE FROM audit_checkpoints; DELETE FROM audit_records;")
    forged = AuditLog(
        SqliteAuditStore(deployment.audit_db),
        fixed_clock,
        checkpoint_key=Ed25519PrivateKey.generate(),
        policy=CheckpointPolicy(every_records=5),
    )
    for i in range(12):
        forged.append(AuditKind.COMMAND, "ra", f"gw-{i}", {"forged": i})
    found = {(f.position, f.problem) for f in verify_home_audit(deployment).findings}
    assert {(1, AuditProblem.BAD_CHECKPOINT), (6, AuditProblem.BAD_CHECKPOINT)} <= found


def test_rewrite_by_the_key_holder_is_caught_only_by_a_head_kept_elsewhere(
    deployment: SecurityHome, fixed_clock: SimulatedClock
) -> None:
    held_by_ra = AuditHead.load(deployment.audit_head)  # e.g. the RA's copy of this log's head
    attack(deployment, "DELETE FROM audit_checkpoints; DELETE FROM audit_records;")
    deployment.audit_head.unlink()
    forged = AuditLog.for_home(deployment, fixed_clock)  # the attacker has the key too
    for i in range(12):
        forged.append(AuditKind.COMMAND, "ra", f"gw-{i}", {"forged": i})
    assert verify_home_audit(deployment).intact  # nothing local can tell
    store = SqliteAuditStore.open_read_only(deployment.audit_db)
    trusted = [load_ed25519_key(deployment.audit_key).public_key()]
    result = verify_audit_log(store, trusted, head=held_by_ra)
    assert {(f.position, f.problem) for f in result.findings} == {
        (0, AuditProblem.BAD_CHECKPOINT),  # checkpoint 3 differs from the RA's copy
        (11, AuditProblem.CHANGED),
    }


def test_newest_checkpoint_deleted_and_log_cut_back_is_caught(deployment: SecurityHome) -> None:
    attack(
        deployment,
        "DELETE FROM audit_checkpoints WHERE sequence = 3; DELETE FROM audit_records"
        " WHERE position > 6;",
    )
    result = verify_home_audit(deployment)
    assert {(f.position, f.problem) for f in result.findings} == {
        (0, AuditProblem.CHECKPOINT_MISSING),
        (7, AuditProblem.TRUNCATED),
    }
    assert "records 7-11 removed" in str(result.findings)


def test_checkpoint_deleted_from_the_middle_is_caught(deployment: SecurityHome) -> None:
    attack(deployment, "DELETE FROM audit_checkpoints WHERE sequence = 2;")
    result = verify_home_audit(deployment)
    assert [
        (f.problem, f.detail.startswith("checkpoint(s) 2 missing")) for f in result.findings
    ] == [(AuditProblem.CHECKPOINT_MISSING, True)]


def test_first_checkpoints_deleted_is_caught(deployment: SecurityHome) -> None:
    attack(deployment, "DELETE FROM audit_checkpoints WHERE sequence < 3;")
    assert "checkpoint(s) 1-2 missing" in str(verify_home_audit(deployment).findings)


def test_deleted_head_file_is_missing_evidence_not_a_pass(deployment: SecurityHome) -> None:
    deployment.audit_head.unlink()
    result = verify_home_audit(deployment)
    assert [(f.problem, "no head file" in f.detail) for f in result.findings] == [
        (AuditProblem.MISSING, True)
    ]


def test_altered_head_file_is_reported(deployment: SecurityHome) -> None:
    text = deployment.audit_head.read_text().replace('"position": 11', '"position": 12')
    deployment.audit_head.write_text(text)
    assert "signature does not match" in str(verify_home_audit(deployment).findings)


def test_empty_log_of_an_initialised_home_fails(
    home: SecurityHome, fixed_clock: SimulatedClock
) -> None:
    write_ed25519_key(home.audit_key, Ed25519PrivateKey.generate())
    SqliteAuditStore(home.audit_db).close()  # tables, but no record ever
    assert {AuditProblem.MISSING} == problems(home)
    assert "no records" in str(verify_home_audit(home).findings)


def test_log_checkpoints_itself_every_n_records_and_every_m_minutes(
    tmp_path: Path, fixed_clock: SimulatedClock
) -> None:
    log = AuditLog(
        SqliteAuditStore(tmp_path / "a.sqlite"),
        fixed_clock,
        checkpoint_key=Ed25519PrivateKey.generate(),
        policy=CheckpointPolicy(every_records=3),
        head_file=tmp_path / "head.json",
    )
    for _ in range(7):
        log.append(AuditKind.LOGIN, "op", "password")
    assert [c.position for c in log.store.checkpoints()] == [1, 4, 7]
    log.append(AuditKind.LOGIN, "op", "password")  # record 8: neither due
    fixed_clock.advance(600)
    log.append(AuditKind.LOGIN, "op", "password")  # record 9, 10 min on: due by time
    assert [c.position for c in log.store.checkpoints()] == [1, 4, 7, 9]
    assert AuditHead.load(tmp_path / "head.json").checkpoint.sequence == 4


def test_each_checkpoint_names_the_hash_of_the_one_before(
    tmp_path: Path, fixed_clock: SimulatedClock
) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(SqliteAuditStore(tmp_path / "a.sqlite"), fixed_clock, checkpoint_key=key)
    log.append(AuditKind.LOGIN, "op", "password")
    first = log.checkpoint()
    log.append(AuditKind.LOGIN, "op", "password")
    second = log.checkpoint()
    assert second.prev_checkpoint_hash == first.checkpoint_hash
    assert second.sequence == first.sequence + 1 and second.signed_by(key.public_key())


def test_head_round_trips_as_a_small_self_contained_json_object(
    deployment: SecurityHome,
) -> None:
    head = AuditHead.load(deployment.audit_head)
    assert AuditHead.from_json(head.to_json()) == head
    assert len(head.to_json()) < 1000
    with pytest.raises(ValueError, match="not an audit head"):
        AuditHead.from_json('{"format": "something else"}')
