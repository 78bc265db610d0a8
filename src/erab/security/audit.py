"""Append-only, hash-chained audit log with signed checkpoints.

ERAB Cyber Security Guideline, logging: commands, enrolments, revocations, logins and
security events are recorded so that they can be reviewed later and any tampering shows.
Each record carries the SHA-256 of the record before it; a checkpoint signs the chain head
with an Ed25519 key, so even a rewrite of the whole chain after a checkpoint is caught.
:meth:`AuditLog.verify` reports every changed, removed or reordered record by position.

The store is a small interface (:class:`AuditStore`); :class:`SqliteAuditStore` is the
default and refuses UPDATE and DELETE with triggers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.clock import Clock
from erab.security._common import (
    b64url,
    b64url_decode,
    canonical_json,
    parse_utc_iso,
    sha256_hex,
    utc_iso,
)
from erab.security.keys import key_id_of

GENESIS_HASH = "0" * 64
UNREADABLE_HASH = "unreadable"  # stands in for the hash of a row that cannot be parsed
_CHECKPOINT_CONTEXT = b"erab-audit-checkpoint-v1\n"


class AuditKind(StrEnum):
    COMMAND = "command"
    ENROLMENT = "enrolment"
    REVOCATION = "revocation"
    LOGIN = "login"
    SECURITY_EVENT = "security_event"


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the chain; ``record_hash`` covers every other field."""

    position: int
    recorded_at: datetime
    kind: AuditKind
    actor: str
    subject: str
    details: dict[str, Any] = field(hash=False)
    prev_hash: str = GENESIS_HASH
    record_hash: str = ""

    def hashed_fields(self) -> dict[str, Any]:
        """Every field but ``record_hash``: what the hash covers, in wire form."""
        return {
            "position": self.position,
            "recorded_at": utc_iso(self.recorded_at),
            "kind": self.kind.value,
            "actor": self.actor,
            "subject": self.subject,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        return sha256_hex(canonical_json(self.hashed_fields()))

    def to_dict(self) -> dict[str, Any]:
        return {**self.hashed_fields(), "record_hash": self.record_hash}


@dataclass(frozen=True)
class ChainHead:
    """What a new record needs of the one before it."""

    position: int
    record_hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: at ``created_at`` the chain's head was ``head_hash`` at ``position``."""

    position: int
    head_hash: str
    created_at: datetime
    key_id: str
    signature: str  # base64url Ed25519

    def signing_bytes(self) -> bytes:
        return _CHECKPOINT_CONTEXT + canonical_json(
            {
                "position": self.position,
                "head_hash": self.head_hash,
                "created_at": utc_iso(self.created_at),
                "key_id": self.key_id,
            }
        )


class AuditProblem(StrEnum):
    CHANGED = "changed"
    REMOVED = "removed"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    TRUNCATED = "truncated"  # records after a checkpointed position are gone
    BAD_CHECKPOINT = "bad_checkpoint"


@dataclass(frozen=True)
class AuditFinding:
    position: int
    problem: AuditProblem
    detail: str

    def __str__(self) -> str:
        return f"record {self.position}: {self.problem.value}: {self.detail}"


@dataclass(frozen=True)
class AuditVerification:
    records_checked: int
    checkpoints_checked: int
    head_position: int
    head_hash: str
    findings: tuple[AuditFinding, ...]

    @property
    def intact(self) -> bool:
        return not self.findings


class AuditStore(Protocol):
    """Where audit records live.  Implementations must make ``append`` atomic."""

    def append(self, build: Callable[[ChainHead | None], AuditRecord]) -> AuditRecord:
        """Call ``build(head)`` with the current last record's position and hash and store
        what it returns, with no other append in between."""
        ...

    def records(self) -> Iterator[AuditRecord]:
        """Every record in storage order."""
        ...

    def tail(self, count: int) -> list[AuditRecord]: ...

    def head(self) -> AuditRecord | None: ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def checkpoints(self) -> list[Checkpoint]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    record_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"""

_RECORD_COLUMNS = "position, recorded_at, kind, actor, subject, details, prev_hash, record_hash"


class SqliteAuditStore:
    """Audit records in one SQLite file (WAL); safe for several processes appending."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _row(row: tuple[Any, ...]) -> AuditRecord:
        try:
            details = json.loads(row[5])
            if not isinstance(details, dict):
                raise ValueError("details is not a JSON object")
            return AuditRecord(
                position=int(row[0]),
                recorded_at=parse_utc_iso(row[1]),
                kind=AuditKind(row[2]),
                actor=str(row[3]),
                subject=str(row[4]),
                details=details,
                prev_hash=str(row[6]),
                record_hash=str(row[7]),
            )
        except (ValueError, TypeError) as exc:
            # A row damaged past parsing still shows up, and can never match its hash.
            try:
                position = int(row[0])
            except (ValueError, TypeError):
                position = 0
            return AuditRecord(
                position=position,
                recorded_at=datetime(1970, 1, 1, tzinfo=UTC),
                kind=AuditKind.SECURITY_EVENT,
                actor="",
                subject="",
                details={"unreadable": str(exc)},
                prev_hash=str(row[6]),
                record_hash=UNREADABLE_HASH,
            )

    def append(self, build: Callable[[ChainHead | None], AuditRecord]) -> AuditRecord:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT position, record_hash FROM audit_records ORDER BY id DESC LIMIT 1"
                ).fetchone()
                record = build(None if row is None else ChainHead(int(row[0]), row[1]))
                self._db.execute(
                    f"INSERT INTO audit_records ({_RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        record.position,
                        utc_iso(record.recorded_at),
                        record.kind.value,
                        record.actor,
                        record.subject,
                        canonical_json(record.details).decode("utf-8"),
                        record.prev_hash,
                        record.record_hash,
                    ),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return record

    def records(self) -> Iterator[AuditRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM audit_records ORDER BY id"
            ).fetchall()
        for row in rows:
            yield self._row(row)

    def tail(self, count: int) -> list[AuditRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM audit_records ORDER BY id DESC LIMIT ?",
                (count,),
            ).fetchall()
        return [self._row(r) for r in reversed(rows)]

    def head(self) -> AuditRecord | None:
        last = self.tail(1)
        return last[0] if last else None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit_checkpoints (position, head_hash, created_at, key_id,"
                " signature) VALUES (?,?,?,?,?)",
                (
                    checkpoint.position,
                    checkpoint.head_hash,
                    utc_iso(checkpoint.created_at),
                    checkpoint.key_id,
                    checkpoint.signature,
                ),
            )

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT position, head_hash, created_at, key_id, signature"
                " FROM audit_checkpoints ORDER BY id"
            ).fetchall()
        return [Checkpoint(int(r[0]), r[1], parse_utc_iso(r[2]), r[3], r[4]) for r in rows]


