"""The fleet's grouped writes keep a lone gateway's promises: nothing leaves before the commit
that stores it, nothing committed is lost across a restart, replays stay refused across a
restart, and every audit record is on disk before the acknowledgement it explains can go."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import Acknowledgement, Heartbeat, UplinkMessage
from erab.clock import SimulatedClock
from erab.gateway.journal import DeferredAuditStore, FleetJournal
from erab.gateway.outbox import Outbox, OutboxDatabase, OutboxError
from erab.security import (
    AuditKind,
    AuditLog,
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    FileVerifierStateStore,
    RejectReason,
    SqliteAuditStore,
    VerifierState,
)
from erab.security.audit import verify_audit_log
from erab.security.keys import public_key_text
from tests.gateway.test_outbox import telemetry

T0 = datetime(2026, 8, 1, 13, 0, tzinfo=UTC)


def beat(box: Outbox) -> Heartbeat:
    return Heartbeat(gateway_id=box.gateway_id, seq=box.next_seq(), sent_at=T0, uptime_s=1.0)


class Collect:
    """A batch publisher (``Outbox.drain_encoded``) that keeps what it was given."""

    def __init__(self, fail_from: int | None = None) -> None:
        self.got: list[UplinkMessage] = []
        self.fail_from = fail_from

    async def __call__(self, batch: list[tuple[str, bytes]]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for _, payload in batch:
            if self.fail_from is not None and len(self.got) >= self.fail_from:
                out.append(ConnectionError("link lost"))
                continue
            self.got.append(msgspec.json.decode(payload, type=UplinkMessage))
            out.append(None)
        return out


async def test_nothing_is_sent_before_the_group_commit_that_stores_it(tmp_path: Path) -> None:
    db = OutboxDatabase(tmp_path / "fleet.sqlite", durable=False, group_commit=True)
    box = db.outbox("gw-a")
    box.put(beat(box))
    link = Collect()
    assert await box.drain_encoded(link) == 0  # stored, not yet committed: stays in
    assert box.committed_seq == 0
    db.commit()
    assert await box.drain_encoded(link) == 1
    assert [m.seq for m in link.got] == [1]
    db.close()


async def test_what_was_never_committed_was_never_sent_so_its_numbers_may_come_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.sqlite"
    db = OutboxDatabase(path, durable=False, group_commit=True)
    box = db.outbox("gw-a")
    box.put(beat(box))
    db.commit()
    box.put(beat(box))  # seq 2: the process dies before the next commit
    db.db.close()  # no commit: as a crash leaves it

    again = OutboxDatabase(path, durable=False, group_commit=True)
    box = again.outbox("gw-a")
    assert (box.backlog, box.last_seq) == (1, 1)  # seq 2 never left: it is handed out again
    assert box.next_seq() == 2
    again.close()


async def test_gateways_sharing_one_file_keep_their_own_numbers_and_backlogs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.sqlite"
    db = OutboxDatabase(path, durable=False, group_commit=True)
    a, b = db.outbox("gw-a"), db.outbox("gw-b")
    for _ in range(3):
        a.put(beat(a))
    b.put(beat(b))
    with pytest.raises(OutboxError, match="already has an outbox"):
        db.outbox("gw-a")
    db.commit()
    sent_b = Collect()
    assert await b.drain_encoded(sent_b) == 1
    db.close()

    again = OutboxDatabase(path, durable=False, group_commit=True)
    a, b = again.outbox("gw-a"), again.outbox("gw-b")
    assert (a.backlog, a.last_seq, b.backlog, b.last_seq) == (3, 3, 0, 1)
    sent_a = Collect()
    assert await a.drain_encoded(sent_a) == 3
    assert [(m.gateway_id, m.seq) for m in sent_a.got] == [("gw-a", 1), ("gw-a", 2), ("gw-a", 3)]
    again.close()


async def test_a_failed_publish_in_a_batch_keeps_it_and_everything_after(tmp_path: Path) -> None:
    db = OutboxDatabase(tmp_path / "fleet.sqlite", durable=False, group_commit=True)
    box = db.outbox("gw-a")
    for _ in range(5):
        box.put(beat(box))
    db.commit()
    with pytest.raises(ConnectionError):
        await box.drain_encoded(Collect(fail_from=2))
    db.commit()
    assert [seq for seq, _ in box.kinds()] == [3, 4, 5]
    rest = Collect()
    assert await box.drain_encoded(rest) == 3
    assert [m.seq for m in rest.got] == [3, 4, 5]
    db.close()


def test_a_one_gateway_outbox_file_moves_into_the_fleet_file_whole(tmp_path: Path) -> None:
    old = tmp_path / "gw-0001" / "outbox.sqlite"
    with Outbox(old, "gw-0001", max_messages=3) as box:
        for i in range(5):
            box.put(telemetry(box, float(i)))  # two dropped past the bound
    journal = FleetJournal(tmp_path / "fleet.sqlite")
    box = journal.outbox("gw-0001", old, max_messages=3)
    assert (box.backlog, box.last_seq, box.dropped_total) == (3, 5, 2)
    assert [seq for seq, _ in box.kinds()] == [3, 4, 5]
    assert box.next_seq() == 6
    assert not old.exists() and (old.parent / "outbox.sqlite.imported").exists()
    journal.close()


def test_an_outbox_file_from_before_several_gateways_opens_with_its_messages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, droppable INTEGER "
        "NOT NULL, payload BLOB NOT NULL);"
        "CREATE TABLE counters (gateway_id TEXT NOT NULL, name TEXT NOT NULL, value INTEGER "
        "NOT NULL, PRIMARY KEY (gateway_id, name));"
    )
    payload = (b'{"type":"heartbeat","v":1,"gateway_id":"gw-0001","seq":7,'
               b'"sent_at":"2026-08-01T13:00:00Z","uptime_s":1.0}')  # fmt: skip
    raw.execute("INSERT INTO outbox VALUES (7, 'heartbeat', 1, ?)", (payload,))
    raw.execute("INSERT INTO counters VALUES ('gw-0001', 'seq', 7)")
    raw.commit()
    raw.close()
    with Outbox(path, "gw-0001") as box:
        assert box.kinds() == [(7, "heartbeat")]
        assert box.next_seq() == 8


async def test_a_replay_is_refused_after_a_restart_when_the_state_is_in_the_fleet_file(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(T0, speed=0)
    key = Ed25519PrivateKey.generate()
    signer = EnvelopeSigner(key, clock)
    wire = signer.sign("gw-a", {"type": "cancel", "device_id": "battery-1"})
    path = tmp_path / "fleet.sqlite"

    journal = FleetJournal(path, commit_interval_s=0.01)
    runner = asyncio.create_task(journal.run())
    store = journal.verifier_store("gw-a", tmp_path / "verifier.json")
    verifier = EnvelopeVerifier("gw-a", clock, store, trusted_key=key.public_key())
    assert verifier.verify(wire).sequence == 1
    async with asyncio.timeout(5.0):
        await journal.committed()  # what the executor awaits before it acts
    runner.cancel()
    journal.database.commit = lambda: 0  # type: ignore[method-assign]  # a crash: no more
    await asyncio.gather(runner, return_exceptions=True)
    journal.database.db.close()

    again = FleetJournal(path)
    verifier = EnvelopeVerifier("gw-a", clock, again.verifier_store("gw-a", tmp_path / "v.json"))
    with pytest.raises(EnvelopeRejected) as refused:
        verifier.verify(wire)
    assert refused.value.reason is RejectReason.REPLAYED
    again.close()


def test_a_gateway_that_kept_its_verifier_state_in_a_file_keeps_its_replay_mark(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    legacy = tmp_path / "verifier.json"
    FileVerifierStateStore(legacy).save(
        VerifierState(last_sequence=41, current_key=public_key_text(key.public_key()))
    )
    clock = SimulatedClock(T0, speed=0)
    journal = FleetJournal(tmp_path / "fleet.sqlite")
    verifier = EnvelopeVerifier("gw-a", clock, journal.verifier_store("gw-a", legacy))
    old = EnvelopeSigner(key, clock).sign("gw-a", {"type": "cancel", "device_id": "x"})  # seq 1
    with pytest.raises(EnvelopeRejected) as refused:
        verifier.verify(old)
    assert refused.value.reason is RejectReason.OLD_SEQUENCE
    journal.close()


def test_deferred_audit_records_are_chained_as_if_appended_one_by_one(tmp_path: Path) -> None:
    clock = SimulatedClock(T0, speed=0)
    path = tmp_path / "audit.sqlite"
    store = DeferredAuditStore(SqliteAuditStore(path))
    log = AuditLog(store, clock)
    for i in range(5):
        log.append(AuditKind.COMMAND, "gw-a", f"command {i}", {"action": "accepted"})
    outside = sqlite3.connect(path)
    assert outside.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0] == 0
    assert store.flush() == 5
    assert outside.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0] == 5
    outside.close()
    result = verify_audit_log(SqliteAuditStore(path))
    assert result.intact and result.head_position == 5


def test_records_another_writer_appended_meanwhile_are_kept_and_chained_after(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(T0, speed=0)
    path = tmp_path / "audit.sqlite"
    deferred = AuditLog(DeferredAuditStore(SqliteAuditStore(path)), clock)
    deferred.append(AuditKind.COMMAND, "gw-a", "command 1")
    AuditLog(SqliteAuditStore(path), clock).append(AuditKind.LOGIN, "someone", "gw-a")
    deferred.append(AuditKind.COMMAND, "gw-a", "command 2")
    deferred.store.flush()  # type: ignore[attr-defined]
    subjects = [r.subject for r in SqliteAuditStore(path).records()]
    assert subjects == ["gw-a", "command 1", "command 2"]
    assert verify_audit_log(SqliteAuditStore(path)).intact


async def test_an_acknowledgement_leaves_only_after_the_audit_records_before_it_are_stored(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(T0, speed=0)
    journal = FleetJournal(tmp_path / "fleet.sqlite", commit_interval_s=0.01)
    box = journal.outbox("gw-a")
    audit_path = tmp_path / "audit.sqlite"
    log = AuditLog(journal.audit_store(audit_path), clock)
    log.append(AuditKind.COMMAND, "gw-a", "command 9", {"action": "set"})
    box.put(Acknowledgement(gateway_id="gw-a", seq=box.next_seq(), sent_at=T0, command_seq=9,
                            received_at=T0))  # fmt: skip
    link = Collect()
    assert await box.drain_encoded(link) == 0
    runner = asyncio.create_task(journal.run())
    async with asyncio.timeout(5.0):
        await journal.committed()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    outside = sqlite3.connect(audit_path)
    assert outside.execute("SELECT subject FROM audit_records").fetchall() == [("command 9",)]
    outside.close()
    assert await box.drain_encoded(link) == 1
    journal.close()


async def test_the_journal_commits_within_its_interval_of_a_write_and_wakes_the_drain(
    tmp_path: Path,
) -> None:
    journal = FleetJournal(tmp_path / "fleet.sqlite", commit_interval_s=0.02)
    box = journal.outbox("gw-a")
    woken = asyncio.Event()
    box.on_committed = woken.set
    runner = asyncio.create_task(journal.run())
    try:
        box.put(beat(box))
        async with asyncio.timeout(2.0):
            await woken.wait()
        assert box.committed_seq == 1
        assert journal.database.commits == 1
        await asyncio.sleep(0.1)
        assert journal.database.commits == 1  # no writes, no commits
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        journal.close()


def test_a_journal_needs_a_positive_commit_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_interval_s"):
        FleetJournal(tmp_path / "fleet.sqlite", commit_interval_s=0.0)


def test_closing_a_shared_outbox_commits_its_sequence_counter(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    db = OutboxDatabase(path, durable=False, group_commit=True)
    box = db.outbox("gw-a")
    box.next_seq()
    box.next_seq()
    box.close()
    db.db.close()  # the process ends without a commit of its own
    again = OutboxDatabase(path, durable=False, group_commit=True)
    assert again.outbox("gw-a").next_seq() == 3
    again.close()


async def test_records_appended_while_the_writer_thread_stores_a_batch_follow_it_in_order(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(T0, speed=0)
    journal = FleetJournal(tmp_path / "fleet.sqlite", commit_interval_s=0.01)
    box = journal.outbox("gw-a")
    audit_path = tmp_path / "audit.sqlite"
    store = journal.audit_store(audit_path)
    log = AuditLog(store, clock)
    for i in range(200):
        log.append(AuditKind.COMMAND, "gw-a", f"command {i}", {"action": "set"})
    # the thread stores the first 200 while the loop appends more and asks for a commit
    soon = asyncio.create_task(journal.commit_soon())
    await asyncio.sleep(0)
    log.append(AuditKind.COMMAND, "gw-a", "command 200", {"action": "set"})
    box.put(Acknowledgement(gateway_id="gw-a", seq=box.next_seq(), sent_at=T0,
                            command_seq=200, received_at=T0))  # fmt: skip
    await journal.committed()  # may flush on the loop while the thread still writes
    await soon
    assert box.committed_seq == 1
    subjects = [r.subject for r in SqliteAuditStore(audit_path).records()]
    assert subjects == [f"command {i}" for i in range(201)]
    assert verify_audit_log(SqliteAuditStore(audit_path)).intact
    journal.close()


async def test_a_commit_cancelled_while_its_thread_writes_still_stores_the_audit_first(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(T0, speed=0)
    journal = FleetJournal(tmp_path / "fleet.sqlite", commit_interval_s=0.01)
    box = journal.outbox("gw-a")
    audit_path = tmp_path / "audit.sqlite"
    log = AuditLog(journal.audit_store(audit_path), clock)
    for i in range(300):
        log.append(AuditKind.COMMAND, "gw-a", f"command {i}", {"action": "set"})
    box.put(beat(box))
    soon = asyncio.create_task(journal.commit_soon())
    await asyncio.sleep(0)
    soon.cancel()
    await asyncio.gather(soon, return_exceptions=True)
    journal.commit()  # as Fleet.run's end does: waits for the thread's batches first
    assert box.committed_seq == 1
    outside = sqlite3.connect(audit_path)
    assert outside.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0] == 300
    outside.close()
    journal.close()
