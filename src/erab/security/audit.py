"""Append-only, hash-chained audit log with chained, signed checkpoints.

ERAB Cyber Security Guideline, logging: commands, enrolments, revocations, logins and
security events are recorded so that they can be reviewed later and any tampering shows.
Each record carries the SHA-256 of the record before it.  A checkpoint signs the chain head
with an Ed25519 key and carries the hash of the checkpoint before it, so checkpoints cannot
be removed from the middle or the start unnoticed; the log checkpoints itself every
``every_records`` records and ``every`` minutes (:class:`CheckpointPolicy`).  The latest
checkpoint is also kept outside the database as an :class:`AuditHead` (a small signed JSON
object): a log cut back, wiped or rewritten behind the latest head no longer reaches it.
:func:`verify_audit_log` reports every changed, removed or reordered record by position, and
:func:`verify_home_audit` checks a deployment's log read-only, never writing to the evidence.

What cannot be caught: records changed or removed after the latest checkpoint (at most one
checkpoint interval); and whoever holds the checkpoint key can re-sign a forged log and head,
which only a copy of the head held elsewhere (e.g. by the RA) exposes.

The store is a small interface (:class:`AuditStore`); :class:`SqliteAuditStore` is the
default and refuses UPDATE and DELETE with triggers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.clock import Clock
from erab.security._common import (
    atomic_write,
    b64url,
    b64url_decode,
    canonical_json,
    parse_utc_iso,
    sha256_hex,
    utc_iso,
)
from erab.security.keys import key_id_of, public_key_from_text, public_key_text

if TYPE_CHECKING:
    from erab.security.home import SecurityHome

GENESIS_HASH = "0" * 64
UNREADABLE_HASH = "unreadable"  # stands in for the hash of a row that cannot be parsed
_CHECKPOINT_CONTEXT = b"erab-audit-checkpoint-v2\n"
HEAD_FORMAT = "erab-audit-head/1"


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
    """A signed statement: at ``created_at`` the chain's head was ``head_hash`` at ``position``,
    and checkpoint ``sequence - 1`` of this log had hash ``prev_checkpoint_hash``."""

    sequence: int  # 1 for a log's first checkpoint
    position: int
    head_hash: str
    created_at: datetime
    key_id: str
    prev_checkpoint_hash: str
    signature: str  # base64url Ed25519

    def signed_fields(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "position": self.position,
            "head_hash": self.head_hash,
            "created_at": utc_iso(self.created_at),
            "key_id": self.key_id,
            "prev_checkpoint_hash": self.prev_checkpoint_hash,
        }

    def signing_bytes(self) -> bytes:
        return _CHECKPOINT_CONTEXT + canonical_json(self.signed_fields())

    def to_dict(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}

    @property
    def checkpoint_hash(self) -> str:
        """What the next checkpoint chains to: SHA-256 over every field, signature included."""
        return sha256_hex(canonical_json(self.to_dict()))

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        """Parse the :meth:`to_dict` form; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        try:
            sequence, position = data["sequence"], data["position"]
            texts = [
                data[k]
                for k in ("head_hash", "created_at", "key_id", "prev_checkpoint_hash", "signature")
            ]
        except KeyError as exc:
            raise ValueError(f"checkpoint lacks {exc.args[0]!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sequence, position)):
            raise ValueError("checkpoint sequence and position must be integers")
        if not all(isinstance(v, str) for v in texts):
            raise ValueError("checkpoint hashes, time, key id and signature must be strings")
        head_hash, created_at, key_id, prev, signature = texts
        when = parse_utc_iso(created_at)
        return cls(sequence, position, head_hash, when, key_id, prev, signature)

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        if key_id_of(key) != self.key_id:
            return False
        try:
            key.verify(b64url_decode(self.signature), self.signing_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class AuditHead:
    """The latest signed checkpoint of one log, self-contained: it names the signer's public
    key so that whoever holds a copy (the home's ``audit-head.json``; later the RA, one per
    gateway) can check a log against it with :func:`verify_audit_log` (``head=``).

    The embedded key only proves the head was not altered; which key to trust must come
    from elsewhere (the checkpoint key file, or the key the RA pinned at enrolment).
    """

    checkpoint: Checkpoint
    public_key: str  # base64url of the raw Ed25519 key that signed it

    def to_json(self) -> str:
        return (
            json.dumps(
                {"format": HEAD_FORMAT, "public_key": self.public_key, **self.checkpoint.to_dict()},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str, source: str = "audit head") -> AuditHead:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != HEAD_FORMAT:
            raise ValueError(f"{source}: not an audit head (format {HEAD_FORMAT!r} expected)")
        public_key = data.get("public_key")
        if not isinstance(public_key, str):
            raise ValueError(f"{source}: no public_key")
        try:
            head = cls(Checkpoint.from_dict(data), public_key)
            signer = public_key_from_text(public_key)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not head.checkpoint.signed_by(signer):
            raise ValueError(f"{source}: the signature does not match its content and key")
        return head

    @classmethod
    def load(cls, path: Path) -> AuditHead:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
        return cls.from_json(text, str(path))

    def save(self, path: Path) -> None:
        atomic_write(path, self.to_json().encode("utf-8"))


@dataclass(frozen=True)
class CheckpointPolicy:
    """When the log signs a checkpoint on its own: after ``every_records`` records, or when
    a record is appended ``every`` after the latest checkpoint, whichever comes first."""

    every_records: int = 100
    every: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.every_records <= 0 or self.every <= timedelta(0):
            raise ValueError("checkpoint policy: every_records and every must be positive")


class AuditProblem(StrEnum):
    CHANGED = "changed"
    REMOVED = "removed"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    TRUNCATED = "truncated"  # records after a checkpointed position are gone
    BAD_CHECKPOINT = "bad_checkpoint"
    CHECKPOINT_MISSING = "checkpoint_missing"  # none at all, a gap, or behind the head
    MISSING = "missing"  # the log's tables, its records or its head file are gone


@dataclass(frozen=True)
class AuditFinding:
    position: int  # 0: the log as a whole
    problem: AuditProblem
    detail: str

    def __str__(self) -> str:
        where = "log" if self.position == 0 else f"record {self.position}"
        return f"{where}: {self.problem.value}: {self.detail}"


@dataclass(frozen=True)
class AuditVerification:
    records_checked: int
    checkpoints_checked: int
    head_position: int
    head_hash: str
    findings: tuple[AuditFinding, ...]
    signatures_checked: bool = False
    latest_checkpoint: Checkpoint | None = None
    head_checked: AuditHead | None = None  # the external head the log was held against
    last_recorded_at: datetime | None = None

    @property
    def intact(self) -> bool:
        return not self.findings

    @property
    def records_after_checkpoint(self) -> int:
        """Records no checkpoint covers yet: the window in which edits go unnoticed."""
        covered = 0 if self.latest_checkpoint is None else self.latest_checkpoint.position
        return max(0, self.head_position - covered)


class AuditStore(Protocol):
    """Where audit records live.  Implementations must make ``append`` and
    ``add_checkpoint`` atomic."""

    def append(self, build: Callable[[ChainHead | None], AuditRecord]) -> AuditRecord:
        """Call ``build(head)`` with the current last record's position and hash and store
        what it returns, with no other append in between."""
        ...

    def records(self) -> Iterator[AuditRecord]:
        """Every record in storage order."""
        ...

    def tail(self, count: int) -> list[AuditRecord]: ...

    def head(self) -> AuditRecord | None: ...

    def add_checkpoint(
        self, build: Callable[[Checkpoint | None, ChainHead | None], Checkpoint | None]
    ) -> Checkpoint | None:
        """Call ``build(latest_checkpoint, head)`` and store the checkpoint it returns (None:
        store nothing), with no other append or checkpoint in between."""
        ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...


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
    signature TEXT NOT NULL,
    sequence INTEGER,
    prev_checkpoint_hash TEXT
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
_CHECKPOINT_SEQUENCE_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS audit_checkpoints_sequence ON audit_checkpoints(sequence)"
)
AUDIT_TABLES = ("audit_records", "audit_checkpoints")

_RECORD_COLUMNS = "position, recorded_at, kind, actor, subject, details, prev_hash, record_hash"
_CHECKPOINT_COLUMNS = (
    "sequence, position, head_hash, created_at, key_id, prev_checkpoint_hash, signature"
)


class SqliteAuditStore:
    """Audit records in one SQLite file (WAL); safe for several processes appending.

    :meth:`open_read_only` opens an existing file for verification only (SQLite URI
    ``mode=ro``): it never creates the file or a table, and refuses every write.
    """

    def __init__(self, path: Path, *, _read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = _read_only
        self._lock = threading.Lock()
        if _read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"no audit log at {self.path}")
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
            )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit_checkpoints)")}
        for column, kind in (("sequence", "INTEGER"), ("prev_checkpoint_hash", "TEXT")):
            if column not in columns:  # a log from before checkpoints were chained
                self._db.execute(f"ALTER TABLE audit_checkpoints ADD COLUMN {column} {kind}")
        self._db.execute(_CHECKPOINT_SEQUENCE_INDEX)

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteAuditStore:
        """Open an existing log to read; FileNotFoundError if there is none."""
        return cls(path, _read_only=True)

    def close(self) -> None:
        self._db.close()

    def missing_tables(self) -> list[str]:
        """The audit tables this file lacks (all of them after a DROP TABLE)."""
        with self._lock:
            present = {
                r[0]
                for r in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                ).fetchall()
            }
        return [t for t in AUDIT_TABLES if t not in present]

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise ValueError(f"{self.path} was opened read-only (for verification)")

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

    @staticmethod
    def _checkpoint_row(row: tuple[Any, ...]) -> Checkpoint:
        try:
            created_at = parse_utc_iso(row[3])
        except ValueError:
            created_at = datetime(1970, 1, 1, tzinfo=UTC)  # then the signature cannot match
        return Checkpoint(
            sequence=0 if row[0] is None else int(row[0]),  # 0: from before chaining
            position=int(row[1]),
            head_hash=str(row[2]),
            created_at=created_at,
            key_id=str(row[4]),
            prev_checkpoint_hash="" if row[5] is None else str(row[5]),
            signature=str(row[6]),
        )

    def append(self, build: Callable[[ChainHead | None], AuditRecord]) -> AuditRecord:
        self._refuse_if_read_only()
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

    def append_many(
        self,
        builds: Sequence[Callable[[ChainHead | None], AuditRecord]],
        built: Sequence[AuditRecord] | None = None,
    ) -> list[AuditRecord]:
        """:meth:`append` for several records in one transaction (one commit for all): each
        ``build`` is called with the head the one before it made.  ``built``: the records
        the builds made already, on the head their first names; stored as they are when
        that is still the head (no second hashing), else built again on the real head."""
        self._refuse_if_read_only()
        if not builds:
            return []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT position, record_hash FROM audit_records ORDER BY id DESC LIMIT 1"
                ).fetchone()
                head = None if row is None else ChainHead(int(row[0]), row[1])
                expected = (
                    None
                    if not built
                    else (built[0].position - 1, built[0].prev_hash)
                )
                actual = (0, GENESIS_HASH) if head is None else (head.position, head.record_hash)
                if built is not None and len(built) == len(builds) and expected == actual:
                    records = list(built)
                else:
                    records = []
                    for build in builds:
                        record = build(head)
                        records.append(record)
                        head = ChainHead(record.position, record.record_hash)
                self._db.executemany(
                    f"INSERT INTO audit_records ({_RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.position,
                            utc_iso(r.recorded_at),
                            r.kind.value,
                            r.actor,
                            r.subject,
                            canonical_json(r.details).decode("utf-8"),
                            r.prev_hash,
                            r.record_hash,
                        )
                        for r in records
                    ],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return records

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

    def add_checkpoint(
        self, build: Callable[[Checkpoint | None, ChainHead | None], Checkpoint | None]
    ) -> Checkpoint | None:
        self._refuse_if_read_only()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
                ).fetchone()
                row = self._db.execute(
                    "SELECT position, record_hash FROM audit_records ORDER BY id DESC LIMIT 1"
                ).fetchone()
                checkpoint = build(
                    None if last is None else self._checkpoint_row(last),
                    None if row is None else ChainHead(int(row[0]), row[1]),
                )
                if checkpoint is not None:
                    self._db.execute(
                        f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLUMNS})"
                        " VALUES (?,?,?,?,?,?,?)",
                        (
                            checkpoint.sequence,
                            checkpoint.position,
                            checkpoint.head_hash,
                            utc_iso(checkpoint.created_at),
                            checkpoint.key_id,
                            checkpoint.prev_checkpoint_hash,
                            checkpoint.signature,
                        ),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return checkpoint

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id"
            ).fetchall()
        return [self._checkpoint_row(r) for r in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else self._checkpoint_row(row)


class AuditLog:
    """Appends records to the chain, signs checkpoints, and verifies the whole log.

    With a ``checkpoint_key`` the log checkpoints itself after an append whenever
    ``policy`` says one is due, and keeps the latest checkpoint in ``head_file`` too.
    """

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        *,
        checkpoint_key: Ed25519PrivateKey | None = None,
        policy: CheckpointPolicy | None = None,
        head_file: Path | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.checkpoint_key = checkpoint_key
        self.policy = policy or CheckpointPolicy()
        self.head_file = head_file

    @classmethod
    def for_home(cls, home: SecurityHome, clock: Clock) -> AuditLog:
        """The deployment's log: its checkpoint key (if there is one yet), the interval from
        ``config.json`` (defaults when it is missing or unreadable, so that no record is ever
        lost to a config typo) and the head file beside the database."""
        from erab.security.keys import load_ed25519_key

        key = load_ed25519_key(home.audit_key) if home.audit_key.exists() else None
        try:
            config = home.load_config()
        except ValueError:
            config = None
        policy = (
            CheckpointPolicy()
            if config is None
            else CheckpointPolicy(
                config.checkpoint_every_records,
                timedelta(minutes=config.checkpoint_every_minutes),
            )
        )
        return cls(
            SqliteAuditStore(home.audit_db),
            clock,
            checkpoint_key=key,
            policy=policy,
            head_file=home.audit_head,
        )

    def append(
        self,
        kind: AuditKind,
        actor: str,
        subject: str,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Record an event; ``actor`` is who did it, ``subject`` what it was done to.

        The record is stored before any checkpoint is attempted, so a failing checkpoint
        never loses it.
        """
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
            return replace(draft, record_hash=draft.compute_hash())

        record = self.store.append(build)
        if self.checkpoint_key is not None and self._due(self.store.latest_checkpoint(), record):
            self._checkpoint(self.checkpoint_key, lambda last, head: self._due(last, head))
        return record

    def _due(self, last: Checkpoint | None, head: AuditRecord | ChainHead | None) -> bool:
        if head is None:
            return False
        if last is None:
            return True
        moved = head.position - last.position
        return moved >= self.policy.every_records or (
            moved > 0 and self.clock.now() - last.created_at >= self.policy.every
        )

    def checkpoint(self, key: Ed25519PrivateKey | None = None) -> Checkpoint:
        """Sign the current chain head, chained to the latest checkpoint, and store it."""
        signing_key = key or self.checkpoint_key
        if signing_key is None:
            raise ValueError("no checkpoint key: give one, or create the log with checkpoint_key")
        signed = self._checkpoint(signing_key, lambda last, head: True)
        assert signed is not None  # always due
        return signed

    def _checkpoint(
        self,
        key: Ed25519PrivateKey,
        due: Callable[[Checkpoint | None, ChainHead | None], bool],
    ) -> Checkpoint | None:
        now = self.clock.now()
        key_id = key_id_of(key.public_key())

        def build(last: Checkpoint | None, head: ChainHead | None) -> Checkpoint | None:
            if not due(last, head):
                return None  # another writer checkpointed first
            unsigned = Checkpoint(
                sequence=1 if last is None else last.sequence + 1,
                position=0 if head is None else head.position,
                head_hash=GENESIS_HASH if head is None else head.record_hash,
                created_at=now,
                key_id=key_id,
                prev_checkpoint_hash=GENESIS_HASH if last is None else last.checkpoint_hash,
                signature="",
            )
            return replace(unsigned, signature=b64url(key.sign(unsigned.signing_bytes())))

        signed = self.store.add_checkpoint(build)
        if signed is not None and self.head_file is not None:
            self._keep_head(AuditHead(signed, public_key_text(key.public_key())))
        return signed

    def _keep_head(self, head: AuditHead) -> None:
        # Several processes may checkpoint one log; never replace a later head by an earlier.
        assert self.head_file is not None
        try:
            kept = AuditHead.load(self.head_file)
        except (OSError, ValueError):
            kept = None
        if kept is None or kept.checkpoint.sequence < head.checkpoint.sequence:
            head.save(self.head_file)

    def checkpoint_if_due(self, key: Ed25519PrivateKey, every: timedelta) -> Checkpoint | None:
        """Checkpoint when the chain moved on and the last checkpoint is ``every`` old."""

        def due(last: Checkpoint | None, head: ChainHead | None) -> bool:
            if head is None:
                return False
            if last is None:
                return True
            return head.position != last.position and self.clock.now() - last.created_at >= every

        return self._checkpoint(key, due)

    async def run_checkpoints(self, key: Ed25519PrivateKey, every: timedelta) -> None:
        """Checkpoint periodically (by this log's clock) until cancelled: what bounds the
        window in time while records arrive slowly."""
        while True:
            self.checkpoint_if_due(key, every)
            await self.clock.sleep(every.total_seconds())

    def verify(
        self,
        checkpoint_keys: Sequence[Ed25519PublicKey] | None = None,
        *,
        head: AuditHead | None = None,
        require_checkpoints: bool = False,
    ) -> AuditVerification:
        """See :func:`verify_audit_log`."""
        return verify_audit_log(
            self.store, checkpoint_keys, head=head, require_checkpoints=require_checkpoints
        )


def verify_audit_log(
    store: AuditStore,
    checkpoint_keys: Sequence[Ed25519PublicKey] | None = None,
    *,
    head: AuditHead | None = None,
    require_checkpoints: bool = False,
) -> AuditVerification:
    """Check every record and checkpoint of ``store``; report each problem with its position.

    - With ``checkpoint_keys``, a checkpoint (or ``head``) signed by none of them is a finding.
    - Checkpoints must form one chain from the first (each names the hash of the one before).
    - With ``head`` (a copy of the latest signed checkpoint kept elsewhere), the log must
      still reach it: hold that checkpoint unchanged and at least its records.
    - With ``require_checkpoints`` (a deployment's log, which is never legitimately empty and
      checkpoints itself from its first record), an empty log or one without checkpoints is
      a finding.
    Reads only; never writes to the store.
    """
    records = list(store.records())
    checkpoints = store.checkpoints()
    findings = _record_findings(records)
    by_position = {r.position: r for r in records}
    highest = max(by_position, default=0)
    keys = None if checkpoint_keys is None else list(checkpoint_keys)
    if require_checkpoints and not records:
        findings.append(
            AuditFinding(
                0,
                AuditProblem.MISSING,
                "the log has no records, yet a deployment's log never is empty ('erab pki init' "
                "records itself): it was emptied or replaced",
            )
        )
    findings += _checkpoint_findings(checkpoints, by_position, highest, keys, require_checkpoints)
    if head is not None:
        findings += _head_findings(head, checkpoints, by_position, highest, keys)
    unique = sorted(set(findings), key=lambda f: (f.position, f.problem.value, f.detail))
    last = records[-1] if records else None
    return AuditVerification(
        records_checked=len(records),
        checkpoints_checked=len(checkpoints),
        head_position=0 if last is None else last.position,
        head_hash=GENESIS_HASH if last is None else last.record_hash,
        findings=tuple(unique),
        signatures_checked=keys is not None,
        latest_checkpoint=checkpoints[-1] if checkpoints else None,
        head_checked=head,
        last_recorded_at=None if last is None else last.recorded_at,
    )


def _record_findings(records: list[AuditRecord]) -> list[AuditFinding]:
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
                AuditFinding(rec.position, AuditProblem.CHANGED, "content does not match its hash")
            )

    missing = sorted(set(range(1, highest + 1)) - set(by_position))
    for run_start, run_end in _runs(missing):
        findings.append(
            AuditFinding(run_start, AuditProblem.REMOVED, f"{_span(run_start, run_end)} missing")
        )

    # The chain links, in position order.
    for pos in sorted(by_position):
        rec = by_position[pos]
        if pos == 1:
            if rec.prev_hash != GENESIS_HASH:
                findings.append(
                    AuditFinding(1, AuditProblem.CHANGED, "first record does not start the chain")
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
    return findings


def _trusted(cp: Checkpoint, keys: list[Ed25519PublicKey] | None) -> bool:
    return keys is None or any(cp.signed_by(k) for k in keys)


def _covers(
    cp: Checkpoint, what: str, by_position: dict[int, AuditRecord], highest: int
) -> list[AuditFinding]:
    """The records a signed checkpoint (or head) vouches for must still be there, unchanged."""
    if cp.position == 0:
        return []
    at = by_position.get(cp.position)
    if at is None:
        if cp.position > highest:
            return [
                AuditFinding(
                    highest + 1,
                    AuditProblem.TRUNCATED,
                    f"{_span(highest + 1, cp.position)} removed from the end "
                    f"({what} of {utc_iso(cp.created_at)} covers up to {cp.position})",
                )
            ]
        return []  # a gap, already reported as removed
    if at.record_hash != cp.head_hash:
        return [
            AuditFinding(
                cp.position,
                AuditProblem.CHANGED,
                f"does not match the {what} signed at {utc_iso(cp.created_at)}",
            )
        ]
    return []


def _checkpoint_findings(
    checkpoints: list[Checkpoint],
    by_position: dict[int, AuditRecord],
    highest: int,
    keys: list[Ed25519PublicKey] | None,
    require_checkpoints: bool,
) -> list[AuditFinding]:
    findings: list[AuditFinding] = []
    if require_checkpoints and by_position and not checkpoints:
        findings.append(
            AuditFinding(
                0,
                AuditProblem.CHECKPOINT_MISSING,
                "no checkpoint at all, yet the log checkpoints itself from its first record: "
                "the checkpoints were deleted",
            )
        )
    expected_sequence, expected_prev, covered = 1, GENESIS_HASH, 0
    for cp in checkpoints:
        when = utc_iso(cp.created_at)
        if cp.sequence == 0:
            findings.append(
                AuditFinding(
                    cp.position,
                    AuditProblem.BAD_CHECKPOINT,
                    f"checkpoint of {when} is in the unchained format of older erab "
                    "versions; nothing proves no checkpoint before it was removed",
                )
            )
            continue
        if cp.sequence > expected_sequence:
            findings.append(
                AuditFinding(
                    cp.position,
                    AuditProblem.CHECKPOINT_MISSING,
                    f"checkpoint(s) {_numbers(expected_sequence, cp.sequence - 1)} missing "
                    f"before checkpoint {cp.sequence} of {when}",
                )
            )
        elif cp.sequence != expected_sequence or cp.prev_checkpoint_hash != expected_prev:
            findings.append(
                AuditFinding(
                    cp.position,
                    AuditProblem.BAD_CHECKPOINT,
                    f"checkpoint {cp.sequence} of {when} does not chain to checkpoint "
                    f"{expected_sequence - 1} (replaced, duplicated or moved)",
                )
            )
        if cp.position < covered:
            findings.append(
                AuditFinding(
                    cp.position,
                    AuditProblem.BAD_CHECKPOINT,
                    f"checkpoint {cp.sequence} of {when} covers fewer records than the one "
                    "before it",
                )
            )
        expected_sequence, expected_prev = cp.sequence + 1, cp.checkpoint_hash
        covered = max(covered, cp.position)
        if not _trusted(cp, keys):
            findings.append(
                AuditFinding(
                    cp.position,
                    AuditProblem.BAD_CHECKPOINT,
                    f"checkpoint {cp.sequence} of {when} is not signed by a trusted checkpoint key",
                )
            )
            continue
        findings += _covers(cp, f"checkpoint {cp.sequence}", by_position, highest)
    return findings


def _head_findings(
    head: AuditHead,
    checkpoints: list[Checkpoint],
    by_position: dict[int, AuditRecord],
    highest: int,
    keys: list[Ed25519PublicKey] | None,
) -> list[AuditFinding]:
    cp = head.checkpoint
    when = utc_iso(cp.created_at)
    if not _trusted(cp, keys):
        return [
            AuditFinding(
                0,
                AuditProblem.BAD_CHECKPOINT,
                f"the head (checkpoint {cp.sequence} of {when}) is not signed by a trusted "
                "checkpoint key",
            )
        ]
    findings: list[AuditFinding] = []
    stored = next((c for c in checkpoints if c.sequence == cp.sequence), None)
    latest = max((c.sequence for c in checkpoints), default=0)
    if stored is None:
        findings.append(
            AuditFinding(
                0,
                AuditProblem.CHECKPOINT_MISSING,
                f"the head names checkpoint {cp.sequence} of {when} (record {cp.position}), "
                f"but the log's latest checkpoint is {latest}: checkpoints were removed",
            )
        )
    elif stored.checkpoint_hash != cp.checkpoint_hash:
        findings.append(
            AuditFinding(
                0,
                AuditProblem.BAD_CHECKPOINT,
                f"checkpoint {cp.sequence} in the log differs from the head's copy of {when}: "
                "the checkpoints were rewritten",
            )
        )
    findings += _covers(cp, "head", by_position, highest)
    return findings


def home_has_security_state(home: SecurityHome) -> bool:
    """Whether anything erab keeps under ``home/security`` is there (an initialised home,
    however damaged), as opposed to a wrong or never-initialised path."""
    return any(
        path.exists()
        for path in (
            home.root_cert,
            home.issuing_cert,
            home.ca_bundle,
            home.crl,
            home.registry_db,
            home.audit_db,
            home.audit_key,
            home.audit_head,
            home.operators_db,
            home.config_file,
        )
    )


def verify_home_audit(home: SecurityHome) -> AuditVerification:
    """Verify a deployment's audit log, read-only, against its checkpoint key and head file.

    An initialised home's log is never empty and always checkpointed, so an empty log, one
    without checkpoints, lost tables, a missing head file or a checkpoint chain that stops
    short of the head are findings, not a pass.  Without the key file the checkpoints are
    checked for chaining but not for their signatures (``signatures_checked`` False).
    """
    from erab.security.keys import load_ed25519_key

    def broken(problem: AuditProblem, detail: str) -> AuditVerification:
        return AuditVerification(0, 0, 0, GENESIS_HASH, (AuditFinding(0, problem, detail),))

    if not home.audit_db.exists():
        return broken(
            AuditProblem.MISSING,
            f"no audit log at {home.audit_db}; an initialised home always has one",
        )
    keys = [load_ed25519_key(home.audit_key).public_key()] if home.audit_key.exists() else None
    head_problem: str | None = None
    head: AuditHead | None = None
    try:
        head = AuditHead.load(home.audit_head)
    except FileNotFoundError:
        head_problem = (
            f"no head file at {home.audit_head}: the latest signed checkpoint kept outside "
            "the database is gone"
        )
    except (OSError, ValueError) as exc:
        head_problem = f"head file unusable: {exc}"
    store = SqliteAuditStore.open_read_only(home.audit_db)
    try:
        lost = store.missing_tables()
        if lost:
            return broken(
                AuditProblem.MISSING,
                f"table(s) {', '.join(lost)} gone from {home.audit_db}: the log was wiped",
            )
        result = verify_audit_log(store, keys, head=head, require_checkpoints=True)
    finally:
        store.close()
    if head_problem is None:
        return result
    findings = (AuditFinding(0, AuditProblem.MISSING, head_problem), *result.findings)
    return replace(result, findings=findings)


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}-{last}"


def _numbers(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


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