class AuditLog:
    """Appends records to the chain, signs checkpoints, and verifies the whole log."""

    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def append(
        self,
        kind: AuditKind,
        actor: str,
        subject: str,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Record an event; ``actor`` is who did it, ``subject`` what it was done to."""
        kind = AuditKind(kind)
        body = dict(details or {})
        canonical_json(body)  # refuse what cannot be hashed before touching the store
        when = self.clock.now()

        def build(head: ChainHead | None) -> AuditRecord:
            draft = AuditRecord(
                position=1 if head is None else head.position + 1,
                recorded_at=when,
                kind=kind,
                actor=actor,
                subject=subject,
                details=body,
                prev_hash=GENESIS_HASH if head is None else head.record_hash,
            )
            return AuditRecord(**{**draft.__dict__, "record_hash": draft.compute_hash()})

        return self.store.append(build)

    def checkpoint(self, key: Ed25519PrivateKey) -> Checkpoint:
        """Sign the current chain head and store the checkpoint."""
        head = self.store.head()
        position, head_hash = (
            (0, GENESIS_HASH) if head is None else (head.position, head.record_hash)
        )
        unsigned = Checkpoint(
            position, head_hash, self.clock.now(), key_id_of(key.public_key()), ""
        )
        signed = Checkpoint(
            unsigned.position,
            unsigned.head_hash,
            unsigned.created_at,
            unsigned.key_id,
            b64url(key.sign(unsigned.signing_bytes())),
        )
        self.store.add_checkpoint(signed)
        return signed

    def checkpoint_if_due(self, key: Ed25519PrivateKey, every: timedelta) -> Checkpoint | None:
        """Checkpoint when the chain moved on and the last checkpoint is ``every`` old."""
        head = self.store.head()
        checkpoints = self.store.checkpoints()
        if checkpoints:
            last = checkpoints[-1]
            moved = head is not None and head.position != last.position
            if not moved or self.clock.now() - last.created_at < every:
                return None
        elif head is None:
            return None
        return self.checkpoint(key)

    async def run_checkpoints(self, key: Ed25519PrivateKey, every: timedelta) -> None:
        """Checkpoint periodically (by this log's clock) until cancelled."""
        while True:
            self.checkpoint_if_due(key, every)
            await self.clock.sleep(every.total_seconds())

    def verify(self, checkpoint_keys: list[Ed25519PublicKey] | None = None) -> AuditVerification:
        """Check every record and checkpoint; report each problem with its position.

        With ``checkpoint_keys``, a checkpoint signed by none of them is itself a finding.
        """
        records = list(self.store.records())
        checkpoints = self.store.checkpoints()
        findings: list[AuditFinding] = []

        # Storage order must follow chain order.
        highest = 0
        for rec in records:
            if rec.position < highest:
                findings.append(
                    AuditFinding(
                        rec.position,
                        AuditProblem.REORDERED,
                        f"stored after record {highest}; records were moved",
                    )
                )
            highest = max(highest, rec.position)

        by_position: dict[int, AuditRecord] = {}
        for rec in records:
            if rec.position in by_position:
                findings.append(
                    AuditFinding(rec.position, AuditProblem.DUPLICATED, "position appears twice")
                )
                continue
            by_position[rec.position] = rec
            if rec.record_hash == UNREADABLE_HASH:
                findings.append(
                    AuditFinding(
                        rec.position,
                        AuditProblem.CHANGED,
                        f"stored fields cannot be read ({rec.details['unreadable']})",
                    )
                )
            elif rec.compute_hash() != rec.record_hash:
                findings.append(
                    AuditFinding(
                        rec.position, AuditProblem.CHANGED, "content does not match its hash"
                    )
                )

        missing = sorted(set(range(1, highest + 1)) - set(by_position))
        for run_start, run_end in _runs(missing):
            findings.append(
                AuditFinding(
                    run_start, AuditProblem.REMOVED, f"{_span(run_start, run_end)} missing"
                )
            )

        # The chain links, in position order.
        for pos in sorted(by_position):
            rec = by_position[pos]
            if pos == 1:
                if rec.prev_hash != GENESIS_HASH:
                    findings.append(
                        AuditFinding(
                            1, AuditProblem.CHANGED, "first record does not start the chain"
                        )
                    )
                continue
            before = by_position.get(pos - 1)
            if before is None:
                continue  # the gap is already reported
            if rec.prev_hash != before.record_hash and before.compute_hash() == before.record_hash:
                findings.append(
                    AuditFinding(
                        pos - 1,
                        AuditProblem.CHANGED,
                        f"differs from the record that record {pos} was chained to "
                        "(changed and re-hashed, or replaced)",
                    )
                )

        keys = {key_id_of(k): k for k in checkpoint_keys or []}
        for cp in checkpoints:
            if checkpoint_keys is not None:
                key = keys.get(cp.key_id)
                valid = False
                if key is not None:
                    try:
                        key.verify(b64url_decode(cp.signature), cp.signing_bytes())
                        valid = True
                    except (InvalidSignature, ValueError):
                        valid = False
                if not valid:
                    findings.append(
                        AuditFinding(
                            cp.position,
                            AuditProblem.BAD_CHECKPOINT,
                            f"checkpoint of {utc_iso(cp.created_at)} is not signed by a "
                            "trusted checkpoint key",
                        )
                    )
                    continue
            if cp.position == 0:
                continue
            at_checkpoint = by_position.get(cp.position)
            if at_checkpoint is None:
                if cp.position > highest:
                    findings.append(
                        AuditFinding(
                            highest + 1,
                            AuditProblem.TRUNCATED,
                            f"{_span(highest + 1, cp.position)} removed from the end "
                            f"(checkpoint of {utc_iso(cp.created_at)} covers up to {cp.position})",
                        )
                    )
            elif at_checkpoint.record_hash != cp.head_hash:
                findings.append(
                    AuditFinding(
                        cp.position,
                        AuditProblem.CHANGED,
                        f"does not match the checkpoint signed at {utc_iso(cp.created_at)}",
                    )
                )

        unique = sorted(set(findings), key=lambda f: (f.position, f.problem.value, f.detail))
        head = records[-1] if records else None
        return AuditVerification(
            records_checked=len(records),
            checkpoints_checked=len(checkpoints),
            head_position=0 if head is None else head.position,
            head_hash=GENESIS_HASH if head is None else head.record_hash,
            findings=tuple(unique),
        )


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}-{last}"


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    if not numbers:
        return
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n != prev + 1:
            yield start, prev
            start = n
        prev = n
    yield start, prev
